//! Variables: templates, precedence, undefined and invalid names, missing required ones,
//! environment, files.

use crate::harness::Scenario;
use kiloclaw_host::LoadError;

fn with_required(s: &mut Scenario) {
    s.config.variables.push(("api_key".into(), "s3cr3t".into()));
    s.config
        .variables
        .push(("from_env".into(), "override".into()));
}

#[tokio::test]
async fn component_variables_render_templates() {
    let mut s = Scenario::new("variables", &[]);
    with_required(&mut s);
    s.config.variables.push(("region".into(), "fra".into()));
    let host = s.start().await;
    assert_eq!(
        host.get("/?op=var&name=greeting").await,
        (200, "hello, friend".into())
    );
    assert_eq!(
        host.get("/?op=var&name=api_key").await,
        (200, "s3cr3t".into())
    );
    assert_eq!(
        host.get("/?op=var&name=endpoint").await,
        (200, "https://fra.example.com".into())
    );
    host.stop().await;
}

#[tokio::test]
async fn undefined_and_invalid_variable_names() {
    let mut s = Scenario::new("variables", &[]);
    with_required(&mut s);
    let host = s.start().await;
    // `region` is an app variable but not a component variable: not visible to the guest.
    let (status, body) = host.get("/?op=var&name=region").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = host.get("/?op=var&name=Not-Valid").await;
    assert_eq!(status, 400, "{body}");
    host.stop().await;
}

#[tokio::test]
async fn environment_and_files_as_spin_gives_them() {
    let mut s = Scenario::new("variables", &[]);
    with_required(&mut s);
    let host = s.start().await;
    assert_eq!(host.get("/?op=env&name=MODE").await, (200, "test".into()));
    assert_eq!(
        host.get("/?op=env&name=HOME").await.0,
        404,
        "host env must not leak"
    );
    assert_eq!(
        host.get("/?op=file&path=/assets/a.txt").await,
        (200, "asset content\n".into())
    );
    assert_eq!(
        host.get("/?op=file&path=/notes/one.txt").await,
        (200, "note one\n".into())
    );
    assert_eq!(host.get("/?op=file&path=/notes/skip.md").await.0, 404);
    host.stop().await;
}

#[tokio::test]
async fn missing_required_variable_is_a_load_error_naming_it() {
    let s = Scenario::new("missing-variable", &[]);
    match s.load().await {
        Err(LoadError::Variables(message)) => {
            assert!(message.contains("fly_api_token"), "{message}");
            assert!(!message.contains("present"), "{message}");
        }
        other => panic!("expected a variables error, got {other:?}"),
    }
}

#[tokio::test]
async fn spin_variable_env_provider_in_a_real_process() {
    // The env provider reads the process environment, so exercise it in a child host.
    let s = Scenario::new("variables", &[]);
    let child = crate::concurrency::HostProcess::spawn(
        &s.config.manifest_path,
        &s.dir.path().join(".spin"),
        None,
        &[
            ("SPIN_VARIABLE_FROM_ENV", "from-the-env"),
            ("SPIN_VARIABLE_API_KEY", "env-key"),
        ],
        &["--variable", "api_key=cli-wins"],
    )
    .await;
    let client = reqwest::Client::new();
    let get = |name: &'static str| {
        let client = client.clone();
        let url = format!("{}/?op=var&name={name}", child.base);
        async move {
            client
                .get(url)
                .send()
                .await
                .expect("request")
                .text()
                .await
                .expect("body")
        }
    };
    assert_eq!(get("from_env").await, "from-the-env");
    assert_eq!(get("api_key").await, "cli-wins");
    let printed = client
        .get(format!("{}/?op=print&msg=hello-from-guest", child.base))
        .send()
        .await
        .expect("request");
    assert_eq!(printed.status().as_u16(), 200);
    let log = child.stop().await;
    let guest_line = log
        .lines()
        .find(|l| l.contains("hello-from-guest") && l.contains("\"stream\":\"stdout\""))
        .unwrap_or_else(|| panic!("guest stdout missing from the host log: {log}"));
    assert!(
        guest_line.contains("\"component\":\"probe\""),
        "{guest_line}"
    );
    let access = log
        .lines()
        .find(|l| l.contains("\"tag\":\"access\"") && l.contains("\"status\":200"))
        .unwrap_or_else(|| panic!("no access-log line: {log}"));
    for field in [
        "\"method\":\"GET\"",
        "\"path\":\"/\"",
        "\"component\":\"probe\"",
        "duration_ms",
    ] {
        assert!(access.contains(field), "{field} missing in {access}");
    }
    assert!(
        !log.contains("cli-wins") && !log.contains("env-key"),
        "secret leaked into the log"
    );
}
