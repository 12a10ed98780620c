//! Secrets on their way to the machine (original-behaviour.md §7.3–§7.4, §9, §10 #19 and #23): envelopes
//! made by Node opened with the real RSA decryptor, the encrypted machine env, the env key set once, and
//! failures that leave everything as it was.

use std::collections::BTreeMap;

use crate::fly::MachineState;
use crate::record::{Channels, InstanceRecord, InstanceState};
use crate::requests::{InstanceConfig, Patch};
use crate::secrets::envelope::RsaEnvelopeDecryptor;
use crate::secrets::machine_env::{ENC_PREFIX, ENV_KEY_SECRET, EnvKey};
use crate::testing::{FlyCall, NodeEnvelopes};

use super::*;

/// A config holding every kind of secret: an env secret, the 64 KiB one, unicode, and every channel.
fn secret_config(fixtures: &NodeEnvelopes) -> InstanceConfig {
    let secret = |name: &str| fixtures.case(name).envelope.clone();
    InstanceConfig {
        encrypted_secrets: Some(BTreeMap::from([
            ("OPENAI_API_KEY".into(), secret("ascii")),
            ("GREETING".into(), secret("unicode")),
            ("LARGE".into(), secret("large_64k")),
            ("EMPTY".into(), secret("empty")),
        ])),
        channels: Some(Channels {
            telegram_bot_token: Some(secret("telegram")),
            discord_bot_token: Some(secret("discord")),
            slack_bot_token: Some(secret("slack_bot")),
            slack_app_token: Some(secret("slack_app")),
        }),
        ..config()
    }
}

/// The plaintexts that must never appear in a machine config.
fn sensitive_values(world: &World, fixtures: &NodeEnvelopes) -> Vec<String> {
    let mut values: Vec<String> = [
        "ascii",
        "unicode",
        "large_64k",
        "telegram",
        "discord",
        "slack_bot",
        "slack_app",
    ]
    .iter()
    .map(|name| fixtures.case(name).plaintext.clone())
    .collect();
    values.push("kilo-key".into());
    values.push(crate::ids::gateway_token(
        &world.settings.gateway_token_secret,
        &world.record().sandbox_id,
    ));
    values
}

fn machine_env(world: &World) -> BTreeMap<String, String> {
    let id = world.record().fly_machine_id.expect("machine id");
    let machine = world.fly.machine(APP, &id).expect("machine");
    machine.config.expect("config").env
}

/// A world whose user is provisioned with [`secret_config`].
fn provisioned_with_secrets() -> (World, NodeEnvelopes) {
    let world = World::new();
    let fixtures = NodeEnvelopes::load();
    world
        .instances()
        .provision(USER, &secret_config(&fixtures))
        .expect("provision");
    (world, fixtures)
}

fn start_with(world: &World, pem: &str) -> Result<(), LifecycleError> {
    let decryptor = RsaEnvelopeDecryptor::new(pem, &world.random);
    world.instances().with_decryptor(&decryptor).start(USER)
}

#[test]
fn start_seals_every_sensitive_value_and_the_machine_can_open_them() {
    let (world, fixtures) = provisioned_with_secrets();
    start_with(&world, &fixtures.private_key_pem).expect("start");

    let env = machine_env(&world);
    let serialized = serde_json::to_string(
        &world
            .fly
            .machine(APP, &world.record().fly_machine_id.expect("id")),
    )
    .expect("json");
    for value in sensitive_values(&world, &fixtures) {
        assert!(
            !serialized.contains(&value),
            "a secret is in the machine config in plain text"
        );
    }
    for name in [
        "OPENAI_API_KEY",
        "KILOCODE_API_KEY",
        "OPENCLAW_GATEWAY_TOKEN",
        "TELEGRAM_BOT_TOKEN",
        "SLACK_APP_TOKEN",
        "LARGE",
    ] {
        assert!(!env.contains_key(name), "{name} is in plain text");
        assert!(
            env.contains_key(&format!("{ENC_PREFIX}{name}")),
            "{name} is not sealed"
        );
    }
    assert_eq!(
        env.get("FOO").map(String::as_str),
        Some("bar"),
        "plain vars stay plain"
    );

    // What the machine's start script does: the app secret opens every sealed value.
    let secret = world
        .fly
        .secret(APP, ENV_KEY_SECRET)
        .expect("KILOCLAW_ENV_KEY is set");
    let key = EnvKey::from_base64(&secret).expect("key");
    let open = |name: &str| {
        key.open(&env[&format!("{ENC_PREFIX}{name}")])
            .expect("opens")
    };
    assert_eq!(open("GREETING"), fixtures.case("unicode").plaintext);
    assert_eq!(open("LARGE"), fixtures.case("large_64k").plaintext);
    assert_eq!(open("EMPTY"), "");
    assert_eq!(
        open("DISCORD_BOT_TOKEN"),
        fixtures.case("discord").plaintext
    );
    assert_eq!(open("KILOCODE_API_KEY"), "kilo-key");
}

#[test]
fn the_env_key_secret_is_set_once_and_machines_require_its_version() {
    let (world, fixtures) = provisioned_with_secrets();
    start_with(&world, &fixtures.private_key_pem).expect("start");
    assert_eq!(world.fly.count(FlyCall::SetSecret), 1);
    let version = world
        .record()
        .app_setup
        .env_key_secrets_version
        .expect("version stored");
    assert_eq!(
        world.fly.min_secrets_versions(),
        vec![(FlyCall::CreateMachine, Some(version))]
    );

    // Stop, start, restart: the stored key is reused, the secret is not set again.
    world.instances().stop(USER).expect("stop");
    start_with(&world, &fixtures.private_key_pem).expect("second start");
    let decryptor = RsaEnvelopeDecryptor::new(&fixtures.private_key_pem, &world.random);
    world
        .instances()
        .with_decryptor(&decryptor)
        .restart(USER)
        .expect("restart");
    assert_eq!(
        world.fly.count(FlyCall::SetSecret),
        1,
        "no change, no secret update"
    );
    let versions = world.fly.min_secrets_versions();
    assert!(versions.len() >= 3, "{versions:?}");
    assert!(
        versions.iter().all(|(_, v)| *v == Some(version)),
        "every create and update requires the key's version: {versions:?}"
    );
    assert_eq!(world.machine_state(), MachineState::Started);
}

/// The record as a failed start must leave it: everything but nothing.
fn stored(world: &World) -> Vec<u8> {
    world.kv.raw(&record_key(USER)).expect("record bytes")
}

#[test]
fn missing_wrong_and_malformed_keys_fail_the_start_and_change_nothing() {
    let (world, fixtures) = provisioned_with_secrets();
    let before = stored(&world);
    let calls_before = world.fly.calls().len();

    let missing = world.instances().start(USER).expect_err("no private key");
    assert_eq!(
        missing.to_string(),
        "AGENT_ENV_VARS_PRIVATE_KEY is required to decrypt encrypted secrets"
    );
    let wrong = start_with(&world, &fixtures.other_private_key_pem).expect_err("wrong key");
    assert!(
        wrong
            .to_string()
            .starts_with("Decryption failed: encryptedSecrets."),
        "{wrong}"
    );
    let garbage = start_with(&world, "not a pem").expect_err("garbage key");
    assert!(
        garbage.to_string().contains("not a PEM RSA private key"),
        "{garbage}"
    );

    world.edit(|r| {
        if let Some(channels) = r.channels.as_mut()
            && let Some(token) = channels.telegram_bot_token.as_mut()
        {
            token.encrypted_data = "%%% not base64".into();
        }
    });
    let before_malformed = stored(&world);
    let malformed = start_with(&world, &fixtures.private_key_pem).expect_err("malformed");
    assert_eq!(
        malformed.to_string(),
        "Decryption failed: channels.telegramBotToken: encryptedData is not valid base64"
    );
    for error in [&missing, &wrong, &garbage, &malformed] {
        for value in sensitive_values(&world, &fixtures) {
            assert!(value.is_empty() || !error.to_string().contains(&value));
        }
    }
    assert_eq!(
        stored(&world),
        before_malformed,
        "a failed start writes nothing"
    );
    assert_ne!(before, before_malformed);
    assert_eq!(
        world.fly.calls().len(),
        calls_before,
        "a failed start calls Fly for nothing"
    );
    assert_eq!(world.record().status, Some(InstanceState::Provisioned));
}

#[test]
fn a_restart_with_undecryptable_secrets_leaves_the_machine_running() {
    let (world, fixtures) = provisioned_with_secrets();
    start_with(&world, &fixtures.private_key_pem).expect("start");
    let before = stored(&world);
    let decryptor = RsaEnvelopeDecryptor::new(&fixtures.other_private_key_pem, &world.random);
    let error = world
        .instances()
        .with_decryptor(&decryptor)
        .restart(USER)
        .expect_err("wrong key");
    assert!(matches!(error, LifecycleError::Env(_)), "{error}");
    assert_eq!(stored(&world), before);
    assert_eq!(world.machine_state(), MachineState::Started);
}

#[test]
fn the_legacy_shared_app_gets_plain_values_and_no_env_key() {
    let mut world = World::new();
    world.settings.fly_org_slug = None;
    world.settings.legacy_fly_app_name = Some("kiloclaw-legacy".into());
    world.fly.add_app("kiloclaw-legacy", "personal");
    world
        .instances()
        .provision(USER, &config())
        .expect("provision");
    world.instances().start(USER).expect("start");
    assert_eq!(world.fly.count(FlyCall::SetSecret), 0);
    let id = world.record().fly_machine_id.expect("machine");
    let env = world
        .fly
        .machine("kiloclaw-legacy", &id)
        .and_then(|m| m.config)
        .expect("config")
        .env;
    assert_eq!(
        env.get("KILOCODE_API_KEY").map(String::as_str),
        Some("kilo-key")
    );
}

#[test]
fn reprovision_clears_omitted_models_and_keeps_only_the_omitted_key() {
    let world = World::new();
    let full = InstanceConfig {
        kilocode_default_model: Patch::Set("kilocode/a/b".into()),
        kilocode_models: Patch::Set(vec![]),
        ..config()
    };
    world.instances().provision(USER, &full).expect("provision");
    let request = crate::requests::parse_provision(br#"{"userId":"user-1"}"#).expect("parses");
    world
        .instances()
        .provision(USER, &request.config)
        .expect("re-provision");
    let record: InstanceRecord = world.record();
    assert_eq!(record.kilocode_api_key.as_deref(), Some("kilo-key"));
    assert_eq!(
        record.kilocode_api_key_expires_at.as_deref(),
        Some("2026-02-01T00:00:00Z"),
        "the expiry stays with the kept key"
    );
    assert_eq!(record.kilocode_default_model, None);
    assert_eq!(record.kilocode_models, None);
    assert_eq!(record.env_vars, None);

    let new_key = crate::requests::parse_provision(br#"{"userId":"user-1","kilocodeApiKey":"k2"}"#)
        .expect("parses");
    world
        .instances()
        .provision(USER, &new_key.config)
        .expect("re-provision");
    let record = world.record();
    assert_eq!(record.kilocode_api_key.as_deref(), Some("k2"));
    assert_eq!(
        record.kilocode_api_key_expires_at, None,
        "a new key without expiry"
    );
}
