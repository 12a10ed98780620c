//! Unit tests: request building, parsing of Fly-shaped JSON, error classification, and the client over a
//! recording transport.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Duration;

use serde_json::json;

use super::*;

fn requests() -> FlyRequests {
    FlyRequests::new("https://api.machines.dev/", "tok_123", "kiloclaw-test")
}

fn response(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

// ---- request building ----

#[test]
fn urls_are_v1_app_scoped_and_encoded() {
    let r = requests();
    assert_eq!(
        r.get_machine("acct-1", "148e").url,
        "https://api.machines.dev/v1/apps/acct-1/machines/148e"
    );
    assert_eq!(
        r.get_machine("a b/c", "x?y").url,
        "https://api.machines.dev/v1/apps/a%20b%2Fc/machines/x%3Fy"
    );
    assert_eq!(
        r.list_volumes("app").url,
        "https://api.machines.dev/v1/apps/app/volumes"
    );
    assert_eq!(
        r.list_volume_snapshots("app", "vol_1").url,
        "https://api.machines.dev/v1/apps/app/volumes/vol_1/snapshots"
    );
    assert_eq!(r.get_app("app").url, "https://api.machines.dev/v1/apps/app");
    assert_eq!(
        r.list_apps("personal org").url,
        "https://api.machines.dev/v1/apps?org_slug=personal%20org"
    );
    assert_eq!(
        r.delete_secret("app", "KILOCLAW_ENV_KEY").url,
        "https://api.machines.dev/v1/apps/app/secrets/KILOCLAW_ENV_KEY"
    );
    assert_eq!(r.start_machine("app", "m1").method, HttpMethod::Post);
    assert_eq!(
        r.start_machine("app", "m1").url,
        "https://api.machines.dev/v1/apps/app/machines/m1/start"
    );
    assert_eq!(
        r.stop_machine("app", "m1").url,
        "https://api.machines.dev/v1/apps/app/machines/m1/stop"
    );
}

#[test]
fn auth_and_content_type_headers() {
    let r = requests();
    let get = r.get_machine("app", "m1");
    assert_eq!(get.header("Authorization"), Some("Bearer tok_123"));
    assert_eq!(
        get.header("content-type"),
        None,
        "no content-type without a body"
    );
    assert!(get.body.is_none());
    let post = r.set_secret("app", "K", "v").expect("builds");
    assert_eq!(post.header("content-type"), Some("application/json"));
    let body: serde_json::Value =
        serde_json::from_slice(post.body.as_deref().unwrap_or_default()).expect("json");
    assert_eq!(body, json!({"value": "v"}));
    let macaroon = FlyRequests::new(DEFAULT_BASE_URL, "FlyV1 fm2_abc", "ua");
    assert_eq!(
        macaroon.get_app("a").header("authorization"),
        Some("FlyV1 fm2_abc")
    );
}

#[test]
fn debug_output_redacts_token_and_body() {
    let request = requests()
        .set_secret("app", "KILOCLAW_ENV_KEY", "super-secret")
        .expect("builds");
    let printed = format!("{request:?} {:?}", requests());
    assert!(!printed.contains("tok_123"), "{printed}");
    assert!(!printed.contains("super-secret"), "{printed}");
    let config = FlyClientConfig::new("tok_123");
    assert!(!format!("{config:?}").contains("tok_123"));
}

#[test]
fn list_machines_builds_metadata_filters() {
    let mut filter = MachineListFilter::metadata("kiloclaw_user_id", "user 1&x=y");
    filter
        .metadata
        .insert("kiloclaw_sandbox_id".to_owned(), "abc".to_owned());
    let request = requests().list_machines("app", &filter);
    assert_eq!(
        request.url,
        "https://api.machines.dev/v1/apps/app/machines?metadata.kiloclaw_sandbox_id=abc&metadata.kiloclaw_user_id=user%201%26x%3Dy"
    );
    assert_eq!(
        requests()
            .list_machines("app", &MachineListFilter::default())
            .url,
        "https://api.machines.dev/v1/apps/app/machines"
    );
}

#[test]
fn destroy_sends_force_only_when_asked() {
    assert_eq!(
        requests().destroy_machine("app", "m1", true).url,
        "https://api.machines.dev/v1/apps/app/machines/m1?force=true"
    );
    assert_eq!(
        requests().destroy_machine("app", "m1", false).url,
        "https://api.machines.dev/v1/apps/app/machines/m1"
    );
    assert_eq!(
        requests().destroy_machine("app", "m1", true).method,
        HttpMethod::Delete
    );
}

#[test]
fn wait_clamps_timeout_and_requires_instance_id_for_stopped() {
    let r = requests();
    let long = r
        .wait_machine("app", "m1", &WaitRequest::new(WaitState::Started, 300))
        .expect("builds");
    assert_eq!(
        long.url,
        "https://api.machines.dev/v1/apps/app/machines/m1/wait?state=started&timeout=60"
    );
    assert!(
        long.timeout > Duration::from_secs(60),
        "the transport must outlive the long poll"
    );
    let zero = r
        .wait_machine("app", "m1", &WaitRequest::new(WaitState::Destroyed, 0))
        .expect("builds");
    assert!(
        zero.url.ends_with("state=destroyed&timeout=1"),
        "{}",
        zero.url
    );
    let refused = r
        .wait_machine("app", "m1", &WaitRequest::new(WaitState::Stopped, 60))
        .expect_err("refused");
    assert_eq!(refused.kind(), FlyErrorKind::InvalidRequest);
    assert!(refused.to_string().contains("instance_id required"));
    let stopped = r
        .wait_machine(
            "app",
            "m1",
            &WaitRequest::new(WaitState::Stopped, 30)
                .with_instance_id("01HEPA330HZ37A78TK080NAK1M"),
        )
        .expect("builds");
    assert!(
        stopped
            .url
            .ends_with("state=stopped&timeout=30&instance_id=01HEPA330HZ37A78TK080NAK1M")
    );
}

#[test]
fn create_machine_body_uses_fly_names() {
    let mut config = MachineConfig {
        image: "registry.fly.io/kiloclaw-machines:latest".to_owned(),
        ..Default::default()
    };
    config
        .env
        .insert("OPENCLAW_GATEWAY_TOKEN".to_owned(), "gt".to_owned());
    config.guest = Some(GuestConfig {
        cpu_kind: Some("shared".to_owned()),
        cpus: 2,
        memory_mb: 4096,
        ..Default::default()
    });
    config.services.push(MachineService {
        protocol: "tcp".to_owned(),
        internal_port: 18789,
        ports: vec![ServicePort {
            port: Some(443),
            handlers: vec!["tls".to_owned(), "http".to_owned()],
            ..Default::default()
        }],
        autostart: Some(false),
        autostop: Some(Autostop::Off),
        extra: Default::default(),
    });
    config.mounts.push(MachineMount {
        volume: "vol_1".to_owned(),
        path: "/root".to_owned(),
        name: None,
        extra: Default::default(),
    });
    config
        .metadata
        .insert("kiloclaw_user_id".to_owned(), "u1".to_owned());
    let body = CreateMachineRequest {
        config,
        name: Some("sandbox".to_owned()),
        region: Some("dfw".to_owned()),
        min_secrets_version: Some(3),
        ..Default::default()
    };
    let request = requests().create_machine("app", &body).expect("builds");
    let sent: serde_json::Value =
        serde_json::from_slice(request.body.as_deref().unwrap_or_default()).expect("json");
    assert_eq!(
        sent,
        json!({
            "config": {
                "image": "registry.fly.io/kiloclaw-machines:latest",
                "env": {"OPENCLAW_GATEWAY_TOKEN": "gt"},
                "guest": {"cpu_kind": "shared", "cpus": 2, "memory_mb": 4096},
                "services": [{"protocol": "tcp", "internal_port": 18789,
                              "ports": [{"port": 443, "handlers": ["tls", "http"]}],
                              "autostart": false, "autostop": "off"}],
                "mounts": [{"volume": "vol_1", "path": "/root"}],
                "metadata": {"kiloclaw_user_id": "u1"}
            },
            "name": "sandbox",
            "region": "dfw",
            "min_secrets_version": 3
        })
    );
}

#[test]
fn create_app_sends_both_name_fields() {
    let request = requests()
        .create_app(&CreateAppRequest::new(
            "acct-1",
            "kilo",
            Some("acct-1".to_owned()),
        ))
        .expect("builds");
    assert_eq!(request.url, "https://api.machines.dev/v1/apps");
    let sent: serde_json::Value =
        serde_json::from_slice(request.body.as_deref().unwrap_or_default()).expect("json");
    assert_eq!(
        sent,
        json!({"app_name": "acct-1", "name": "acct-1", "org_slug": "kilo", "network": "acct-1"})
    );
}

// ---- parsing ----

const MACHINE_JSON: &str = r#"{
  "id": "1857156b526dd8", "name": "aged-thunder-7371", "state": "started", "region": "ord",
  "instance_id": "01HEPA330HZ37A78TK080NAK1M", "private_ip": "fdaa:0:18:a7b:196:e274:9ce1:2",
  "config": {
    "image": "registry.fly.io/app:tag", "env": {"A": "1"},
    "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256, "kernel_args": ["x"]},
    "services": [{"protocol": "tcp", "internal_port": 18789, "autostop": false, "autostart": true,
                  "ports": [{"port": 443, "handlers": ["tls", "http"], "http_options": {"compress": true}}],
                  "concurrency": {"type": "connections", "soft_limit": 20}}],
    "mounts": [{"volume": "vol_9vw681egy1jj5xm4", "path": "/root", "name": "data"}],
    "metadata": {"kiloclaw_user_id": "u1"},
    "dns": {}, "init": {}, "checks": {"alive": {"type": "tcp", "port": 18789, "interval": "15s"}}
  },
  "image_ref": {"registry": "registry.fly.io", "repository": "app", "tag": "tag", "digest": "sha256:1", "labels": {}},
  "created_at": "2023-11-08T01:52:30Z", "updated_at": "2023-11-08T01:52:31Z",
  "events": [{"id": "01H", "type": "start", "status": "started", "source": "flyd", "timestamp": 1699408351000}],
  "host_status": "ok"
}"#;

#[test]
fn parses_machine_and_round_trips_unknown_fields() {
    let machine: Machine = serde_json::from_str(MACHINE_JSON).expect("parses");
    assert_eq!(machine.state, MachineState::Started);
    assert_eq!(machine.metadata_value("kiloclaw_user_id"), Some("u1"));
    let config = machine.config.clone().expect("config");
    assert_eq!(config.services[0].autostop, Some(Autostop::Off));
    assert_eq!(config.mounts[0].volume, "vol_9vw681egy1jj5xm4");
    assert_eq!(machine.events[0].kind, "start");
    assert!(machine.extra.contains_key("image_ref"));
    // Updating with the config we read must send back everything Fly gave us.
    let original: serde_json::Value = serde_json::from_str(MACHINE_JSON).expect("json");
    let resent = serde_json::to_value(&config).expect("serialises");
    assert_eq!(resent["checks"], original["config"]["checks"]);
    assert_eq!(resent["dns"], json!({}));
    assert_eq!(resent["guest"]["kernel_args"], json!(["x"]));
    assert_eq!(
        resent["services"][0]["concurrency"]["soft_limit"],
        json!(20)
    );
    assert_eq!(
        resent["services"][0]["ports"][0]["http_options"],
        json!({"compress": true})
    );
    assert_eq!(resent["services"][0]["autostop"], json!("off"));
}

#[test]
fn unknown_states_are_kept() {
    let machine: Machine =
        serde_json::from_str(r#"{"id":"m","state":"hibernating"}"#).expect("parses");
    assert_eq!(
        machine.state,
        MachineState::Unknown("hibernating".to_owned())
    );
    assert_eq!(
        serde_json::to_value(&machine.state).expect("ser"),
        json!("hibernating")
    );
    assert!(MachineState::Replacing.is_transitional());
    assert!(!MachineState::Stopped.is_transitional());
    assert!(MachineState::Destroying.is_gone());
    assert_eq!(
        MachineState::parse("launch_failed"),
        MachineState::LaunchFailed
    );
}

#[test]
fn parses_autostop_forms() {
    for (input, expected) in [
        (json!(false), Autostop::Off),
        (json!("off"), Autostop::Off),
        (json!(true), Autostop::Stop),
        (json!("stop"), Autostop::Stop),
        (json!("suspend"), Autostop::Suspend),
    ] {
        assert_eq!(
            serde_json::from_value::<Autostop>(input).expect("parses"),
            expected
        );
    }
    assert!(
        serde_json::from_value::<Autostop>(json!("on")).is_err(),
        "Fly rejects `on`"
    );
}

#[test]
fn parses_volume_and_snapshot() {
    let volume: Volume = serde_json::from_str(
        r#"{"id":"vol_9vw681egy1jj5xm4","name":"kiloclaw_abc","state":"created","size_gb":10,"region":"dfw",
            "zone":"09cd","encrypted":true,"attached_machine_id":null,"attached_alloc_id":null,
            "created_at":"2023-09-01T19:47:14.774Z","fstype":"ext4","snapshot_retention":5,"host_status":"ok"}"#,
    )
    .expect("parses");
    assert_eq!(volume.state, VolumeState::Created);
    assert_eq!(volume.attached_machine_id, None);
    assert!(!volume.state.is_deleted());
    assert!(VolumeState::PendingDestroy.is_deleted());
    let snaps: Vec<VolumeSnapshot> = serde_json::from_str(
        r#"[{"id":"vs_1","size":1024,"volume_size":10737418240,"digest":"d","created_at":"2024-01-01T00:00:00Z","status":"created","retention_days":5}]"#,
    )
    .expect("parses");
    assert_eq!(snaps[0].size, 1024);
}

#[test]
fn lenient_bodies_accept_empty_and_ok() {
    let empty: WaitResponse = response::lenient_json("wait", &response(200, "")).expect("empty ok");
    assert!(!empty.ok);
    let ok: WaitResponse =
        response::lenient_json("wait", &response(200, r#"{"ok":true}"#)).expect("ok");
    assert!(ok.ok);
    let full: WaitResponse = response::lenient_json(
        "wait",
        &response(200, r#"{"ok":true,"state":"stopped","version":"01H"}"#),
    )
    .expect("full");
    assert_eq!(full.state, Some(MachineState::Stopped));
    let bad =
        response::json::<Machine>("get_machine", &response(200, "<html>")).expect_err("not json");
    assert_eq!(bad.kind(), FlyErrorKind::InvalidResponse);
    assert!(!bad.is_not_found() && !bad.is_transient());
}

#[test]
fn get_app_404_is_none() {
    let none: Option<App> =
        response::optional_json("get_app", &response(404, r#"{"error":"app not found"}"#))
            .expect("none");
    assert!(none.is_none());
    let err = response::optional_json::<App>("get_app", &response(500, "boom"))
        .expect_err("500 is an error");
    assert!(err.is_transient());
}

// ---- error classification ----

#[test]
fn production_capacity_bodies_are_capacity() {
    let volume_412 = FlyError::status(
        "create_machine",
        412,
        r#"{"error":"insufficient resources to create new machine with existing volume 'vol_4y5gkog8ek0rj3gr'"}"#,
    );
    assert!(volume_412.is_capacity());
    assert_eq!(volume_412.kind(), FlyErrorKind::Capacity);
    let memory_409 = FlyError::status(
        "update_machine",
        409,
        r#"{"error":"aborted: could not reserve resource for machine: insufficient memory available to fulfill request"}"#,
    );
    assert!(memory_409.is_capacity());
    let cpus_409 = FlyError::status(
        "update_machine",
        409,
        r#"{"error":"aborted: could not reserve resource for machine: insufficient CPUs available to fulfill request on the current host"}"#,
    );
    assert!(cpus_409.is_capacity());
    let by_status = FlyError::status(
        "create_machine",
        412,
        r#"{"error":"no room","status":"volume_placement_capacity"}"#,
    );
    assert!(by_status.is_capacity());
    let raw_text = FlyError::status("create_machine", 412, "Insufficient Resources somewhere");
    assert!(raw_text.is_capacity(), "raw text, case-insensitive");
    for capacity in [&volume_412, &memory_409] {
        assert!(!capacity.is_not_found());
        assert!(!capacity.is_transient());
    }
}

#[test]
fn other_conflicts_are_not_capacity() {
    for (status, body) in [
        (
            412,
            r#"{"error":"min_secrets_version 3 is not yet available on this app"}"#,
        ),
        (
            409,
            r#"{"error":"aborted: machine is replacing: concurrent update in progress"}"#,
        ),
        (
            412,
            r#"{"error":"unable to start machine from current state"}"#,
        ),
        (
            409,
            r#"{"status":"error","message":"lease currently held"}"#,
        ),
        (500, r#"{"error":"insufficient memory"}"#),
        (
            422,
            r#"{"error":"Your organization has reached its machine limit. Please contact billing@fly.io"}"#,
        ),
    ] {
        let err = FlyError::status("update_machine", status, body);
        assert!(!err.is_capacity(), "{status} {body}");
    }
    let conflict = FlyError::status(
        "update_machine",
        409,
        r#"{"error":"aborted: machine is replacing"}"#,
    );
    assert_eq!(conflict.kind(), FlyErrorKind::Conflict);
    assert!(!conflict.is_name_taken());
    assert_eq!(
        FlyError::status(
            "start_machine",
            412,
            r#"{"error":"unable to start machine from current state"}"#
        )
        .kind(),
        FlyErrorKind::PreconditionFailed
    );
}

#[test]
fn only_404_is_not_found() {
    let gone = FlyError::status("get_machine", 404, r#"{"error":"machine not found"}"#);
    assert!(gone.is_not_found());
    assert_eq!(gone.kind(), FlyErrorKind::NotFound);
    assert_eq!(gone.message(), "machine not found");
    assert_eq!(
        gone.to_string(),
        "Fly API get_machine failed (404): machine not found"
    );
    for status in [400, 401, 403, 408, 409, 410, 412, 422, 429, 500, 502, 503] {
        assert!(
            !FlyError::status("get_machine", status, "{}").is_not_found(),
            "{status}"
        );
    }
    let transport = FlyError::transport(
        "get_machine",
        TransportError::new(TransportErrorKind::Connect, "refused"),
    );
    assert!(!transport.is_not_found());
}

#[test]
fn transient_classification() {
    for status in [408, 429, 500, 502, 503, 504] {
        assert!(FlyError::status("x", status, "").is_transient(), "{status}");
    }
    for status in [400, 401, 404, 409, 412, 422] {
        assert!(
            !FlyError::status("x", status, "").is_transient(),
            "{status}"
        );
    }
    for kind in [
        TransportErrorKind::Connect,
        TransportErrorKind::Timeout,
        TransportErrorKind::Io,
    ] {
        let err = FlyError::transport("x", TransportError::new(kind, "net"));
        assert!(err.is_transient());
        assert_eq!(err.kind(), FlyErrorKind::Transport);
    }
    let invalid = FlyError::transport(
        "x",
        TransportError::new(TransportErrorKind::InvalidRequest, "bad url"),
    );
    assert!(!invalid.is_transient());
    let wait = FlyError::status(
        "wait_machine",
        408,
        r#"{"error":"machine failed to reach desired state, started, currently stopped"}"#,
    );
    assert_eq!(wait.kind(), FlyErrorKind::Timeout);
}

#[test]
fn rate_limit_with_retry_after_and_request_id() {
    let err = FlyError::from_response(
        "start_machine",
        &HttpResponse {
            status: 429,
            headers: vec![
                ("Retry-After".to_owned(), "2".to_owned()),
                (
                    "fly-request-id".to_owned(),
                    "01K4AS19K057WY04RHM2N58YBV-yyz".to_owned(),
                ),
            ],
            body: br#"{"error":"rate limit exceeded"}"#.to_vec(),
        },
    );
    assert!(err.is_rate_limited());
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    assert_eq!(err.request_id(), Some("01K4AS19K057WY04RHM2N58YBV-yyz"));
    assert_eq!(FlyError::status("x", 429, "").retry_after(), None);
}

#[test]
fn name_taken_and_already_exists() {
    let taken = FlyError::status(
        "create_app",
        422,
        r#"{"error":"Validation failed: Name has already been taken","status":"name_taken"}"#,
    );
    assert!(taken.is_name_taken());
    assert_eq!(taken.fly_status(), Some("name_taken"));
    assert!(FlyError::status("create_app", 409, r#"{"error":"exists"}"#).is_name_taken());
    let invalid = FlyError::status(
        "create_app",
        422,
        r#"{"error":"Validation failed: Name under 63 chars using numbers, lowercase letters and dashes"}"#,
    );
    assert!(!invalid.is_name_taken());
    assert_eq!(invalid.kind(), FlyErrorKind::InvalidArgument);
    assert!(FlyError::status("allocate_ip", 409, "").is_already_exists());
    assert!(FlyError::status("allocate_ip", 422, "").is_already_exists());
}

#[test]
fn message_prefers_message_then_error_then_body() {
    assert_eq!(
        FlyError::status("x", 409, r#"{"status":"error","message":"m","error":"e"}"#).message(),
        "m"
    );
    assert_eq!(
        FlyError::status("x", 400, "plain text").message(),
        "plain text"
    );
    assert_eq!(FlyError::status("x", 400, "").message(), "(empty body)");
    let long = "x".repeat(10_000);
    assert!(FlyError::status("x", 500, long).body().chars().count() < 5000);
}

// ---- client over a recording transport ----

struct Recorder {
    sent: RefCell<Vec<HttpRequest>>,
    replies: RefCell<VecDeque<Result<HttpResponse, TransportError>>>,
}

impl Recorder {
    fn replying(replies: Vec<Result<HttpResponse, TransportError>>) -> Self {
        Self {
            sent: RefCell::new(Vec::new()),
            replies: RefCell::new(replies.into()),
        }
    }
}

impl HttpTransport for Recorder {
    fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        self.sent.borrow_mut().push(request);
        self.replies.borrow_mut().pop_front().unwrap_or_else(|| {
            Err(TransportError::new(
                TransportErrorKind::Other,
                "no reply queued",
            ))
        })
    }
}

#[test]
fn client_round_trip_and_errors() {
    let recorder = Recorder::replying(vec![
        Ok(response(200, MACHINE_JSON)),
        Ok(response(404, r#"{"error":"machine not found"}"#)),
        Err(TransportError::new(
            TransportErrorKind::Timeout,
            "timed out",
        )),
        Ok(response(200, "")),
        Ok(response(
            201,
            r#"{"name":"K","digest":"abc","version":7,"Version":7}"#,
        )),
        Ok(response(
            200,
            r#"{"secrets":[{"name":"K","digest":"abc"}]}"#,
        )),
        Ok(response(
            200,
            r#"{"ips":[{"ip":"2a09::1","region":"global","shared":false}]}"#,
        )),
    ]);
    let client = FlyClient::new(
        &recorder,
        &FlyClientConfig::new("tok").with_base_url("http://127.0.0.1:9"),
    );
    let machine = client
        .get_machine("app", "1857156b526dd8")
        .expect("machine");
    assert_eq!(machine.id, "1857156b526dd8");
    let gone = client.get_machine("app", "nope").expect_err("404");
    assert!(gone.is_not_found());
    assert_eq!(gone.context(), "get_machine");
    let timeout = client.stop_machine("app", "m").expect_err("transport");
    assert!(timeout.is_transient());
    client
        .destroy_machine("app", "m", true)
        .expect("empty 200 is fine");
    assert_eq!(client.set_secret("app", "K", "v").expect("set").version, 7);
    assert_eq!(client.list_secrets("app").expect("list")[0].name, "K");
    assert_eq!(
        client.list_ips("app").expect("ips")[0].ip.as_deref(),
        Some("2a09::1")
    );
    let sent = recorder.sent.borrow();
    assert_eq!(sent.len(), 7);
    assert_eq!(
        sent[0].url,
        "http://127.0.0.1:9/v1/apps/app/machines/1857156b526dd8"
    );
    assert_eq!(
        sent[3].url,
        "http://127.0.0.1:9/v1/apps/app/machines/m?force=true"
    );
    assert!(
        sent.iter()
            .all(|r| r.header("authorization") == Some("Bearer tok"))
    );
}

#[test]
fn client_refuses_stopped_wait_without_sending() {
    let recorder = Recorder::replying(Vec::new());
    let client = FlyClient::new(&recorder, &FlyClientConfig::new("tok"));
    let err = client
        .wait_machine("app", "m", &WaitRequest::new(WaitState::Stopped, 60))
        .expect_err("refused");
    assert_eq!(err.kind(), FlyErrorKind::InvalidRequest);
    assert!(recorder.sent.borrow().is_empty());
}

#[test]
fn an_empty_error_field_falls_back_to_the_body_and_never_gives_an_empty_message() {
    // Found by the fly_response fuzz target: `{"error":""}` gave an error with no message at all.
    let error = FlyError::status("get machine", 500, r#"{"error":""}"#);
    assert_eq!(error.message(), r#"{"error":""}"#);
    let error = FlyError::status("get machine", 503, r#"{"message":" ","error":"busy"}"#);
    assert_eq!(error.message(), "busy");
}
