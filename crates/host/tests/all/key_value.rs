//! Key-value: CRUD, labels and access, batch, CAS success/conflict/absent-key race, increment.

use crate::harness::{Scenario, unique};

#[tokio::test]
async fn get_set_delete_exists_and_list() {
    let s = Scenario::new("key-value", &[]);
    let host = s.start().await;
    assert_eq!(host.get("/?op=kv-get&key=a").await, (404, "absent".into()));
    assert_eq!(
        host.get("/?op=kv-set&key=a&value=1").await,
        (200, "ok".into())
    );
    assert_eq!(host.get("/?op=kv-set&key=b&value=2").await.0, 200);
    assert_eq!(host.get("/?op=kv-get&key=a").await, (200, "1".into()));
    assert_eq!(host.get("/?op=kv-exists&key=a").await, (200, "true".into()));
    assert_eq!(
        host.get_json("/?op=kv-keys").await,
        serde_json::json!(["a", "b"])
    );
    assert_eq!(host.get("/?op=kv-delete&key=a").await.0, 200);
    assert_eq!(
        host.get("/?op=kv-exists&key=a").await,
        (200, "false".into())
    );
    // Labels are separate stores.
    assert_eq!(
        host.get_json("/?op=kv-keys&store=scratch").await,
        serde_json::json!([])
    );
    host.stop().await;
    // The default store is Spin's SQLite file under the state dir, Spin's table layout.
    let db = s.dir.path().join(".spin/sqlite_key_value.db");
    let c = rusqlite::Connection::open(&db).expect("open the default store file");
    let value: Vec<u8> = c
        .query_row(
            "SELECT value FROM spin_key_value WHERE store = 'default' AND key = 'b'",
            [],
            |r| r.get(0),
        )
        .expect("row written through the guest");
    assert_eq!(value, b"2");
}

#[tokio::test]
async fn unlisted_label_is_access_denied_and_cursor_is_rejected() {
    let s = Scenario::new("key-value", &[]);
    let host = s.start().await;
    let (status, body) = host.get("/limited/x?op=kv-get&key=a").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("AccessDenied"), "{body}");
    let (status, body) = host.get("/limited/x?op=wasi-open&store=default").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        host.get("/limited/x?op=wasi-open&store=scratch").await.0,
        200
    );
    let (status, body) = host.get("/?op=list-cursor").await;
    assert_eq!(status, 400);
    assert!(body.contains("cursor not supported"), "{body}");
    host.stop().await;
}

#[tokio::test]
async fn unknown_label_fails_the_load() {
    let s = Scenario::new("key-value", &[]);
    std::fs::remove_file(s.dir.path().join("runtime-config.toml")).expect("rm");
    let mut config = s.config.clone();
    config.runtime_config_file = None;
    let err = kiloclaw_host::App::load(&config)
        .await
        .expect_err("scratch is not configured");
    let message = err.to_string();
    assert!(
        message.contains("unknown key_value_stores label `scratch` for component"),
        "{message}"
    );
}

#[tokio::test]
async fn batch_operations() {
    let s = Scenario::new("key-value", &[]);
    let host = s.start().await;
    let v = host.get_json("/?op=batch").await;
    assert_eq!(
        v["got"],
        serde_json::json!([["b1", "one"], ["b2", "two"], ["b3", null]])
    );
    assert_eq!(v["b1_exists_after_delete"], false);
    host.stop().await;
}

async fn cas_on(store: &str) {
    let s = Scenario::new("cas", &[("redis_prefix", unique("cas"))]);
    let host = s.start().await;
    // Success path: absent key, then existing key.
    let v = host
        .get_json(&format!("/?op=cas-swap&store={store}&key=k&value=v1"))
        .await;
    assert_eq!(v["result"], "ok");
    assert_eq!(v["before"], serde_json::Value::Null);
    let v = host
        .get_json(&format!("/?op=cas-swap&store={store}&key=k&value=v2"))
        .await;
    assert_eq!(v["before"], "v1");
    // Conflict on an existing key: the swap fails, the fresh handle sees the intruder, retry wins.
    let v = host
        .get_json(&format!("/?op=cas-conflict&store={store}&key=k"))
        .await;
    assert_eq!(v["seen"], "v2");
    assert_eq!(v["first"], "cas-failed");
    assert_eq!(v["fresh_current"], "intruder");
    assert_eq!(v["second"], "ok");
    assert_eq!(v["final"], "mine");
    // Absent-key race: another writer creates the key first; insert-if-absent must fail.
    let v = host
        .get_json(&format!("/?op=cas-conflict&store={store}&key=fresh"))
        .await;
    assert_eq!(v["seen"], serde_json::Value::Null);
    assert_eq!(
        v["first"], "cas-failed",
        "Spin's SQLite would blindly overwrite here"
    );
    assert_eq!(v["fresh_current"], "intruder");
    assert_eq!(v["final"], "mine");
    host.stop().await;
}

#[tokio::test]
async fn cas_success_conflict_and_absent_race_on_sqlite() {
    cas_on("default").await;
}

#[tokio::test]
async fn cas_success_conflict_and_absent_race_on_redis() {
    cas_on("redis").await;
}

#[tokio::test]
async fn cas_success_conflict_and_absent_race_in_memory() {
    cas_on("memory").await;
}

#[tokio::test]
async fn concurrent_cas_increments_in_one_host_lose_nothing() {
    let s = Scenario::new("cas", &[("redis_prefix", unique("cas-conc"))]);
    let host = s.start().await;
    for store in ["default", "redis", "memory"] {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let client = host.client.clone();
            let url = format!("{}/?op=cas-incr&store={store}&key=counter", host.base);
            tasks.spawn(async move {
                for _ in 0..10 {
                    let r = client.get(&url).send().await.expect("request");
                    assert_eq!(
                        r.status().as_u16(),
                        200,
                        "{}",
                        r.text().await.unwrap_or_default()
                    );
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("client task");
        }
        assert_eq!(
            host.get(&format!("/?op=kv-get&store={store}&key=counter"))
                .await,
            (200, "80".into()),
            "store {store}"
        );
    }
    host.stop().await;
}

#[tokio::test]
async fn increment_counts_and_encodes_like_spin() {
    let prefix = unique("incr");
    let s = Scenario::new("increment", &[("redis_prefix", prefix.clone())]);
    let host = s.start().await;
    for store in ["default", "redis", "memory"] {
        assert_eq!(
            host.get(&format!("/?op=incr&store={store}&key=n&delta=5"))
                .await,
            (200, "5".into())
        );
        assert_eq!(
            host.get(&format!("/?op=incr&store={store}&key=n&delta=-7"))
                .await,
            (200, "-2".into())
        );
    }
    // Redis keeps ASCII decimal (INCRBY); SQLite/memory keep 8-byte little-endian.
    assert_eq!(
        host.get("/?op=kv-get&store=redis&key=n").await,
        (200, "-2".into())
    );
    // A value that is not an 8-byte counter is an error, not a panic.
    assert_eq!(host.get("/?op=kv-set&key=text&value=abc").await.0, 200);
    let (status, body) = host.get("/?op=incr&key=text&delta=1").await;
    assert_eq!(status, 500);
    assert!(body.contains("8-byte"), "{body}");
    host.stop().await;
    let c =
        rusqlite::Connection::open(s.dir.path().join(".spin/sqlite_key_value.db")).expect("open");
    let raw: Vec<u8> = c
        .query_row(
            "SELECT value FROM spin_key_value WHERE store='default' AND key='n'",
            [],
            |r| r.get(0),
        )
        .expect("row");
    assert_eq!(raw, (-2i64).to_le_bytes().to_vec());
}
