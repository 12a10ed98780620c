//! Machine environment building (original-behaviour.md §7.3): five layers, later layers win.
//!
//! 1. deployment defaults (`OPENCLAW_DEV_MODE`, `KILOCODE_API_BASE_URL`, `KILOCODE_FEATURE`);
//! 2. the user's `envVars`, then 3. their decrypted `encryptedSecrets` (secrets win), then the Kilo key,
//!    default model and `KILOCODE_MODELS_JSON` (the seed never set the last one; fixed here);
//! 4. decrypted channel tokens (skipped when no decryptor is configured) and the DM-policy/allowed-origins
//!    pass-throughs;
//! 5. reserved values no user input can override: `OPENCLAW_GATEWAY_TOKEN` and `AUTO_APPROVE_DEVICES`.
//!
//! The RSA envelopes are opened by an [`EnvelopeDecryptor`] (in production
//! [`RsaEnvelopeDecryptor`](crate::secrets::envelope::RsaEnvelopeDecryptor) over
//! `agent_env_vars_private_key`). Without one, any stored secret makes the build fail with
//! [`EnvError::EncryptionConfiguration`], exactly as the original did when `AGENT_ENV_VARS_PRIVATE_KEY` was
//! unset. The result also says which names are sensitive, so [`crate::secrets::machine_env`] seals them.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::gateway_token;
use crate::record::{Envelope, InstanceRecord};
use crate::requests::env_var_name_problem;
use crate::secrets::envelope::DecryptError;
use crate::settings::Settings;

/// Names whose values are always sensitive.
pub const SENSITIVE_NAMES: [&str; 6] = [
    "KILOCODE_API_KEY",
    "OPENCLAW_GATEWAY_TOKEN",
    "TELEGRAM_BOT_TOKEN",
    "DISCORD_BOT_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
];

/// Decrypts an RSA envelope (implemented by whoever holds `AGENT_ENV_VARS_PRIVATE_KEY`).
pub trait EnvelopeDecryptor {
    /// The plaintext, or why it cannot be had.
    fn decrypt(&self, envelope: &Envelope) -> Result<String, DecryptError>;
}

/// Why the machine environment cannot be built. None is retryable without changing config or input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// Secrets exist but no private key is configured (HTTP 500, operator must configure the key).
    #[error("{0}")]
    EncryptionConfiguration(String),
    /// An envelope does not open: malformed, made for another key, or tampered with. Names the field
    /// (`encryptedSecrets.NAME`, `channels.telegramBotToken`), never the value.
    #[error("Decryption failed: {field}: {reason}")]
    Decryption {
        /// Where the envelope is in the instance config.
        field: String,
        /// What is wrong.
        reason: DecryptError,
    },
    /// A stored env var name breaks the rules (only possible for data written before validation existed).
    #[error("Env var name '{name}' {problem}")]
    InvalidName {
        /// The name.
        name: String,
        /// The rule it breaks.
        problem: &'static str,
    },
    /// The record lacks the identity needed for the gateway token.
    #[error("Cannot build env vars: sandboxId or GATEWAY_TOKEN_SECRET missing")]
    MissingIdentity,
}

/// The built environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineEnv {
    /// Every variable.
    pub vars: BTreeMap<String, String>,
    /// Names among `vars` whose values are secret.
    pub sensitive: BTreeSet<String>,
}

/// The parts of a record the machine environment is built from: two records with equal inputs build
/// the same environment (so one built before taking the lease can be reused under it).
pub fn env_inputs(record: &InstanceRecord) -> impl PartialEq + '_ {
    (
        &record.sandbox_id,
        &record.env_vars,
        &record.encrypted_secrets,
        &record.kilocode_api_key,
        &record.kilocode_default_model,
        &record.kilocode_models,
        &record.channels,
    )
}

/// Builds the machine environment for `record`.
pub fn build_env(
    record: &InstanceRecord,
    settings: &Settings,
    decryptor: Option<&dyn EnvelopeDecryptor>,
) -> Result<MachineEnv, EnvError> {
    if record.sandbox_id.is_empty() || settings.gateway_token_secret.is_empty() {
        return Err(EnvError::MissingIdentity);
    }
    let mut env = MachineEnv::default();
    let put = |env: &mut MachineEnv, name: &str, value: String, sensitive: bool| {
        env.vars.insert(name.to_owned(), value);
        if sensitive || SENSITIVE_NAMES.contains(&name) {
            env.sensitive.insert(name.to_owned());
        } else {
            env.sensitive.remove(name);
        }
    };

    // Layer 1: deployment defaults.
    if settings.dev_mode {
        put(&mut env, "OPENCLAW_DEV_MODE", "true".into(), false);
    }
    if let Some(url) = &settings.kilocode_api_base_url {
        put(&mut env, "KILOCODE_API_BASE_URL", url.clone(), false);
    }
    put(&mut env, "KILOCODE_FEATURE", "kilo-claw".into(), false);

    // Layers 2 and 3: user vars, then secrets (secrets win).
    for (name, value) in record.env_vars.iter().flatten() {
        check_name(name)?;
        put(&mut env, name, value.clone(), false);
    }
    let secrets = record.encrypted_secrets.as_ref().filter(|s| !s.is_empty());
    if let Some(secrets) = secrets {
        let Some(decryptor) = decryptor else {
            return Err(EnvError::EncryptionConfiguration(
                "AGENT_ENV_VARS_PRIVATE_KEY is required to decrypt encrypted secrets".into(),
            ));
        };
        for (name, envelope) in secrets {
            check_name(name)?;
            let value = open(decryptor, envelope, || format!("encryptedSecrets.{name}"))?;
            put(&mut env, name, value, true);
        }
    }
    if let Some(key) = &record.kilocode_api_key {
        put(&mut env, "KILOCODE_API_KEY", key.clone(), true);
    }
    if let Some(model) = &record.kilocode_default_model {
        put(&mut env, "KILOCODE_DEFAULT_MODEL", model.clone(), false);
    }
    if let Some(models) = &record.kilocode_models {
        // Serializing a Vec of plain structs cannot fail.
        put(
            &mut env,
            "KILOCODE_MODELS_JSON",
            serde_json::to_string(models).unwrap_or_default(),
            false,
        );
    }

    // Layer 4: channel tokens (silently skipped without a decryptor, as the original did), pass-throughs.
    if let (Some(channels), Some(decryptor)) = (&record.channels, decryptor) {
        let tokens = [
            (
                "TELEGRAM_BOT_TOKEN",
                "telegramBotToken",
                &channels.telegram_bot_token,
            ),
            (
                "DISCORD_BOT_TOKEN",
                "discordBotToken",
                &channels.discord_bot_token,
            ),
            (
                "SLACK_BOT_TOKEN",
                "slackBotToken",
                &channels.slack_bot_token,
            ),
            (
                "SLACK_APP_TOKEN",
                "slackAppToken",
                &channels.slack_app_token,
            ),
        ];
        for (name, field, token) in tokens {
            if let Some(envelope) = token {
                let value = open(decryptor, envelope, || format!("channels.{field}"))?;
                put(&mut env, name, value, true);
            }
        }
    }
    if let Some(policy) = &settings.telegram_dm_policy {
        put(&mut env, "TELEGRAM_DM_POLICY", policy.clone(), false);
    }
    if let Some(policy) = &settings.discord_dm_policy {
        put(&mut env, "DISCORD_DM_POLICY", policy.clone(), false);
    }
    if let Some(origins) = &settings.openclaw_allowed_origins {
        put(&mut env, "OPENCLAW_ALLOWED_ORIGINS", origins.clone(), false);
    }

    // Layer 5: reserved.
    put(
        &mut env,
        "OPENCLAW_GATEWAY_TOKEN",
        gateway_token(&settings.gateway_token_secret, &record.sandbox_id),
        true,
    );
    put(&mut env, "AUTO_APPROVE_DEVICES", "true".into(), false);
    Ok(env)
}

fn open(
    decryptor: &dyn EnvelopeDecryptor,
    envelope: &Envelope,
    field: impl FnOnce() -> String,
) -> Result<String, EnvError> {
    decryptor
        .decrypt(envelope)
        .map_err(|reason| EnvError::Decryption {
            field: field(),
            reason,
        })
}

fn check_name(name: &str) -> Result<(), EnvError> {
    match env_var_name_problem(name) {
        None => Ok(()),
        Some(problem) => Err(EnvError::InvalidName {
            name: name.to_owned(),
            problem,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Channels, KiloCodeModel};

    struct Reverse;
    impl EnvelopeDecryptor for Reverse {
        fn decrypt(&self, envelope: &Envelope) -> Result<String, DecryptError> {
            if envelope.version != 1 {
                return Err(DecryptError::Version(envelope.version));
            }
            Ok(envelope.encrypted_data.chars().rev().collect())
        }
    }

    fn envelope(data: &str) -> Envelope {
        Envelope {
            encrypted_data: data.into(),
            encrypted_dek: "k".into(),
            algorithm: "rsa-aes-256-gcm".into(),
            version: 1,
        }
    }

    fn record() -> InstanceRecord {
        InstanceRecord {
            user_id: "u".into(),
            sandbox_id: "sandbox-abc".into(),
            ..InstanceRecord::empty()
        }
    }

    #[test]
    fn env_layers_apply_in_order_and_reserved_values_win() {
        let mut settings = Settings::for_tests();
        settings.dev_mode = true;
        settings.telegram_dm_policy = Some("open".into());
        let mut record = record();
        record.env_vars = Some(BTreeMap::from([
            ("OPENCLAW_GATEWAY_TOKEN".into(), "hijack".into()),
            ("AUTO_APPROVE_DEVICES".into(), "false".into()),
            ("SHARED".into(), "plain".into()),
            ("KILOCODE_FEATURE".into(), "mine".into()),
        ]));
        record.encrypted_secrets = Some(BTreeMap::from([("SHARED".into(), envelope("terces"))]));
        record.kilocode_api_key = Some("kilo-key".into());
        let env = build_env(&record, &settings, Some(&Reverse)).expect("env");
        assert_eq!(env.vars["OPENCLAW_DEV_MODE"], "true");
        assert_eq!(
            env.vars["KILOCODE_FEATURE"], "mine",
            "user vars override worker defaults"
        );
        assert_eq!(env.vars["SHARED"], "secret", "secrets win over plain vars");
        assert_eq!(
            env.vars["OPENCLAW_GATEWAY_TOKEN"],
            "ab96b33c73aff91a88b32e0225a78b3b721697dad6aa2163c7bd3c1177ab6e38"
        );
        assert_eq!(env.vars["AUTO_APPROVE_DEVICES"], "true");
        assert_eq!(env.vars["TELEGRAM_DM_POLICY"], "open");
        assert!(env.sensitive.contains("SHARED") && env.sensitive.contains("KILOCODE_API_KEY"));
        assert!(
            env.sensitive.contains("OPENCLAW_GATEWAY_TOKEN")
                && !env.sensitive.contains("KILOCODE_FEATURE")
        );
    }

    #[test]
    fn env_sets_models_json_seed_bug_fixed() {
        let mut record = record();
        record.kilocode_models = Some(vec![KiloCodeModel {
            id: "kilocode/a/b".into(),
            name: "B".into(),
        }]);
        record.kilocode_default_model = Some("kilocode/a/b".into());
        let env = build_env(&record, &Settings::for_tests(), None).expect("env");
        assert_eq!(
            env.vars["KILOCODE_MODELS_JSON"],
            r#"[{"id":"kilocode/a/b","name":"B"}]"#
        );
        assert_eq!(env.vars["KILOCODE_DEFAULT_MODEL"], "kilocode/a/b");
    }

    #[test]
    fn secrets_without_private_key_fail_with_encryption_configuration_error() {
        let mut record = record();
        record.encrypted_secrets = Some(BTreeMap::from([("X".into(), envelope("y"))]));
        assert_eq!(
            build_env(&record, &Settings::for_tests(), None),
            Err(EnvError::EncryptionConfiguration(
                "AGENT_ENV_VARS_PRIVATE_KEY is required to decrypt encrypted secrets".into()
            ))
        );
    }

    #[test]
    fn channel_tokens_skipped_without_key_and_mapped_with_one() {
        let mut record = record();
        record.channels = Some(Channels {
            discord_bot_token: Some(envelope("drocsid")),
            ..Channels::default()
        });
        let without = build_env(&record, &Settings::for_tests(), None).expect("env");
        assert!(!without.vars.contains_key("DISCORD_BOT_TOKEN"));
        let with = build_env(&record, &Settings::for_tests(), Some(&Reverse)).expect("env");
        assert_eq!(with.vars["DISCORD_BOT_TOKEN"], "discord");
    }

    #[test]
    fn stored_invalid_env_name_is_rejected_at_build_time() {
        let mut record = record();
        record.env_vars = Some(BTreeMap::from([("KILOCLAW_ENV_KEY".into(), "x".into())]));
        assert!(matches!(
            build_env(&record, &Settings::for_tests(), None),
            Err(EnvError::InvalidName { .. })
        ));
        assert_eq!(
            build_env(&InstanceRecord::empty(), &Settings::for_tests(), None),
            Err(EnvError::MissingIdentity)
        );
    }

    #[test]
    fn a_failed_decryption_names_the_field_and_not_the_value() {
        let mut record = record();
        let mut bad = envelope("eulav");
        bad.version = 2;
        record.encrypted_secrets = Some(BTreeMap::from([("API".into(), bad.clone())]));
        let error = build_env(&record, &Settings::for_tests(), Some(&Reverse)).expect_err("fails");
        assert_eq!(
            error.to_string(),
            "Decryption failed: encryptedSecrets.API: unsupported version 2 (expected 1)"
        );
        record.encrypted_secrets = None;
        record.channels = Some(Channels {
            slack_app_token: Some(bad),
            ..Channels::default()
        });
        let error = build_env(&record, &Settings::for_tests(), Some(&Reverse)).expect_err("fails");
        assert!(
            error
                .to_string()
                .starts_with("Decryption failed: channels.slackAppToken: ")
        );
        assert!(!error.to_string().contains("value"));
    }
}
