//! Fly Proxy + OpenClaw gateway stand-in: forced-instance routing, no fallback, autostart, volume files
//! that survive stop/start, and the WebSocket gateway-token handshake.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kiloclaw_core::fly::{CreateMachineRequest, FlyApi, MachineState, WaitRequest, WaitState};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::support::*;

fn proxied(
    env: &Env,
    machine_id: &str,
    method: reqwest::Method,
    path: &str,
) -> reqwest::blocking::RequestBuilder {
    env.http
        .request(method, format!("{}{path}", env.sim.proxy_url()))
        .header("fly-force-instance-id", machine_id)
}

#[test]
fn forced_instance_reaches_that_machine_with_fly_headers() {
    let env = start();
    let first = started_machine(&env, None, "p1");
    let second = started_machine(&env, None, "p2");
    for machine in [&first, &second] {
        let response = proxied(
            &env,
            &machine.id,
            reqwest::Method::POST,
            "/api/chat?x=1&y=two",
        )
        .header("cookie", "kiloclaw-auth=jwt")
        .body("hello")
        .send()
        .expect("send");
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("fly-request-id").is_some());
        let echo: Value = response.json().expect("json");
        assert_eq!(echo["machine_id"], machine.id.as_str());
        assert_eq!(
            (
                echo["method"].as_str(),
                echo["path"].as_str(),
                echo["query"].as_str()
            ),
            (Some("POST"), Some("/api/chat"), Some("x=1&y=two"))
        );
        assert_eq!(echo["body"], "hello");
        assert_eq!(echo["headers"]["cookie"], "kiloclaw-auth=jwt");
        assert_eq!(echo["headers"]["fly-region"], "dfw");
        assert!(echo["headers"]["fly-client-ip"].is_string());
        assert!(
            echo["headers"].get("fly-force-instance-id").is_none(),
            "the proxy consumes the routing header"
        );
    }
}

#[test]
fn a_stopped_or_unknown_forced_instance_fails_without_fallback() {
    let env = start();
    let up = started_machine(&env, None, "up");
    let down = started_machine(&env, None, "down");
    stop_and_wait(&env, &down.id);
    let response = proxied(&env, &down.id, reqwest::Method::GET, "/")
        .send()
        .expect("send");
    assert_eq!(
        response.status(),
        503,
        "autostart is off: no start, no other machine"
    );
    let text = response.text().expect("text");
    assert!(text.contains(&down.id) && !text.contains(&up.id), "{text}");
    assert_eq!(state_of(&env, &down.id), MachineState::Stopped);
    let response = proxied(&env, "0123456789abcd", reqwest::Method::GET, "/")
        .send()
        .expect("send");
    assert_eq!(response.status(), 502);
}

#[test]
fn autostart_services_are_started_by_the_proxy() {
    let env = start();
    let mut config = machine_config(None, "auto");
    config.services[0].autostart = None;
    let machine = env
        .fly
        .create_machine(
            APP,
            &CreateMachineRequest {
                config,
                ..Default::default()
            },
        )
        .expect("create");
    wait_started(&env, &machine.id);
    stop_and_wait(&env, &machine.id);
    let response = proxied(&env, &machine.id, reqwest::Method::GET, "/wake")
        .send()
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(state_of(&env, &machine.id), MachineState::Started);
}

#[test]
fn volume_files_survive_stop_start_and_vanish_with_the_volume() {
    let env = start();
    let volume = create_volume(&env, "files", "dfw");
    let machine = started_machine(&env, Some(&volume.id), "files");
    let put = proxied(
        &env,
        &machine.id,
        reqwest::Method::PUT,
        "/_gateway/files/notes.txt",
    )
    .body("remember me")
    .send()
    .expect("send");
    assert_eq!(put.status(), 200);
    stop_and_wait(&env, &machine.id);
    env.fly.start_machine(APP, &machine.id).expect("start");
    wait_started(&env, &machine.id);
    let get = proxied(
        &env,
        &machine.id,
        reqwest::Method::GET,
        "/_gateway/files/notes.txt",
    )
    .send()
    .expect("send");
    assert_eq!(get.status(), 200);
    assert_eq!(get.text().expect("text"), "remember me");
    let bad = proxied(
        &env,
        &machine.id,
        reqwest::Method::GET,
        "/_gateway/files/..%2Fescape",
    )
    .send()
    .expect("send");
    assert_eq!(bad.status(), 400);

    env.fly
        .destroy_machine(APP, &machine.id, true)
        .expect("destroy");
    env.fly
        .wait_machine(
            APP,
            &machine.id,
            &WaitRequest::new(WaitState::Destroyed, 10),
        )
        .expect("destroyed");
    eventually("detached", || {
        env.fly
            .get_volume(APP, &volume.id)
            .expect("get")
            .attached_machine_id
            .is_none()
    });
    env.fly.delete_volume(APP, &volume.id).expect("delete");
    let fresh = create_volume(&env, "files", "dfw");
    let next = started_machine(&env, Some(&fresh.id), "files");
    let get = proxied(
        &env,
        &next.id,
        reqwest::Method::GET,
        "/_gateway/files/notes.txt",
    )
    .send()
    .expect("send");
    assert_eq!(get.status(), 404, "a new volume starts empty");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(proxy_url: &str, header: (&'static str, String)) -> Socket {
    let url = proxy_url.replacen("http://", "ws://", 1) + "/";
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert(header.0, header.1.parse().expect("header value"));
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    assert_eq!(response.status(), 101);
    socket
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("frame in time");
        match message.expect("open").expect("frame") {
            Message::Text(text) => return serde_json::from_str(&text).expect("json frame"),
            Message::Close(frame) => return json!({"closed": frame.map(|f| u16::from(f.code))}),
            _ => {}
        }
    }
}

async fn connect_frame(socket: &mut Socket, token: Option<&str>) -> Value {
    let challenge = next_json(socket).await;
    assert_eq!(challenge["event"], "connect.challenge");
    let auth = token.map_or(json!({}), |t| json!({"token": t}));
    let frame = json!({"type": "req", "id": "c1", "method": "connect", "params": {"minProtocol": 3, "maxProtocol": 3, "auth": auth}});
    socket
        .send(Message::text(frame.to_string()))
        .await
        .expect("send");
    next_json(socket).await
}

async fn close_code(socket: &mut Socket) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(tungstenite::Error::ConnectionClosed)) | None => return None,
            Some(Err(err)) => panic!("{err}"),
        }
    }
}

#[test]
fn websocket_requires_the_gateway_token_then_echoes() {
    let env = start();
    let machine = started_machine(&env, None, "ws");
    let proxy = env.sim.proxy_url().to_owned();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let force = || ("fly-force-instance-id", machine.id.clone());
        let mut good = connect(&proxy, force()).await;
        let hello = connect_frame(&mut good, Some(GATEWAY_TOKEN)).await;
        assert_eq!(
            (hello["ok"].as_bool(), hello["id"].as_str()),
            (Some(true), Some("c1"))
        );
        assert_eq!(
            hello["payload"]["server"]["machine_id"],
            machine.id.as_str()
        );
        good.send(Message::text(
            "{\"type\":\"req\",\"id\":\"2\",\"method\":\"chat.send\"}",
        ))
        .await
        .expect("send");
        assert_eq!(next_json(&mut good).await["method"], "chat.send");

        let mut wrong = connect(&proxy, force()).await;
        let rejected = connect_frame(&mut wrong, Some("not-the-token")).await;
        assert_eq!(rejected["ok"], false);
        assert!(
            rejected["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("gateway token mismatch"))
        );
        assert_eq!(close_code(&mut wrong).await, Some(1008));

        let mut missing = connect(&proxy, force()).await;
        let rejected = connect_frame(&mut missing, None).await;
        assert!(
            rejected["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("gateway token missing"))
        );

        // Browsers connect directly to the per-app host.
        let port = proxy.rsplit(':').next().expect("port").to_owned();
        let mut direct = connect(&proxy, ("host", format!("{APP}.localhost:{port}"))).await;
        assert_eq!(
            connect_frame(&mut direct, Some(GATEWAY_TOKEN)).await["ok"],
            true
        );
    });
}

#[test]
fn websockets_close_when_the_machine_stops() {
    let env = start();
    let machine = started_machine(&env, None, "wsstop");
    let proxy = env.sim.proxy_url().to_owned();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut socket = runtime.block_on(async {
        let mut socket = connect(&proxy, ("fly-force-instance-id", machine.id.clone())).await;
        assert_eq!(
            connect_frame(&mut socket, Some(GATEWAY_TOKEN)).await["ok"],
            true
        );
        socket
    });
    env.fly.stop_machine(APP, &machine.id).expect("stop");
    runtime.block_on(async {
        assert_eq!(close_code(&mut socket).await, Some(1012));
    });
}

#[test]
fn encrypted_gateway_token_is_decrypted_with_the_app_key_and_a_missing_key_fails_closed() {
    let env = start();
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let sealed =
        kiloclaw_flysim::image::encrypt_value(key, "sealed-token", [9; 12]).expect("encrypt");
    let mut config = machine_config(None, "enc");
    config.env.remove("OPENCLAW_GATEWAY_TOKEN");
    config
        .env
        .insert("KILOCLAW_ENC_OPENCLAW_GATEWAY_TOKEN".into(), sealed);

    // Without the app secret the start script exits: the machine stops right after booting.
    let failing = env
        .fly
        .create_machine(
            APP,
            &CreateMachineRequest {
                config: config.clone(),
                ..Default::default()
            },
        )
        .expect("create");
    eventually("boot failure", || {
        let machine = env.fly.get_machine(APP, &failing.id).expect("get");
        machine.state == MachineState::Stopped && machine.events[0].kind == "exit"
    });

    let version = env
        .fly
        .set_secret(APP, "KILOCLAW_ENV_KEY", key)
        .expect("secret")
        .version;
    let machine = env
        .fly
        .create_machine(
            APP,
            &CreateMachineRequest {
                config,
                min_secrets_version: Some(version),
                ..Default::default()
            },
        )
        .expect("create");
    wait_started(&env, &machine.id);
    let proxy = env.sim.proxy_url().to_owned();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let mut socket = connect(&proxy, ("fly-force-instance-id", machine.id.clone())).await;
            assert_eq!(
                connect_frame(&mut socket, Some("sealed-token")).await["ok"],
                true
            );
            let mut wrong = connect(&proxy, ("fly-force-instance-id", machine.id.clone())).await;
            assert_eq!(
                connect_frame(&mut wrong, Some(GATEWAY_TOKEN)).await["ok"],
                false
            );
        });
    let echo: Value = proxied(&env, &machine.id, reqwest::Method::GET, "/")
        .send()
        .expect("send")
        .json()
        .expect("json");
    assert_eq!(echo["machine_id"], machine.id.as_str());
}
