//! Every error status of the original's HTTP surface, with its exact JSON body:
//! 400 (bad JSON, invalid config with field errors, missing query), 401, 403, 404, 409, 503.

use anyhow::ensure;
use reqwest::Method;
use serde_json::json;

use super::system::{FlyFault, Reply, System};

/// 401 `{"error":"Authentication required"}`; the original's proxy added
/// `"hint":"No active session. Please log in."` to the same error, which is accepted too.
fn expect_authentication_required(reply: &Reply) -> anyhow::Result<()> {
    let body = reply.expect(401)?;
    ensure!(body["error"] == "Authentication required", "{body}");
    let extra: Vec<&String> = body
        .as_object()
        .map(|o| o.keys().filter(|k| *k != "error").collect())
        .unwrap_or_default();
    ensure!(
        extra.is_empty()
            || (extra == ["hint"] && body["hint"] == "No active session. Please log in."),
        "{body}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_routes_need_a_valid_jwt() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-401";
    sys.provision(user).await?;
    sys.start(user).await?;

    // No credentials at all.
    for path in [
        "/",
        "/api/kiloclaw/status",
        "/api/kiloclaw/config",
        "/anything?x=1",
    ] {
        expect_authentication_required(&sys.send(sys.request(Method::GET, path)).await?)?;
    }
    // A non-Bearer Authorization header does not count either.
    expect_authentication_required(
        &sys.send(
            sys.request(Method::GET, "/")
                .header("authorization", "Basic dXNlcjpwYXNz"),
        )
        .await?,
    )?;

    // Tokens that are presented but unacceptable: 401 with a message, never the token.
    let now = System::now_s();
    let cases = [
        (
            "wrong key",
            sys.token_signed_with(
                b"another-secret-of-at-least-32-bytes!!",
                json!({"kiloUserId": user, "version": 3, "iat": now, "exp": now + 300}),
            )?,
        ),
        (
            "expired",
            sys.token_with_claims(
                json!({"kiloUserId": user, "version": 3, "iat": now - 600, "exp": now - 300}),
            )?,
        ),
        (
            "old version",
            sys.token_with_claims(
                json!({"kiloUserId": user, "version": 2, "iat": now, "exp": now + 300}),
            )?,
        ),
        (
            "no user",
            sys.token_with_claims(json!({"version": 3, "iat": now, "exp": now + 300}))?,
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, token) in cases {
        let reply = sys
            .send(sys.request(Method::GET, "/").bearer_auth(&token))
            .await?;
        let body = reply.expect(401)?;
        let message = body["error"].as_str().unwrap_or_default();
        ensure!(!message.is_empty(), "{what}: 401 without a message: {body}");
        ensure!(
            !message.contains(&token),
            "{what}: the error echoes the token"
        );
        ensure!(
            body.as_object().is_some_and(|o| o.len() == 1),
            "{what}: only `error`: {body}"
        );
    }

    // The valid token passes (the same request reaches the machine).
    sys.send(sys.as_user(user, Method::GET, "/")?)
        .await?
        .expect_echo(200)?;
    Ok(())
}

/// Sends a request head announcing a large body, then only a few bytes of it, and returns the
/// status line the app answers with (the body is never completed).
async fn status_line_for_a_body_that_never_comes(
    sys: &System,
    head: &str,
) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(sys.address()).await?;
    stream
        .write_all(format!("{head}content-length: 1000000\r\n\r\n{{\"userId\"").as_bytes())
        .await?;
    let mut answer = vec![0_u8; 512];
    // Well under the host's 30 s body idle timeout, which would otherwise answer for the router.
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .map_err(|_| anyhow::anyhow!("no answer before the body: the app waited for it"))??;
    Ok(String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_are_refused_before_their_body_is_read() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let proxied =
        status_line_for_a_body_that_never_comes(&sys, "POST /upload HTTP/1.1\r\nhost: app\r\n")
            .await?;
    ensure!(proxied.starts_with("HTTP/1.1 401"), "{proxied}");
    let platform = status_line_for_a_body_that_never_comes(
        &sys,
        "POST /api/platform/provision HTTP/1.1\r\nhost: app\r\nx-internal-api-key: wrong\r\n",
    )
    .await?;
    ensure!(platform.starts_with("HTTP/1.1 403"), "{platform}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_routes_need_the_internal_key() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let body = r#"{"userId":"user-403"}"#;
    for key in [None, Some("wrong-key"), Some("")] {
        let reply = sys
            .platform_raw(Method::POST, "/api/platform/provision", body, key)
            .await?;
        reply.expect_json(403, json!({"error": "Forbidden"}))?;
        let reply = sys
            .platform_raw(Method::GET, "/api/platform/status?userId=user-403", "", key)
            .await?;
        reply.expect_json(403, json!({"error": "Forbidden"}))?;
    }
    // A user JWT does not open platform routes.
    let reply = sys
        .send(sys.as_user(
            "user-403",
            Method::GET,
            "/api/platform/status?userId=user-403",
        )?)
        .await?;
    reply.expect_json(403, json!({"error": "Forbidden"}))?;
    // Nothing was created by the refused calls.
    let status = sys.status("user-403").await?;
    ensure!(
        status["userId"].is_null(),
        "refused provision created state: {status}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400_with_field_errors_and_change_nothing() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    sys.platform_raw(
        Method::POST,
        "/api/platform/provision",
        "{not json",
        Some(sys.internal_key()),
    )
    .await?
    .expect_json(400, json!({"error": "Malformed JSON body"}))?;
    sys.platform_raw(
        Method::POST,
        "/api/platform/start",
        "",
        Some(sys.internal_key()),
    )
    .await?
    .expect_json(400, json!({"error": "Malformed JSON body"}))?;

    let invalid = [
        (json!({}), "userId"),
        (json!({"userId": ""}), "userId"),
        (json!({"userId": 42}), "userId"),
        (
            json!({"userId": "u-400", "envVars": {"1BAD": "x"}}),
            "envVars",
        ),
        (
            json!({"userId": "u-400", "envVars": {"KILOCLAW_ENC_X": "x"}}),
            "envVars",
        ),
        (json!({"userId": "u-400", "envVars": {"OK": 5}}), "envVars"),
        (
            json!({"userId": "u-400", "machineSize": {"cpus": "two", "memory_mb": 1024}}),
            "machineSize",
        ),
    ];
    for (body, field) in invalid {
        let reply = sys
            .platform(Method::POST, "/api/platform/provision", Some(body.clone()))
            .await?;
        let reply_body = reply.expect(400)?;
        ensure!(
            reply_body["error"] == "Invalid request",
            "{body}: {reply_body}"
        );
        let details = reply_body["details"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        ensure!(
            details
                .keys()
                .any(|k| k == field || k.starts_with(&format!("{field}."))),
            "{body}: details should name {field}: {reply_body}"
        );
        ensure!(
            details.values().all(|v| v
                .as_array()
                .is_some_and(|a| !a.is_empty() && a.iter().all(|m| m.is_string()))),
            "details are lists of messages: {reply_body}"
        );
    }
    ensure!(
        sys.status("u-400").await?["userId"].is_null(),
        "an invalid provision stored nothing"
    );
    ensure!(
        sys.sim().volumes().await?.is_empty(),
        "an invalid provision created no volume"
    );

    sys.platform(Method::GET, "/api/platform/status", None)
        .await?
        .expect_json(400, json!({"error": "userId query parameter is required"}))?;

    // Unknown users: status is 200 with nulls (as the original), lifecycle calls are refused.
    let status = sys.status("never-provisioned").await?;
    ensure!(
        status["status"].is_null() && status["sandboxId"].is_null(),
        "{status}"
    );
    let reply = sys
        .platform(
            Method::POST,
            "/api/platform/start",
            Some(json!({"userId": "never-provisioned"})),
        )
        .await?;
    let body = reply.expect(404)?;
    ensure!(
        body["error"] == "Instance not provisioned",
        "start unknown user: {body}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_404_until_a_machine_exists() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-404";
    let not_provisioned = json!({
        "error": "Instance not provisioned",
        "hint": "Your instance has not been created yet. Start it from the dashboard."
    });
    sys.send(sys.as_user(user, Method::GET, "/")?)
        .await?
        .expect_json(404, not_provisioned.clone())?;
    sys.provision(user).await?;
    // Provisioned but never started: still no machine.
    sys.send(sys.as_user(user, Method::GET, "/x")?)
        .await?
        .expect_json(404, not_provisioned)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_409_while_destroying() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-409";
    sys.provision(user).await?;
    sys.start(user).await?;

    // Fly refuses to delete the machine (a transient 500): the destroy stays pending.
    sys.sim()
        .inject(FlyFault::FailMachineDelete { status: 500 })
        .await?;
    sys.destroy(user).await?;
    let status = sys.status(user).await?;
    ensure!(
        status["status"] == "destroying",
        "status with a pending destroy: {status}"
    );

    sys.send(sys.as_user(user, Method::GET, "/")?)
        .await?
        .expect_json(409, json!({"error": "Instance is being destroyed", "hint": "This instance is being torn down."}))?;
    // Starting a destroying instance is refused too.
    sys.platform(Method::POST, "/api/platform/start", Some(json!({"userId": user})))
        .await?
        .expect_json(409, json!({"error": "Instance is being destroyed", "hint": "This instance is being torn down."}))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_503_when_the_instance_is_not_running() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-503";
    sys.provision(user).await?;
    sys.start(user).await?;
    sys.stop(user).await?;
    // Stopped with a machine id: the request is forwarded, Fly Proxy cannot reach the stopped
    // machine (autostart is off) and answers 503 itself; since the user stopped the instance no
    // recovery is attempted and Fly's answer stands (as in the original).
    let reply = sys.send(sys.as_user(user, Method::GET, "/")?).await?;
    ensure!(
        reply.status == 503,
        "stopped instance: {} {}",
        reply.status,
        reply.text
    );
    let status = sys.status(user).await?;
    ensure!(
        status["status"] == "stopped",
        "the proxy did not start a stopped instance: {status}"
    );

    // Fly itself unreachable (a network failure): the original's JSON 503.
    sys.sim().shut_down().await;
    sys.send(sys.as_user(user, Method::GET, "/")?)
        .await?
        .expect_json(
            503,
            json!({"error": "Instance not reachable", "hint": "Your instance may not be running. Start it from the dashboard."}),
        )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_and_unknown_routes_answer_precisely() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-routes";
    sys.provision(user).await?;
    // The storage API of the original is gone for good.
    for (method, path) in [
        (Method::GET, "/api/admin/storage"),
        (Method::POST, "/api/admin/storage/sync"),
    ] {
        sys.send(sys.as_user(user, method, path)?).await?.expect_json(
            410,
            json!({"error": "Storage sync has been removed. Data now persists via Fly Volumes."}),
        )?;
    }
    // Debug routes are gone before any auth.
    let reply = sys.get("/debug/env").await?;
    ensure!(
        reply.status == 404,
        "debug: {} {}",
        reply.status,
        reply.text
    );
    // Unknown platform paths are 404 and wrong methods 405 (the original proxied them into a 401).
    sys.platform(Method::GET, "/api/platform/nope", None)
        .await?
        .expect_json(404, json!({"error": "Not found"}))?;
    let reply = sys
        .platform(Method::GET, "/api/platform/provision", None)
        .await?;
    ensure!(
        reply.status == 405,
        "wrong method: {} {}",
        reply.status,
        reply.text
    );
    ensure!(
        reply.headers.get("allow").and_then(|v| v.to_str().ok()) == Some("POST"),
        "Allow header: {:?}",
        reply.headers
    );
    // The user's own status equals what the platform sees.
    let own = sys
        .send(sys.as_user(user, Method::GET, "/api/kiloclaw/status")?)
        .await?
        .expect(200)?;
    ensure!(own == sys.status(user).await?, "user status differs: {own}");
    Ok(())
}

/// Proof 5 of issue 11 (hostile input), the token and path parts in one table: forged and
/// malformed tokens are 401 with a message that never echoes them, and odd or encoded spellings of
/// platform paths never run a platform operation — with a user's valid token they at most reach
/// that user's own machine, without one they are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_and_disguised_platform_paths_are_refused() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-hostile";
    sys.provision(user).await?;
    sys.start(user).await?;
    let machine = sys.status_field(user, "flyMachineId").await?;

    let now = System::now_s();
    let claims = json!({"kiloUserId": user, "version": 3, "iat": now, "exp": now + 300});
    let oversize = format!(
        "{}.{}.{}",
        "a".repeat(6_000),
        "b".repeat(6_000),
        "c".repeat(100)
    );
    let tokens = [
        (
            "alg none, no signature",
            sys.token_with_header(json!({"alg": "none", "typ": "JWT"}), claims.clone(), false)?,
        ),
        (
            "alg none, HMAC signature",
            sys.token_with_header(json!({"alg": "none", "typ": "JWT"}), claims.clone(), true)?,
        ),
        (
            "RS256 header over an HMAC signature (key confusion)",
            sys.token_with_header(json!({"alg": "RS256", "typ": "JWT"}), claims.clone(), true)?,
        ),
        (
            "HS512 with the right secret",
            sys.token_with_algorithm(jsonwebtoken::Algorithm::HS512, claims.clone())?,
        ),
        (
            "no exp",
            sys.token_with_claims(json!({"kiloUserId": user, "version": 3, "iat": now}))?,
        ),
        (
            "exp as a string",
            sys.token_with_claims(
                json!({"kiloUserId": user, "version": 3, "iat": now, "exp": (now + 300).to_string()}),
            )?,
        ),
        (
            "user id as a number",
            sys.token_with_claims(json!({"kiloUserId": 42, "version": 3, "iat": now, "exp": now + 300}))?,
        ),
        (
            "not yet valid",
            sys.token_with_claims(
                json!({"kiloUserId": user, "version": 3, "iat": now, "nbf": now + 600, "exp": now + 900}),
            )?,
        ),
        ("two segments", "eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ".to_owned()),
        ("empty", String::new()),
        ("oversize", oversize),
    ];
    for (what, token) in &tokens {
        let reply = sys
            .send(
                sys.request(Method::GET, "/")
                    .header("authorization", format!("Bearer {token}")),
            )
            .await?;
        if what == &"oversize" && reply.status == 431 {
            continue;
        }
        let body = reply.expect(401).map_err(|e| e.context(*what))?;
        let message = body["error"].as_str().unwrap_or_default();
        ensure!(!message.is_empty(), "{what}: 401 without a message: {body}");
        ensure!(
            token.is_empty() || !reply.text.contains(token.as_str()),
            "{what}: the answer echoes the token"
        );
    }

    let disguised = [
        "/api/platform%2Fdestroy",
        "/api/%70latform/destroy",
        "//api/platform/destroy",
        "/api//platform/destroy",
        "/./api/platform/destroy",
        "/api/platform/../platform/destroy",
        "/api/platform/%2e%2e/platform/destroy",
        "/API/PLATFORM/DESTROY",
        "/api/platform/destroy%00",
        "/api/platform/destroy/",
    ];
    let destroy = json!({"userId": user}).to_string();
    for path in disguised {
        // Without credentials: refused, or a 404 for a path that is no route.
        let anonymous = sys
            .send(
                sys.request(Method::POST, path)
                    .header("content-type", "application/json")
                    .body(destroy.clone()),
            )
            .await?;
        ensure!(
            matches!(anonymous.status, 400 | 401 | 403 | 404),
            "{path} without credentials answered {} {}",
            anonymous.status,
            anonymous.text
        );
        // With the user's token: at most the user's own machine sees it.
        let as_user = sys
            .send(
                sys.as_user(user, Method::POST, path)?
                    .header("content-type", "application/json")
                    .body(destroy.clone()),
            )
            .await?;
        if as_user.status == 200 {
            let echo = as_user.expect_echo(200)?;
            ensure!(
                echo.machine_id == machine,
                "{path} reached {}",
                echo.machine_id
            );
        } else {
            ensure!(
                matches!(as_user.status, 400 | 401 | 403 | 404),
                "{path} as the user answered {} {}",
                as_user.status,
                as_user.text
            );
        }
    }
    ensure!(
        sys.status(user).await?["status"] == "running",
        "no disguised path destroyed the instance"
    );
    Ok(())
}
