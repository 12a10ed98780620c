//! Sign-in, end to end over HTTP: the access gateway's one-time codes, the `kiloclaw-auth`
//! cookie, the token-revocation check against a real PostgreSQL (a database of each test's own),
//! its failures (no such user, pepper mismatch, database down, host not allowed), attempt limits,
//! restoring a lost record from `kiloclaw_instances`, and the database-free local path.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use reqwest::Method;
use serde_json::{Value, json};

use super::database::TestDatabase;
use super::system::{Reply, System, urlencode};

/// The revocation cache lifetime the tests run with: short, so a changed pepper shows quickly.
pub(super) const TTL_S: u64 = 1;

async fn boot(db: &TestDatabase) -> anyhow::Result<System> {
    System::boot_with_variables(db.variables(TTL_S)).await
}

/// Submits the access-code form as a browser would.
pub(super) async fn submit_code(sys: &System, user: &str, code: &str) -> anyhow::Result<Reply> {
    sys.send(
        sys.request(Method::POST, "/kilo-access-gateway")
            .form(&[("code", code), ("userId", user)]),
    )
    .await
}

/// The `kiloclaw-auth` cookie a reply sets, checked for its attributes.
pub(super) fn session_cookie(reply: &Reply, secure: bool) -> anyhow::Result<String> {
    let header = reply
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .with_context(|| format!("no set-cookie: {} {}", reply.status, reply.text))?;
    let (pair, attributes) = header.split_once(';').context("cookie attributes")?;
    let token = pair
        .strip_prefix("kiloclaw-auth=")
        .with_context(|| format!("not the session cookie: {header}"))?;
    for attribute in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=86400"] {
        ensure!(
            attributes.contains(attribute),
            "{attribute} missing: {header}"
        );
    }
    ensure!(
        attributes.contains("Secure") == secure,
        "Secure should be {secure}: {header}"
    );
    Ok(token.to_owned())
}

/// A request carrying the session cookie.
pub(super) fn with_cookie(
    sys: &System,
    method: Method,
    path: &str,
    token: &str,
) -> reqwest::RequestBuilder {
    sys.request(method, path)
        .header("cookie", format!("theme=dark; kiloclaw-auth={token}"))
}

/// The dashboard's "Open" link followed with the session cookie.
async fn open_gateway(sys: &System, user: &str, cookie: &str) -> anyhow::Result<Reply> {
    sys.send(with_cookie(
        sys,
        Method::GET,
        &format!("/kilo-access-gateway?userId={}", urlencode(user)),
        cookie,
    ))
    .await
}

/// A Next.js-style JWT for `user` carrying `pepper`.
fn jwt(sys: &System, user: &str, pepper: Option<&str>) -> anyhow::Result<String> {
    let now = System::now_s();
    sys.token_with_claims(json!({
        "kiloUserId": user, "apiTokenPepper": pepper, "version": 3,
        "iat": now, "exp": now + 300,
    }))
}

fn error_of(reply: &Reply) -> String {
    reply
        .json()
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{} {}", reply.status, reply.text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_flow_code_cookie_proxy_then_a_changed_pepper_revokes_within_the_ttl()
-> anyhow::Result<()> {
    let db = TestDatabase::create("flow").await?;
    let sys = boot(&db).await?;
    browser_flow(&sys, &db, "user-browser").await
}

/// The browser's way in, over HTTP only, on an app whose variables are `db.variables(TTL_S)`:
/// the form, a code Next.js made, the cookie, a proxied request, then a changed pepper refusing
/// the cookie and a Next.js JWT within the TTL (and the gateway's cookie shortcut with them).
pub(super) async fn browser_flow(
    sys: &System,
    db: &TestDatabase,
    user: &str,
) -> anyhow::Result<()> {
    db.add_user(user, Some("pepper-1")).await?;
    db.add_instance(user).await?;
    sys.provision(user).await?;
    sys.start(user).await?;

    // The dashboard's "Open" link: no session yet, so the form.
    let form = sys
        .get(&format!("/kilo-access-gateway?userId={}", urlencode(user)))
        .await?;
    ensure!(
        form.status == 200 && form.text.contains("name=\"code\""),
        "{}",
        form.text
    );

    // Next.js made a code; the user types it (in lower case, with spaces).
    db.add_code(user, "ABCDE-FGHJK", 600).await?;
    let accepted = submit_code(sys, user, "  abcde-fghjk ").await?;
    ensure!(
        accepted.status == 200 && accepted.text.contains("Access code accepted"),
        "{} {}",
        accepted.status,
        accepted.text
    );
    let cookie = session_cookie(&accepted, true)?;
    let token = sys.expected_gateway_token(user);
    ensure!(
        accepted
            .text
            .contains(&format!("/#token={token}&amp;gatewayUrl=")),
        "the page sends the browser on with the gateway token: {}",
        accepted.text
    );
    ensure!(db.code_status("ABCDE-FGHJK").await?.as_deref() == Some("redeemed"));

    // The cookie now opens the gateway directly and reaches the user's machine.
    let redirect = open_gateway(sys, user, &cookie).await?;
    ensure!(
        redirect.status == 302,
        "{} {}",
        redirect.status,
        redirect.text
    );
    let echo = sys
        .send(with_cookie(sys, Method::GET, "/chat?session=1", &cookie))
        .await?
        .expect_echo(200)?;
    ensure!(echo.path == "/chat", "{echo:?}");
    let nextjs_token = jwt(sys, user, Some("pepper-1"))?;
    sys.send(
        sys.request(Method::GET, "/api/kiloclaw/status")
            .bearer_auth(&nextjs_token),
    )
    .await?
    .expect(200)?;

    // Signing out everywhere changes the pepper: within the TTL both credentials are refused.
    db.set_pepper(user, Some("pepper-2")).await?;
    let changed = Instant::now();
    loop {
        let proxied = sys
            .send(with_cookie(sys, Method::GET, "/chat", &cookie))
            .await?;
        if proxied.status == 401 {
            ensure!(error_of(&proxied) == "Token revoked", "{}", proxied.text);
            break;
        }
        ensure!(proxied.status == 200, "{} {}", proxied.status, proxied.text);
        ensure!(
            changed.elapsed() < Duration::from_secs(TTL_S + 3),
            "still accepted {:?} after the pepper changed",
            changed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = sys
        .send(
            sys.request(Method::GET, "/api/kiloclaw/status")
                .bearer_auth(&nextjs_token),
        )
        .await?;
    ensure!(
        status.status == 401 && error_of(&status) == "Token revoked",
        "{}",
        status.text
    );
    // The gateway's cookie path applies the same rule: the form, not the gateway token.
    let page = open_gateway(sys, user, &cookie).await?;
    ensure!(
        page.status == 200 && page.text.contains("name=\"code\""),
        "{} {}",
        page.status,
        page.text
    );
    // A token with the new pepper works.
    sys.send(
        sys.request(Method::GET, "/api/kiloclaw/status")
            .bearer_auth(jwt(sys, user, Some("pepper-2"))?),
    )
    .await?
    .expect(200)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pepper_check_follows_the_original_status_codes() -> anyhow::Result<()> {
    let db = TestDatabase::create("pepper").await?;
    db.add_user("with-pepper", Some("p")).await?;
    db.add_user("null-pepper", None).await?;
    let sys = boot(&db).await?;
    // (user, the token's pepper, status, error); null/null and equal strings pass (the config
    // of an unprovisioned user is 200).
    let cases: [(&str, Option<&str>, u16, Option<&str>); 6] = [
        ("nobody", None, 401, Some("User not found")),
        ("with-pepper", Some("wrong"), 401, Some("Token revoked")),
        ("with-pepper", None, 401, Some("Token revoked")),
        ("null-pepper", Some("p"), 401, Some("Token revoked")),
        ("null-pepper", None, 200, None),
        ("with-pepper", Some("p"), 200, None),
    ];
    for (user, pepper, status, error) in cases {
        let reply = sys
            .send(
                sys.request(Method::GET, "/api/kiloclaw/config")
                    .bearer_auth(jwt(&sys, user, pepper)?),
            )
            .await?;
        ensure!(
            reply.status == status && error.is_none_or(|e| error_of(&reply) == e),
            "{user} {pepper:?}: {} {}",
            reply.status,
            reply.text
        );
    }
    // An unsigned-in proxy request still gets the proxy's own answer.
    ensure!(sys.get("/anything").await?.status == 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_reused_foreign_and_unknown_codes_get_one_answer() -> anyhow::Result<()> {
    let db = TestDatabase::create("codes").await?;
    db.add_user("u1", None).await?;
    db.add_user("u2", None).await?;
    let sys = boot(&db).await?;
    db.add_code("u1", "EXPRD-CDE22", -1).await?;
    db.add_code("u2", "THERU-SER22", 600).await?;
    let invalid = |reply: &Reply| {
        reply.status == 401 && reply.text.contains("Invalid or expired access code")
    };
    for (user, code) in [
        ("u1", "EXPRD-CDE22"),
        ("u1", "THERU-SER22"),
        ("u1", "NEVER-SSUED"),
        ("u1", "<script>"),
    ] {
        let reply = submit_code(&sys, user, code).await?;
        ensure!(invalid(&reply), "{code}: {} {}", reply.status, reply.text);
        ensure!(reply.headers.get("set-cookie").is_none());
    }
    ensure!(
        db.code_status("THERU-SER22").await?.as_deref() == Some("active"),
        "untouched"
    );

    db.add_code("u1", "GDCDE-22222", 600).await?;
    submit_code(&sys, "u1", "GDCDE-22222")
        .await?
        .expect(200)
        .ok();
    let reused = submit_code(&sys, "u1", "GDCDE-22222").await?;
    ensure!(
        invalid(&reused),
        "reused: {} {}",
        reused.status,
        reused.text
    );

    let missing = submit_code(&sys, "u1", " ").await?;
    ensure!(
        missing.status == 400 && missing.text.contains("are required"),
        "{}",
        missing.text
    );

    // A user deleted after Next.js made the code: the code is spent, the answer says so.
    db.add_user("gone", None).await?;
    db.add_code("gone", "GNEUS-ER222", 600).await?;
    db.client()
        .execute("ALTER TABLE kiloclaw_access_codes DROP CONSTRAINT kiloclaw_access_codes_kilo_user_id_fkey", &[])
        .await?;
    db.client()
        .execute("DELETE FROM kilocode_users WHERE id = 'gone'", &[])
        .await?;
    let gone = submit_code(&sys, "gone", "GNEUS-ER222").await?;
    ensure!(
        gone.status == 401 && gone.text.contains("User not found."),
        "{} {}",
        gone.status,
        gone.text
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_redemptions_of_one_code_exactly_one_wins() -> anyhow::Result<()> {
    let db = TestDatabase::create("race").await?;
    let sys = boot(&db).await?;
    // A user per round: every attempt counts against the user's attempt limit.
    for round in ["A", "B", "C"] {
        let racer = format!("racer-{round}");
        let racer = racer.as_str();
        db.add_user(racer, None).await?;
        let code = format!("RACE{round}-ABCDE");
        db.add_code(racer, &code, 600).await?;
        let replies =
            futures_util::future::join_all((0..6).map(|_| submit_code(&sys, racer, &code))).await;
        let mut statuses = Vec::new();
        for reply in replies {
            statuses.push(reply?.status);
        }
        let winners = statuses.iter().filter(|s| **s == 200).count();
        ensure!(winners == 1, "round {round}: {statuses:?}");
        ensure!(
            statuses.iter().all(|s| *s == 200 || *s == 401),
            "{statuses:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_attempts_are_refused_with_retry_after() -> anyhow::Result<()> {
    let db = TestDatabase::create("limits").await?;
    db.add_user("target", None).await?;
    let sys = boot(&db).await?;
    db.add_code("target", "RGHTC-DE222", 600).await?;
    let mut limited = None;
    for attempt in 0..12 {
        let reply = submit_code(&sys, "target", &format!("WRONG-{attempt:05}")).await?;
        if reply.status == 429 {
            limited = Some((attempt, reply));
            break;
        }
        ensure!(reply.status == 401, "{} {}", reply.status, reply.text);
    }
    let (attempt, reply) = limited.context("never limited")?;
    ensure!(attempt == 10, "limited after {attempt} attempts");
    let retry_after: u64 = reply
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("Retry-After")?;
    ensure!((1..=900).contains(&retry_after), "{retry_after}");
    ensure!(reply.text.contains("Too many attempts"), "{}", reply.text);
    // Even the right code waits: the limit comes before the store of codes.
    let right = submit_code(&sys, "target", "RGHTC-DE222").await?;
    ensure!(right.status == 429, "{}", right.status);
    ensure!(db.code_status("RGHTC-DE222").await?.as_deref() == Some("active"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_is_down_or_not_allowed_never_opens_the_door() -> anyhow::Result<()> {
    let db = TestDatabase::create("down").await?;
    db.add_user("u", None).await?;
    for (case, variables) in [
        (
            "nothing listening",
            vec![
                (
                    "database_url".to_owned(),
                    "postgres://postgres@127.0.0.1:1/test".to_owned(),
                ),
                (
                    "database_outbound_host".to_owned(),
                    "postgres://127.0.0.1:1".to_owned(),
                ),
            ],
        ),
        (
            "host not allowed",
            vec![
                ("database_url".to_owned(), db.url()),
                (
                    "database_outbound_host".to_owned(),
                    "postgres://127.0.0.1:5433".to_owned(),
                ),
            ],
        ),
    ] {
        let sys = System::boot_with_variables(variables).await?;
        let started = Instant::now();
        let reply = sys
            .send(
                sys.request(Method::GET, "/api/kiloclaw/config")
                    .bearer_auth(jwt(&sys, "u", None)?),
            )
            .await?;
        ensure!(
            reply.status == 500 && error_of(&reply) == "Authentication service unavailable",
            "{case}: {} {}",
            reply.status,
            reply.text
        );
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "{case}: took {:?}",
            started.elapsed()
        );
        let proxied = sys
            .send(
                sys.request(Method::GET, "/x")
                    .bearer_auth(jwt(&sys, "u", None)?),
            )
            .await?;
        ensure!(proxied.status == 500, "{case}: proxy {}", proxied.status);
        let redeem = submit_code(&sys, "u", "ABCDE-FGHJK").await?;
        ensure!(
            redeem.status == 500 && redeem.text.contains("temporarily unavailable"),
            "{case}: {} {}",
            redeem.status,
            redeem.text
        );
        ensure!(redeem.headers.get("set-cookie").is_none());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_record_is_restored_from_the_registry_on_start() -> anyhow::Result<()> {
    let db = TestDatabase::create("restore").await?;
    let user = "user-restore";
    db.add_user(user, None).await?;
    db.add_instance(user).await?;
    let sys = boot(&db).await?;
    sys.provision(user).await?;
    sys.start(user).await?;
    let before = sys.status(user).await?;
    let machine = before["flyMachineId"]
        .as_str()
        .context("machine id")?
        .to_owned();

    let sys = sys.restart_with_empty_store().await?;
    ensure!(
        sys.status(user).await?["sandboxId"] == Value::Null,
        "the store is empty"
    );
    sys.start(user).await?;
    let after = sys.status(user).await?;
    ensure!(
        after["sandboxId"] == System::sandbox_id(user).as_str(),
        "{after}"
    );
    ensure!(
        after["flyMachineId"] == machine.as_str(),
        "found by metadata: {after}"
    );
    ensure!(
        after["flyVolumeId"] == before["flyVolumeId"],
        "volume adopted: {after}"
    );
    ensure!(after["status"] == "running", "{after}");
    ensure!(
        sys.sim().live_machines().await?.len() == 1,
        "no second machine"
    );

    // Without an active row there is nothing to restore.
    let sys = sys.restart_with_empty_store().await?;
    db.client()
        .execute("UPDATE kiloclaw_instances SET destroyed_at = now()", &[])
        .await?;
    let reply = sys
        .platform(
            Method::POST,
            "/api/platform/start",
            Some(json!({"userId": user})),
        )
        .await?;
    ensure!(reply.status == 404, "{} {}", reply.status, reply.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_codes_live_in_key_value_and_sign_in_still_works() -> anyhow::Result<()>
{
    let sys =
        System::boot_with_variables(vec![("worker_env".to_owned(), "development".to_owned())])
            .await?;
    let user = "local-user";
    sys.provision(user).await?;
    sys.start(user).await?;
    let issue = || {
        sys.platform(
            Method::POST,
            "/api/platform/access-code",
            Some(json!({"userId": user})),
        )
    };
    let first = issue().await?.expect(201)?;
    let second = issue().await?.expect(201)?;
    let code = second["code"].as_str().context("code")?.to_owned();
    ensure!(code.len() == 11 && code.as_bytes()[5] == b'-', "{code}");
    ensure!(
        second["expiresAt"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z')),
        "{second}"
    );

    let retired = submit_code(&sys, user, first["code"].as_str().unwrap_or_default()).await?;
    ensure!(
        retired.status == 401,
        "the older code was retired: {}",
        retired.status
    );
    let accepted = submit_code(&sys, user, &code).await?;
    ensure!(
        accepted.status == 200,
        "{} {}",
        accepted.status,
        accepted.text
    );
    let cookie = session_cookie(&accepted, false)?;
    sys.send(with_cookie(&sys, Method::GET, "/local", &cookie))
        .await?
        .expect_echo(200)?;
    ensure!(
        submit_code(&sys, user, &code).await?.status == 401,
        "one time only"
    );

    let bad = sys
        .platform(
            Method::POST,
            "/api/platform/access-code",
            Some(json!({"userId": ""})),
        )
        .await?;
    ensure!(bad.status == 400, "{} {}", bad.status, bad.text);
    let no_key = sys
        .platform_raw(
            Method::POST,
            "/api/platform/access-code",
            "{\"userId\":\"x\"}",
            None,
        )
        .await?;
    ensure!(no_key.status == 403, "{}", no_key.status);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_database_issued_codes_land_in_its_table() -> anyhow::Result<()> {
    let db = TestDatabase::create("issue").await?;
    db.add_user("u", Some("p")).await?;
    let sys = boot(&db).await?;
    let issued = sys
        .platform(
            Method::POST,
            "/api/platform/access-code",
            Some(json!({"userId": "u"})),
        )
        .await?
        .expect(201)?;
    let code = issued["code"].as_str().context("code")?;
    ensure!(db.code_status(code).await?.as_deref() == Some("active"));
    let unknown = sys
        .platform(
            Method::POST,
            "/api/platform/access-code",
            Some(json!({"userId": "nobody"})),
        )
        .await?;
    ensure!(unknown.status == 400, "{} {}", unknown.status, unknown.text);
    let accepted = submit_code(&sys, "u", code).await?;
    let cookie = session_cookie(&accepted, true)?;
    // The minted session carries the user's pepper, so it passes the revocation check.
    let config = sys
        .send(with_cookie(
            &sys,
            Method::GET,
            "/api/kiloclaw/config",
            &cookie,
        ))
        .await?;
    ensure!(config.status == 200, "{} {}", config.status, config.text);
    ensure!(db.code_status(code).await?.as_deref() == Some("redeemed"));
    Ok(())
}
