//! Users' secrets end to end (original-behaviour.md §7.3–§7.4, §9): envelopes made by Node's `crypto`
//! exactly as the Next.js app makes them are provisioned through the platform API, decrypted by the
//! instances component with `agent_env_vars_private_key`, sealed into `KILOCLAW_ENC_*` under the
//! per-user `KILOCLAW_ENV_KEY`, and opened by the simulated image at boot — so the gateway sees the
//! values and Fly's machine config never holds one in plain text.

use kiloclaw_core::testing::NodeEnvelopes;
use reqwest::Method;
use serde_json::{Value, json};

use super::system::System;

const USER: &str = "secret-user";
const KILO_KEY: &str = "kilo-api-key-for-secret-user";

/// The provision body the Next.js app would send: secrets of every shape and every channel token.
fn provision_body(fixtures: &NodeEnvelopes, user: &str) -> Value {
    let envelope =
        |name: &str| serde_json::to_value(&fixtures.case(name).envelope).unwrap_or(Value::Null);
    json!({
        "userId": user,
        "envVars": {"PLAIN_SETTING": "visible"},
        "encryptedSecrets": {
            "OPENAI_API_KEY": envelope("ascii"),
            "GREETING": envelope("unicode"),
            "QUOTED": envelope("shell_quotes"),
            "LARGE": envelope("large_64k"),
            "EMPTY": envelope("empty"),
        },
        "channels": {
            "telegramBotToken": envelope("telegram"),
            "discordBotToken": envelope("discord"),
            "slackBotToken": envelope("slack_bot"),
            "slackAppToken": envelope("slack_app"),
        },
        "kilocodeApiKey": KILO_KEY,
    })
}

async fn boot_with_key(fixtures: &NodeEnvelopes) -> anyhow::Result<System> {
    System::boot_with_variables(vec![(
        "agent_env_vars_private_key".to_owned(),
        fixtures.private_key_pem.clone(),
    )])
    .await
}

#[tokio::test]
async fn secrets_reach_the_gateway_decrypted_and_fly_holds_only_ciphertext() -> anyhow::Result<()> {
    let fixtures = NodeEnvelopes::load();
    let system = boot_with_key(&fixtures).await?;
    system
        .platform(
            Method::POST,
            "/api/platform/provision",
            Some(provision_body(&fixtures, USER)),
        )
        .await?
        .expect(201)?;
    system.start(USER).await?;

    // What the gateway process runs with, read through the real proxy path as the user.
    let env = system
        .send(system.as_user(USER, Method::GET, "/_gateway/env")?)
        .await?
        .expect(200)?;
    let expected = [
        ("OPENAI_API_KEY", fixtures.case("ascii").plaintext.clone()),
        ("GREETING", fixtures.case("unicode").plaintext.clone()),
        ("QUOTED", fixtures.case("shell_quotes").plaintext.clone()),
        ("LARGE", fixtures.case("large_64k").plaintext.clone()),
        ("EMPTY", String::new()),
        (
            "TELEGRAM_BOT_TOKEN",
            fixtures.case("telegram").plaintext.clone(),
        ),
        (
            "DISCORD_BOT_TOKEN",
            fixtures.case("discord").plaintext.clone(),
        ),
        (
            "SLACK_BOT_TOKEN",
            fixtures.case("slack_bot").plaintext.clone(),
        ),
        (
            "SLACK_APP_TOKEN",
            fixtures.case("slack_app").plaintext.clone(),
        ),
        ("KILOCODE_API_KEY", KILO_KEY.to_owned()),
        (
            "OPENCLAW_GATEWAY_TOKEN",
            system.expected_gateway_token(USER),
        ),
        ("PLAIN_SETTING", "visible".to_owned()),
    ];
    for (name, value) in &expected {
        assert_eq!(
            env[*name].as_str(),
            Some(value.as_str()),
            "{name} in the gateway's environment"
        );
    }
    let names: Vec<&String> = env
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("KILOCLAW_ENC_") && n.as_str() != "KILOCLAW_ENV_KEY"),
        "the start script removes the key and the sealed values: {names:?}"
    );

    // Fly's side: every field of every app, machine and volume, searched for every secret.
    let fly_state = system.sim().state().to_string();
    for (name, value) in &expected {
        if *name == "PLAIN_SETTING" || value.is_empty() {
            continue;
        }
        let as_json = serde_json::to_string(value)?;
        assert!(
            !fly_state.contains(value.as_str()) && !fly_state.contains(as_json.trim_matches('"')),
            "{name} is stored on Fly in plain text"
        );
    }
    assert!(fly_state.contains("KILOCLAW_ENC_KILOCODE_API_KEY"));
    assert!(
        fly_state.contains("\"visible\""),
        "non-sensitive vars stay readable"
    );
    assert_eq!(system.sim().count_requests("set_secret"), 1);

    // Stop and start again: the key is reused; the app secret is not set again.
    system.stop(USER).await?;
    system.start(USER).await?;
    system
        .send(system.as_user(USER, Method::POST, "/api/admin/gateway/restart")?)
        .await?
        .expect(200)?;
    assert_eq!(
        system.sim().count_requests("set_secret"),
        1,
        "no change, no secret update"
    );
    let env = system
        .send(system.as_user(USER, Method::GET, "/_gateway/env")?)
        .await?
        .expect(200)?;
    assert_eq!(
        env["OPENAI_API_KEY"].as_str(),
        Some(fixtures.case("ascii").plaintext.as_str())
    );

    // The Next.js app's gateway-token call now also says where to open the WebSocket.
    let token = system
        .platform(
            Method::GET,
            &format!("/api/platform/gateway-token?userId={USER}"),
            None,
        )
        .await?
        .expect(200)?;
    assert_eq!(
        token["gatewayToken"].as_str(),
        Some(system.expected_gateway_token(USER).as_str())
    );
    let url = token["gatewayUrl"].as_str().unwrap_or_default();
    assert!(
        url.starts_with("ws://") || url.starts_with("wss://"),
        "{token}"
    );
    Ok(())
}

/// The stored state a failed start must leave as it was.
async fn snapshot(system: &System, user: &str) -> anyhow::Result<(Value, Value, usize)> {
    let status = system.status(user).await?;
    let config = system
        .send(system.as_user(user, Method::GET, "/api/kiloclaw/config")?)
        .await?
        .expect(200)?;
    Ok((status, config, system.sim().machines().await?.len()))
}

/// Provisions `body`, then starts its user: the start must answer 500 and leave the status, the
/// config and Fly's machines as they were. Returns the error body.
async fn start_fails_and_changes_nothing(system: &System, body: Value) -> anyhow::Result<Value> {
    let user = body["userId"].as_str().unwrap_or_default().to_owned();
    system
        .platform(Method::POST, "/api/platform/provision", Some(body))
        .await?
        .expect(201)?;
    let before = snapshot(system, &user).await?;
    let error = system
        .platform(
            Method::POST,
            "/api/platform/start",
            Some(json!({"userId": user})),
        )
        .await?
        .expect(500)?;
    assert_eq!(
        snapshot(system, &user).await?,
        before,
        "nothing stored changed"
    );
    Ok(error)
}

#[tokio::test]
async fn wrong_missing_and_malformed_keys_answer_500_and_change_nothing() -> anyhow::Result<()> {
    let fixtures = NodeEnvelopes::load();
    let system = boot_with_key(&fixtures).await?;

    // A secret encrypted for another deployment's key.
    let mut body = provision_body(&fixtures, "wrong-key-user");
    body["encryptedSecrets"]["FOREIGN"] = serde_json::to_value(
        fixtures
            .bad
            .iter()
            .find(|b| b.name == "wrong_key")
            .map(|b| &b.envelope),
    )?;
    let error = start_fails_and_changes_nothing(&system, body).await?;
    let message = error["error"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Decryption failed: encryptedSecrets.FOREIGN: "),
        "{error}"
    );

    // An envelope whose data is not base64 (accepted at ingest, which checks only the shape).
    let mut body = provision_body(&fixtures, "malformed-user");
    body["channels"]["discordBotToken"]["encryptedData"] = json!("%%% not base64 %%%");
    let error = start_fails_and_changes_nothing(&system, body).await?;
    assert_eq!(
        error,
        json!({"error": "Decryption failed: channels.discordBotToken: encryptedData is not valid base64"})
    );
    for secret in fixtures.ok.iter().filter(|c| !c.plaintext.is_empty()) {
        assert!(
            !message.contains(&secret.plaintext),
            "an error names a value"
        );
    }
    assert_eq!(system.sim().count_requests("create_machine"), 0);
    assert_eq!(system.sim().count_requests("set_secret"), 0);

    // A deployment without the private key.
    let keyless = System::boot().await?;
    let error = start_fails_and_changes_nothing(&keyless, provision_body(&fixtures, USER)).await?;
    assert_eq!(
        error,
        json!({"error": "AGENT_ENV_VARS_PRIVATE_KEY is required to decrypt encrypted secrets"})
    );
    Ok(())
}
