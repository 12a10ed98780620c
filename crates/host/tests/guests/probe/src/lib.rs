//! A multipurpose test guest: the `op` query parameter selects one host behaviour to exercise.

use probe_support::params;
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::key_value::Store;
use spin_sdk::wit::wasi::keyvalue::{atomics, batch, store};
use std::collections::BTreeMap;

fn text(status: u16, body: impl Into<String>) -> Response {
    Response::builder().status(status).body(body.into()).build()
}

fn json(value: serde_json::Value) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(value.to_string())
        .build()
}

fn kv_error(e: impl std::fmt::Debug) -> Response {
    text(500, format!("{e:?}"))
}

#[http_component]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let p = params(req.query());
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    let label = p.get("store").cloned().unwrap_or_else(|| "default".into());
    let op = get("op");
    Ok(match op.as_str() {
        "" | "headers" => {
            let headers: BTreeMap<String, String> = req
                .headers()
                .map(|(k, v)| (k.to_string(), v.as_str().unwrap_or("<bytes>").to_string()))
                .collect();
            json(serde_json::json!({ "path": req.path(), "headers": headers }))
        }
        "var" => match spin_sdk::variables::get(&get("name")) {
            Ok(v) => text(200, v),
            Err(spin_sdk::variables::Error::Undefined(m)) => text(404, format!("undefined: {m}")),
            Err(spin_sdk::variables::Error::InvalidName(m)) => {
                text(400, format!("invalid-name: {m}"))
            }
            Err(e) => text(500, format!("{e:?}")),
        },
        "env" => match std::env::var(get("name")) {
            Ok(v) => text(200, v),
            Err(_) => text(404, "unset"),
        },
        "file" => match std::fs::read_to_string(get("path")) {
            Ok(v) => text(200, v),
            Err(e) => text(404, e.to_string()),
        },
        "print" => {
            println!("{}", get("msg"));
            eprintln!("err: {}", get("msg"));
            text(200, "printed")
        }
        "trap" => panic!("asked to trap"),
        "sleep" => {
            let ms: u64 = get("ms").parse().unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            text(200, format!("slept {ms}"))
        }
        "body-len" => text(200, req.body().len().to_string()),
        "kv-set" | "kv-get" | "kv-delete" | "kv-exists" | "kv-keys" => {
            let s = match Store::open(&label) {
                Ok(s) => s,
                Err(e) => return Ok(text(403, format!("{e:?}"))),
            };
            let key = get("key");
            match op.as_str() {
                "kv-set" => match s.set(&key, get("value").as_bytes()) {
                    Ok(()) => text(200, "ok"),
                    Err(e) => kv_error(e),
                },
                "kv-get" => match s.get(&key) {
                    Ok(Some(v)) => text(200, String::from_utf8_lossy(&v).into_owned()),
                    Ok(None) => text(404, "absent"),
                    Err(e) => kv_error(e),
                },
                "kv-delete" => match s.delete(&key) {
                    Ok(()) => text(200, "ok"),
                    Err(e) => kv_error(e),
                },
                "kv-exists" => match s.exists(&key) {
                    Ok(b) => text(200, b.to_string()),
                    Err(e) => kv_error(e),
                },
                _ => match s.get_keys() {
                    Ok(mut keys) => {
                        keys.sort();
                        json(serde_json::json!(keys))
                    }
                    Err(e) => kv_error(e),
                },
            }
        }
        "wasi-open" => match store::open(&label) {
            Ok(_) => text(200, "opened"),
            Err(e) => text(403, format!("{e:?}")),
        },
        "list-cursor" => {
            let b = store::open(&label)?;
            match b.list_keys(Some("x")) {
                Ok(_) => text(200, "unexpected"),
                Err(e) => text(400, format!("{e:?}")),
            }
        }
        "cas-swap" => {
            let b = store::open(&label)?;
            let cas = atomics::Cas::new(&b, &get("key"))?;
            let before = cas.current()?;
            match atomics::swap(cas, get("value").as_bytes()) {
                Ok(()) => json(serde_json::json!({
                    "result": "ok",
                    "before": before.map(|v| String::from_utf8_lossy(&v).into_owned()),
                })),
                Err(atomics::CasError::CasFailed(_)) => text(409, "cas-failed"),
                Err(atomics::CasError::StoreError(e)) => kv_error(e),
            }
        }
        "cas-conflict" => {
            // A deterministic race: another writer sets the key between current() and swap().
            let b = store::open(&label)?;
            let key = get("key");
            let cas = atomics::Cas::new(&b, &key)?;
            let seen = cas.current()?;
            b.set(&key, b"intruder")?;
            let first = atomics::swap(cas, b"mine");
            let (first, fresh_current, second) = match first {
                Ok(()) => ("ok", None, None),
                Err(atomics::CasError::StoreError(e)) => return Ok(kv_error(e)),
                Err(atomics::CasError::CasFailed(fresh)) => {
                    let current = fresh.current()?;
                    let second = match atomics::swap(fresh, b"mine") {
                        Ok(()) => "ok",
                        Err(_) => "failed",
                    };
                    ("cas-failed", current, Some(second))
                }
            };
            let last = b.get(&key)?;
            json(serde_json::json!({
                "seen": seen.map(|v| String::from_utf8_lossy(&v).into_owned()),
                "first": first,
                "fresh_current": fresh_current.map(|v| String::from_utf8_lossy(&v).into_owned()),
                "second": second,
                "final": last.map(|v| String::from_utf8_lossy(&v).into_owned()),
            }))
        }
        "cas-incr" => {
            // Read-modify-write of a decimal counter through CAS, retrying on conflict.
            let b = store::open(&label)?;
            let key = get("key");
            let mut cas = atomics::Cas::new(&b, &key)?;
            let mut retries = 0u32;
            loop {
                let current = cas
                    .current()?
                    .map(|v| String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0))
                    .unwrap_or(0);
                let next = current + 1;
                match atomics::swap(cas, next.to_string().as_bytes()) {
                    Ok(()) => break json(serde_json::json!({ "value": next, "retries": retries })),
                    Err(atomics::CasError::CasFailed(fresh)) => {
                        retries += 1;
                        cas = fresh;
                    }
                    Err(atomics::CasError::StoreError(e)) => break kv_error(e),
                }
            }
        }
        "incr" => {
            let b = store::open(&label)?;
            let delta: i64 = get("delta").parse().unwrap_or(1);
            match atomics::increment(&b, &get("key"), delta) {
                Ok(v) => text(200, v.to_string()),
                Err(e) => kv_error(e),
            }
        }
        "batch" => {
            let b = store::open(&label)?;
            batch::set_many(
                &b,
                &[
                    ("b1".into(), b"one".to_vec()),
                    ("b2".into(), b"two".to_vec()),
                ],
            )?;
            let got = batch::get_many(&b, &["b1".into(), "b2".into(), "b3".into()])?;
            batch::delete_many(&b, &["b1".into()])?;
            let after = b.exists("b1")?;
            json(serde_json::json!({
                "got": got
                    .into_iter()
                    .map(|(k, v)| (k, v.map(|v| String::from_utf8_lossy(&v).into_owned())))
                    .collect::<Vec<_>>(),
                "b1_exists_after_delete": after,
            }))
        }
        "fetch" => {
            let request = Request::builder()
                .method(Method::Get)
                .uri(get("url"))
                .build();
            let result: Result<Response, _> = spin_sdk::http::send(request).await;
            match result {
                Ok(r) => text(
                    200,
                    format!(
                        "status={} body={}",
                        r.status(),
                        String::from_utf8_lossy(r.body())
                    ),
                ),
                Err(e) => text(502, format!("error: {e:?}")),
            }
        }
        other => text(400, format!("unknown op {other}")),
    })
}
