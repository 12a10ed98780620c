//! Machine and volume request building (original-behaviour.md §4.2): one config builder for create,
//! update and restart, the guest default, the volume request with its compute hint, and region ordering.

use std::collections::BTreeMap;

use crate::fly::{
    Autostop, CreateVolumeRequest, GuestConfig, MachineConfig, MachineMount, MachineService,
    ServicePort,
};
use crate::ids::volume_name;
use crate::record::{CpuKind, InstanceRecord, MachineSize};
use crate::settings::Settings;

/// Port the OpenClaw gateway listens on.
pub const OPENCLAW_PORT: u16 = 18789;
/// Volume size in GB (`DEFAULT_VOLUME_SIZE_GB`).
pub const DEFAULT_VOLUME_SIZE_GB: u32 = 10;
/// Where the volume is mounted.
pub const VOLUME_MOUNT_PATH: &str = "/root";
/// Metadata key holding the user id (Fly reserves `fly_*`).
pub const METADATA_USER_ID: &str = "kiloclaw_user_id";
/// Metadata key holding the sandbox id.
pub const METADATA_SANDBOX_ID: &str = "kiloclaw_sandbox_id";

/// The guest for a size override; the default is shared-cpu-2x with 4 GB, and a size without `cpu_kind`
/// is shared (the seed passed it through undefined).
pub fn guest_for(size: Option<MachineSize>) -> GuestConfig {
    let size = size.unwrap_or(MachineSize {
        cpus: 2,
        memory_mb: 4096,
        cpu_kind: Some(CpuKind::Shared),
    });
    let kind = match size.cpu_kind.unwrap_or(CpuKind::Shared) {
        CpuKind::Shared => "shared",
        CpuKind::Performance => "performance",
    };
    GuestConfig {
        cpu_kind: Some(kind.into()),
        cpus: size.cpus,
        memory_mb: size.memory_mb,
        ..GuestConfig::default()
    }
}

/// The gateway's service: OpenClaw's port behind 443 (TLS and HTTP).
pub fn gateway_service() -> MachineService {
    MachineService {
        protocol: "tcp".into(),
        internal_port: OPENCLAW_PORT,
        ports: vec![ServicePort {
            port: Some(443),
            handlers: vec!["tls".into(), "http".into()],
            ..ServicePort::default()
        }],
        // A stopped instance stays stopped: proxy traffic must not wake it (seed bug §10 #11).
        autostart: Some(false),
        autostop: Some(Autostop::Off),
        extra: Default::default(),
    }
}

/// The machine config for `record` with environment `env` (its sensitive values already sealed).
pub fn machine_config(
    record: &InstanceRecord,
    settings: &Settings,
    env: BTreeMap<String, String>,
) -> MachineConfig {
    MachineConfig {
        image: settings.image(),
        env,
        guest: Some(guest_for(record.machine_size)),
        services: vec![gateway_service()],
        mounts: record
            .fly_volume_id
            .iter()
            .map(|volume| mount(volume))
            .collect(),
        metadata: BTreeMap::from([
            (METADATA_USER_ID.to_owned(), record.user_id.clone()),
            (METADATA_SANDBOX_ID.to_owned(), record.sandbox_id.clone()),
        ]),
        ..MachineConfig::default()
    }
}

/// The `/root` mount of `volume_id`.
pub fn mount(volume_id: &str) -> MachineMount {
    MachineMount {
        volume: volume_id.to_owned(),
        path: VOLUME_MOUNT_PATH.into(),
        name: None,
        extra: Default::default(),
    }
}

/// A volume request in `region`, optionally forked from `source_volume_id`.
pub fn volume_request(
    record: &InstanceRecord,
    region: &str,
    source_volume_id: Option<&str>,
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: volume_name(&record.sandbox_id),
        region: region.to_owned(),
        size_gb: DEFAULT_VOLUME_SIZE_GB,
        source_volume_id: source_volume_id.map(str::to_owned),
        compute: Some(guest_for(record.machine_size)),
        ..CreateVolumeRequest::default()
    }
}

/// The region priority list for a record: the user's preference, else the deployment's list.
pub fn regions_for(record: &InstanceRecord, settings: &Settings) -> Vec<String> {
    let preferred = record
        .region_preference
        .as_deref()
        .map(crate::settings::parse_regions)
        .unwrap_or_default();
    if preferred.is_empty() {
        settings.fly_regions.clone()
    } else {
        preferred
    }
}

/// Moves `failed` to the end of `regions` (`deprioritizeRegion`).
pub fn deprioritize_region(mut regions: Vec<String>, failed: Option<&str>) -> Vec<String> {
    if let Some(failed) = failed
        && let Some(index) = regions.iter().position(|r| r == failed)
    {
        let region = regions.remove(index);
        regions.push(region);
    }
    regions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::build_env;

    fn record() -> InstanceRecord {
        InstanceRecord {
            user_id: "user_abc123".into(),
            sandbox_id: "dXNlcl9hYmMxMjM".into(),
            fly_volume_id: Some("vol_1".into()),
            ..InstanceRecord::empty()
        }
    }

    #[test]
    fn machine_config_matches_original_shape() {
        let settings = Settings::for_tests();
        let record = record();
        let env = build_env(&record, &settings, None).expect("env");
        let config = machine_config(&record, &settings, env.vars.clone());
        let json = serde_json::to_value(&config).expect("json");
        assert_eq!(json["image"], "registry.fly.io/kiloclaw-machines:latest");
        assert_eq!(
            json["guest"],
            serde_json::json!({"cpu_kind": "shared", "cpus": 2, "memory_mb": 4096})
        );
        assert_eq!(json["services"][0]["internal_port"], 18789);
        assert_eq!(json["services"][0]["ports"][0]["port"], 443);
        assert_eq!(
            json["services"][0]["ports"][0]["handlers"],
            serde_json::json!(["tls", "http"])
        );
        assert_eq!(json["services"][0]["autostart"], false);
        assert_eq!(json["services"][0]["autostop"], "off");
        assert_eq!(
            json["mounts"],
            serde_json::json!([{"volume": "vol_1", "path": "/root"}])
        );
        assert_eq!(json["metadata"]["kiloclaw_user_id"], "user_abc123");
        assert_eq!(json["metadata"]["kiloclaw_sandbox_id"], "dXNlcl9hYmMxMjM");
        assert!(json.get("restart").is_none_or(|v| v.is_null()));
    }

    #[test]
    fn machine_config_without_volume_has_no_mounts() {
        let mut record = record();
        record.fly_volume_id = None;
        let settings = Settings::for_tests();
        let env = build_env(&record, &settings, None).expect("env");
        assert!(
            machine_config(&record, &settings, env.vars.clone())
                .mounts
                .is_empty()
        );
    }

    #[test]
    fn cpu_kind_defaults_to_shared() {
        let guest = guest_for(Some(MachineSize {
            cpus: 4,
            memory_mb: 8192,
            cpu_kind: None,
        }));
        assert_eq!(guest.cpu_kind.as_deref(), Some("shared"));
        let guest = guest_for(Some(MachineSize {
            cpus: 4,
            memory_mb: 8192,
            cpu_kind: Some(CpuKind::Performance),
        }));
        assert_eq!(guest.cpu_kind.as_deref(), Some("performance"));
    }

    #[test]
    fn volume_request_carries_name_size_compute_hint_and_fork_source() {
        let request = volume_request(&record(), "dfw", Some("vol_old"));
        assert_eq!(request.name, "kiloclaw_dxnlcl9hymmxmjm");
        assert_eq!(request.size_gb, 10);
        assert_eq!(request.compute.map(|c| c.memory_mb), Some(4096));
        assert_eq!(request.source_volume_id.as_deref(), Some("vol_old"));
    }

    #[test]
    fn regions_prefer_user_list_and_deprioritize_failed_region() {
        let settings = Settings::for_tests();
        let mut record = record();
        assert_eq!(regions_for(&record, &settings), vec!["dfw", "yyz", "cdg"]);
        record.region_preference = Some("ams, lhr".into());
        assert_eq!(regions_for(&record, &settings), vec!["ams", "lhr"]);
        assert_eq!(
            deprioritize_region(vec!["a".into(), "b".into(), "c".into()], Some("a")),
            vec!["b", "c", "a"]
        );
    }
}
