//! The per-user instance record: every field the original Durable Object persisted (original-behaviour.md
//! §4.1), plus the store's own fields (schema version, record version, lease, next reconcile time) and the
//! per-user Fly app's setup state (§4.8), which lives in the same record so one CAS covers both.
//!
//! Encoding is JSON with the original's camelCase names and a `schemaVersion`. Decoding is *tolerant*
//! (fixes bug §10 #18): each field is decoded on its own, a field that does not decode falls back to its
//! default and its raw value is kept under `_quarantine`, and unknown fields (written by a newer version) are
//! carried through unchanged. A bad `envVars` can therefore never make the store forget `flyMachineId`.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Schema version written by this build.
pub const SCHEMA_VERSION: u32 = 1;

/// Lifecycle state (`status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Config stored, volume created, no machine started yet.
    Provisioned,
    /// The machine is (believed to be) started.
    Running,
    /// The machine is stopped (or gone and not yet recreated).
    Stopped,
    /// Destroy in progress; only destroy retries run.
    Destroying,
}

impl InstanceState {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioned => "provisioned",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Destroying => "destroying",
        }
    }
}

/// An RSA envelope produced by Next.js (§7.4). Stored verbatim; this crate never decrypts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// base64 of `iv || AES-256-GCM ciphertext || tag`.
    pub encrypted_data: String,
    /// base64 of the RSA-OAEP-encrypted data key.
    #[serde(rename = "encryptedDEK")]
    pub encrypted_dek: String,
    /// Always `rsa-aes-256-gcm`.
    pub algorithm: String,
    /// Always 1.
    pub version: u32,
}

/// Encrypted channel tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channels {
    /// Telegram bot token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram_bot_token: Option<Envelope>,
    /// Discord bot token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord_bot_token: Option<Envelope>,
    /// Slack bot token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_bot_token: Option<Envelope>,
    /// Slack app token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_app_token: Option<Envelope>,
}

impl Channels {
    /// Number of tokens present (`channelCount`).
    pub fn count(&self) -> usize {
        [
            &self.telegram_bot_token,
            &self.discord_bot_token,
            &self.slack_bot_token,
            &self.slack_app_token,
        ]
        .iter()
        .filter(|t| t.is_some())
        .count()
    }
}

/// One entry of `kilocodeModels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KiloCodeModel {
    /// Model id, e.g. `kilocode/anthropic/claude-opus-4.5`.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// CPU class of a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuKind {
    /// Shared vCPUs (the default).
    Shared,
    /// Dedicated vCPUs.
    Performance,
}

/// Guest size override (`machineSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSize {
    /// vCPU count.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mb: u32,
    /// CPU class; `None` means shared (the original's later default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_kind: Option<CpuKind>,
}

/// The fenced lease that makes one caller the single writer for a user (see the `store` module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// Unique id of the holder (one per operation).
    pub owner: String,
    /// Record version at acquisition; a takeover always gets a larger fence.
    pub fence: u64,
    /// When the lease lapses unless renewed.
    pub expires_at_ms: i64,
}

/// Setup state of the user's own Fly app (§4.8), kept across destroy for reuse.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSetup {
    /// The app exists (created or verified as ours).
    pub created: bool,
    /// An IPv6 address is allocated.
    pub ipv6_allocated: bool,
    /// A shared IPv4 address is allocated.
    pub ipv4_allocated: bool,
    /// The machine-env key (base64, 32 bytes) set as the app secret `KILOCLAW_ENV_KEY`
    /// ([`crate::secrets::machine_env`]). Set once per app: a start reuses it instead of re-setting the
    /// secret (which bumped the app's secrets version on every start in the original, §10 #23).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_key: Option<String>,
    /// The app's secrets version that setting `env_key` returned: machines are created and updated with
    /// it as `min_secrets_version`, so they never boot without the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_key_secrets_version: Option<u64>,
}

impl std::fmt::Debug for AppSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log line.
        f.debug_struct("AppSetup")
            .field("created", &self.created)
            .field("ipv6_allocated", &self.ipv6_allocated)
            .field("ipv4_allocated", &self.ipv4_allocated)
            .field("has_env_key", &self.env_key.is_some())
            .field("env_key_secrets_version", &self.env_key_secrets_version)
            .finish()
    }
}

impl AppSetup {
    /// Every setup step is done.
    pub fn is_complete(&self) -> bool {
        self.created && self.ipv6_allocated && self.ipv4_allocated
    }
}

/// The stored state of one user's instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    /// Encoding schema: [`SCHEMA_VERSION`], or the newer one a newer release wrote (kept, see
    /// [`InstanceRecord::encode`]).
    pub schema_version: u32,
    /// Incremented by every write; makes value-comparing CAS backends immune to ABA.
    pub version: u64,
    /// Current single-writer lease, if any.
    pub lease: Option<Lease>,
    /// Owner; empty means not provisioned.
    pub user_id: String,
    /// `base64url(userId)`; empty means not provisioned.
    pub sandbox_id: String,
    /// Lifecycle state; `None` when not provisioned.
    pub status: Option<InstanceState>,
    /// User plaintext env vars.
    pub env_vars: Option<BTreeMap<String, String>>,
    /// User secrets as RSA envelopes.
    pub encrypted_secrets: Option<BTreeMap<String, Envelope>>,
    /// Plaintext Kilo API key for the machine.
    pub kilocode_api_key: Option<String>,
    /// ISO expiry of that key.
    pub kilocode_api_key_expires_at: Option<String>,
    /// Default model.
    pub kilocode_default_model: Option<String>,
    /// Model list.
    pub kilocode_models: Option<Vec<KiloCodeModel>>,
    /// Encrypted channel tokens.
    pub channels: Option<Channels>,
    /// Epoch ms of the first provision.
    pub provisioned_at: Option<i64>,
    /// Epoch ms of the last successful start.
    pub last_started_at: Option<i64>,
    /// Epoch ms of the last stop.
    pub last_stopped_at: Option<i64>,
    /// Per-user Fly app; `None` means the legacy shared app (`fly_app_name` setting).
    pub fly_app_name: Option<String>,
    /// Fly machine id.
    pub fly_machine_id: Option<String>,
    /// Fly volume id.
    pub fly_volume_id: Option<String>,
    /// Region of the volume (and so of the machine).
    pub fly_region: Option<String>,
    /// Guest override.
    pub machine_size: Option<MachineSize>,
    /// The user's region priority list from provision (the original dropped it; bug §10 #16).
    pub region_preference: Option<String>,
    /// Consecutive reconcile checks that saw the machine stopped while status is running.
    pub health_check_fail_count: u32,
    /// Destroy intent: machine still to delete.
    pub pending_destroy_machine_id: Option<String>,
    /// Destroy intent: volume still to delete.
    pub pending_destroy_volume_id: Option<String>,
    /// Machines replaced during capacity recovery that are not yet confirmed deleted (bug §10 #16).
    pub orphaned_machine_ids: Vec<String>,
    /// Volumes replaced during capacity recovery that are not yet confirmed deleted (§10 #6).
    pub orphaned_volume_ids: Vec<String>,
    /// Epoch ms at which a Fly create (volume or machine) was about to be sent whose result is not
    /// recorded yet: written before the call, cleared with the created id. Fly can create and still
    /// answer an error (a 5xx, a timeout), and a holder can die between its create and its commit;
    /// while this is set the next holder lists the app by name and metadata first and adopts or
    /// orphans what no field names (see `lifecycle::resources`).
    pub unconfirmed_create_at: Option<i64>,
    /// Epoch ms of the last Fly metadata recovery attempt (30-minute cooldown).
    pub last_metadata_recovery_at: Option<i64>,
    /// When the reconciler should next look at this instance.
    pub next_check_at_ms: Option<i64>,
    /// When a status read last asked Fly about the machine (30 s throttle).
    pub last_live_check_at: Option<i64>,
    /// When a check last read both the machine and the volume from Fly (due checks in between may
    /// rely on the fleet listing; `lifecycle::reconcile`).
    pub last_full_check_at: Option<i64>,
    /// Per-user Fly app setup progress.
    pub app_setup: AppSetup,
    /// Raw values of fields that failed to decode, kept for forensics; never interpreted.
    #[serde(rename = "_quarantine", skip_serializing_if = "Map::is_empty")]
    pub quarantine: Map<String, Value>,
    /// Fields this build does not know (written by a newer build), carried through unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What tolerant decoding had to repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeReport {
    /// Fields that did not decode and fell back to their default.
    pub bad_fields: Vec<String>,
    /// The record was written by a newer schema.
    pub newer_schema: bool,
}

/// Why a stored value is unusable as a record at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    /// Not JSON, or not a JSON object. Not retryable; the value needs an operator.
    #[error("instance record is not a JSON object: {0}")]
    NotAnObject(String),
}

const KNOWN_FIELDS: &[&str] = &[
    "schemaVersion",
    "version",
    "lease",
    "userId",
    "sandboxId",
    "status",
    "envVars",
    "encryptedSecrets",
    "kilocodeApiKey",
    "kilocodeApiKeyExpiresAt",
    "kilocodeDefaultModel",
    "kilocodeModels",
    "channels",
    "provisionedAt",
    "lastStartedAt",
    "lastStoppedAt",
    "flyAppName",
    "flyMachineId",
    "flyVolumeId",
    "flyRegion",
    "machineSize",
    "regionPreference",
    "healthCheckFailCount",
    "pendingDestroyMachineId",
    "pendingDestroyVolumeId",
    "orphanedMachineIds",
    "orphanedVolumeIds",
    "unconfirmedCreateAt",
    "lastMetadataRecoveryAt",
    "nextCheckAtMs",
    "lastLiveCheckAt",
    "lastFullCheckAt",
    "appSetup",
    "_quarantine",
];

impl InstanceRecord {
    /// An empty, unprovisioned record for a brand-new key.
    pub fn empty() -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            ..Self::default()
        }
    }

    /// The record describes a provisioned instance (the original's `userId != ''`).
    pub fn is_provisioned(&self) -> bool {
        !self.user_id.is_empty() && self.status.is_some()
    }

    /// The reconciler must keep looking at this record: it is provisioned, it has Fly resources to
    /// settle or delete ([`Self::has_unsettled_creates`]), or it holds the volume of a first provision
    /// that failed midway ([`Self::holds_unprovisioned_volume`]).
    pub fn needs_watch(&self) -> bool {
        self.is_provisioned() || self.has_unsettled_creates() || self.holds_unprovisioned_volume()
    }

    /// Not provisioned, but it may name (or fail to name) Fly resources that still need settling or
    /// deleting — a create whose result was never recorded, or orphans — as a first provision that
    /// failed midway leaves.
    pub fn has_unsettled_creates(&self) -> bool {
        !self.is_provisioned()
            && !self.user_id.is_empty()
            && (self.unconfirmed_create_at.is_some()
                || !self.orphaned_machine_ids.is_empty()
                || !self.orphaned_volume_ids.is_empty())
    }

    /// Not provisioned, yet naming a volume: a first provision created (or adopted) it and then failed.
    /// The next provision reuses it, so it is kept; but Fly can still lose it, and a record must never
    /// go on naming a volume that is gone.
    pub fn holds_unprovisioned_volume(&self) -> bool {
        !self.is_provisioned() && !self.user_id.is_empty() && self.fly_volume_id.is_some()
    }

    /// JSON bytes of the record. A record a newer release wrote keeps its newer schema version
    /// (its unknown fields are carried through too): during a rolling deploy an older replica's
    /// write must not tell the newer ones that the record is in the old format.
    pub fn encode(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.schema_version = copy.schema_version.max(SCHEMA_VERSION);
        // Serializing plain data (strings, numbers, maps with string keys) into a Vec cannot fail.
        serde_json::to_vec(&copy).unwrap_or_default()
    }

    /// Decodes stored bytes, repairing what it can (see the module doc).
    pub fn decode(bytes: &[u8]) -> Result<(Self, DecodeReport), RecordDecodeError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| RecordDecodeError::NotAnObject(e.to_string()))?;
        let Value::Object(mut object) = value else {
            return Err(RecordDecodeError::NotAnObject("not an object".into()));
        };
        let mut report = DecodeReport::default();
        let mut quarantine = match object.remove("_quarantine") {
            Some(Value::Object(q)) => q,
            _ => Map::new(),
        };
        let mut decoder = FieldDecoder {
            object: &object,
            report: &mut report,
            quarantine: &mut quarantine,
        };

        let schema_version: u32 = decoder.field("schemaVersion").unwrap_or(SCHEMA_VERSION);
        let record = Self {
            schema_version,
            version: decoder.field("version").unwrap_or(0),
            lease: decoder.field("lease").flatten(),
            user_id: decoder.id_field("userId").unwrap_or_default(),
            sandbox_id: decoder.id_field("sandboxId").unwrap_or_default(),
            status: decoder.field("status").flatten(),
            env_vars: decoder.field("envVars").flatten(),
            encrypted_secrets: decoder.field("encryptedSecrets").flatten(),
            kilocode_api_key: decoder.field("kilocodeApiKey").flatten(),
            kilocode_api_key_expires_at: decoder.field("kilocodeApiKeyExpiresAt").flatten(),
            kilocode_default_model: decoder.field("kilocodeDefaultModel").flatten(),
            kilocode_models: decoder.field("kilocodeModels").flatten(),
            channels: decoder.field("channels").flatten(),
            provisioned_at: decoder.time_field("provisionedAt"),
            last_started_at: decoder.time_field("lastStartedAt"),
            last_stopped_at: decoder.time_field("lastStoppedAt"),
            fly_app_name: decoder.id_field("flyAppName"),
            fly_machine_id: decoder.id_field("flyMachineId"),
            fly_volume_id: decoder.id_field("flyVolumeId"),
            fly_region: decoder.id_field("flyRegion"),
            machine_size: decoder.field("machineSize").flatten(),
            region_preference: decoder.field("regionPreference").flatten(),
            health_check_fail_count: decoder.field("healthCheckFailCount").unwrap_or(0),
            pending_destroy_machine_id: decoder.id_field("pendingDestroyMachineId"),
            pending_destroy_volume_id: decoder.id_field("pendingDestroyVolumeId"),
            orphaned_machine_ids: decoder.id_list("orphanedMachineIds"),
            orphaned_volume_ids: decoder.id_list("orphanedVolumeIds"),
            unconfirmed_create_at: decoder.time_field("unconfirmedCreateAt"),
            last_metadata_recovery_at: decoder.time_field("lastMetadataRecoveryAt"),
            next_check_at_ms: decoder.time_field("nextCheckAtMs"),
            last_live_check_at: decoder.time_field("lastLiveCheckAt"),
            last_full_check_at: decoder.time_field("lastFullCheckAt"),
            app_setup: decoder.field("appSetup").unwrap_or_default(),
            quarantine: Map::new(),
            extra: Map::new(),
        };
        let mut record = record;
        report.newer_schema = schema_version > SCHEMA_VERSION;
        for known in KNOWN_FIELDS {
            object.remove(*known);
        }
        record.extra = object;
        record.quarantine = quarantine;
        // A record that carries Fly ids but lost its status to a bad field is still provisioned: treating it
        // as fresh is exactly the original's bug (a second volume on the next provision).
        if record.status.is_none()
            && !record.user_id.is_empty()
            && report.bad_fields.iter().any(|f| f == "status")
        {
            record.status = Some(InstanceState::Stopped);
        }
        Ok((record, report))
    }
}

/// An id as stored: a non-empty string, or a number written by an older release (kept as its
/// decimal text so that a bad field never loses a Fly id); anything else is no id.
pub(crate) fn id_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

struct FieldDecoder<'a> {
    object: &'a Map<String, Value>,
    report: &'a mut DecodeReport,
    quarantine: &'a mut Map<String, Value>,
}

impl FieldDecoder<'_> {
    /// `None` when absent (or null for non-Option targets); a bad value is quarantined and reported.
    fn field<T: DeserializeOwned>(&mut self, name: &str) -> Option<T> {
        let raw = self.object.get(name)?;
        match T::deserialize(raw) {
            Ok(value) => Some(value),
            Err(_) => {
                self.bad(name, raw.clone());
                None
            }
        }
    }

    /// A Fly id or similar string; a number (a plausible corruption) is kept as its text, not dropped.
    fn id_field(&mut self, name: &str) -> Option<String> {
        let value = self.object.get(name)?;
        let id = id_value(value);
        match value {
            Value::Null | Value::String(_) => {}
            Value::Number(_) => self.report.bad_fields.push(name.to_owned()),
            other => self.bad(name, other.clone()),
        }
        id
    }

    fn id_list(&mut self, name: &str) -> Vec<String> {
        match self.object.get(name) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(other) => {
                self.bad(name, other.clone());
                Vec::new()
            }
        }
    }

    /// Epoch milliseconds; accepts integers and floats (JavaScript wrote numbers).
    fn time_field(&mut self, name: &str) -> Option<i64> {
        match self.object.get(name)? {
            Value::Null => None,
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            other => {
                self.bad(name, other.clone());
                None
            }
        }
    }

    fn bad(&mut self, name: &str, raw: Value) {
        self.report.bad_fields.push(name.to_owned());
        self.quarantine.insert(name.to_owned(), raw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn provisioned() -> InstanceRecord {
        InstanceRecord {
            version: 7,
            user_id: "user-1".into(),
            sandbox_id: "dXNlci0x".into(),
            status: Some(InstanceState::Running),
            env_vars: Some(BTreeMap::from([("A".into(), "1".into())])),
            fly_app_name: Some("acct-c6c289e49e9c05b21458".into()),
            fly_machine_id: Some("m1".into()),
            fly_volume_id: Some("vol_1".into()),
            fly_region: Some("dfw".into()),
            machine_size: Some(MachineSize {
                cpus: 2,
                memory_mb: 4096,
                cpu_kind: None,
            }),
            ..InstanceRecord::empty()
        }
    }

    #[test]
    fn record_roundtrips_with_schema_version() {
        let record = provisioned();
        let bytes = record.encode();
        let json: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(json["schemaVersion"], 1);
        assert_eq!(json["flyMachineId"], "m1");
        let (decoded, report) = InstanceRecord::decode(&bytes).expect("decode");
        assert_eq!(decoded, record);
        assert_eq!(report, DecodeReport::default());
    }

    #[test]
    fn a_newer_releases_schema_version_and_fields_survive_a_write_by_this_one() {
        let mut json: Value = serde_json::from_slice(&provisioned().encode()).expect("json");
        json["schemaVersion"] = Value::from(SCHEMA_VERSION + 1);
        json["fieldOfTheFuture"] = Value::from("kept");
        let (mut decoded, report) =
            InstanceRecord::decode(json.to_string().as_bytes()).expect("decode");
        assert!(report.newer_schema);
        decoded.version += 1;
        let written: Value = serde_json::from_slice(&decoded.encode()).expect("json");
        assert_eq!(written["schemaVersion"], SCHEMA_VERSION + 1);
        assert_eq!(written["fieldOfTheFuture"], "kept");
        let fresh: Value =
            serde_json::from_slice(&InstanceRecord::default().encode()).expect("json");
        assert_eq!(
            fresh["schemaVersion"], SCHEMA_VERSION,
            "never below this build's"
        );
    }

    #[test]
    fn tolerant_decoding_keeps_fly_ids_when_another_field_is_bad() {
        let mut json: Value = serde_json::from_slice(&provisioned().encode()).expect("json");
        json["envVars"] = Value::from(42);
        json["status"] = Value::from("exploded");
        json["machineSize"] = Value::from("huge");
        let (decoded, report) =
            InstanceRecord::decode(json.to_string().as_bytes()).expect("decode");
        assert_eq!(decoded.fly_machine_id.as_deref(), Some("m1"));
        assert_eq!(decoded.fly_volume_id.as_deref(), Some("vol_1"));
        assert_eq!(decoded.env_vars, None);
        assert_eq!(
            decoded.status,
            Some(InstanceState::Stopped),
            "a provisioned record stays provisioned"
        );
        assert!(decoded.is_provisioned());
        assert_eq!(report.bad_fields, vec!["status", "envVars", "machineSize"]);
        assert_eq!(decoded.quarantine["envVars"], 42);
        // The quarantine survives a rewrite, so nothing is silently thrown away.
        let (again, _) = InstanceRecord::decode(&decoded.encode()).expect("decode");
        assert_eq!(again.quarantine["status"], "exploded");
    }

    #[test]
    fn tolerant_decoding_keeps_numeric_ids_as_text() {
        let json = serde_json::json!({"userId": "u", "status": "stopped", "flyMachineId": 12345});
        let (decoded, report) =
            InstanceRecord::decode(json.to_string().as_bytes()).expect("decode");
        assert_eq!(decoded.fly_machine_id.as_deref(), Some("12345"));
        assert_eq!(report.bad_fields, vec!["flyMachineId"]);
    }

    #[test]
    fn unknown_fields_survive_a_rewrite_and_newer_schema_is_reported() {
        let json = serde_json::json!({"schemaVersion": 9, "userId": "u", "status": "stopped", "futureField": [1]});
        let (decoded, report) =
            InstanceRecord::decode(json.to_string().as_bytes()).expect("decode");
        assert!(report.newer_schema);
        let reencoded: Value = serde_json::from_slice(&decoded.encode()).expect("json");
        assert_eq!(reencoded["futureField"], serde_json::json!([1]));
    }

    #[test]
    fn original_state_without_store_fields_decodes() {
        // A state as the original persisted it (no version, lease or schema), e.g. migrated from the DO.
        let json = serde_json::json!({
            "userId": "u", "sandboxId": "dQ", "status": "provisioned", "envVars": null,
            "provisionedAt": 1.7e12, "flyMachineId": null, "flyVolumeId": "vol_9", "healthCheckFailCount": 0
        });
        let (decoded, report) =
            InstanceRecord::decode(json.to_string().as_bytes()).expect("decode");
        assert_eq!(decoded.provisioned_at, Some(1_700_000_000_000));
        assert_eq!(decoded.fly_volume_id.as_deref(), Some("vol_9"));
        assert!(report.bad_fields.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_an_empty_record() {
        assert!(InstanceRecord::decode(b"not json").is_err());
        assert!(InstanceRecord::decode(b"[1,2]").is_err());
    }

    #[test]
    fn a_float_carried_through_survives_rewrites_unchanged() {
        // Found by fuzz/record: without serde_json's `float_roundtrip`, `5e90` decoded as
        // 4.9999999999999995e90, was written back like that and decoded as yet another number.
        let (decoded, _) =
            InstanceRecord::decode(br#"{"userId":"u","status":"stopped","scd":5e90}"#)
                .expect("decode");
        assert_eq!(decoded.extra["scd"].as_f64(), Some(5e90));
        let (again, report) = InstanceRecord::decode(&decoded.encode()).expect("decode");
        assert_eq!(again, decoded);
        assert!(report.bad_fields.is_empty());
    }

    fn arb_opt_id() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-z0-9_]{1,12}")
    }

    prop_compose! {
        fn arb_record()(
            version in 0u64..1_000_000,
            user in "[a-z0-9-]{1,20}",
            machine in arb_opt_id(),
            volume in arb_opt_id(),
            app in arb_opt_id(),
            fails in 0u32..10,
            env in proptest::collection::btree_map("[A-Z_]{1,8}", ".{0,12}", 0..4),
            started in proptest::option::of(0i64..4_000_000_000_000),
        ) -> InstanceRecord {
            InstanceRecord {
                version,
                user_id: user,
                sandbox_id: "s".into(),
                status: Some(InstanceState::Stopped),
                env_vars: Some(env),
                fly_machine_id: machine,
                fly_volume_id: volume,
                fly_app_name: app,
                health_check_fail_count: fails,
                last_started_at: started,
                ..InstanceRecord::empty()
            }
        }
    }

    proptest! {
        #[test]
        fn record_encode_decode_roundtrip(record in arb_record()) {
            let (decoded, report) = InstanceRecord::decode(&record.encode()).expect("decode");
            prop_assert_eq!(decoded, record);
            prop_assert!(report.bad_fields.is_empty());
        }

        #[test]
        fn tolerant_decoding_never_loses_fly_ids(
            record in arb_record(),
            corrupt in proptest::sample::subsequence(
                vec!["envVars", "status", "machineSize", "channels", "lease", "kilocodeModels", "healthCheckFailCount", "version", "appSetup"], 0..9),
            junk in prop_oneof![Just(Value::from(true)), Just(Value::from("x")), Just(serde_json::json!([1])), Just(serde_json::json!({"a": 1}))],
        ) {
            let mut json: Value = serde_json::from_slice(&record.encode()).expect("json");
            for field in &corrupt {
                json[*field] = junk.clone();
            }
            let (decoded, _) = InstanceRecord::decode(json.to_string().as_bytes()).expect("decode");
            prop_assert!(decoded.is_provisioned());
            prop_assert_eq!(decoded.fly_machine_id, record.fly_machine_id);
            prop_assert_eq!(decoded.fly_volume_id, record.fly_volume_id);
            prop_assert_eq!(decoded.fly_app_name, record.fly_app_name);
        }
    }
}
