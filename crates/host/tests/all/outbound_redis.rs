//! Outbound Redis (`fermyon:spin/redis@2.0.0`) against the Redis at 127.0.0.1:6379: typed
//! commands, sets, `execute` with a Lua compare-and-set, error replies, the allow-list,
//! unreachable and silent servers, connection-bound commands and dropping a connection.

use crate::harness::{Running, Scenario, unique};
use kiloclaw_host::outbound::redis::{COMMAND_TIMEOUT, CONNECT_TIMEOUT};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const REDIS: &str = "redis://127.0.0.1:6379";

async fn start() -> Running {
    Scenario::new("outbound-redis", &[]).start().await
}

async fn op(host: &Running, route: &str, op: &str, address: &str, prefix: &str) -> Value {
    host.get_json(&format!(
        "{route}?op={op}&address={address}&prefix={prefix}"
    ))
    .await
}

/// The `Debug` text of a guest-side error, or a panic naming what came back instead.
fn error_text(v: &Value) -> &str {
    v.get("error")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("expected an error, got {v}"))
}

#[tokio::test]
async fn set_get_incr_del_and_publish() {
    let host = start().await;
    let prefix = unique("redis-basic");
    let v = op(&host, "/", "basic", REDIS, &prefix).await;
    assert_eq!(v["set"], "ok", "{v}");
    assert_eq!(v["get"], "hello", "{v}");
    assert_eq!(v["missing"], Value::Null, "{v}");
    assert_eq!(v["incr"], json!([1, 2]), "{v}");
    // As in Spin, INCR on a non-integer is `other` with the server's text.
    let incr = error_text(&v["incr_wrong_type"]);
    assert!(
        incr.starts_with("Error::Other(") && incr.contains("not an integer"),
        "{incr}"
    );
    assert_eq!(v["del"], 2, "{v}");
    assert_eq!(v["after_del"], Value::Null, "{v}");
    assert_eq!(v["publish"], "ok", "{v}");
    host.stop().await;
}

#[tokio::test]
async fn sets_and_a_wrong_type() {
    let host = start().await;
    let prefix = unique("redis-sets");
    let v = op(&host, "/", "sets", REDIS, &prefix).await;
    assert_eq!(v["sadd"], json!([3, 1]), "{v}");
    assert_eq!(v["members"], json!(["a", "b", "c", "d"]), "{v}");
    assert_eq!(v["srem"], 1, "{v}");
    assert_eq!(v["after_srem"], json!(["b", "c", "d"]), "{v}");
    assert_eq!(v["set_plain"], "ok", "{v}");
    assert_eq!(error_text(&v["sadd_wrong_type"]), "Error::TypeError", "{v}");
    host.stop().await;
}

#[tokio::test]
async fn execute_runs_an_atomic_compare_and_set_script() {
    let host = start().await;
    let prefix = unique("redis-eval");
    let v = op(&host, "/", "eval", REDIS, &prefix).await;
    // `{1, false}` from Lua: an int and a nil, flattened into the result list.
    assert_eq!(v["create"], json!([{ "int64": 1 }, { "nil": null }]), "{v}");
    assert_eq!(
        v["conflict"],
        json!([{ "int64": 0 }, { "binary": "v1" }]),
        "{v}"
    );
    assert_eq!(
        v["swap"],
        json!([{ "int64": 1 }, { "binary": "v1" }]),
        "{v}"
    );
    assert_eq!(v["get"], json!([{ "binary": "v2" }]), "{v}");
    assert_eq!(v["set"], json!([{ "status": "OK" }]), "{v}");
    assert_eq!(v["incrby"], json!([{ "int64": 15 }]), "{v}");
    assert_eq!(
        v["mget"],
        json!([{ "binary": "v2" }, { "nil": null }, { "binary": "15" }]),
        "{v}"
    );
    host.stop().await;
}

#[tokio::test]
async fn error_replies_are_other_with_the_server_text() {
    let host = start().await;
    let prefix = unique("redis-errors");
    let v = op(&host, "/", "errors", REDIS, &prefix).await;
    for (field, text) in [
        ("unknown_command", "unknown command"),
        // The first word of an error reply is its code: `CODE: detail`, as redis-rs prints it.
        ("script_error", "kiloclaw: says no"),
        ("wrong_arity", "wrong number of arguments"),
    ] {
        let e = error_text(&v[field]);
        assert!(
            e.starts_with("Error::Other(") && e.contains(text),
            "{field}: {e}"
        );
    }
    host.stop().await;
}

#[tokio::test]
async fn addresses_outside_the_allow_list_are_invalid_address_at_once() {
    let host = start().await;
    let prefix = unique("redis-denied");
    let cases = [
        // The component lists other Redis ports only.
        ("/denied/x", REDIS),
        // Allowed host, other port.
        ("/", "redis://127.0.0.1:6380"),
        // Spin compares host names literally: `localhost` is not `127.0.0.1`.
        ("/", "redis://localhost:6379"),
        // Allowed host and port, other scheme.
        ("/", "rediss://127.0.0.1:6379"),
        ("/", "not-a-url"),
        ("/", "127.0.0.1:6379"),
    ];
    for (route, address) in cases {
        let started = Instant::now();
        let v = op(&host, route, "open", address, &prefix).await;
        assert_eq!(
            v["open"],
            json!({ "error": "Error::InvalidAddress" }),
            "{address}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{address}: denial took {:?}",
            started.elapsed()
        );
    }
    let v = op(&host, "/", "open", REDIS, &prefix).await;
    assert_eq!(v["open"], "ok", "the allowed address opens: {v}");
    host.stop().await;
}

#[tokio::test]
async fn an_unreachable_allowed_address_fails_fast_and_a_silent_one_within_the_timeout() {
    let (silent_port, holder) = crate::harness::silent_server().await;
    let mut s = Scenario::new("outbound-redis", &[]);
    s.config
        .variables
        .push(("silent_port".into(), silent_port.to_string()));
    let host = s.start().await;
    let prefix = unique("redis-unreachable");

    let started = Instant::now();
    let v = op(&host, "/", "open", "redis://127.0.0.1:1", &prefix).await;
    let refused = error_text(&v["open"]);
    assert!(refused.starts_with("Error::Other("), "{refused}");
    assert!(
        started.elapsed() < CONNECT_TIMEOUT,
        "a refused connection took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let address = format!("redis://127.0.0.1:{silent_port}");
    let v = op(&host, "/", "open", &address, &prefix).await;
    let timed_out = error_text(&v["open"]);
    assert!(
        timed_out.starts_with("Error::Other(") && timed_out.contains("timed out"),
        "{timed_out}"
    );
    let took = started.elapsed();
    assert!(
        took >= CONNECT_TIMEOUT - Duration::from_millis(100)
            && took < CONNECT_TIMEOUT + Duration::from_secs(2),
        "a silent server took {took:?}"
    );
    host.stop().await;
    holder.abort();
}

#[tokio::test]
async fn transactions_and_select_run_on_a_connection_of_their_own() {
    let host = start().await;
    let prefix = unique("redis-multi");
    let v = op(&host, "/", "multi", REDIS, &prefix).await;
    assert_eq!(v["multi"], json!([{ "status": "OK" }]), "{v}");
    assert_eq!(v["set"], json!([{ "status": "QUEUED" }]), "{v}");
    assert_eq!(v["incr"], json!([{ "status": "QUEUED" }]), "{v}");
    assert_eq!(
        v["exec"],
        json!([{ "status": "OK" }, { "int64": 1 }]),
        "EXEC's array reply is flattened: {v}"
    );
    assert_eq!(v["get"], "in-tx", "{v}");

    let v = op(&host, "/", "select", REDIS, &prefix).await;
    assert_eq!(v["select"], json!([{ "status": "OK" }]), "{v}");
    assert_eq!(v["set"], "ok", "{v}");
    assert_eq!(v["same_connection"], "in-db1", "{v}");
    assert_eq!(
        v["other_connection"],
        Value::Null,
        "SELECT must not leak into the shared connection: {v}"
    );
    host.stop().await;
}

#[tokio::test]
async fn a_blocking_command_times_out_without_stalling_other_requests() {
    let host = std::sync::Arc::new(start().await);
    let prefix = unique("redis-block");
    let blocked = {
        let host = host.clone();
        let prefix = prefix.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let v = op(&host, "/", "block", REDIS, &prefix).await;
            (v, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let v = op(&host, "/", "basic", REDIS, &format!("{prefix}other:")).await;
    assert_eq!(v["get"], "hello", "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a request beside a blocked one took {:?}",
        started.elapsed()
    );
    let (v, took) = blocked.await.expect("blocked request");
    let blpop = error_text(&v["blpop"]);
    assert!(blpop.contains("timed out"), "{blpop}");
    let after = error_text(&v["after"]);
    assert!(after.contains("connection closed"), "{after}");
    assert!(
        took >= COMMAND_TIMEOUT && took < COMMAND_TIMEOUT + Duration::from_secs(3),
        "BLPOP 0 returned after {took:?}"
    );
    if let Ok(host) = std::sync::Arc::try_unwrap(host) {
        host.stop().await;
    }
}

#[tokio::test]
async fn dropping_a_guest_connection_closes_what_it_held() {
    let host = start().await;
    let prefix = unique("redis-drop");
    let v = op(&host, "/", "drop", REDIS, &prefix).await;
    assert_eq!(v["named"], json!([{ "status": "OK" }]), "{v}");
    assert_eq!(v["listed_before_drop"], true, "{v}");
    assert!(
        v["gone_after_polls"].is_u64(),
        "the connection outlived the guest's handle: {v}"
    );
    host.stop().await;
}
