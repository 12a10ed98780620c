//! Wire types of the Fly Machines API with Fly's own JSON names.
//!
//! Objects Fly returns and we send back (machine config above all) keep unknown fields in an `extra` map,
//! so "read the machine, change one thing, update" does not drop settings this crate does not model.
//! Enums keep unknown values as `Unknown(text)` instead of failing, because Fly adds states over time.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Defines a string enum whose unknown values are preserved verbatim.
macro_rules! open_string_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this crate does not know, kept as Fly sent it.
            Unknown(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Unknown(text) => text,
                }
            }

            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => Self::$variant,)+
                    other => Self::Unknown(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Ok(Self::parse(&text))
            }
        }
    };
}

open_string_enum! {
    /// `Machine.state` (fact sheet §3.1).
    pub enum MachineState {
        Creating => "creating",
        Created => "created",
        Starting => "starting",
        Started => "started",
        Stopping => "stopping",
        Stopped => "stopped",
        Suspending => "suspending",
        Suspended => "suspended",
        Restarting => "restarting",
        Updating => "updating",
        Replacing => "replacing",
        Destroying => "destroying",
        Destroyed => "destroyed",
        Failed => "failed",
        LaunchFailed => "launch_failed",
        Replaced => "replaced",
        Migrated => "migrated",
    }
}

impl MachineState {
    /// A state Fly is moving out of by itself (a transition is in progress).
    pub fn is_transitional(&self) -> bool {
        matches!(
            self,
            Self::Creating
                | Self::Starting
                | Self::Stopping
                | Self::Suspending
                | Self::Restarting
                | Self::Updating
                | Self::Replacing
                | Self::Destroying
                | Self::LaunchFailed
        )
    }

    /// The machine is being or has been removed; it will never run again.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Destroying | Self::Destroyed)
    }
}

open_string_enum! {
    /// Target of `GET /machines/{id}/wait` (`state=`). `settled` is a wait-only pseudo-state.
    pub enum WaitState {
        Started => "started",
        Stopped => "stopped",
        Suspended => "suspended",
        Destroyed => "destroyed",
        Failed => "failed",
        Settled => "settled",
    }
}

open_string_enum! {
    /// `Volume.state` (fact sheet §4.4). `attached`/`detached` are not volume states.
    pub enum VolumeState {
        Creating => "creating",
        Created => "created",
        Extending => "extending",
        Restoring => "restoring",
        EnablingRemoteExport => "enabling_remote_export",
        Hydrating => "hydrating",
        Recovering => "recovering",
        SchedulingDestroy => "scheduling_destroy",
        PendingDestroy => "pending_destroy",
        ForkCleanup => "fork_cleanup",
        WaitingForDetach => "waiting_for_detach",
        Destroying => "destroying",
        Destroyed => "destroyed",
    }
}

impl VolumeState {
    /// States fly-go treats as deleted (and filters from listings).
    pub fn is_deleted(&self) -> bool {
        matches!(
            self,
            Self::SchedulingDestroy
                | Self::PendingDestroy
                | Self::ForkCleanup
                | Self::WaitingForDetach
                | Self::Destroying
                | Self::Destroyed
        )
    }
}

open_string_enum! {
    /// `type` of an IP assignment request.
    pub enum IpAssignmentType {
        V4 => "v4",
        V6 => "v6",
        SharedV4 => "shared_v4",
        PrivateV6 => "private_v6",
        EgressV4 => "egress_v4",
        EgressV6 => "egress_v6",
        EgressPair => "egress_pair",
    }
}

/// `services[].autostop`: Fly accepts `false`/`"off"`, `true`/`"stop"` and `"suspend"`, and answers with
/// booleans for the first two. We always send the string form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Autostop {
    Off,
    Stop,
    Suspend,
}

impl Autostop {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Stop => "stop",
            Self::Suspend => "suspend",
        }
    }
}

impl Serialize for Autostop {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Autostop {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Bool(false) => Ok(Self::Off),
            Value::Bool(true) => Ok(Self::Stop),
            Value::String(text) => match text.as_str() {
                "off" => Ok(Self::Off),
                "stop" => Ok(Self::Stop),
                "suspend" => Ok(Self::Suspend),
                other => Err(serde::de::Error::custom(format!(
                    "unknown autostop value `{other}`"
                ))),
            },
            other => Err(serde::de::Error::custom(format!(
                "autostop must be a bool or string, got {other}"
            ))),
        }
    }
}

/// `config.guest`; also the `compute` hint of a volume create.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_kind: Option<String>,
    #[serde(default)]
    pub cpus: u32,
    #[serde(default)]
    pub memory_mb: u32,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `services[].ports[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handlers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_https: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config.services[]`: how Fly Proxy reaches the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineService {
    pub protocol: String,
    pub internal_port: u16,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Omitted means the proxy does start stopped machines (observed, fact sheet §6.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop: Option<Autostop>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config.mounts[]`: at most one per machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineMount {
    pub volume: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config.restart`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// `no`, `always` or `on-failure`.
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `fly.MachineConfig`, the subset this project sets plus everything else preserved in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineConfig {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<MachineService>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MachineMount>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_destroy: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `Machine.events` (newest first).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub source: String,
    /// Unix epoch milliseconds.
    #[serde(default)]
    pub timestamp: i64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `Machine` as returned by get, list, create and update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub state: MachineState,
    #[serde(default)]
    pub region: String,
    /// ULID of the current version; changes on every update and (in the simulator) every start.
    #[serde(default)]
    pub instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
    /// Absent in summary listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<MachineConfig>,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<MachineEvent>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Machine {
    /// Config metadata value, if the machine carries a config with that key.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.config.as_ref()?.metadata.get(key).map(String::as_str)
    }
}

/// `POST /apps/{app}/machines`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateMachineRequest {
    pub config: MachineConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One region, or a prioritised comma list / alias for machines (not for volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_launch: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_service_registration: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_secrets_version: Option<u64>,
}

/// `POST /apps/{app}/machines/{id}`: the entire config, no merge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateMachineRequest {
    pub config: MachineConfig,
    /// Optimistic concurrency: the `instance_id` the caller read; Fly answers 409 when it moved on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_launch: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_secrets_version: Option<u64>,
}

/// Filters for `GET /apps/{app}/machines`. All metadata pairs must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineListFilter {
    pub metadata: BTreeMap<String, String>,
    pub region: Option<String>,
    pub include_deleted: bool,
}

impl MachineListFilter {
    pub fn metadata(key: impl Into<String>, value: impl Into<String>) -> Self {
        let mut filter = Self::default();
        filter.metadata.insert(key.into(), value.into());
        filter
    }
}

/// Query of `GET /orgs/{org}/machines`, the org-wide listing the reconciler follows for changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgMachineQuery {
    /// Only machines updated strictly after this RFC 3339 time.
    pub updated_after: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (Fly allows at most 1,000).
    pub limit: Option<u32>,
    /// Also list destroyed machines, so that a client following changes learns of them.
    pub include_deleted: bool,
}

/// One page of `GET /orgs/{org}/machines`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrgMachinePage {
    #[serde(default)]
    pub machines: Vec<Machine>,
    /// Present while more pages follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_machine_id: Option<String>,
    /// `updated_at` of the page's last machine (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Body of a 200 from `/start` (docs and fly-go disagree on fields; all optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StartMachineResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<MachineState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_host: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Parameters of `GET /machines/{id}/wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitRequest {
    pub state: WaitState,
    /// Seconds; clamped to Fly's 1..=60 range when the request is built.
    pub timeout_s: u32,
    /// Required by Fly for `stopped`.
    pub instance_id: Option<String>,
}

impl WaitRequest {
    pub fn new(state: WaitState, timeout_s: u32) -> Self {
        Self {
            state,
            timeout_s,
            instance_id: None,
        }
    }

    pub fn with_instance_id(mut self, instance_id: impl Into<String>) -> Self {
        self.instance_id = Some(instance_id.into());
        self
    }
}

/// Body of a 200 from `/wait`: docs say `{"ok":true}`, the 2026 spec adds the rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WaitResponse {
    #[serde(default)]
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MachineState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// `POST /machines/{id}/exec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

/// Result of an exec. HTTP 200 even when the command failed: check `exit_code`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecResponse {
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
}

/// `Volume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub state: VolumeState,
    #[serde(default)]
    pub size_gb: u32,
    #[serde(default)]
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    #[serde(default)]
    pub attached_machine_id: Option<String>,
    #[serde(default)]
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_backup_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_status: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /apps/{app}/volumes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateVolumeRequest {
    pub name: String,
    /// A single region code; Fly accepts no lists or aliases for volumes.
    pub region: String,
    pub size_gb: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<u32>,
    /// Fork: copy this volume's data into the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume_id: Option<String>,
    /// Place the volume on a host with room for a machine of this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<GuestConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_unique_zone: Option<bool>,
}

/// `VolumeSnapshot`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    pub id: String,
    /// Bytes.
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size: Option<u64>,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /apps`. Fly's docs name the field `app_name`, its 2026 spec and Go client `name`; both are sent
/// (Fly's server ignores unknown fields), so either reading works.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateAppRequest {
    pub app_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub org_slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

impl CreateAppRequest {
    pub fn new(
        app_name: impl Into<String>,
        org_slug: impl Into<String>,
        network: Option<String>,
    ) -> Self {
        let app_name = app_name.into();
        Self {
            name: Some(app_name.clone()),
            app_name,
            org_slug: org_slug.into(),
            network,
        }
    }

    /// The app name, whichever field carried it.
    pub fn effective_name(&self) -> &str {
        if self.app_name.is_empty() {
            self.name.as_deref().unwrap_or_default()
        } else {
            &self.app_name
        }
    }
}

/// 201 body of `POST /apps`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateAppResponse {
    #[serde(default)]
    pub id: String,
    /// Unix epoch milliseconds.
    #[serde(default)]
    pub created_at: i64,
}

/// `organization` of an app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppOrganization {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub slug: String,
}

/// `GET /apps/{app}` and the items of `GET /apps?org_slug=`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct App {
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<AppOrganization>,
    /// The fact sheet does not pin its shape (string or object), so it is kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_count: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /apps?org_slug=`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppList {
    #[serde(default)]
    pub total_apps: u64,
    #[serde(default)]
    pub apps: Vec<App>,
}

/// `POST /apps/{app}/ip_assignments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocateIpRequest {
    #[serde(rename = "type")]
    pub kind: IpAssignmentType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

impl AllocateIpRequest {
    pub fn of(kind: IpAssignmentType) -> Self {
        Self {
            kind,
            region: None,
            org_slug: None,
            network: None,
            service_name: None,
        }
    }
}

/// An IP assignment (also the allocate response).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpAssignment {
    /// Null for `egress_pair`.
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub service_name: String,
    #[serde(default)]
    pub shared: bool,
    #[serde(default)]
    pub created_at: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /apps/{app}/ip_assignments`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpAssignmentList {
    #[serde(default)]
    pub ips: Vec<IpAssignment>,
}

/// `POST /apps/{app}/secrets/{name}` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetSecretRequest {
    pub value: String,
}

/// Response of setting one secret: the app's new secrets version (pass it as `min_secrets_version`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetSecretResponse {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// Response of deleting one secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeleteSecretResponse {
    #[serde(default)]
    pub version: u64,
}

/// One entry of `GET /apps/{app}/secrets` (values are never requested).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// `GET /apps/{app}/secrets`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecretList {
    #[serde(default)]
    pub secrets: Vec<SecretInfo>,
}
