//! Test guest for outbound Redis (`spin_sdk::redis`, `fermyon:spin/redis@2.0.0`): the `op` query
//! parameter picks a scenario, `address` the Redis URL and `prefix` the key prefix; the answer is
//! JSON describing every result, errors as their `Debug` text.

use probe_support::{params, respond};
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_component;
use spin_sdk::redis::{Connection, Error, RedisParameter, RedisResult};

/// Compare-and-set in one atomic step: writes `ARGV[2]` when the key holds `ARGV[1]` (or is
/// absent and `ARGV[1]` is empty) and returns `{written, previous}`; an absent previous value
/// is Lua `false`, which Redis replies as nil.
const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1])
if (ARGV[1] == '' and not current) or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return {1, current}
end
return {0, current}
";

fn err(e: &Error) -> Value {
    json!({ "error": format!("{e:?}") })
}

fn bytes(v: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(v).into_owned())
}

fn results(r: Result<Vec<RedisResult>, Error>) -> Value {
    match r {
        Ok(items) => Value::Array(
            items
                .iter()
                .map(|item| match item {
                    RedisResult::Nil => json!({ "nil": null }),
                    RedisResult::Status(s) => json!({ "status": s }),
                    RedisResult::Int64(v) => json!({ "int64": v }),
                    RedisResult::Binary(b) => json!({ "binary": bytes(b) }),
                })
                .collect(),
        ),
        Err(e) => err(&e),
    }
}

fn value<T: Into<Value>>(r: Result<T, Error>) -> Value {
    match r {
        Ok(v) => v.into(),
        Err(e) => err(&e),
    }
}

fn payload(r: Result<Option<Vec<u8>>, Error>) -> Value {
    match r {
        Ok(Some(v)) => bytes(&v),
        Ok(None) => Value::Null,
        Err(e) => err(&e),
    }
}

fn sorted(r: Result<Vec<String>, Error>) -> Value {
    r.map(|mut members| {
        members.sort();
        members
    })
    .map_or_else(|e| err(&e), Value::from)
}

fn bin(s: &str) -> RedisParameter {
    RedisParameter::Binary(s.as_bytes().to_vec())
}

fn cas(c: &Connection, key: &str, expected: &str, new: &str) -> Value {
    results(c.execute(
        "EVAL",
        &[
            bin(COMPARE_AND_SET),
            RedisParameter::Int64(1),
            bin(key),
            bin(expected),
            bin(new),
        ],
    ))
}

/// Runs one scenario on an open connection.
fn scenario(
    op: &str,
    connection: Connection,
    address: &str,
    prefix: &str,
) -> Result<Value, String> {
    let c = &connection;
    let key = |name: &str| format!("{prefix}{name}");
    Ok(match op {
        "basic" => {
            let (k, n) = (key("str"), key("counter"));
            json!({
                "set": value(c.set(&k, b"hello").map(|()| "ok")),
                "get": payload(c.get(&k)),
                "missing": payload(c.get(&key("missing"))),
                "incr": [value(c.incr(&n)), value(c.incr(&n))],
                "incr_wrong_type": value(c.incr(&k)),
                "del": value(c.del(&[k.clone(), n, key("missing")])),
                "after_del": payload(c.get(&k)),
                "publish": value(c.publish(&key("channel"), b"hi").map(|()| "ok")),
            })
        }
        "sets" => {
            let (s, plain) = (key("set"), key("plain"));
            let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            let out = json!({
                "sadd": [
                    value(c.sadd(&s, &strings(&["a", "b", "c"]))),
                    value(c.sadd(&s, &strings(&["c", "d"]))),
                ],
                "members": sorted(c.smembers(&s)),
                "srem": value(c.srem(&s, &strings(&["a", "z"]))),
                "after_srem": sorted(c.smembers(&s)),
                "set_plain": value(c.set(&plain, b"x").map(|()| "ok")),
                "sadd_wrong_type": value(c.sadd(&plain, &strings(&["a"]))),
            });
            c.del(&[s, plain]).map_err(|e| format!("{e:?}"))?;
            out
        }
        "eval" => {
            let (k, n) = (key("cas"), key("n"));
            let out = json!({
                "create": cas(c, &k, "", "v1"),
                "conflict": cas(c, &k, "stale", "v2"),
                "swap": cas(c, &k, "v1", "v2"),
                "get": results(c.execute("GET", &[bin(&k)])),
                "set": results(c.execute("SET", &[bin(&n), bin("10")])),
                "incrby": results(c.execute("INCRBY", &[bin(&n), RedisParameter::Int64(5)])),
                "mget": results(c.execute("MGET", &[bin(&k), bin(&key("none")), bin(&n)])),
            });
            c.del(&[k, n]).map_err(|e| format!("{e:?}"))?;
            out
        }
        "errors" => json!({
            "unknown_command": results(c.execute("NOSUCHCOMMAND", &[])),
            "script_error": results(c.execute(
                "EVAL",
                &[bin("return redis.error_reply('kiloclaw says no')"), RedisParameter::Int64(0)],
            )),
            "wrong_arity": results(c.execute("GET", &[])),
        }),
        "multi" => {
            let (k, n) = (key("tx"), key("txn"));
            let out = json!({
                "multi": results(c.execute("MULTI", &[])),
                "set": results(c.execute("SET", &[bin(&k), bin("in-tx")])),
                "incr": results(c.execute("INCR", &[bin(&n)])),
                "exec": results(c.execute("EXEC", &[])),
                "get": payload(c.get(&k)),
            });
            c.del(&[k, n]).map_err(|e| format!("{e:?}"))?;
            out
        }
        "select" => {
            // `c` moves to database 1; a second connection to the same address must not.
            let k = key("db1");
            let selected = results(c.execute("SELECT", &[RedisParameter::Int64(1)]));
            let set = value(c.set(&k, b"in-db1").map(|()| "ok"));
            let other = Connection::open(address).map_err(|e| format!("{e:?}"))?;
            let out = json!({
                "select": selected,
                "set": set,
                "same_connection": payload(c.get(&k)),
                "other_connection": payload(other.get(&k)),
            });
            c.del(&[k]).map_err(|e| format!("{e:?}"))?;
            out
        }
        "block" => {
            let k = key("never");
            json!({
                "blpop": results(c.execute("BLPOP", &[bin(&k), RedisParameter::Int64(0)])),
                "after": payload(c.get(&k)),
            })
        }
        "drop" => {
            let name = format!("{prefix}drop");
            let named = results(c.execute("CLIENT", &[bin("SETNAME"), bin(&name)]));
            let watcher = Connection::open(address).map_err(|e| format!("{e:?}"))?;
            let listed = |w: &Connection| -> Result<bool, String> {
                match w.execute("CLIENT", &[bin("LIST")]) {
                    Ok(items) => Ok(items.iter().any(|i| {
                        matches!(i, RedisResult::Binary(b) if String::from_utf8_lossy(b).contains(&format!("name={name} ")))
                    })),
                    Err(e) => Err(format!("{e:?}")),
                }
            };
            let before = listed(&watcher)?;
            // Dropping the guest handle must close the connection it had of its own.
            drop(connection);
            let mut gone_after = None;
            for attempt in 0..40 {
                if !listed(&watcher)? {
                    gone_after = Some(attempt);
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            json!({ "named": named, "listed_before_drop": before, "gone_after_polls": gone_after })
        }
        other => return Err(format!("unknown op {other}")),
    })
}

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let p = params(req.query());
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    let (op, address, prefix) = (get("op"), get("address"), get("prefix"));
    let connection = match Connection::open(&address) {
        Ok(c) => c,
        Err(e) => return Ok(respond(200, json!({ "open": err(&e) }))),
    };
    if op == "open" {
        return Ok(respond(200, json!({ "open": "ok" })));
    }
    Ok(match scenario(&op, connection, &address, &prefix) {
        Ok(body) => respond(200, body),
        Err(message) => respond(500, json!({ "failed": message })),
    })
}
