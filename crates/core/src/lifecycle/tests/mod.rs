//! Lifecycle and reconcile tests, one or more per rule of original-behaviour.md §4–§5, named after it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::fly::{FlyApi, FlyError, MachineState};
use crate::record::{Envelope, InstanceRecord, InstanceState};
use crate::requests::{ChannelsPatch, InstanceConfig, KiloCodeConfigPatch, Patch};
use crate::settings::Settings;
use crate::store::{RecordStore, StoreError, record_key};
use crate::testing::{FakeClock, FakeFly, FlyCall, MemoryKv, SeqRandom};

use super::*;

mod recovery;

const USER: &str = "user-1";
const APP: &str = "acct-c6c289e49e9c05b21458";

struct World {
    kv: MemoryKv,
    fly: FakeFly,
    clock: FakeClock,
    random: SeqRandom,
    settings: Settings,
}

impl World {
    fn new() -> Self {
        Self {
            kv: MemoryKv::new(),
            fly: FakeFly::new(),
            clock: FakeClock::default(),
            random: SeqRandom::new(1),
            settings: Settings::for_tests(),
        }
    }

    fn instances(&self) -> Instances<'_> {
        Instances::new(
            &self.kv,
            &self.fly,
            &self.clock,
            &self.random,
            &self.settings,
        )
    }

    fn store(&self) -> RecordStore<'_, MemoryKv, FakeClock> {
        RecordStore::new(&self.kv, &self.clock, self.settings.store.clone())
    }

    fn record(&self) -> InstanceRecord {
        self.store()
            .load(USER)
            .expect("load")
            .expect("record exists")
            .record
    }

    fn edit(&self, change: impl Fn(&mut InstanceRecord)) {
        self.store()
            .update(USER, |r| {
                change(r);
                Ok::<(), StoreError>(())
            })
            .expect("edit");
    }

    fn provision(&self) -> InstanceRecord {
        self.instances()
            .provision(USER, &config())
            .expect("provision");
        self.record()
    }

    fn running(&self) -> InstanceRecord {
        self.provision();
        self.instances().start(USER).expect("start");
        self.record()
    }

    /// Provisions `user`, then overwrites the next check its record names (`None`: none at all) without
    /// touching the due index, so that tests can make a record overdue or unscheduled.
    fn provision_with_next_check(&self, user: &str, next_check_at_ms: Option<i64>) {
        self.instances()
            .provision(user, &config())
            .expect("provision");
        self.store()
            .update(user, |r| {
                r.next_check_at_ms = next_check_at_ms;
                Ok::<(), StoreError>(())
            })
            .expect("set the next check");
    }

    fn machine_state(&self) -> MachineState {
        let id = self.record().fly_machine_id.expect("machine id");
        self.fly.machine(APP, &id).expect("machine exists").state
    }
}

/// Something run before every call of a [`HookedKv`]: `operation` is `get`, `set`, `delete`, `exists`,
/// `increment`, `get_many` or `cas`; an `Err` fails the call without reaching the bucket.
trait BeforeCall {
    fn before(&self, operation: &str, keys: &[&str]) -> Result<(), crate::kv::KvError>;
}

/// The world's bucket seen through a [`BeforeCall`] hook (fault injection, call logs).
struct HookedKv<'a, H> {
    inner: &'a MemoryKv,
    hook: H,
}

impl<H: BeforeCall> crate::kv::KeyValue for HookedKv<'_, H> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, crate::kv::KvError> {
        self.hook.before("get", &[key])?;
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), crate::kv::KvError> {
        self.hook.before("set", &[key])?;
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), crate::kv::KvError> {
        self.hook.before("delete", &[key])?;
        self.inner.delete(key)
    }
    fn exists(&self, key: &str) -> Result<bool, crate::kv::KvError> {
        self.hook.before("exists", &[key])?;
        self.inner.exists(key)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, crate::kv::KvError> {
        self.hook.before("increment", &[key])?;
        self.inner.increment(key, delta)
    }
    fn get_many(&self, keys: &[String]) -> Result<crate::kv::KeyValues, crate::kv::KvError> {
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.hook.before("get_many", &names)?;
        self.inner.get_many(keys)
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<crate::kv::CasOutcome, crate::kv::KvError> {
        self.hook.before("cas", &[key])?;
        self.inner.compare_and_swap(key, expected, new)
    }
}

fn config() -> InstanceConfig {
    InstanceConfig {
        env_vars: Some(BTreeMap::from([("FOO".into(), "bar".into())])),
        kilocode_api_key: Patch::Set("kilo-key".into()),
        kilocode_api_key_expires_at: Patch::Set("2026-02-01T00:00:00Z".into()),
        ..InstanceConfig::default()
    }
}

fn server_error() -> FlyError {
    FlyError::status("injected", 503, r#"{"error":"service unavailable"}"#)
}

fn envelope() -> Envelope {
    Envelope {
        encrypted_data: "x".into(),
        encrypted_dek: "y".into(),
        algorithm: "rsa-aes-256-gcm".into(),
        version: 1,
    }
}

// ---------- provision (§4.3 provision, §4.8 ensureApp, §4.5 volume) ----------

#[test]
fn provision_new_creates_per_user_app_ips_volume_and_returns_sandbox_id() {
    let world = World::new();
    let outcome = world
        .instances()
        .provision(USER, &config())
        .expect("provision");
    assert_eq!(outcome.sandbox_id, "dXNlci0x");
    let record = world.record();
    assert_eq!(record.status, Some(InstanceState::Provisioned));
    assert_eq!(record.fly_app_name.as_deref(), Some(APP));
    assert!(record.app_setup.is_complete());
    assert_eq!(world.fly.ips(APP).len(), 2, "IPv6 and shared IPv4");
    let volumes = world.fly.volumes(APP);
    assert_eq!(volumes.len(), 1);
    assert_eq!(
        record.fly_volume_id.as_deref(),
        Some(volumes[0].id.as_str())
    );
    assert_eq!(record.fly_region.as_deref(), Some("dfw"));
    assert_eq!(record.provisioned_at, Some(world.clock.now_ms()));
    assert_eq!(
        record.fly_machine_id, None,
        "provision never creates a machine"
    );
    assert_eq!(record.lease, None);
}

#[test]
fn provision_uses_dev_prefix_in_development() {
    let mut world = World::new();
    world.settings.worker_env = Some("development".into());
    world.provision();
    assert_eq!(
        world.record().fly_app_name.as_deref(),
        Some("dev-c6c289e49e9c05b21458")
    );
}

#[test]
fn provision_without_org_uses_legacy_shared_app() {
    let mut world = World::new();
    world.settings.fly_org_slug = None;
    world.settings.legacy_fly_app_name = Some("kiloclaw-machines".into());
    world.fly.add_app("kiloclaw-machines", "org");
    let record = world.provision();
    assert_eq!(record.fly_app_name, None);
    assert_eq!(world.fly.volumes("kiloclaw-machines").len(), 1);
    assert_eq!(world.fly.count(FlyCall::CreateApp), 0);
}

#[test]
fn provision_app_name_taken_by_our_own_app_is_adopted() {
    let world = World::new();
    world.fly.add_app(APP, "test-org");
    world
        .fly
        .fail_next(FlyCall::GetApp, FlyError::status("get app", 503, "{}"));
    assert!(
        world.instances().provision(USER, &config()).is_err(),
        "transient get_app propagates"
    );
    world.provision();
    assert!(world.record().app_setup.created);
}

#[test]
fn provision_app_name_collision_with_other_user_is_refused() {
    let world = World::new();
    // Another user's machine lives in the app the name derives to.
    world.fly.add_foreign_app(APP);
    let volume = world
        .fly
        .create_volume(
            APP,
            &crate::fly::CreateVolumeRequest {
                name: "v".into(),
                region: "dfw".into(),
                size_gb: 1,
                ..Default::default()
            },
        )
        .expect("volume");
    let mut foreign = crate::fly::MachineConfig::default();
    foreign
        .metadata
        .insert("kiloclaw_user_id".into(), "someone-else".into());
    foreign.mounts = vec![crate::machine::mount(&volume.id)];
    world
        .fly
        .create_machine(
            APP,
            &crate::fly::CreateMachineRequest {
                config: foreign,
                ..Default::default()
            },
        )
        .expect("machine");
    // GET sees nothing → create → 422 name_taken → the ownership check finds a foreign machine.
    let error = world
        .instances()
        .provision(USER, &config())
        .expect_err("collision");
    assert!(
        matches!(error, LifecycleError::AppNameCollision { .. }),
        "{error:?}"
    );
    assert_eq!(error.http_status(), 500);
}

#[test]
fn a_taken_app_name_whose_machines_cannot_be_listed_is_not_adopted() {
    let world = World::new();
    // GET sees nothing, create says the name is taken: someone else's app, unless its machines say
    // otherwise, and here they cannot be listed.
    world.fly.add_foreign_app(APP);
    world.fly.fail_next(
        FlyCall::ListMachines,
        FlyError::status("list machines", 404, "app not found"),
    );
    assert!(
        world.instances().provision(USER, &config()).is_err(),
        "an unverified app fails closed"
    );
    assert!(
        !world.record().app_setup.created,
        "the app was not taken for ours"
    );
    // Once the listing answers (no machine of anyone else's), the name is ours.
    world.provision();
    assert!(world.record().app_setup.created);
}

#[test]
fn provision_volume_falls_back_to_next_region_on_capacity() {
    let world = World::new();
    world.fly.set_region_full("dfw", true);
    let record = world.provision();
    assert_eq!(record.fly_region.as_deref(), Some("yyz"));
}

#[test]
fn provision_volume_error_propagates_and_writes_no_config() {
    let world = World::new();
    world.fly.fail_next(
        FlyCall::CreateVolume,
        FlyError::status("create volume", 400, r#"{"error":"bad"}"#),
    );
    let error = world
        .instances()
        .provision(USER, &config())
        .expect_err("volume failure");
    assert_eq!(error.http_status(), 502);
    let record = world.record();
    assert_eq!(
        record.status, None,
        "no config written on a failed provision"
    );
    assert_eq!(record.kilocode_api_key, None);
    assert_eq!(
        record.fly_app_name.as_deref(),
        Some(APP),
        "the app is kept for the retry"
    );
    assert_eq!(record.lease, None, "the lease is released on failure");
    world.provision();
    assert_eq!(world.fly.volumes(APP).len(), 1);
}

#[test]
fn provision_volume_all_regions_full_is_retryable() {
    let world = World::new();
    for region in ["dfw", "yyz", "cdg"] {
        world.fly.set_region_full(region, true);
    }
    let error = world
        .instances()
        .provision(USER, &config())
        .expect_err("no capacity");
    assert!(error.is_retryable());
}

#[test]
fn provision_while_destroying_is_refused() {
    let world = World::new();
    world.provision();
    world.edit(|r| r.status = Some(InstanceState::Destroying));
    let error = world
        .instances()
        .provision(USER, &config())
        .expect_err("destroying");
    assert_eq!(
        error.to_string(),
        "Cannot provision: instance is being destroyed"
    );
    assert_eq!(error.http_status(), 409);
}

#[test]
fn reprovision_updates_config_only_and_keeps_omitted_kilocode_key() {
    let world = World::new();
    let first = world.running();
    world.fly.clear_calls();
    let update = InstanceConfig {
        env_vars: Some(BTreeMap::from([("NEW".into(), "1".into())])),
        ..InstanceConfig::default()
    };
    world
        .instances()
        .provision(USER, &update)
        .expect("reprovision");
    let record = world.record();
    assert_eq!(
        record.kilocode_api_key.as_deref(),
        Some("kilo-key"),
        "an omitted key is not wiped (§10 #19)"
    );
    assert_eq!(
        record.env_vars.as_ref().map(|e| e.contains_key("FOO")),
        Some(false),
        "env vars are replaced"
    );
    assert_eq!(record.status, Some(InstanceState::Running));
    assert_eq!(record.fly_machine_id, first.fly_machine_id);
    assert_eq!(record.provisioned_at, first.provisioned_at);
    assert!(
        world.fly.calls().is_empty(),
        "re-provision does not touch Fly: {:?}",
        world.fly.calls()
    );
}

#[test]
fn provision_rejects_overlong_user_id() {
    let world = World::new();
    let error = world
        .instances()
        .provision(&"x".repeat(48), &config())
        .expect_err("too long");
    assert_eq!(error.http_status(), 400);
}

#[test]
fn provision_schedules_a_reconcile_check() {
    let world = World::new();
    let record = world.provision();
    let next = record.next_check_at_ms.expect("scheduled");
    let now = world.clock.now_ms();
    assert!(
        next >= now + 30 * 60_000 && next < now + 31 * 60_000,
        "idle cadence + jitter"
    );
    let minute = crate::due::minute_of(next);
    assert_eq!(
        crate::due::DueIndex::new(&world.kv).entries(minute),
        Ok(vec![USER.to_owned()])
    );
}

// ---------- start (§4.3 start, startExistingMachine, createNewMachine) ----------

#[test]
fn start_not_provisioned_is_404() {
    let world = World::new();
    let error = world.instances().start(USER).expect_err("not provisioned");
    assert!(matches!(error, LifecycleError::NotProvisioned));
    assert_eq!(error.http_status(), 404);
}

#[test]
fn start_while_destroying_is_refused() {
    let world = World::new();
    world.provision();
    world.edit(|r| r.status = Some(InstanceState::Destroying));
    assert_eq!(
        world
            .instances()
            .start(USER)
            .expect_err("refused")
            .to_string(),
        "Cannot start: instance is being destroyed"
    );
}

#[test]
fn start_creates_machine_named_after_sandbox_in_volume_region_and_marks_running() {
    let world = World::new();
    let record = world.running();
    assert_eq!(record.status, Some(InstanceState::Running));
    assert_eq!(record.last_started_at, Some(world.clock.now_ms()));
    let machine = world
        .fly
        .machine(APP, record.fly_machine_id.as_deref().expect("id"))
        .expect("machine");
    assert_eq!(machine.name, "dXNlci0x");
    assert_eq!(machine.region, "dfw");
    assert_eq!(machine.state, MachineState::Started);
    let config = machine.config.expect("config");
    assert!(
        !config.env.contains_key("KILOCODE_API_KEY"),
        "sensitive values are sealed"
    );
    assert!(config.env["KILOCLAW_ENC_KILOCODE_API_KEY"].starts_with("enc:v1:"));
    assert_eq!(
        config.mounts[0].volume,
        record.fly_volume_id.expect("volume")
    );
}

#[test]
fn start_waits_60_seconds_at_most() {
    let world = World::new();
    world.running();
    let waits: Vec<String> = world
        .fly
        .calls()
        .into_iter()
        .filter(|(c, _)| *c == FlyCall::WaitMachine)
        .map(|(_, a)| a)
        .collect();
    assert!(!waits.is_empty());
    assert!(waits.iter().all(|w| w.contains("timeout=60")), "{waits:?}");
}

#[test]
fn start_persists_machine_id_before_waiting() {
    let world = World::new();
    world.provision();
    world.fly.fail_next(
        FlyCall::WaitMachine,
        FlyError::status("wait", 408, r#"{"error":"deadline_exceeded"}"#),
    );
    let error = world.instances().start(USER).expect_err("wait timed out");
    assert!(error.is_retryable());
    let record = world.record();
    assert!(
        record.fly_machine_id.is_some(),
        "the created machine is not orphaned"
    );
    assert_eq!(
        record.status,
        Some(InstanceState::Provisioned),
        "running only once Fly confirms"
    );
    world.instances().start(USER).expect("second start");
    assert_eq!(world.fly.machines(APP).len(), 1, "no duplicate machine");
}

#[test]
fn start_existing_stopped_machine_updates_it_and_waits() {
    let world = World::new();
    world.running();
    world.instances().stop(USER).expect("stop");
    world.fly.clear_calls();
    world.instances().start(USER).expect("start");
    assert_eq!(world.fly.count(FlyCall::UpdateMachine), 1);
    assert_eq!(world.fly.count(FlyCall::CreateMachine), 0);
    assert_eq!(world.machine_state(), MachineState::Started);
}

#[test]
fn start_existing_stopped_machine_boots_whether_or_not_update_boots_it() {
    for update_boots_stopped in [false, true] {
        let world = World::new();
        world.fly.set_update_boots_stopped(update_boots_stopped);
        world.running();
        world.instances().stop(USER).expect("stop");
        world.fly.clear_calls();
        world.instances().start(USER).expect("start");
        let calls = world.fly.calls();
        let update = calls
            .iter()
            .position(|(call, _)| *call == FlyCall::UpdateMachine)
            .expect("update made");
        let stopped_wait = calls
            .iter()
            .position(|(call, detail)| {
                *call == FlyCall::WaitMachine && detail.contains("state=stopped")
            })
            .expect("waited for the new version to be down");
        let start = calls
            .iter()
            .position(|(call, _)| *call == FlyCall::StartMachine)
            .expect("explicit start");
        assert!(update < stopped_wait && stopped_wait < start, "{calls:?}");
        assert_eq!(world.machine_state(), MachineState::Started);
        assert_eq!(world.record().status, Some(InstanceState::Running));
    }
}

#[test]
fn start_retries_while_fly_is_still_replacing_the_machine() {
    let world = World::new();
    world.running();
    world.instances().stop(USER).expect("stop");
    world.fly.fail_next_status(
        FlyCall::StartMachine,
        412,
        "unable to start machine from current state",
    );
    world
        .instances()
        .start(USER)
        .expect("start after the replace finished");
    assert_eq!(world.fly.count(FlyCall::StartMachine), 2);
    assert_eq!(world.machine_state(), MachineState::Started);
}

#[test]
fn start_when_running_and_started_does_nothing() {
    let world = World::new();
    world.running();
    world.fly.clear_calls();
    world.instances().start(USER).expect("start");
    assert_eq!(world.fly.count(FlyCall::UpdateMachine), 0);
    assert_eq!(world.fly.count(FlyCall::CreateMachine), 0);
}

#[test]
fn start_existing_machine_gone_404_creates_a_new_one() {
    let world = World::new();
    let old = world.running().fly_machine_id.expect("id");
    world.edit(|r| r.status = Some(InstanceState::Stopped));
    world.fly.remove_machine(APP, &old);
    world.instances().start(USER).expect("start");
    let record = world.record();
    assert_ne!(record.fly_machine_id.as_deref(), Some(old.as_str()));
    assert_eq!(record.status, Some(InstanceState::Running));
}

#[test]
fn start_existing_machine_transient_error_propagates_without_duplicate() {
    let world = World::new();
    world.running();
    world.instances().stop(USER).expect("stop");
    world.fly.fail_next(FlyCall::GetMachine, server_error());
    let error = world.instances().start(USER).expect_err("transient");
    assert_eq!(error.http_status(), 503);
    assert!(error.is_retryable());
    assert_eq!(world.fly.machines(APP).len(), 1);
    assert_eq!(world.record().status, Some(InstanceState::Stopped));
}

#[test]
fn start_suspended_machine_is_started_not_just_awaited() {
    let world = World::new();
    world.running();
    world.edit(|r| r.status = Some(InstanceState::Stopped));
    let id = world.record().fly_machine_id.expect("id");
    world
        .fly
        .set_machine_state(APP, &id, MachineState::Suspended);
    world.instances().start(USER).expect("start");
    assert_eq!(world.fly.count(FlyCall::StartMachine), 1);
    assert_eq!(world.machine_state(), MachineState::Started);
}

#[test]
fn start_capacity_error_forks_volume_with_user_data_and_retries_once() {
    let world = World::new();
    let before = world.running();
    world.instances().stop(USER).expect("stop");
    world.fly.set_region_full("dfw", true);
    world.instances().start(USER).expect("capacity recovery");
    let record = world.record();
    assert_eq!(record.fly_region.as_deref(), Some("yyz"));
    assert_ne!(record.fly_volume_id, before.fly_volume_id);
    let fork = world
        .fly
        .calls()
        .into_iter()
        .find(|(c, a)| *c == FlyCall::CreateVolume && a.contains("source=Some"));
    assert!(
        fork.is_some(),
        "a volume with user data is forked, not replaced empty"
    );
    assert_eq!(
        world.fly.machines(APP).len(),
        1,
        "the stranded machine was destroyed"
    );
    assert!(
        record.orphaned_volume_ids.is_empty(),
        "the old volume was deleted"
    );
    assert_eq!(world.fly.volumes(APP).len(), 1);
    assert_eq!(record.status, Some(InstanceState::Running));
}

#[test]
fn start_capacity_error_without_user_data_creates_fresh_volume() {
    let world = World::new();
    world.provision();
    // The volume's region fills up before the first start.
    world.fly.set_region_full("dfw", true);
    world.instances().start(USER).expect("recovered");
    assert!(
        !world
            .fly
            .calls()
            .iter()
            .any(|(c, a)| *c == FlyCall::CreateVolume && a.contains("source=Some"))
    );
    assert_eq!(world.record().fly_region.as_deref(), Some("yyz"));
}

#[test]
fn start_capacity_recovery_retries_only_once() {
    let world = World::new();
    world.provision();
    for region in ["dfw", "yyz", "cdg"] {
        world.fly.set_region_full(region, true);
    }
    let error = world
        .instances()
        .start(USER)
        .expect_err("no capacity anywhere");
    assert!(error.is_retryable());
    assert!(world.fly.count(FlyCall::CreateMachine) <= 2);
}

#[test]
fn start_capacity_recovery_keeps_undeletable_machine_as_orphan() {
    let world = World::new();
    let before = world.running();
    world.instances().stop(USER).expect("stop");
    world.fly.set_region_full("dfw", true);
    world.fly.fail_next(FlyCall::DestroyMachine, server_error());
    world.instances().start(USER).expect("recovered");
    let record = world.record();
    let old = before.fly_machine_id.expect("old id");
    assert_eq!(
        record.orphaned_machine_ids,
        vec![old.clone()],
        "never forgotten (§10 #16)"
    );
    assert!(
        record
            .orphaned_volume_ids
            .contains(&before.fly_volume_id.expect("old volume")),
        "attached volume kept"
    );
    world.fly.set_region_full("dfw", false);
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let record = world.record();
    assert!(record.orphaned_machine_ids.is_empty());
    assert!(record.orphaned_volume_ids.is_empty());
    assert!(world.fly.machine(APP, &old).is_none());
}

#[test]
fn start_capacity_recovery_uses_user_region_list() {
    let world = World::new();
    let with_region = InstanceConfig {
        region: Some("ams,lhr".into()),
        ..config()
    };
    world
        .instances()
        .provision(USER, &with_region)
        .expect("provision");
    assert_eq!(world.record().fly_region.as_deref(), Some("ams"));
    world.fly.set_region_full("ams", true);
    world.instances().start(USER).expect("recovered");
    assert_eq!(
        world.record().fly_region.as_deref(),
        Some("lhr"),
        "the user's list, not the deployment's"
    );
}

#[test]
fn start_region_drift_persists_actual_volume_region() {
    let world = World::new();
    world.provision();
    world.edit(|r| r.fly_region = Some("cdg".into()));
    world.instances().start(USER).expect("start");
    assert_eq!(world.record().fly_region.as_deref(), Some("dfw"));
}

#[test]
fn start_lost_volume_without_machine_is_replaced() {
    let world = World::new();
    let record = world.provision();
    world
        .fly
        .remove_volume(APP, record.fly_volume_id.as_deref().expect("volume"));
    world.instances().start(USER).expect("start");
    let after = world.record();
    assert!(after.fly_volume_id.is_some());
    assert_ne!(after.fly_volume_id, record.fly_volume_id);
}

#[test]
fn start_with_secrets_and_no_private_key_fails_with_encryption_error() {
    let world = World::new();
    let with_secret = InstanceConfig {
        encrypted_secrets: Some(BTreeMap::from([("S".into(), envelope())])),
        ..config()
    };
    world
        .instances()
        .provision(USER, &with_secret)
        .expect("provision");
    let error = world.instances().start(USER).expect_err("no key");
    assert!(error.to_string().contains("AGENT_ENV_VARS_PRIVATE_KEY"));
    assert_eq!(world.fly.count(FlyCall::CreateMachine), 0);
}

#[test]
fn start_takes_over_an_expired_lease_of_a_crashed_operation() {
    let world = World::new();
    world.provision();
    let crashed = world.store().acquire(USER, "crashed-op").expect("lease");
    drop(crashed);
    world
        .clock
        .advance(world.settings.store.lease_ttl + Duration::from_secs(1));
    world.instances().start(USER).expect("start after takeover");
}

#[test]
fn start_while_another_operation_holds_the_lease_is_busy() {
    let world = World::new();
    world.provision();
    let _held = world.store().acquire(USER, "long-op").expect("lease");
    let mut settings = world.settings.clone();
    settings.store.lease_wait = Duration::from_secs(5);
    let instances = Instances::new(
        &world.kv,
        &world.fly,
        &world.clock,
        &world.random,
        &settings,
    );
    let error = instances.start(USER).expect_err("busy");
    assert!(matches!(
        error,
        LifecycleError::Store(StoreError::Busy { .. })
    ));
    assert_eq!(error.http_status(), 409);
    assert_eq!(world.fly.count(FlyCall::CreateMachine), 0);
}

#[test]
fn start_survives_cas_conflicts_from_concurrent_config_writers() {
    let world = World::new();
    world.provision();
    world.kv.force_conflicts(&record_key(USER), 3);
    world
        .kv
        .write_concurrently_before_next_cas(&record_key(USER), |current| {
            let (mut record, _) =
                InstanceRecord::decode(&current.unwrap_or_default()).expect("decode");
            record.version += 1;
            record.kilocode_default_model = Some("kilocode/a/b".into());
            record.encode()
        });
    world.instances().start(USER).expect("start");
    let record = world.record();
    assert_eq!(record.status, Some(InstanceState::Running));
    assert_eq!(
        record.kilocode_default_model.as_deref(),
        Some("kilocode/a/b"),
        "the concurrent write is kept"
    );
}

#[test]
fn stale_holder_cannot_commit_and_reconciler_adopts_its_machine() {
    // Another operation takes the lease over while start is between creating the machine and committing
    // its id (start's lease "expired"). The stale commit must fail; the machine must not be lost.
    let world = World::new();
    world.provision();
    // The env key is already set, so creating the machine is start's first commit.
    world.edit(|r| {
        r.app_setup.env_key =
            Some(crate::secrets::machine_env::EnvKey::generate(&world.random).to_base64());
        r.app_setup.env_key_secrets_version = Some(0);
    });
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = taken.clone();
    // The 1st CAS is start's lease acquisition, the 2nd the create's intent, the 3rd its first commit
    // (machine id) after the create.
    for _ in 0..3 {
        let counter = counter.clone();
        world
            .kv
            .write_concurrently_before_next_cas(&record_key(USER), move |current| {
                let bytes = current.unwrap_or_default();
                if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                    return bytes;
                }
                let (mut record, _) = InstanceRecord::decode(&bytes).expect("decode");
                record.version += 1;
                record.lease = Some(crate::record::Lease {
                    owner: "usurper".into(),
                    fence: record.version,
                    expires_at_ms: 0,
                });
                record.encode()
            });
    }
    let error = world.instances().start(USER).expect_err("stale holder");
    assert!(
        matches!(error, LifecycleError::Store(StoreError::LeaseLost)),
        "{error:?}"
    );
    let record = world.record();
    assert_eq!(
        record.fly_machine_id, None,
        "the stale holder wrote nothing"
    );
    assert_eq!(world.fly.machines(APP).len(), 1);
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let record = world.record();
    assert_eq!(
        record.fly_machine_id.as_deref(),
        Some(world.fly.machines(APP)[0].id.as_str()),
        "recovered by metadata"
    );
    assert_eq!(record.status, Some(InstanceState::Running));
    world.instances().start(USER).expect("start");
    assert_eq!(world.fly.machines(APP).len(), 1, "never duplicated");
}

// ---------- stop ----------

#[test]
fn stop_waits_for_stopped_with_instance_id_then_marks_stopped() {
    let world = World::new();
    world.running();
    world.fly.clear_calls();
    world.instances().stop(USER).expect("stop");
    let wait = world
        .fly
        .calls()
        .into_iter()
        .find(|(c, _)| *c == FlyCall::WaitMachine)
        .expect("waited")
        .1;
    assert!(
        wait.contains("state=stopped") && wait.contains("instance_id=Some"),
        "{wait}"
    );
    let record = world.record();
    assert_eq!(record.status, Some(InstanceState::Stopped));
    assert_eq!(record.last_stopped_at, Some(world.clock.now_ms()));
    assert!(
        record.fly_machine_id.is_some(),
        "the machine is kept for a fast start"
    );
    assert_eq!(world.machine_state(), MachineState::Stopped);
}

#[test]
fn stop_propagates_non_404_errors_and_keeps_status() {
    let world = World::new();
    world.running();
    world.fly.fail_next(FlyCall::StopMachine, server_error());
    let error = world.instances().stop(USER).expect_err("propagated");
    assert_eq!(error.http_status(), 503);
    assert_eq!(world.record().status, Some(InstanceState::Running));
    world
        .fly
        .fail_next(FlyCall::WaitMachine, FlyError::status("wait", 408, "{}"));
    assert!(world.instances().stop(USER).is_err());
    assert_eq!(world.record().status, Some(InstanceState::Running));
}

#[test]
fn stop_machine_gone_404_counts_as_stopped() {
    let world = World::new();
    let record = world.running();
    world
        .fly
        .remove_machine(APP, record.fly_machine_id.as_deref().expect("id"));
    world.instances().stop(USER).expect("stop");
    assert_eq!(world.record().status, Some(InstanceState::Stopped));
}

#[test]
fn stop_is_a_noop_when_stopped_provisioned_or_destroying() {
    let world = World::new();
    world.provision();
    world.fly.clear_calls();
    world.instances().stop(USER).expect("noop");
    assert!(world.fly.calls().is_empty());
    assert_eq!(world.record().status, Some(InstanceState::Provisioned));
}

#[test]
fn stop_not_provisioned_is_404() {
    let world = World::new();
    assert!(matches!(
        world.instances().stop(USER),
        Err(LifecycleError::NotProvisioned)
    ));
}

// ---------- destroy ----------

#[test]
fn destroy_deletes_machine_and_volume_and_resets_record_keeping_app() {
    let world = World::new();
    world.running();
    let outcome = world.instances().destroy(USER).expect("destroy");
    assert!(outcome.complete);
    assert!(world.fly.machines(APP).is_empty());
    assert!(world.fly.volumes(APP).is_empty());
    let record = world.record();
    assert!(!record.is_provisioned());
    assert_eq!(
        record.fly_app_name.as_deref(),
        Some(APP),
        "the per-user app is kept for reuse"
    );
    assert!(world.fly.app_names().contains(&APP.to_owned()));
    assert_eq!(record.next_check_at_ms, None);
    assert_eq!(
        world.instances().status(USER).expect("status"),
        InstanceStatus::default()
    );
}

#[test]
fn destroy_finishes_in_one_call_when_fly_destroys_the_machine_asynchronously() {
    let world = World::new();
    world.running();
    // As on real Fly: the machine is `destroying`, its volume still bound, until it is gone.
    world.fly.set_asynchronous_destroy(true);
    let outcome = world.instances().destroy(USER).expect("destroy");
    assert!(outcome.complete, "the volume went in the same call");
    assert!(world.fly.machines(APP).is_empty());
    assert!(world.fly.volumes(APP).is_empty());
    assert!(!world.record().is_provisioned());
}

#[test]
fn destroy_retries_a_volume_still_bound_for_a_moment_after_its_machine_is_gone() {
    let world = World::new();
    world.running();
    world.fly.set_asynchronous_destroy(true);
    world.fly.fail_next(
        FlyCall::DeleteVolume,
        FlyError::status(
            "delete volume",
            412,
            "failed_precondition: volume is currently bound to machine",
        ),
    );
    let slept = world.clock.total_slept();
    assert!(world.instances().destroy(USER).expect("destroy").complete);
    assert!(world.fly.volumes(APP).is_empty());
    assert!(world.clock.total_slept() - slept >= Duration::from_secs(1));
}

#[test]
fn a_destroy_whose_machine_does_not_finish_in_time_leaves_the_volume_to_the_next_tick() {
    let world = World::new();
    world.running();
    world.fly.set_asynchronous_destroy(true);
    world.fly.fail_next(
        FlyCall::WaitMachine,
        FlyError::status("wait machine", 408, "deadline_exceeded"),
    );
    let outcome = world.instances().destroy(USER).expect("destroy");
    assert!(!outcome.complete);
    assert_eq!(world.record().status, Some(InstanceState::Destroying));
    assert_eq!(
        world.fly.volumes(APP).len(),
        1,
        "still bound, kept for the next tick"
    );
}

#[test]
fn destroy_records_intent_before_fly_calls_and_reconciler_finishes_it() {
    let world = World::new();
    let before = world.running();
    world.fly.fail_next(FlyCall::DestroyMachine, server_error());
    let outcome = world
        .instances()
        .destroy(USER)
        .expect("destroy returns normally");
    assert!(!outcome.complete);
    let record = world.record();
    assert_eq!(record.status, Some(InstanceState::Destroying));
    assert_eq!(record.pending_destroy_machine_id, before.fly_machine_id);
    assert_eq!(
        record.pending_destroy_volume_id, before.fly_volume_id,
        "volume delete refused while attached"
    );
    let next = record.next_check_at_ms.expect("scheduled");
    assert!(
        next - world.clock.now_ms() <= 2 * 60_000,
        "destroying cadence is one minute"
    );
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    assert!(!world.record().is_provisioned());
    assert!(world.fly.volumes(APP).is_empty());
}

#[test]
fn destroy_again_rebuilds_pending_ids_from_surviving_fly_ids() {
    let world = World::new();
    world.running();
    world.fly.fail_next(FlyCall::DestroyMachine, server_error());
    world.instances().destroy(USER).expect("first");
    world.edit(|r| r.pending_destroy_machine_id = None);
    world.instances().destroy(USER).expect("second");
    assert!(world.fly.machines(APP).is_empty());
    assert!(!world.record().is_provisioned());
}

#[test]
fn destroy_treats_404_as_already_gone() {
    let world = World::new();
    let record = world.running();
    world
        .fly
        .remove_machine(APP, record.fly_machine_id.as_deref().expect("id"));
    world
        .fly
        .remove_volume(APP, record.fly_volume_id.as_deref().expect("id"));
    assert!(world.instances().destroy(USER).expect("destroy").complete);
}

#[test]
fn destroy_not_provisioned_is_404_and_reprovision_after_destroy_starts_fresh() {
    let world = World::new();
    assert!(matches!(
        world.instances().destroy(USER),
        Err(LifecycleError::NotProvisioned)
    ));
    world.running();
    world.instances().destroy(USER).expect("destroy");
    world.provision();
    let record = world.record();
    assert_eq!(record.status, Some(InstanceState::Provisioned));
    assert_eq!(world.fly.volumes(APP).len(), 1);
    assert_eq!(world.fly.count(FlyCall::CreateApp), 1, "the app is reused");
}

// ---------- restart ----------

#[test]
fn restart_requires_running_instance() {
    let world = World::new();
    world.provision();
    let error = world.instances().restart(USER).expect_err("not running");
    assert_eq!(error.to_string(), "Instance is not running");
}

#[test]
fn restart_rebuilds_config_and_records_start() {
    let mut world = World::new();
    world.running();
    world.settings.image_tag = "newsha".into();
    world.clock.advance(Duration::from_secs(100));
    world.instances().restart(USER).expect("restart");
    let record = world.record();
    assert_eq!(record.status, Some(InstanceState::Running));
    assert_eq!(
        record.last_started_at,
        Some(world.clock.now_ms()),
        "restart updates timestamps (§10 #17)"
    );
    let machine = world
        .fly
        .machine(APP, record.fly_machine_id.as_deref().expect("id"))
        .expect("machine");
    assert_eq!(
        machine.config.expect("config").image,
        "registry.fly.io/kiloclaw-machines:newsha"
    );
    assert_eq!(machine.state, MachineState::Started);
}

#[test]
fn restart_failure_after_stop_records_stopped() {
    let world = World::new();
    world.running();
    world.fly.fail_next(FlyCall::UpdateMachine, server_error());
    assert!(world.instances().restart(USER).is_err());
    assert_eq!(
        world.record().status,
        Some(InstanceState::Stopped),
        "status never claims a stopped machine runs"
    );
}

#[test]
fn restart_recovers_from_capacity_error() {
    let world = World::new();
    world.running();
    world.fly.set_region_full("dfw", true);
    world
        .instances()
        .restart(USER)
        .expect("restart with recovery");
    assert_eq!(world.record().fly_region.as_deref(), Some("yyz"));
    assert_eq!(world.record().status, Some(InstanceState::Running));
}

// ---------- config patches, reads ----------

#[test]
fn patch_kilocode_config_applies_defined_fields_and_null_clears() {
    let world = World::new();
    world.provision();
    let patch = KiloCodeConfigPatch {
        user_id: USER.into(),
        kilocode_default_model: Patch::Set("kilocode/anthropic/claude".into()),
        kilocode_api_key_expires_at: Patch::Clear,
        ..KiloCodeConfigPatch::default()
    };
    let view = world
        .instances()
        .patch_kilocode_config(&patch)
        .expect("patch");
    assert_eq!(view.kilocode_api_key.as_deref(), Some("kilo-key"));
    assert_eq!(view.kilocode_api_key_expires_at, None);
    assert_eq!(
        view.kilocode_default_model.as_deref(),
        Some("kilocode/anthropic/claude")
    );
    assert_eq!(
        world.fly.count(FlyCall::UpdateMachine),
        0,
        "no machine action"
    );
}

#[test]
fn patch_kilocode_config_during_long_operation_is_not_lost() {
    let world = World::new();
    world.provision();
    let mut guard = world.store().acquire(USER, "start-op").expect("lease");
    let patch = KiloCodeConfigPatch {
        user_id: USER.into(),
        kilocode_api_key: Patch::Set("new".into()),
        ..Default::default()
    };
    world
        .instances()
        .patch_kilocode_config(&patch)
        .expect("patch without lease");
    world
        .store()
        .commit(&mut guard, |r| {
            r.status = Some(InstanceState::Running);
            Ok::<(), StoreError>(())
        })
        .expect("holder commit");
    assert_eq!(world.record().kilocode_api_key.as_deref(), Some("new"));
}

#[test]
fn patch_channels_merges_and_clears_to_none() {
    let world = World::new();
    world.provision();
    let set = ChannelsPatch {
        user_id: USER.into(),
        telegram_bot_token: Patch::Set(envelope()),
        slack_app_token: Patch::Set(envelope()),
        ..Default::default()
    };
    let view = world.instances().patch_channels(&set).expect("set");
    assert!(view.telegram && view.slack_app && !view.discord);
    let clear_one = ChannelsPatch {
        user_id: USER.into(),
        telegram_bot_token: Patch::Clear,
        ..Default::default()
    };
    let view = world
        .instances()
        .patch_channels(&clear_one)
        .expect("clear one");
    assert!(
        !view.telegram && view.slack_app,
        "absent leaves a token untouched"
    );
    let clear_all = ChannelsPatch {
        user_id: USER.into(),
        slack_app_token: Patch::Clear,
        ..Default::default()
    };
    world
        .instances()
        .patch_channels(&clear_all)
        .expect("clear all");
    assert_eq!(world.record().channels, None);
}

#[test]
fn patches_are_refused_while_destroying() {
    let world = World::new();
    world.provision();
    world.edit(|r| r.status = Some(InstanceState::Destroying));
    let patch = KiloCodeConfigPatch {
        user_id: USER.into(),
        ..Default::default()
    };
    assert!(matches!(
        world.instances().patch_kilocode_config(&patch),
        Err(LifecycleError::Destroying { .. })
    ));
}

#[test]
fn status_of_unprovisioned_user_has_nulls_and_zero_counts() {
    let world = World::new();
    let status = world.instances().status(USER).expect("status");
    let json = serde_json::to_value(&status).expect("json");
    assert_eq!(json["userId"], serde_json::Value::Null);
    assert_eq!(json["envVarCount"], 0);
    assert!(world.kv.keys().is_empty(), "a status read creates nothing");
}

#[test]
fn status_reports_original_fields() {
    let world = World::new();
    world.running();
    let json = serde_json::to_value(world.instances().status(USER).expect("status")).expect("json");
    for field in [
        "userId",
        "sandboxId",
        "status",
        "provisionedAt",
        "lastStartedAt",
        "lastStoppedAt",
        "envVarCount",
        "secretCount",
        "channelCount",
        "flyAppName",
        "flyMachineId",
        "flyVolumeId",
        "flyRegion",
    ] {
        assert!(json.get(field).is_some(), "missing {field}");
    }
    assert_eq!(json["status"], "running");
    assert_eq!(json["envVarCount"], 1);
}

#[test]
fn status_live_check_persists_stop_through_the_lease_path() {
    let world = World::new();
    world.running();
    world.clock.advance(Duration::from_secs(31));
    let id = world.record().fly_machine_id.expect("id");
    world.fly.set_machine_state(APP, &id, MachineState::Stopped);
    world.fly.clear_calls();
    let status = world.instances().status(USER).expect("status");
    assert_eq!(status.status.as_deref(), Some("stopped"));
    assert_eq!(world.fly.count(FlyCall::GetMachine), 1);
    let record = world.record();
    assert_eq!(
        record.status,
        Some(InstanceState::Stopped),
        "persisted, not an in-memory flip (§10 #15)"
    );
    assert_eq!(record.last_stopped_at, Some(world.clock.now_ms()));
    assert_eq!(record.lease, None);
}

#[test]
fn status_live_check_is_throttled_to_30_seconds() {
    let world = World::new();
    world.running();
    world.clock.advance(Duration::from_secs(31));
    world.fly.clear_calls();
    world.instances().status(USER).expect("status");
    world.instances().status(USER).expect("status again");
    assert_eq!(
        world.fly.count(FlyCall::GetMachine),
        1,
        "a second read within 30 s uses the store"
    );
    world.clock.advance(Duration::from_secs(30));
    world.instances().status(USER).expect("status later");
    assert_eq!(world.fly.count(FlyCall::GetMachine), 2);
}

#[test]
fn config_summary_reports_keys_and_flags() {
    let world = World::new();
    world.provision();
    let summary = world.instances().config(USER).expect("config");
    assert_eq!(summary.env_var_keys, vec!["FOO"]);
    assert!(summary.has_kilocode_api_key);
    let json = serde_json::to_value(&summary).expect("json");
    assert_eq!(json["hasKiloCodeApiKey"], true);
    assert_eq!(json["channels"]["slackBot"], false);
}

#[test]
fn route_answers_409_destroying_404_without_machine_and_falls_back_to_legacy_app() {
    let mut world = World::new();
    assert_eq!(
        world
            .instances()
            .route(USER)
            .expect_err("none")
            .http_status(),
        404
    );
    world.provision();
    assert_eq!(
        world
            .instances()
            .route(USER)
            .expect_err("no machine")
            .http_status(),
        404
    );
    world.instances().start(USER).expect("start");
    let route = world.instances().route(USER).expect("route");
    assert_eq!(route.app_name, APP);
    world.edit(|r| r.fly_app_name = None);
    assert_eq!(
        world
            .instances()
            .route(USER)
            .expect_err("no app")
            .http_status(),
        503
    );
    world.settings.legacy_fly_app_name = Some("kiloclaw-machines".into());
    assert_eq!(
        world.instances().route(USER).expect("legacy").app_name,
        "kiloclaw-machines"
    );
    world.edit(|r| r.status = Some(InstanceState::Destroying));
    assert_eq!(
        world
            .instances()
            .route(USER)
            .expect_err("destroying")
            .http_status(),
        409
    );
}

#[test]
fn gateway_token_is_derived_for_provisioned_users_only() {
    let world = World::new();
    assert!(world.instances().gateway_token(USER).is_err());
    world.provision();
    assert_eq!(
        world.instances().gateway_token(USER).expect("token"),
        crate::ids::gateway_token("test-gateway-secret", "dXNlci0x")
    );
}

// ---------- reconcile (§5) ----------

#[test]
fn reconcile_destroying_only_retries_pending_destroy() {
    let world = World::new();
    world.running();
    world.fly.fail_next(FlyCall::DestroyMachine, server_error());
    world.instances().destroy(USER).expect("destroy");
    world.fly.fail_next(FlyCall::DestroyMachine, server_error());
    world.fly.clear_calls();
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let calls: Vec<FlyCall> = world.fly.calls().into_iter().map(|(c, _)| c).collect();
    assert!(
        calls
            .iter()
            .all(|c| matches!(c, FlyCall::DestroyMachine | FlyCall::DeleteVolume)),
        "{calls:?}"
    );
    assert_eq!(world.record().status, Some(InstanceState::Destroying));
}

#[test]
fn reconcile_fly_started_syncs_status_to_running() {
    let world = World::new();
    world.running();
    world.edit(|r| {
        r.status = Some(InstanceState::Stopped);
        r.health_check_fail_count = 3;
    });
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let record = world.record();
    assert_eq!(record.status, Some(InstanceState::Running));
    assert_eq!(record.health_check_fail_count, 0);
}

#[test]
fn reconcile_fly_started_resets_fail_count_when_running() {
    let world = World::new();
    world.running();
    world.edit(|r| r.health_check_fail_count = 2);
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    assert_eq!(world.record().health_check_fail_count, 0);
}

#[test]
fn reconcile_stopped_while_running_marks_stopped_at_fifth_check() {
    let world = World::new();
    let id = world.running().fly_machine_id.expect("id");
    world.fly.set_machine_state(APP, &id, MachineState::Stopped);
    for expected in 1..SELF_HEAL_THRESHOLD {
        world
            .instances()
            .reconcile(USER, "alarm")
            .expect("reconcile");
        let record = world.record();
        assert_eq!(record.health_check_fail_count, expected);
        assert_eq!(record.status, Some(InstanceState::Running));
    }
    world.instances().reconcile(USER, "alarm").expect("fifth");
    let record = world.record();
    assert_eq!(record.status, Some(InstanceState::Stopped));
    assert_eq!(record.health_check_fail_count, 0);
    assert_eq!(record.last_stopped_at, Some(world.clock.now_ms()));
}

#[test]
fn reconcile_leaves_other_state_combinations_alone() {
    let world = World::new();
    world.running();
    world.instances().stop(USER).expect("stop");
    world.edit(|r| r.status = Some(InstanceState::Provisioned));
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let record = world.record();
    assert_eq!(
        record.status,
        Some(InstanceState::Provisioned),
        "Fly stopped + provisioned: nothing"
    );
    assert_eq!(record.health_check_fail_count, 0);
}

#[test]
fn reconcile_repairs_a_root_mount_at_the_wrong_path() {
    let world = World::new();
    let record = world.running();
    let id = record.fly_machine_id.clone().expect("id");
    let volume = record.fly_volume_id.clone().expect("volume");
    let mut drifted = crate::machine::mount(&volume);
    drifted.path = "/data".into();
    world.fly.set_machine_mounts(APP, &id, vec![drifted]);
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let repaired = world
        .fly
        .machine(APP, &id)
        .expect("machine")
        .config
        .expect("config");
    assert_eq!(repaired.mounts, vec![crate::machine::mount(&volume)]);
    assert_eq!(world.machine_state(), MachineState::Started);
    assert_eq!(world.record().status, Some(InstanceState::Running));
}

/// Fly refuses to change a machine's volume by an update (the original stopped the machine first, so
/// its repair left a running gateway stopped; the chaos-convergence test found it). A machine that can
/// never mount the user's volume is retired instead, and the next start creates one that does.
#[test]
fn a_started_machine_without_the_recorded_volume_is_retired_not_updated() {
    let world = World::new();
    let record = world.running();
    let id = record.fly_machine_id.clone().expect("id");
    let volume = record.fly_volume_id.clone().expect("volume");
    world.fly.set_machine_mounts(APP, &id, vec![]);
    world.fly.clear_calls();
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    assert_eq!(
        world.fly.count(FlyCall::UpdateMachine),
        0,
        "no refused update"
    );
    assert_eq!(world.fly.count(FlyCall::StopMachine), 0);
    assert!(
        world
            .fly
            .machine(APP, &id)
            .is_none_or(|m| m.state.is_gone())
    );
    let record = world.record();
    assert_eq!(record.fly_machine_id, None);
    assert_eq!(record.status, Some(InstanceState::Stopped));
    assert_eq!(
        record.fly_volume_id.as_deref(),
        Some(volume.as_str()),
        "the volume stays"
    );

    world.instances().start(USER).expect("start");
    assert_running_on_a_new_machine(&world, &id, &volume);
}

/// The record is running on a machine other than `retired` (which is gone), mounting `volume` at `/root`.
fn assert_running_on_a_new_machine(world: &World, retired: &str, volume: &str) {
    let record = world.record();
    let id = record.fly_machine_id.clone().expect("a machine");
    assert_ne!(id, retired, "replaced");
    let gone = world
        .fly
        .machine(APP, retired)
        .is_none_or(|m| m.state.is_gone());
    assert!(gone, "the old machine is destroyed");
    let machine = world.fly.machine(APP, &id).expect("machine");
    assert_eq!(
        machine.config.expect("config").mounts,
        vec![crate::machine::mount(volume)]
    );
    assert_eq!(record.status, Some(InstanceState::Running));
}

#[test]
fn a_started_machine_on_another_existing_volume_keeps_running_and_the_record_adopts_it() {
    let world = World::new();
    let record = world.running();
    let id = record.fly_machine_id.clone().expect("id");
    let recorded = record.fly_volume_id.clone().expect("volume");
    let region = record.fly_region.clone().expect("region");
    let other = world
        .fly
        .create_volume(APP, &crate::machine::volume_request(&record, &region, None))
        .expect("another volume");
    world
        .fly
        .set_machine_mounts(APP, &id, vec![crate::machine::mount(&other.id)]);
    world.fly.clear_calls();
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    assert_eq!(world.fly.count(FlyCall::StopMachine), 0, "left running");
    assert_eq!(world.machine_state(), MachineState::Started);
    let record = world.record();
    assert_eq!(record.fly_volume_id.as_deref(), Some(other.id.as_str()));
    assert_eq!(record.orphaned_volume_ids, vec![recorded.clone()]);
    assert_eq!(record.status, Some(InstanceState::Running));

    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    assert!(world.record().orphaned_volume_ids.is_empty());
    let volumes: Vec<String> = world.fly.volumes(APP).into_iter().map(|v| v.id).collect();
    assert_eq!(volumes, vec![other.id], "the unused one is deleted");
}

#[test]
fn a_start_of_a_machine_on_another_existing_volume_boots_it_on_that_volume() {
    let world = World::new();
    let record = world.running();
    let id = record.fly_machine_id.clone().expect("id");
    let recorded = record.fly_volume_id.clone().expect("volume");
    let region = record.fly_region.clone().expect("region");
    world.instances().stop(USER).expect("stop");
    let other = world
        .fly
        .create_volume(APP, &crate::machine::volume_request(&record, &region, None))
        .expect("another volume");
    world
        .fly
        .set_machine_mounts(APP, &id, vec![crate::machine::mount(&other.id)]);
    world
        .instances()
        .start(USER)
        .expect("start, with no refused update");
    let record = world.record();
    assert_eq!(
        record.fly_machine_id.as_deref(),
        Some(id.as_str()),
        "the same machine"
    );
    assert_eq!(record.fly_volume_id.as_deref(), Some(other.id.as_str()));
    assert_eq!(record.orphaned_volume_ids, vec![recorded]);
    let machine = world.fly.machine(APP, &id).expect("machine");
    assert_eq!(machine.state, MachineState::Started);
    assert_eq!(
        machine.config.expect("config").mounts,
        vec![crate::machine::mount(&other.id)]
    );
    assert_eq!(record.status, Some(InstanceState::Running));
}

#[test]
fn a_start_of_a_machine_on_a_lost_volume_replaces_the_machine() {
    let world = World::new();
    let record = world.running();
    let id = record.fly_machine_id.clone().expect("id");
    let volume = record.fly_volume_id.clone().expect("volume");
    world.instances().stop(USER).expect("stop");
    world
        .fly
        .set_machine_mounts(APP, &id, vec![crate::machine::mount("vol_lost00000000")]);
    world.instances().start(USER).expect("start");
    assert_running_on_a_new_machine(&world, &id, &volume);
}

#[test]
fn reconcile_machine_gone_clears_id_and_marks_stopped() {
    let world = World::new();
    let id = world.running().fly_machine_id.expect("id");
    world.fly.remove_machine(APP, &id);
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let record = world.record();
    assert_eq!(record.fly_machine_id, None);
    assert_eq!(record.status, Some(InstanceState::Stopped));
}

#[test]
fn reconcile_transient_fly_error_changes_nothing() {
    let world = World::new();
    let before = world.running();
    world.fly.fail_next(FlyCall::GetMachine, server_error());
    world.fly.fail_next(FlyCall::GetVolume, server_error());
    let outcome = world
        .instances()
        .reconcile(USER, "alarm")
        .expect("errors are not fatal");
    assert!(outcome.checked);
    let after = world.record();
    assert_eq!(after.fly_machine_id, before.fly_machine_id);
    assert_eq!(after.fly_volume_id, before.fly_volume_id);
    assert_eq!(after.status, Some(InstanceState::Running));
}

#[test]
fn reconcile_without_machine_recovers_it_from_metadata_with_its_volume() {
    let world = World::new();
    let record = world.running();
    world.edit(|r| {
        r.fly_machine_id = None;
        r.fly_volume_id = None;
        r.status = Some(InstanceState::Stopped);
    });
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let recovered = world.record();
    assert_eq!(recovered.fly_machine_id, record.fly_machine_id);
    assert_eq!(
        recovered.fly_volume_id, record.fly_volume_id,
        "adopted from the /root mount"
    );
    assert_eq!(
        recovered.status,
        Some(InstanceState::Running),
        "started maps to running"
    );
    assert!(recovered.last_metadata_recovery_at.is_some());
}

#[test]
fn reconcile_metadata_recovery_has_30_minute_cooldown() {
    let world = World::new();
    world.provision();
    world.instances().reconcile(USER, "alarm").expect("first");
    world.fly.clear_calls();
    world.clock.advance(Duration::from_secs(29 * 60));
    world.instances().reconcile(USER, "alarm").expect("second");
    assert_eq!(world.fly.count(FlyCall::ListMachines), 0);
    world.clock.advance(Duration::from_secs(60));
    world.instances().reconcile(USER, "alarm").expect("third");
    assert_eq!(world.fly.count(FlyCall::ListMachines), 1);
}

#[test]
fn recovery_candidate_prefers_started_then_newest() {
    let machine = |id: &str, state: &str, updated: &str| -> crate::fly::Machine {
        serde_json::from_value(
            serde_json::json!({"id": id, "name": id, "state": state, "region": "dfw",
            "instance_id": "i", "created_at": "", "updated_at": updated}),
        )
        .expect("machine")
    };
    let machines = vec![
        machine("a", "stopped", "2026-01-03"),
        machine("b", "started", "2026-01-01"),
        machine("c", "started", "2026-01-02"),
        machine("d", "destroyed", "2026-01-09"),
    ];
    assert_eq!(
        select_recovery_candidate(&machines).map(|m| m.id.as_str()),
        Some("c")
    );
    assert!(
        select_recovery_candidate(&machines[3..]).is_none(),
        "destroyed machines are ignored"
    );
}

#[test]
fn reconcile_creates_missing_volume() {
    let world = World::new();
    world.provision();
    world.edit(|r| r.fly_volume_id = None);
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    assert!(world.record().fly_volume_id.is_some());
}

#[test]
fn reconcile_replaces_lost_volume_with_empty_one() {
    let world = World::new();
    let record = world.provision();
    world
        .fly
        .remove_volume(APP, record.fly_volume_id.as_deref().expect("id"));
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let after = world.record();
    assert!(after.fly_volume_id.is_some());
    assert_ne!(after.fly_volume_id, record.fly_volume_id);
}

#[test]
fn reconcile_finishes_incomplete_app_setup() {
    let world = World::new();
    world.fly.fail_next(FlyCall::AllocateIp, server_error());
    assert!(world.instances().provision(USER, &config()).is_err());
    assert!(!world.record().app_setup.is_complete());
    world.provision();
    assert!(world.record().app_setup.is_complete());
    world.edit(|r| r.app_setup.ipv4_allocated = false);
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    assert!(world.record().app_setup.is_complete());
    assert_eq!(
        world.fly.ips(APP).len(),
        2,
        "already-allocated counts as done"
    );
}

#[test]
fn reconcile_schedules_by_status_with_jitter() {
    assert_eq!(
        interval_for(InstanceState::Running),
        Duration::from_secs(300)
    );
    assert_eq!(
        interval_for(InstanceState::Destroying),
        Duration::from_secs(60)
    );
    assert_eq!(
        interval_for(InstanceState::Stopped),
        Duration::from_secs(1800)
    );
    assert_eq!(
        interval_for(InstanceState::Provisioned),
        Duration::from_secs(1800)
    );
    let world = World::new();
    world.running();
    let next = world.record().next_check_at_ms.expect("scheduled") - world.clock.now_ms();
    assert!((300_000..360_000).contains(&next), "{next}");
}

// ---------- due index walk ----------

#[test]
fn reconcile_due_checks_due_instances_and_reschedules_them() {
    let world = World::new();
    let id = world.running().fly_machine_id.expect("id");
    world.fly.set_machine_state(APP, &id, MachineState::Stopped);
    world.clock.advance(Duration::from_secs(7 * 60));
    let report = world
        .instances()
        .reconcile_due(Duration::from_secs(30), 100)
        .expect("walk");
    assert_eq!(report.checked, 1, "{report:?}");
    let record = world.record();
    assert_eq!(record.health_check_fail_count, 1);
    assert!(record.next_check_at_ms.expect("next") > world.clock.now_ms());
    let again = world
        .instances()
        .reconcile_due(Duration::from_secs(30), 100)
        .expect("walk again");
    assert_eq!(again.checked, 0, "nothing due until the next check");
}

/// Every due entry in the next `minutes` minutes, as (minute, user) pairs.
fn due_entries(world: &World, minutes: i64) -> Vec<(i64, String)> {
    let due = crate::due::DueIndex::new(&world.kv);
    let first = crate::due::minute_of(world.clock.now_ms());
    (first..first + minutes)
        .flat_map(|minute| {
            due.entries(minute)
                .expect("entries")
                .into_iter()
                .map(move |user| (minute, user))
        })
        .collect()
}

#[test]
fn a_later_schedule_keeps_the_earlier_pending_check_and_appends_nothing() {
    let world = World::new();
    world.provision(); // idle entry in ~30 min
    world.instances().start(USER).expect("start"); // running: an earlier entry in ~5 min
    assert_eq!(due_entries(&world, 40).len(), 2);
    world.instances().stop(USER).expect("stop"); // idle again: the 5-minute check stands
    assert_eq!(
        due_entries(&world, 40).len(),
        2,
        "the stop appended nothing"
    );
    world.clock.advance(Duration::from_secs(7 * 60));
    let report = world
        .instances()
        .reconcile_due(Duration::from_secs(30), 100)
        .expect("walk");
    assert_eq!(
        report.checked, 1,
        "checked once, earlier than the idle cadence asks"
    );
    // The check scheduled the idle cadence; the provision's old entry is skipped when its minute comes.
    world.clock.advance(Duration::from_secs(26 * 60));
    let report = world
        .instances()
        .reconcile_due(Duration::from_secs(30), 100)
        .expect("walk");
    assert_eq!((report.checked, report.skipped), (0, 1), "{report:?}");
}

#[test]
fn live_status_checks_and_user_calls_between_two_checks_append_no_due_entry() {
    let world = World::new();
    world.running();
    let before = due_entries(&world, 10);
    assert_eq!(before.len(), 1, "{before:?}");
    for _ in 0..5 {
        // Past the live-check throttle every time, so each status call runs a live check.
        world.clock.advance(Duration::from_secs(31));
        world.instances().status(USER).expect("status");
        world.instances().start(USER).expect("start while running");
    }
    assert_eq!(
        due_entries(&world, 10),
        before,
        "one entry per instance: the pending check stands"
    );
    // The pending check still comes: the walker checks it and schedules exactly one next entry.
    world.clock.advance(Duration::from_secs(6 * 60));
    let report = world
        .instances()
        .reconcile_due(Duration::from_secs(30), 100)
        .expect("walk");
    assert_eq!(report.checked, 1);
    assert_eq!(due_entries(&world, 10).len(), 1);
}

#[test]
fn reconcile_due_overlapping_ticks_do_not_process_a_shard_twice() {
    let world = World::new();
    world.running();
    world.clock.advance(Duration::from_secs(7 * 60));
    let due = crate::due::DueIndex::new(&world.kv);
    assert!(
        due.claim(crate::due::shard_of(USER), world.clock.now_ms())
            .expect("claim")
            .is_some(),
        "another tick claims the user's shard first"
    );
    let report = world
        .instances()
        .reconcile_due(Duration::from_secs(30), 100)
        .expect("walk");
    assert_eq!(report.checked, 0);
}

#[test]
fn reconcile_due_leaves_what_the_budget_does_not_cover_for_the_next_walk() {
    let world = World::new();
    for user in ["u1", "u2", "u3"] {
        world.provision_with_next_check(user, Some(0));
    }
    world.clock.advance(Duration::from_secs(32 * 60));
    let report = world
        .instances()
        .reconcile_due(Duration::from_secs(30), 1)
        .expect("walk");
    assert_eq!(report.checked, 1);
    assert_eq!(report.requeued, 0, "nothing is copied: {report:?}");
    let backlog = crate::due::DueIndex::new(&world.kv)
        .backlog(world.clock.now_ms())
        .expect("backlog");
    assert_eq!(backlog.entries, 2, "the rest waits where it is");
    world.clock.advance(Duration::from_secs(2 * 60));
    let report = world
        .instances()
        .reconcile_due(Duration::from_secs(30), 10)
        .expect("walk");
    assert_eq!(report.checked, 2, "{report:?}");
}

#[test]
fn reconcile_due_defers_only_the_rate_limited_instance() {
    let world = World::new();
    for user in ["u1", "u2", "u3"] {
        world
            .instances()
            .provision(user, &config())
            .expect("provision");
    }
    world.clock.advance(Duration::from_secs(32 * 60));
    world.fly.fail_next(
        FlyCall::ListMachines,
        FlyError::status("list", 429, r#"{"error":"rate limited"}"#),
    );
    let report = world
        .instances()
        .reconcile_due(Duration::from_secs(30), 100)
        .expect("walk");
    assert!(report.rate_limited);
    assert_eq!(
        report.checked, 3,
        "the pass went on after the 429: {report:?}"
    );
    assert_eq!(
        report.requeued, 1,
        "only the rate-limited instance is deferred: {report:?}"
    );
    // The deferred instance comes round again after the backoff.
    world.clock.advance(Duration::from_secs(4 * 60));
    let again = world
        .instances()
        .reconcile_due(Duration::from_secs(30), 100)
        .expect("walk again");
    assert_eq!((again.checked, again.rate_limited), (1, false), "{again:?}");
}

#[test]
fn a_rate_limited_instance_waits_as_long_as_fly_asks() {
    let world = World::new();
    world.provision();
    world.clock.advance(Duration::from_secs(32 * 60));
    let limited = crate::fly::HttpResponse {
        status: 429,
        headers: vec![("retry-after".to_owned(), "600".to_owned())],
        body: br#"{"error":"rate limited"}"#.to_vec(),
    };
    world.fly.fail_next(
        FlyCall::ListMachines,
        FlyError::from_response("list", &limited),
    );
    let report = world
        .instances()
        .reconcile_due(Duration::from_secs(30), 100)
        .expect("walk");
    assert_eq!(
        (report.rate_limited, report.requeued),
        (true, 1),
        "{report:?}"
    );
    let next = world.record().next_check_at_ms.expect("next");
    assert!(
        next >= world.clock.now_ms() + 600_000,
        "deferred by Fly's Retry-After, not the 2-minute backoff: {}",
        next - world.clock.now_ms()
    );
    world.clock.advance(Duration::from_secs(5 * 60));
    let early = world
        .instances()
        .reconcile_due(Duration::from_secs(30), 100)
        .expect("walk");
    assert_eq!(early.checked, 0, "not before Fly's time: {early:?}");
}

#[test]
fn reconcile_due_requeues_busy_instances() {
    let world = World::new();
    world.provision();
    world.clock.advance(Duration::from_secs(32 * 60));
    let _held = world.store().acquire(USER, "long-op").expect("lease");
    let report = world
        .instances()
        .reconcile_due(Duration::from_secs(30), 100)
        .expect("walk");
    assert_eq!(report.checked, 0);
    assert_eq!(report.requeued, 1);
}

// ---------- further rules ----------

#[test]
fn start_resets_health_check_fail_count() {
    let world = World::new();
    world.running();
    world.instances().stop(USER).expect("stop");
    world.edit(|r| r.health_check_fail_count = 4);
    world.instances().start(USER).expect("start");
    assert_eq!(world.record().health_check_fail_count, 0);
}

#[test]
fn metadata_recovery_maps_stopped_machine_to_stopped_status() {
    let world = World::new();
    let record = world.running();
    world.instances().stop(USER).expect("stop");
    world.edit(|r| {
        r.fly_machine_id = None;
        r.status = Some(InstanceState::Running);
    });
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    let recovered = world.record();
    assert_eq!(recovered.fly_machine_id, record.fly_machine_id);
    assert_eq!(recovered.status, Some(InstanceState::Stopped));
}

#[test]
fn reconcile_of_unprovisioned_user_does_nothing() {
    let world = World::new();
    let outcome = world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile");
    assert!(!outcome.checked);
    assert!(world.fly.calls().is_empty());
    assert!(
        world.kv.keys().is_empty(),
        "nothing is created for an unknown user"
    );
}

#[test]
fn provision_never_moves_legacy_instance_with_resources_to_a_per_user_app() {
    let mut world = World::new();
    world.settings.legacy_fly_app_name = Some("kiloclaw-machines".into());
    world.fly.add_app("kiloclaw-machines", "org");
    // A record restored from the original system: resources in the shared app, no status yet.
    world.edit(|r| {
        r.user_id = USER.into();
        r.sandbox_id = "dXNlci0x".into();
        r.fly_volume_id = Some("vol_legacy".into());
    });
    world.provision();
    let record = world.record();
    assert_eq!(record.fly_app_name, None);
    assert_eq!(record.fly_volume_id.as_deref(), Some("vol_legacy"));
    assert_eq!(world.fly.count(FlyCall::CreateApp), 0);
}

#[test]
fn lifecycle_errors_map_to_http_statuses() {
    assert_eq!(LifecycleError::NotProvisioned.http_status(), 404);
    assert_eq!(
        LifecycleError::Destroying { operation: "start" }.http_status(),
        409
    );
    assert_eq!(LifecycleError::NoFlyApp.http_status(), 503);
    assert_eq!(
        LifecycleError::fly("x", FlyError::status("x", 429, "{}")).http_status(),
        503
    );
    assert!(LifecycleError::fly("x", FlyError::status("x", 429, "{}")).is_retryable());
    assert_eq!(
        LifecycleError::fly("x", FlyError::status("x", 400, "{}")).http_status(),
        502
    );
    assert!(!LifecycleError::fly("x", FlyError::status("x", 400, "{}")).is_retryable());
    assert_eq!(
        LifecycleError::Store(StoreError::LeaseLost).http_status(),
        409,
        "another operation took over: busy, as the instances component answers"
    );
    assert!(LifecycleError::Store(StoreError::LeaseLost).is_retryable());
    assert_eq!(
        LifecycleError::Store(StoreError::Contention).http_status(),
        503
    );
}

// ---------- restore from the registry (§4.6) ----------

struct Registry(Option<&'static str>);

impl InstanceRegistry for Registry {
    fn active_sandbox_id(&self, _user_id: &str) -> Result<Option<String>, String> {
        Ok(self.0.map(str::to_owned))
    }
}

#[test]
fn start_restores_lost_record_from_registry_and_recovers_machine_by_metadata() {
    let world = World::new();
    let before = world.running();
    world
        .kv
        .put_raw(&record_key(USER), &InstanceRecord::empty().encode());
    let registry = Registry(Some("dXNlci0x"));
    let instances = world.instances().with_registry(&registry);
    instances.start(USER).expect("start after restore");
    let record = world.record();
    assert_eq!(record.sandbox_id, "dXNlci0x");
    assert_eq!(
        record.fly_app_name.as_deref(),
        Some(APP),
        "the per-user app exists, so it is used"
    );
    assert_eq!(
        record.fly_machine_id, before.fly_machine_id,
        "found by metadata"
    );
    assert_eq!(
        record.fly_volume_id, before.fly_volume_id,
        "adopted from the mount"
    );
    assert_eq!(record.status, Some(InstanceState::Running));
    assert_eq!(world.fly.machines(APP).len(), 1);
}

#[test]
fn reprovision_after_lost_record_adopts_machine_and_volume_by_metadata() {
    let world = World::new();
    let before = world.running();
    world
        .kv
        .put_raw(&record_key(USER), &InstanceRecord::empty().encode());
    world
        .instances()
        .provision(USER, &config())
        .expect("re-provision");
    let record = world.record();
    assert_eq!(
        record.fly_machine_id, before.fly_machine_id,
        "found by metadata"
    );
    assert_eq!(
        record.fly_volume_id, before.fly_volume_id,
        "the user's data volume is kept"
    );
    assert_eq!(world.fly.volumes(APP).len(), 1, "no second volume");
    assert_eq!(
        record.status,
        Some(InstanceState::Running),
        "started maps to running"
    );
    world
        .instances()
        .reconcile(USER, "alarm")
        .expect("reconcile finds nothing to repair");
    assert_eq!(world.machine_state(), MachineState::Started);
    assert_eq!(world.fly.machines(APP).len(), 1);
}

#[test]
fn start_without_registry_row_is_not_provisioned() {
    let world = World::new();
    let registry = Registry(None);
    let error = world
        .instances()
        .with_registry(&registry)
        .start(USER)
        .expect_err("no row");
    assert!(matches!(error, LifecycleError::NotProvisioned));
}

#[test]
fn restore_keeps_legacy_users_on_the_shared_app() {
    let mut world = World::new();
    world.settings.legacy_fly_app_name = Some("kiloclaw-machines".into());
    world.fly.add_app("kiloclaw-machines", "org");
    let registry = Registry(Some("dXNlci0x"));
    world
        .instances()
        .with_registry(&registry)
        .start(USER)
        .expect("start");
    let record = world.record();
    assert_eq!(
        record.fly_app_name, None,
        "no derived app exists, so the legacy app is used (§10 #14)"
    );
    assert_eq!(world.fly.machines("kiloclaw-machines").len(), 1);
}

// ---------- exec-based operations (pairing, doctor) ----------

fn exec_response(stdout: &str, stderr: &str, exit_code: i32) -> crate::fly::ExecResponse {
    crate::fly::ExecResponse {
        stdout: stdout.into(),
        stderr: stderr.into(),
        exit_code,
        ..Default::default()
    }
}

#[test]
fn pairing_list_is_empty_when_not_running_and_cached_for_120_seconds() {
    let world = World::new();
    world.provision();
    assert!(
        world
            .instances()
            .pairing_requests(USER, false)
            .expect("list")
            .is_empty()
    );
    assert_eq!(world.fly.count(FlyCall::ExecMachine), 0);
    world.instances().start(USER).expect("start");
    world.fly.set_exec_response(exec_response(
        r#" {"requests":[{"code":"AB12","id":"1","channel":"telegram"}]} "#,
        "",
        0,
    ));
    assert_eq!(
        world
            .instances()
            .pairing_requests(USER, false)
            .expect("list")
            .len(),
        1
    );
    assert_eq!(
        world
            .instances()
            .pairing_requests(USER, false)
            .expect("cached")
            .len(),
        1
    );
    assert_eq!(
        world.fly.count(FlyCall::ExecMachine),
        1,
        "second read served from the cache"
    );
    world
        .instances()
        .pairing_requests(USER, true)
        .expect("refresh");
    assert_eq!(
        world.fly.count(FlyCall::ExecMachine),
        2,
        "refresh bypasses the cache"
    );
    world
        .clock
        .advance(Duration::from_millis(PAIRING_CACHE_TTL_MS as u64 + 1));
    world
        .instances()
        .pairing_requests(USER, false)
        .expect("expired");
    assert_eq!(world.fly.count(FlyCall::ExecMachine), 3);
}

#[test]
fn pairing_list_failure_is_empty_and_not_cached() {
    let world = World::new();
    world.running();
    world.fly.set_exec_response(exec_response("", "boom", 1));
    assert!(
        world
            .instances()
            .pairing_requests(USER, false)
            .expect("list")
            .is_empty()
    );
    world
        .instances()
        .pairing_requests(USER, false)
        .expect("again");
    assert_eq!(world.fly.count(FlyCall::ExecMachine), 2);
    world.fly.fail_next(FlyCall::ExecMachine, server_error());
    assert!(
        world.instances().pairing_requests(USER, false).is_err(),
        "an exec HTTP error propagates"
    );
}

#[test]
fn approve_pairing_validates_input_and_reports_command_result() {
    let world = World::new();
    world.running();
    let approve = |channel: &str, code: &str| {
        world
            .instances()
            .approve_pairing(USER, channel, code)
            .expect("approve")
    };
    assert_eq!(approve("Telegram", "AB12").message, "Invalid channel name");
    assert_eq!(approve("telegram", "AB-12").message, "Invalid pairing code");
    world.fly.set_exec_response(exec_response("", "", 0));
    assert_eq!(
        approve("telegram", "AB12"),
        PairingApproval {
            success: true,
            message: "Pairing approved".into()
        }
    );
    world
        .fly
        .set_exec_response(exec_response("no such code", "", 1));
    assert_eq!(approve("telegram", "AB12").message, "no such code");
    let call = world
        .fly
        .calls()
        .into_iter()
        .rfind(|(c, _)| *c == FlyCall::ExecMachine)
        .expect("exec")
        .1;
    assert!(
        call.contains("\"approve\", \"telegram\", \"AB12\", \"--notify\""),
        "{call}"
    );
}

#[test]
fn doctor_reports_output_and_refuses_when_not_running() {
    let world = World::new();
    world.provision();
    assert_eq!(
        world.instances().run_doctor(USER).expect("doctor").output,
        "Instance is not running"
    );
    world.instances().start(USER).expect("start");
    world
        .fly
        .set_exec_response(exec_response("fixed", "warning", 0));
    assert_eq!(
        world.instances().run_doctor(USER).expect("doctor"),
        DoctorOutcome {
            success: true,
            output: "fixed\nwarning".into()
        }
    );
}

mod lean_route {
    //! The proxy's lean route lookup answers exactly as the full record path does, for every shape
    //! of stored record (well-formed, partial, with wrong-typed fields).

    use super::*;
    use crate::kv::KeyValue;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn field() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            Just(Some(json!(""))),
            Just(Some(json!("m-1"))),
            Just(Some(json!(42))),
            Just(Some(json!(true))),
            Just(Some(json!({"x": 1}))),
        ]
    }

    fn status() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            Just(Some(json!("provisioned"))),
            Just(Some(json!("running"))),
            Just(Some(json!("stopped"))),
            Just(Some(json!("destroying"))),
            Just(Some(json!("exploded"))),
            Just(Some(json!(3))),
        ]
    }

    fn outcome(result: Result<Route, LifecycleError>) -> String {
        match result {
            Ok(route) => format!("{route:?}"),
            Err(error) => format!("{} {error}", error.http_status()),
        }
    }

    proptest! {
        #[test]
        fn lean_route_equals_full_route(
            user in field(),
            status in status(),
            machine in field(),
            app in field(),
            legacy in prop_oneof![Just(None), Just(Some("kiloclaw-machines".to_owned()))],
            secrets in any::<bool>(),
        ) {
            let mut world = World::new();
            world.settings.legacy_fly_app_name = legacy.clone();
            let mut record = serde_json::Map::new();
            for (name, value) in [("userId", user), ("status", status), ("flyMachineId", machine), ("flyAppName", app)] {
                if let Some(value) = value {
                    record.insert(name.to_owned(), value);
                }
            }
            if secrets {
                record.insert("encryptedSecrets".to_owned(), json!({"A": {"encryptedData": "x"}}));
                record.insert("envVars".to_owned(), json!({"B": "c"}));
            }
            world
                .kv
                .set(&record_key(USER), Value::Object(record).to_string().as_bytes())
                .expect("set");
            let full = outcome(world.instances().route(USER));
            let lean = outcome(route_of(&world.kv, USER, legacy.as_deref()));
            prop_assert_eq!(lean, full);
        }
    }

    #[test]
    fn no_record_and_a_corrupt_record_are_reported_like_the_full_path() {
        let world = World::new();
        assert_eq!(
            outcome(route_of(&world.kv, USER, None)),
            outcome(world.instances().route(USER))
        );
        for corrupt in [&b"[1,2]"[..], b"not json", b"\"text\"", b" {\"userId\": "] {
            world.kv.set(&record_key(USER), corrupt).expect("set");
            assert_eq!(
                outcome(route_of(&world.kv, USER, None)),
                outcome(world.instances().route(USER))
            );
        }
    }
}

mod fleet;
mod reconcile_due;
mod secrets;
mod stalls;
mod unconfirmed;
