//! Platform request bodies (original-behaviour.md §1.3, §7.2): JSON parsing into typed requests with
//! field-level errors shaped like zod's `flatten().fieldErrors`, so the router can answer
//! `400 {error:"Invalid request", details:{field:[message]}}`. Unknown keys are ignored.
//!
//! Absent vs `null` matters for the Kilo fields: see [`Patch`].

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::record::{Channels, CpuKind, Envelope, KiloCodeModel, MachineSize};
use crate::settings::validate_regions;

/// Field path → messages, serialised as a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FieldErrors(pub BTreeMap<String, Vec<String>>);

impl FieldErrors {
    /// Adds a message for `field`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }
    /// No errors.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a request body was refused. Both map to HTTP 400 and are not retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON (or not a JSON object): `{error:"Malformed JSON body"}`.
    #[error("Malformed JSON body")]
    MalformedJson,
    /// Schema or rule violations: `{error:"Invalid request", details}`.
    #[error("Invalid request")]
    Invalid(FieldErrors),
}

/// A field that distinguishes "absent" (leave as is), `null` (clear) and a value (set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    /// The key was absent.
    #[default]
    Keep,
    /// The key was `null`.
    Clear,
    /// The key had a value.
    Set(T),
}

impl<T> Patch<T> {
    /// For fields a full re-provision replaces: an absent key clears the stored value.
    pub fn absent_clears(self) -> Self {
        match self {
            Self::Keep => Self::Clear,
            other => other,
        }
    }
}

impl<T: Clone> Patch<T> {
    /// Applies the patch to a stored optional value.
    pub fn apply(&self, slot: &mut Option<T>) {
        match self {
            Self::Keep => {}
            Self::Clear => *slot = None,
            Self::Set(value) => *slot = Some(value.clone()),
        }
    }
}

/// `POST /api/platform/provision`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProvisionRequest {
    /// `userId`.
    pub user_id: String,
    /// The instance config.
    pub config: InstanceConfig,
}

/// `InstanceConfigSchema`.
///
/// Re-provision semantics (fixes bug §10 #19): `envVars`, `encryptedSecrets` and `channels` are the user's
/// complete lists and are *replaced* (absent or null clears them), because Next.js sends the whole config
/// and a user who removed every entry must see them gone. So are `kilocodeDefaultModel` and
/// `kilocodeModels`: absent clears them, as in the original (the UI clears a model by omitting it). Only
/// the Kilo API key survives an omission (an omitted `kilocodeApiKey` no longer wipes the key), and its
/// `kilocodeApiKeyExpiresAt` with it; a new key without an expiry clears the old expiry; `null` clears
/// either. `machineSize` absent or null keeps the stored size; `region` is stored as the user's region
/// preference.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceConfig {
    /// `envVars`.
    pub env_vars: Option<BTreeMap<String, String>>,
    /// `encryptedSecrets`.
    pub encrypted_secrets: Option<BTreeMap<String, Envelope>>,
    /// `channels`.
    pub channels: Option<Channels>,
    /// `kilocodeApiKey`.
    pub kilocode_api_key: Patch<String>,
    /// `kilocodeApiKeyExpiresAt`.
    pub kilocode_api_key_expires_at: Patch<String>,
    /// `kilocodeDefaultModel` (not regex-checked on provision, as in the original).
    pub kilocode_default_model: Patch<String>,
    /// `kilocodeModels`.
    pub kilocode_models: Patch<Vec<KiloCodeModel>>,
    /// `machineSize`.
    pub machine_size: Option<MachineSize>,
    /// `region`: comma-separated priority list.
    pub region: Option<String>,
}

/// `PATCH /api/platform/kilocode-config`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KiloCodeConfigPatch {
    /// `userId`.
    pub user_id: String,
    /// `kilocodeApiKey`.
    pub kilocode_api_key: Patch<String>,
    /// `kilocodeApiKeyExpiresAt`.
    pub kilocode_api_key_expires_at: Patch<String>,
    /// `kilocodeDefaultModel`, checked against `^kilocode/[^/]+/.+$`.
    pub kilocode_default_model: Patch<String>,
    /// `kilocodeModels`.
    pub kilocode_models: Patch<Vec<KiloCodeModel>>,
}

/// `PATCH /api/platform/channels`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelsPatch {
    /// `userId`.
    pub user_id: String,
    /// `channels.telegramBotToken`.
    pub telegram_bot_token: Patch<Envelope>,
    /// `channels.discordBotToken`.
    pub discord_bot_token: Patch<Envelope>,
    /// `channels.slackBotToken`.
    pub slack_bot_token: Patch<Envelope>,
    /// `channels.slackAppToken`.
    pub slack_app_token: Patch<Envelope>,
}

/// Env var names must be shell identifiers.
pub fn is_shell_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Prefixes reserved for the encrypted machine env.
pub const RESERVED_ENV_PREFIXES: [&str; 2] = ["KILOCLAW_ENC_", "KILOCLAW_ENV_"];

/// The rule violated by an env var name, as the message zod gave.
pub fn env_var_name_problem(name: &str) -> Option<&'static str> {
    if !is_shell_identifier(name) {
        Some("Must be a valid shell identifier")
    } else if RESERVED_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Some("Uses reserved prefix (KILOCLAW_ENC_ or KILOCLAW_ENV_)")
    } else {
        None
    }
}

/// `^kilocode/[^/]+/.+$`.
pub fn is_kilocode_model_id(model: &str) -> bool {
    model
        .strip_prefix("kilocode/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(provider, name)| !provider.is_empty() && !name.is_empty())
}

const MODEL_MESSAGE: &str = "kilocodeDefaultModel must start with kilocode/ and include a provider";

struct Fields {
    object: Map<String, Value>,
    errors: FieldErrors,
}

impl Fields {
    fn parse(body: &[u8]) -> Result<Self, RequestError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(object)) => Ok(Self {
                object,
                errors: FieldErrors::default(),
            }),
            Ok(_) => Err(RequestError::Invalid(FieldErrors(BTreeMap::from([(
                "_root".to_owned(),
                vec!["Expected object".to_owned()],
            )])))),
            Err(_) => Err(RequestError::MalformedJson),
        }
    }

    fn user_id(&mut self) -> String {
        match self.object.get("userId") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => {
                self.errors
                    .add("userId", "String must contain at least 1 character(s)");
                String::new()
            }
            None => {
                self.errors.add("userId", "Required");
                String::new()
            }
            Some(_) => {
                self.errors.add("userId", "Expected string");
                String::new()
            }
        }
    }

    /// Absent or null → `None`.
    fn optional<T: DeserializeOwned>(&mut self, name: &str, expected: &str) -> Option<T> {
        match self.object.get(name) {
            None | Some(Value::Null) => None,
            Some(raw) => match T::deserialize(raw) {
                Ok(value) => Some(value),
                Err(_) => {
                    self.errors.add(name, format!("Expected {expected}"));
                    None
                }
            },
        }
    }

    fn patch<T: DeserializeOwned>(&mut self, name: &str, expected: &str) -> Patch<T> {
        match self.object.get(name) {
            None => Patch::Keep,
            Some(Value::Null) => Patch::Clear,
            Some(raw) => match T::deserialize(raw) {
                Ok(value) => Patch::Set(value),
                Err(_) => {
                    self.errors.add(name, format!("Expected {expected}"));
                    Patch::Keep
                }
            },
        }
    }

    fn finish<T>(self, value: T) -> Result<T, RequestError> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(RequestError::Invalid(self.errors))
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelsInput {
    #[serde(default)]
    telegram_bot_token: Option<Envelope>,
    #[serde(default)]
    discord_bot_token: Option<Envelope>,
    #[serde(default)]
    slack_bot_token: Option<Envelope>,
    #[serde(default)]
    slack_app_token: Option<Envelope>,
}

#[derive(Deserialize)]
struct MachineSizeInput {
    cpus: f64,
    memory_mb: f64,
    #[serde(default)]
    cpu_kind: Option<CpuKind>,
}

fn check_env_names<'a>(
    errors: &mut FieldErrors,
    field: &str,
    names: impl Iterator<Item = &'a String>,
) {
    for name in names {
        if let Some(problem) = env_var_name_problem(name) {
            errors.add(field, problem);
        }
    }
}

fn check_envelopes<'a>(
    errors: &mut FieldErrors,
    field: &str,
    envelopes: impl Iterator<Item = &'a Envelope>,
) {
    for envelope in envelopes {
        if envelope.algorithm != "rsa-aes-256-gcm" || envelope.version != 1 {
            errors.add(
                field,
                "Envelope must have algorithm rsa-aes-256-gcm and version 1",
            );
        }
    }
}

/// Parses and validates a provision body.
pub fn parse_provision(body: &[u8]) -> Result<ProvisionRequest, RequestError> {
    let mut fields = Fields::parse(body)?;
    let user_id = fields.user_id();
    let env_vars: Option<BTreeMap<String, String>> =
        fields.optional("envVars", "record of strings");
    let encrypted_secrets: Option<BTreeMap<String, Envelope>> =
        fields.optional("encryptedSecrets", "record of encrypted envelopes");
    let channels: Option<ChannelsInput> =
        fields.optional("channels", "object of encrypted envelopes");
    let machine_size: Option<MachineSizeInput> = fields.optional(
        "machineSize",
        "{cpus:number, memory_mb:number, cpu_kind?:'shared'|'performance'}",
    );
    let region: Option<String> = fields.optional("region", "string");
    let kilocode_api_key = fields.patch("kilocodeApiKey", "string");
    // The expiry belongs to the key: kept with an omitted key, cleared when a new key comes without one.
    let kilocode_api_key_expires_at = match fields.patch("kilocodeApiKeyExpiresAt", "string") {
        Patch::Keep if kilocode_api_key != Patch::Keep => Patch::Clear,
        patch => patch,
    };
    let config = InstanceConfig {
        kilocode_api_key,
        kilocode_api_key_expires_at,
        kilocode_default_model: fields
            .patch("kilocodeDefaultModel", "string")
            .absent_clears(),
        kilocode_models: fields
            .patch("kilocodeModels", "array of {id, name}")
            .absent_clears(),
        env_vars,
        encrypted_secrets,
        channels: channels
            .map(|c| Channels {
                telegram_bot_token: c.telegram_bot_token,
                discord_bot_token: c.discord_bot_token,
                slack_bot_token: c.slack_bot_token,
                slack_app_token: c.slack_app_token,
            })
            .filter(|c| c.count() > 0),
        machine_size: machine_size.and_then(|size| {
            let valid = |n: f64| n.fract() == 0.0 && n >= 1.0 && n <= f64::from(u32::MAX);
            if valid(size.cpus) && valid(size.memory_mb) {
                Some(MachineSize {
                    cpus: size.cpus as u32,
                    memory_mb: size.memory_mb as u32,
                    cpu_kind: size.cpu_kind,
                })
            } else {
                fields.errors.add(
                    "machineSize",
                    "cpus and memory_mb must be positive integers",
                );
                None
            }
        }),
        region,
    };
    if let Some(env) = &config.env_vars {
        check_env_names(&mut fields.errors, "envVars", env.keys());
    }
    if let Some(secrets) = &config.encrypted_secrets {
        check_env_names(&mut fields.errors, "encryptedSecrets", secrets.keys());
        check_envelopes(&mut fields.errors, "encryptedSecrets", secrets.values());
    }
    if let Some(channels) = &config.channels {
        let tokens = [
            &channels.telegram_bot_token,
            &channels.discord_bot_token,
            &channels.slack_bot_token,
            &channels.slack_app_token,
        ];
        check_envelopes(&mut fields.errors, "channels", tokens.into_iter().flatten());
    }
    if let Some(region) = &config.region
        && let Err(reason) = validate_regions(region)
    {
        fields.errors.add("region", reason);
    }
    fields.finish(ProvisionRequest { user_id, config })
}

/// Parses and validates a kilocode-config PATCH body.
pub fn parse_kilocode_patch(body: &[u8]) -> Result<KiloCodeConfigPatch, RequestError> {
    let mut fields = Fields::parse(body)?;
    let patch = KiloCodeConfigPatch {
        user_id: fields.user_id(),
        kilocode_api_key: fields.patch("kilocodeApiKey", "string"),
        kilocode_api_key_expires_at: fields.patch("kilocodeApiKeyExpiresAt", "string"),
        kilocode_default_model: fields.patch("kilocodeDefaultModel", "string"),
        kilocode_models: fields.patch("kilocodeModels", "array of {id, name}"),
    };
    if let Patch::Set(model) = &patch.kilocode_default_model
        && !is_kilocode_model_id(model)
    {
        fields.errors.add("kilocodeDefaultModel", MODEL_MESSAGE);
    }
    fields.finish(patch)
}

/// Parses and validates a channels PATCH body.
pub fn parse_channels_patch(body: &[u8]) -> Result<ChannelsPatch, RequestError> {
    let mut fields = Fields::parse(body)?;
    let user_id = fields.user_id();
    let channels = match fields.object.get("channels") {
        Some(Value::Object(channels)) => channels.clone(),
        None => {
            fields.errors.add("channels", "Required");
            Map::new()
        }
        Some(_) => {
            fields.errors.add("channels", "Expected object");
            Map::new()
        }
    };
    let mut nested = Fields {
        object: channels,
        errors: FieldErrors::default(),
    };
    let patch = ChannelsPatch {
        user_id,
        telegram_bot_token: nested.patch("telegramBotToken", "encrypted envelope or null"),
        discord_bot_token: nested.patch("discordBotToken", "encrypted envelope or null"),
        slack_bot_token: nested.patch("slackBotToken", "encrypted envelope or null"),
        slack_app_token: nested.patch("slackAppToken", "encrypted envelope or null"),
    };
    for (field, messages) in nested.errors.0 {
        for message in messages {
            fields.errors.add("channels", format!("{field}: {message}"));
        }
    }
    let set = [
        &patch.telegram_bot_token,
        &patch.discord_bot_token,
        &patch.slack_bot_token,
        &patch.slack_app_token,
    ];
    check_envelopes(
        &mut fields.errors,
        "channels",
        set.into_iter()
            .filter_map(|p| if let Patch::Set(e) = p { Some(e) } else { None }),
    );
    fields.finish(patch)
}

/// Parses `{userId}` (start, stop, destroy, doctor).
pub fn parse_user_id_request(body: &[u8]) -> Result<String, RequestError> {
    let mut fields = Fields::parse(body)?;
    let user_id = fields.user_id();
    fields.finish(user_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope() -> Value {
        json!({"encryptedData": "ZGF0YQ==", "encryptedDEK": "ZGVr", "algorithm": "rsa-aes-256-gcm", "version": 1})
    }

    fn details(
        result: Result<impl std::fmt::Debug, RequestError>,
    ) -> BTreeMap<String, Vec<String>> {
        match result {
            Err(RequestError::Invalid(errors)) => errors.0,
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn provision_parses_full_body_and_ignores_unknown_keys() {
        let body = json!({
            "userId": "u1", "envVars": {"FOO": "bar"}, "encryptedSecrets": {"TOKEN": envelope()},
            "channels": {"telegramBotToken": envelope()}, "kilocodeApiKey": "k", "kilocodeDefaultModel": "anything",
            "kilocodeModels": [{"id": "a", "name": "A"}], "machineSize": {"cpus": 4, "memory_mb": 8192},
            "region": "ams,lhr", "somethingNew": true
        });
        let request = parse_provision(body.to_string().as_bytes()).expect("valid");
        assert_eq!(request.user_id, "u1");
        assert_eq!(request.config.kilocode_api_key, Patch::Set("k".into()));
        assert_eq!(
            request.config.kilocode_api_key_expires_at,
            Patch::Clear,
            "a new key without an expiry clears the old expiry"
        );
        let bare = parse_provision(br#"{"userId":"u1"}"#).expect("valid");
        assert_eq!(
            bare.config.kilocode_api_key,
            Patch::Keep,
            "an omitted key is kept"
        );
        assert_eq!(bare.config.kilocode_api_key_expires_at, Patch::Keep);
        assert_eq!(
            bare.config.kilocode_default_model,
            Patch::Clear,
            "an omitted model is cleared"
        );
        assert_eq!(bare.config.kilocode_models, Patch::Clear);
        assert_eq!(request.config.channels.map(|c| c.count()), Some(1));
        assert_eq!(
            request.config.machine_size,
            Some(MachineSize {
                cpus: 4,
                memory_mb: 8192,
                cpu_kind: None
            })
        );
    }

    #[test]
    fn provision_rejects_bad_env_var_names_with_field_errors() {
        let body = json!({"userId": "u", "envVars": {"1BAD": "x", "KILOCLAW_ENC_X": "y", "OK": "z"},
            "encryptedSecrets": {"has-dash": envelope()}});
        let details = details(parse_provision(body.to_string().as_bytes()));
        assert_eq!(
            details["envVars"],
            vec![
                "Must be a valid shell identifier",
                "Uses reserved prefix (KILOCLAW_ENC_ or KILOCLAW_ENV_)"
            ]
        );
        assert_eq!(
            details["encryptedSecrets"],
            vec!["Must be a valid shell identifier"]
        );
    }

    #[test]
    fn provision_rejects_wrong_types_and_missing_user() {
        let body = json!({"envVars": {"A": 1}, "machineSize": {"cpus": "two"}, "region": "us,eu"});
        let details = details(parse_provision(body.to_string().as_bytes()));
        assert_eq!(details["userId"], vec!["Required"]);
        assert_eq!(details["envVars"], vec!["Expected record of strings"]);
        assert!(details.contains_key("machineSize"));
        assert!(details.contains_key("region"));
    }

    #[test]
    fn malformed_json_is_its_own_error() {
        assert_eq!(
            parse_provision(b"{nope").err(),
            Some(RequestError::MalformedJson)
        );
        assert_eq!(
            parse_user_id_request(b"").err(),
            Some(RequestError::MalformedJson)
        );
    }

    #[test]
    fn kilocode_patch_checks_model_regex_and_null_clears() {
        let bad = json!({"userId": "u", "kilocodeDefaultModel": "anthropic/claude"});
        assert_eq!(
            details(parse_kilocode_patch(bad.to_string().as_bytes()))["kilocodeDefaultModel"],
            vec![MODEL_MESSAGE]
        );
        let ok = json!({"userId": "u", "kilocodeDefaultModel": "kilocode/anthropic/claude-opus-4.5", "kilocodeApiKey": null});
        let patch = parse_kilocode_patch(ok.to_string().as_bytes()).expect("valid");
        assert_eq!(patch.kilocode_api_key, Patch::Clear);
        assert_eq!(patch.kilocode_models, Patch::Keep);
        assert!(!is_kilocode_model_id("kilocode//x"));
        assert!(!is_kilocode_model_id("kilocode/anthropic/"));
        assert!(is_kilocode_model_id("kilocode/a/b/c"));
    }

    #[test]
    fn channels_patch_distinguishes_absent_null_and_set() {
        let body = json!({"userId": "u", "channels": {"telegramBotToken": envelope(), "discordBotToken": null}});
        let patch = parse_channels_patch(body.to_string().as_bytes()).expect("valid");
        assert!(matches!(patch.telegram_bot_token, Patch::Set(_)));
        assert_eq!(patch.discord_bot_token, Patch::Clear);
        assert_eq!(patch.slack_bot_token, Patch::Keep);
        let bad = json!({"userId": "u", "channels": {"slackBotToken": "plaintext"}});
        assert!(details(parse_channels_patch(bad.to_string().as_bytes())).contains_key("channels"));
    }

    #[test]
    fn user_id_request_requires_non_empty_user_id() {
        assert_eq!(parse_user_id_request(br#"{"userId":"u"}"#), Ok("u".into()));
        assert_eq!(
            details(parse_user_id_request(br#"{"userId":""}"#))["userId"],
            vec!["String must contain at least 1 character(s)"]
        );
    }
}
