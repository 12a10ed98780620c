//! OpenClaw gateway stand-in, served in-process for every started machine behind the proxy.
//!
//! - Any HTTP path: a JSON echo of what arrived (method, path, query, headers, body) and which machine
//!   answered (`machine_id`, `instance_id`, `app`, `region`).
//! - `PUT|GET|DELETE /_gateway/files/{name}`: a file in the machine's attached volume directory, so data
//!   survives stop/start, follows forks and disappears with the volume.
//! - `ANY /_gateway/status/{code}`: answers with that status (what a user's own agent can make its
//!   gateway answer), e.g. 502, to exercise the proxy's crash recovery.
//! - `GET /_gateway/env`: the environment the gateway process runs with, after the image's start script
//!   decrypted the `KILOCLAW_ENC_*` values (simulator only: it lets tests see that users' secrets arrive,
//!   which the real gateway of course never reveals).
//! - WebSocket on any path: OpenClaw's handshake. The gateway first sends a `connect.challenge` event; the
//!   client's first frame must be `{"type":"req","id":…,"method":"connect","params":{"auth":{"token":…}}}`.
//!   The token must equal the machine's `OPENCLAW_GATEWAY_TOKEN`, otherwise the reply is an error frame
//!   whose `error.message` contains `gateway token missing` or `gateway token mismatch`, followed by a
//!   close with code 1008 (a machine booted without any token accepts every `connect`, as OpenClaw does
//!   without `--token`). After `hello-ok` every text/binary frame is echoed back. The socket closes with
//!   1012 when the machine stops, restarts or is replaced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use kiloclaw_core::fly::MachineState;
use serde_json::{Value, json};

use crate::proxy::Target;
use crate::sim::SimState;
use crate::state::now_ms;

const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// OpenClaw's close code for a policy violation (bad auth).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_RESTART: u16 = 1012;

fn json_reply(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// Serves one proxied HTTP request on the target machine.
pub async fn http(target: &Target, parts: Parts, body: Body) -> Response {
    let body = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(err) => {
            return json_reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": err.to_string()}),
            );
        }
    };
    let path = parts.uri.path();
    if let Some(name) = path.strip_prefix("/_gateway/files/") {
        return file(target, &parts.method, name, &body);
    }
    if let Some(code) = path.strip_prefix("/_gateway/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        return json_reply(status, json!({"machine_id": target.machine_id}));
    }
    if path == "/_gateway/env" && parts.method == Method::GET {
        return json_reply(StatusCode::OK, json!(target.environment));
    }
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    json_reply(
        StatusCode::OK,
        json!({
            "machine_id": target.machine_id,
            "instance_id": target.instance_id,
            "app": target.app,
            "region": target.region,
            "method": parts.method.as_str(),
            "path": path,
            "query": parts.uri.query().unwrap_or_default(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        }),
    )
}

fn file(target: &Target, method: &Method, name: &str, body: &[u8]) -> Response {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with('.');
    if !valid {
        return json_reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid file name"}),
        );
    }
    let Some(dir) = &target.volume_dir else {
        return json_reply(
            StatusCode::CONFLICT,
            json!({"error": "no volume mounted on this machine"}),
        );
    };
    let path = dir.join(name);
    let result = match *method {
        Method::PUT | Method::POST => std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, body))
            .map(|()| json_reply(StatusCode::OK, json!({"written": body.len(), "name": name}))),
        Method::GET => std::fs::read(&path).map(|bytes| (StatusCode::OK, bytes).into_response()),
        Method::DELETE => std::fs::remove_file(&path)
            .map(|()| json_reply(StatusCode::OK, json!({"deleted": name}))),
        _ => {
            return json_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed"}),
            );
        }
    };
    result.unwrap_or_else(|err| {
        let status = if err.kind() == std::io::ErrorKind::NotFound {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        json_reply(status, json!({"error": err.to_string()}))
    })
}

async fn send_json(socket: &mut WebSocket, value: &Value) -> bool {
    socket
        .send(Message::Text(Utf8Bytes::from(value.to_string())))
        .await
        .is_ok()
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let reason: String = reason.chars().take(120).collect();
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })))
        .await;
}

/// Checks the `connect` frame; `Ok(id)` or `Err(error message)`.
fn check_connect(frame: &str, expected: Option<&str>) -> (Value, Result<(), (String, String)>) {
    let parsed: Value = serde_json::from_str(frame).unwrap_or(Value::Null);
    let id = parsed.get("id").cloned().unwrap_or(Value::Null);
    let is_connect = parsed.get("type").and_then(Value::as_str) == Some("req")
        && parsed.get("method").and_then(Value::as_str) == Some("connect");
    if !is_connect {
        return (
            id,
            Err((
                "INVALID_REQUEST".to_owned(),
                "invalid handshake: first request must be connect".to_owned(),
            )),
        );
    }
    let Some(expected) = expected else {
        return (id, Ok(()));
    };
    let token = parsed
        .pointer("/params/auth/token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if token.is_empty() {
        return (
            id,
            Err((
                "UNAUTHORIZED".to_owned(),
                "unauthorized: gateway token missing (set gateway.remote.token to match gateway.auth.token)".to_owned(),
            )),
        );
    }
    if token != expected {
        return (
            id,
            Err((
                "UNAUTHORIZED".to_owned(),
                "unauthorized: gateway token mismatch".to_owned(),
            )),
        );
    }
    (id, Ok(()))
}

fn still_running(sim: &SimState, target: &Target) -> bool {
    sim.read(|world| {
        world.machines.get(&target.machine_id).is_some_and(|m| {
            m.state == MachineState::Started && m.instance_id == target.instance_id
        })
    })
}

/// One WebSocket connection to the gateway stand-in.
pub async fn websocket_session(sim: Arc<SimState>, target: Target, mut socket: WebSocket) {
    let challenge = json!({
        "type": "event",
        "event": "connect.challenge",
        "payload": {"nonce": crate::ids::ulid(), "ts": now_ms()},
    });
    if !send_json(&mut socket, &challenge).await {
        return;
    }
    let first = match tokio::time::timeout(HANDSHAKE_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        Ok(Some(Ok(_))) => String::new(),
        _ => return,
    };
    let (id, verdict) = check_connect(&first, target.gateway_token.as_deref());
    if let Err((code, message)) = verdict {
        tracing::info!(tag = "flysim", action = "gateway_ws_rejected", machine_id = %target.machine_id, reason = %code);
        let frame = json!({"type": "res", "id": id, "ok": false, "error": {"code": code, "message": message}});
        send_json(&mut socket, &frame).await;
        close(&mut socket, CLOSE_POLICY, &message).await;
        return;
    }
    let hello = json!({
        "type": "res",
        "id": id,
        "ok": true,
        "payload": {
            "type": "hello-ok",
            "protocol": 3,
            "server": {"machine_id": target.machine_id, "instance_id": target.instance_id, "app": target.app},
        },
    });
    if !send_json(&mut socket, &hello).await {
        return;
    }
    let mut changes = sim.subscribe();
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    if socket.send(Message::Text(text)).await.is_err() { return; }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if socket.send(Message::Binary(bytes)).await.is_err() { return; }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            changed = changes.changed() => {
                if changed.is_err() || !still_running(&sim, &target) {
                    close(&mut socket, CLOSE_RESTART, "machine stopped").await;
                    return;
                }
            }
        }
    }
}
