//! [`FakeFly`]: the Fly Machines API as an in-memory state machine.
//!
//! Behaviour modelled on the fact sheet (`fly-machines-api.md`): a created machine starts unless
//! `skip_launch`; every `update` gives a new `instance_id`, restarts a started machine unless `skip_launch`, and
//! leaves a stopped one stopped (Fly's observed 2026 behaviour; [`FakeFly::set_update_boots_stopped`] switches
//! to the documented one, which boots it); waiting for `stopped` without `instance_id` is refused (400), a wait whose state is not
//! reached is 408; missing machines, volumes and apps are 404; a region marked full answers volume creation
//! with 412 and machine launch with 412 (create) or 409 (update) capacity bodies; app names are global and a
//! taken name is 422 `name_taken`; IPs already allocated are 422. Any call can be made to fail next with a
//! chosen error, and every call is logged for assertions.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::json;

use super::Stall;
use crate::fly::{
    AllocateIpRequest, App, AppList, CreateAppRequest, CreateAppResponse, CreateMachineRequest,
    CreateVolumeRequest, DeleteSecretResponse, ExecRequest, ExecResponse, FlyApi, FlyError,
    IpAssignment, Machine, MachineConfig, MachineListFilter, MachineMount, MachineState,
    OrgMachinePage, OrgMachineQuery, SecretInfo, SetSecretResponse, StartMachineResponse,
    TransportError, TransportErrorKind, UpdateMachineRequest, Volume, VolumeSnapshot, WaitRequest,
    WaitResponse, WaitState,
};

/// Where a stalled Fly call waits (see [`FakeFly::stall_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StallPoint {
    /// Before Fly has seen the request: nothing happened yet (a request still in flight).
    BeforeEffect,
    /// After Fly has done it, before the caller gets the answer (the caller stalls with a result).
    AfterEffect,
}

/// A Fly API call, for error injection and the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // reason: one variant per FlyApi method, named after it
pub enum FlyCall {
    CreateMachine,
    GetMachine,
    ListMachines,
    ListOrgMachines,
    UpdateMachine,
    StartMachine,
    StopMachine,
    DestroyMachine,
    WaitMachine,
    ExecMachine,
    ListVolumes,
    CreateVolume,
    GetVolume,
    DeleteVolume,
    ListVolumeSnapshots,
    CreateApp,
    GetApp,
    ListApps,
    DeleteApp,
    AllocateIp,
    ListIps,
    SetSecret,
    DeleteSecret,
    ListSecrets,
}

#[derive(Debug, Default)]
struct FakeApp {
    org: String,
    machines: BTreeMap<String, Machine>,
    volumes: BTreeMap<String, Volume>,
    secrets: BTreeMap<String, String>,
    secrets_version: u64,
    ips: Vec<IpAssignment>,
}

impl FakeApp {
    /// The machine is gone and its volume free.
    fn finish_destroy(&mut self, machine_id: &str) {
        self.machines.remove(machine_id);
        for volume in self.volumes.values_mut() {
            if volume.attached_machine_id.as_deref() == Some(machine_id) {
                volume.attached_machine_id = None;
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    apps: BTreeMap<String, FakeApp>,
    full_regions: BTreeSet<String>,
    update_boots_stopped: bool,
    injected: HashMap<FlyCall, VecDeque<FlyError>>,
    /// Errors answered after the call did its work (creates only): Fly made it, the caller hears a 5xx.
    injected_after_effect: HashMap<FlyCall, VecDeque<FlyError>>,
    log: Vec<(FlyCall, String)>,
    next_id: u64,
    exec_response: Option<ExecResponse>,
    /// Machines that stay in their current state on the next start/update (a stuck boot).
    stuck_machines: BTreeSet<String>,
    /// Apps that exist but are invisible to our token (another org's app): GET answers 404.
    foreign_apps: BTreeSet<String>,
    /// `min_secrets_version` of every create and update, in order.
    min_secrets_versions: Vec<(FlyCall, Option<u64>)>,
    /// Calls to hold once, at the given point.
    stalls: HashMap<(FlyCall, StallPoint), Stall>,
    /// Destroy as real Fly does: the machine is `destroying` (its volume still bound) until a wait
    /// for `destroyed` sees it finish.
    asynchronous_destroy: bool,
    /// Changes stamped so far: every change gets the next second after 2026-01-01 as `updated_at`.
    changes: i64,
    /// Each machine as last stamped, by id, with its app (to notice changes and disappearances).
    stamped: HashMap<String, (String, Machine)>,
    /// Machines that disappeared, as the org listing shows them with `include_deleted`.
    tombstones: HashMap<String, (String, Machine)>,
}

/// The fake Fly API. `Sync`, so tests may share it between threads.
#[derive(Debug, Default)]
pub struct FakeFly {
    state: Mutex<State>,
}

fn status_error(context: &str, status: u16, body: serde_json::Value) -> FlyError {
    FlyError::status(context, status, body.to_string())
}

/// Logs a create/update's `min_secrets_version` and refuses one the app has not reached, as Fly does (412).
fn check_min_secrets_version(
    state: &mut State,
    call: FlyCall,
    app: &str,
    wanted: Option<u64>,
    context: &str,
) -> Result<(), FlyError> {
    state.min_secrets_versions.push((call, wanted));
    let current = state.apps.get(app).map_or(0, |a| a.secrets_version);
    match wanted {
        Some(version) if version > current => Err(status_error(
            context,
            412,
            json!({"error": format!("min_secrets_version {version} is not yet available on this app")}),
        )),
        _ => Ok(()),
    }
}

fn not_found(context: &str, what: &str) -> FlyError {
    status_error(context, 404, json!({"error": format!("{what} not found")}))
}

impl FakeFly {
    /// An empty Fly with no apps.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next call of `call` fails with `error` (queued; several may be queued).
    pub fn fail_next(&self, call: FlyCall, error: FlyError) {
        self.lock()
            .injected
            .entry(call)
            .or_default()
            .push_back(error);
    }

    /// The next call of `call` stops at `point` until the returned [`Stall`] is released, so a test can run
    /// other operations while this caller is stuck there.
    pub fn stall_next(&self, call: FlyCall, point: StallPoint) -> Stall {
        let stall = Stall::new();
        self.lock().stalls.insert((call, point), stall.clone());
        stall
    }

    /// The next `call` (a create: machine or volume) does its work and then answers HTTP `status`, as
    /// Fly does when it creates and its answer is lost or it fails afterwards.
    pub fn fail_next_after_effect(&self, call: FlyCall, status: u16) {
        self.lock()
            .injected_after_effect
            .entry(call)
            .or_default()
            .push_back(status_error(
                "injected after effect",
                status,
                json!({"error": "injected after the effect"}),
            ));
    }

    /// The next call of `call` fails with HTTP `status` and a JSON `{error: message}` body.
    pub fn fail_next_status(&self, call: FlyCall, status: u16, message: &str) {
        self.fail_next(
            call,
            status_error("injected", status, json!({"error": message})),
        );
    }

    /// The next call of `call` gets no response (a timeout).
    pub fn fail_next_timeout(&self, call: FlyCall) {
        self.fail_next(
            call,
            FlyError::transport(
                "injected",
                TransportError::new(TransportErrorKind::Timeout, "timed out"),
            ),
        );
    }

    /// Makes `update` boot a stopped machine, as Fly's docs describe (the default is the observed 2026
    /// behaviour: it stays stopped).
    pub fn set_update_boots_stopped(&self, boots: bool) {
        self.lock().update_boots_stopped = boots;
    }

    /// Destroys finish asynchronously, as on real Fly: a destroyed machine stays `destroying`, its
    /// volume bound (deletes refused), until a wait for `destroyed` sees it gone.
    pub fn set_asynchronous_destroy(&self, asynchronous: bool) {
        self.lock().asynchronous_destroy = asynchronous;
    }

    /// Marks a region as out of capacity (or back in service).
    pub fn set_region_full(&self, region: &str, full: bool) {
        let mut state = self.lock();
        if full {
            state.full_regions.insert(region.to_owned());
        } else {
            state.full_regions.remove(region);
        }
    }

    /// Adds an app directly (as if created earlier, e.g. the legacy shared app).
    pub fn add_app(&self, app: &str, org: &str) {
        self.lock().apps.entry(app.to_owned()).or_default().org = org.to_owned();
    }

    /// Adds an app owned by another organisation: its name is taken, but GET cannot see it.
    pub fn add_foreign_app(&self, app: &str) {
        let mut state = self.lock();
        state.apps.entry(app.to_owned()).or_default().org = "foreign".into();
        state.foreign_apps.insert(app.to_owned());
    }

    /// Forces a machine into `state` (a crash, an external stop).
    pub fn set_machine_state(&self, app: &str, machine_id: &str, state: MachineState) {
        if let Some(machine) = self
            .lock()
            .apps
            .get_mut(app)
            .and_then(|a| a.machines.get_mut(machine_id))
        {
            machine.state = state;
        }
        self.lock().stamp_changes();
    }

    /// Replaces a machine's mounts behind the control plane's back (a drifted or foreign config).
    /// Volumes follow: the machine's old one is detached, a new one attached.
    pub fn set_machine_mounts(&self, app: &str, machine_id: &str, mounts: Vec<MachineMount>) {
        let mut state = self.lock();
        if let Some(fake) = state.apps.get_mut(app) {
            for volume in fake.volumes.values_mut() {
                if volume.attached_machine_id.as_deref() == Some(machine_id) {
                    volume.attached_machine_id = None;
                }
                if mounts.iter().any(|m| m.volume == volume.id) {
                    volume.attached_machine_id = Some(machine_id.to_owned());
                }
            }
            if let Some(config) = fake
                .machines
                .get_mut(machine_id)
                .and_then(|m| m.config.as_mut())
            {
                config.mounts = mounts;
            }
        }
        state.stamp_changes();
    }

    /// Machines whose next start/update leaves them where they are (so a wait for `started` times out).
    pub fn set_machine_stuck(&self, machine_id: &str, stuck: bool) {
        let mut state = self.lock();
        if stuck {
            state.stuck_machines.insert(machine_id.to_owned());
        } else {
            state.stuck_machines.remove(machine_id);
        }
    }

    /// Removes a machine behind the control plane's back.
    pub fn remove_machine(&self, app: &str, machine_id: &str) {
        let mut state = self.lock();
        if let Some(a) = state.apps.get_mut(app) {
            a.machines.remove(machine_id);
        }
        state.stamp_changes();
    }

    /// Removes a volume behind the control plane's back.
    pub fn remove_volume(&self, app: &str, volume_id: &str) {
        if let Some(a) = self.lock().apps.get_mut(app) {
            a.volumes.remove(volume_id);
        }
    }

    /// Sets what `exec_machine` returns.
    pub fn set_exec_response(&self, response: ExecResponse) {
        self.lock().exec_response = Some(response);
    }

    /// A machine, if it exists.
    pub fn machine(&self, app: &str, machine_id: &str) -> Option<Machine> {
        self.lock()
            .apps
            .get(app)
            .and_then(|a| a.machines.get(machine_id).cloned())
    }

    /// All machines of an app.
    pub fn machines(&self, app: &str) -> Vec<Machine> {
        self.lock()
            .apps
            .get(app)
            .map(|a| a.machines.values().cloned().collect())
            .unwrap_or_default()
    }

    /// All volumes of an app.
    pub fn volumes(&self, app: &str) -> Vec<Volume> {
        self.lock()
            .apps
            .get(app)
            .map(|a| a.volumes.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Names of existing apps.
    pub fn app_names(&self) -> Vec<String> {
        self.lock().apps.keys().cloned().collect()
    }

    /// IP assignments of an app.
    pub fn ips(&self, app: &str) -> Vec<IpAssignment> {
        self.lock()
            .apps
            .get(app)
            .map(|a| a.ips.clone())
            .unwrap_or_default()
    }

    /// Value of an app secret.
    pub fn secret(&self, app: &str, name: &str) -> Option<String> {
        self.lock()
            .apps
            .get(app)
            .and_then(|a| a.secrets.get(name).cloned())
    }

    /// The calls made so far, with a short argument summary each.
    /// The `min_secrets_version` each machine create and update asked for, in order.
    pub fn min_secrets_versions(&self) -> Vec<(FlyCall, Option<u64>)> {
        self.lock().min_secrets_versions.clone()
    }

    pub fn calls(&self) -> Vec<(FlyCall, String)> {
        self.lock().log.clone()
    }

    /// How many times `call` was made.
    pub fn count(&self, call: FlyCall) -> usize {
        self.lock().log.iter().filter(|(c, _)| *c == call).count()
    }

    /// Forgets the call log.
    pub fn clear_calls(&self) {
        self.lock().log.clear();
    }

    fn begin(&self, call: FlyCall, summary: String) -> Result<CallState<'_>, FlyError> {
        // A stall is held without the lock, so the rest of the world can use Fly meanwhile.
        let before = self.lock().stalls.remove(&(call, StallPoint::BeforeEffect));
        if let Some(stall) = before {
            stall.hold();
        }
        let mut state = self.lock();
        state.log.push((call, summary));
        if let Some(error) = state.injected.get_mut(&call).and_then(VecDeque::pop_front) {
            return Err(error);
        }
        let after = state.stalls.remove(&(call, StallPoint::AfterEffect));
        Ok(CallState {
            state: Some(state),
            after,
        })
    }
}

/// The locked state for one call; when the call is done (dropped after its answer is computed), it
/// releases the lock and then holds the call's [`StallPoint::AfterEffect`] stall, if any.
struct CallState<'a> {
    state: Option<std::sync::MutexGuard<'a, State>>,
    after: Option<Stall>,
}

impl std::ops::Deref for CallState<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        match &self.state {
            Some(state) => state,
            // Only `drop` takes the guard out.
            None => unreachable!("call state used after drop"),
        }
    }
}

impl std::ops::DerefMut for CallState<'_> {
    fn deref_mut(&mut self) -> &mut State {
        match &mut self.state {
            Some(state) => state,
            None => unreachable!("call state used after drop"),
        }
    }
}

impl Drop for CallState<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.state.as_mut() {
            state.stamp_changes();
        }
        drop(self.state.take());
        if let Some(stall) = self.after.take() {
            stall.hold();
        }
    }
}

/// `updated_at` of the `change`-th change: one second apart from 2026-01-01T00:00:00Z.
fn change_time(change: i64) -> String {
    let rfc3339 = time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(1_767_225_600 + change)
        .ok()
        .and_then(|at| at.format(&rfc3339).ok())
        .unwrap_or_default()
}

impl State {
    /// Gives every machine that changed since the last call a new `updated_at`, and a tombstone to every
    /// machine that disappeared, as Fly's org listing shows them.
    fn stamp_changes(&mut self) {
        let mut present = BTreeSet::new();
        for (app_name, app) in &mut self.apps {
            for (id, machine) in &mut app.machines {
                present.insert(id.clone());
                let changed = self.stamped.get(id).is_none_or(|(_, old)| {
                    old.state != machine.state || old.config != machine.config
                });
                if changed {
                    self.changes += 1;
                    machine.updated_at = change_time(self.changes);
                    self.stamped
                        .insert(id.clone(), (app_name.clone(), machine.clone()));
                }
            }
        }
        let gone: Vec<String> = self
            .stamped
            .keys()
            .filter(|id| !present.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some((app, mut machine)) = self.stamped.remove(&id) {
                self.changes += 1;
                machine.state = MachineState::Destroyed;
                machine.updated_at = change_time(self.changes);
                self.tombstones.insert(id, (app, machine));
            }
        }
    }

    fn error_after_effect(&mut self, call: FlyCall) -> Result<(), FlyError> {
        match self
            .injected_after_effect
            .get_mut(&call)
            .and_then(VecDeque::pop_front)
        {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:014x}", self.next_id)
    }

    fn app(&mut self, app: &str, context: &str) -> Result<&mut FakeApp, FlyError> {
        self.apps
            .get_mut(app)
            .ok_or_else(|| not_found(context, "app"))
    }

    fn launch(&mut self, app: &str, machine_id: &str) {
        let stuck = self.stuck_machines.contains(machine_id);
        let instance = self.id("01INST");
        if let Some(machine) = self
            .apps
            .get_mut(app)
            .and_then(|a| a.machines.get_mut(machine_id))
        {
            machine.instance_id = instance;
            if !stuck {
                machine.state = MachineState::Started;
            }
        }
    }
}

fn new_machine(
    id: &str,
    name: &str,
    region: &str,
    instance: &str,
    config: &crate::fly::MachineConfig,
) -> Machine {
    let value = json!({
        "id": id, "name": name, "state": "created", "region": region, "instance_id": instance,
        "config": config, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
    });
    serde_json::from_value(value).unwrap_or_else(|e| panic!("fake machine must deserialize: {e}"))
}

fn new_volume(id: &str, request: &CreateVolumeRequest) -> Volume {
    let value = json!({
        "id": id, "name": request.name, "state": "created", "size_gb": request.size_gb,
        "region": request.region, "created_at": "2026-01-01T00:00:00Z",
    });
    serde_json::from_value(value).unwrap_or_else(|e| panic!("fake volume must deserialize: {e}"))
}

impl FlyApi for FakeFly {
    fn create_machine(
        &self,
        app: &str,
        request: &CreateMachineRequest,
    ) -> Result<Machine, FlyError> {
        let mut state = self.begin(
            FlyCall::CreateMachine,
            format!("{app} name={:?}", request.name),
        )?;
        let context = "create machine";
        check_min_secrets_version(
            &mut state,
            FlyCall::CreateMachine,
            app,
            request.min_secrets_version,
            context,
        )?;
        let mount_volume = request.config.mounts.first().map(|m| m.volume.clone());
        let region = {
            let fake = state.app(app, context)?;
            match &mount_volume {
                Some(volume_id) => {
                    let volume = fake.volumes.get(volume_id).ok_or_else(|| {
                        status_error(
                            context,
                            400,
                            json!({"error": format!("volume {volume_id} not found")}),
                        )
                    })?;
                    if let Some(region) = &request.region
                        && region != &volume.region
                    {
                        return Err(status_error(
                            context,
                            400,
                            json!({"error": "volume is in another region"}),
                        ));
                    }
                    volume.region.clone()
                }
                None => request.region.clone().unwrap_or_else(|| "dfw".into()),
            }
        };
        if state.full_regions.contains(&region) {
            let volume = mount_volume.unwrap_or_default();
            return Err(status_error(
                context,
                412,
                json!({"error": format!("insufficient resources to create new machine with existing volume '{volume}'")}),
            ));
        }
        let id = state.id("m");
        let instance = state.id("01INST");
        let name = request.name.clone().unwrap_or_else(|| id.clone());
        let machine = new_machine(&id, &name, &region, &instance, &request.config);
        let fake = state.app(app, context)?;
        if let Some(volume_id) = &mount_volume
            && let Some(volume) = fake.volumes.get_mut(volume_id)
        {
            volume.attached_machine_id = Some(id.clone());
        }
        fake.machines.insert(id.clone(), machine);
        if request.skip_launch != Some(true) {
            state.launch(app, &id);
        }
        state.error_after_effect(FlyCall::CreateMachine)?;
        let fake = state.app(app, context)?;
        fake.machines
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found(context, "machine"))
    }

    fn get_machine(&self, app: &str, machine_id: &str) -> Result<Machine, FlyError> {
        let mut state = self.begin(FlyCall::GetMachine, format!("{app}/{machine_id}"))?;
        let fake = state.app(app, "get machine")?;
        fake.machines
            .get(machine_id)
            .cloned()
            .ok_or_else(|| not_found("get machine", "machine"))
    }

    fn list_machines(
        &self,
        app: &str,
        filter: &MachineListFilter,
    ) -> Result<Vec<Machine>, FlyError> {
        let mut state = self.begin(
            FlyCall::ListMachines,
            format!("{app} {:?}", filter.metadata),
        )?;
        let fake = state.app(app, "list machines")?;
        Ok(fake
            .machines
            .values()
            .filter(|m| filter.include_deleted || !m.state.is_gone())
            .filter(|m| {
                filter
                    .metadata
                    .iter()
                    .all(|(k, v)| m.metadata_value(k) == Some(v.as_str()))
            })
            .cloned()
            .collect())
    }

    fn list_org_machines(
        &self,
        org_slug: &str,
        query: &OrgMachineQuery,
    ) -> Result<OrgMachinePage, FlyError> {
        let state = self.begin(
            FlyCall::ListOrgMachines,
            format!("{org_slug} {:?} {:?}", query.updated_after, query.cursor),
        )?;
        let in_org = |app: &str| state.apps.get(app).is_some_and(|a| a.org == org_slug);
        let live = state
            .apps
            .values()
            .filter(|a| a.org == org_slug)
            .flat_map(|a| a.machines.values())
            .filter(|m| query.include_deleted || !m.state.is_gone());
        let dead = state
            .tombstones
            .values()
            .filter(|(app, _)| query.include_deleted && in_org(app))
            .map(|(_, m)| m);
        let after = query.updated_after.as_deref().unwrap_or("");
        let cursor = query
            .cursor
            .as_deref()
            .and_then(|c| c.split_once('|'))
            .unwrap_or(("", ""));
        let mut machines: Vec<Machine> = live
            .chain(dead)
            .filter(|m| m.updated_at.as_str() > after)
            .filter(|m| (m.updated_at.as_str(), m.id.as_str()) > cursor)
            .cloned()
            .collect();
        machines.sort_by(|a, b| (&a.updated_at, &a.id).cmp(&(&b.updated_at, &b.id)));
        let limit = query.limit.unwrap_or(100) as usize;
        let more = machines.len() > limit;
        machines.truncate(limit);
        let last = machines.last();
        Ok(OrgMachinePage {
            next_cursor: more
                .then(|| last.map(|m| format!("{}|{}", m.updated_at, m.id)))
                .flatten(),
            last_machine_id: last.map(|m| m.id.clone()),
            last_updated_at: last.map(|m| m.updated_at.clone()),
            machines,
            ..OrgMachinePage::default()
        })
    }

    fn update_machine(
        &self,
        app: &str,
        machine_id: &str,
        request: &UpdateMachineRequest,
    ) -> Result<Machine, FlyError> {
        let mut state = self.begin(FlyCall::UpdateMachine, format!("{app}/{machine_id}"))?;
        let context = "update machine";
        check_min_secrets_version(
            &mut state,
            FlyCall::UpdateMachine,
            app,
            request.min_secrets_version,
            context,
        )?;
        let region = {
            let fake = state.app(app, context)?;
            let machine = fake
                .machines
                .get(machine_id)
                .ok_or_else(|| not_found(context, "machine"))?;
            machine.region.clone()
        };
        if state.full_regions.contains(&region) {
            return Err(status_error(
                context,
                409,
                json!({"error": "aborted: could not reserve resource for machine: insufficient memory available to fulfill request"}),
            ));
        }
        let fake = state.app(app, context)?;
        let machine = fake
            .machines
            .get_mut(machine_id)
            .ok_or_else(|| not_found(context, "machine"))?;
        // As Fly (fly-machines-api.md §2.6) and the simulator: an update cannot swap the volume.
        let volume_of = |config: &MachineConfig| config.mounts.first().map(|m| m.volume.clone());
        if let Some(current) = &machine.config
            && volume_of(current) != volume_of(&request.config)
        {
            return Err(status_error(
                context,
                400,
                json!({"error": "the mounted volume cannot be changed by an update; destroy the machine and create a new one"}),
            ));
        }
        machine.config = Some(request.config.clone());
        let was_running = matches!(
            machine.state,
            MachineState::Started | MachineState::Starting
        );
        let boots =
            request.skip_launch != Some(true) && (was_running || state.update_boots_stopped);
        if boots {
            state.launch(app, machine_id);
        } else {
            let instance = state.id("01INST");
            if let Ok(fake) = state.app(app, context)
                && let Some(machine) = fake.machines.get_mut(machine_id)
            {
                machine.instance_id = instance;
                if was_running {
                    machine.state = MachineState::Stopped;
                }
            }
        }
        let fake = state.app(app, context)?;
        fake.machines
            .get(machine_id)
            .cloned()
            .ok_or_else(|| not_found(context, "machine"))
    }

    fn start_machine(&self, app: &str, machine_id: &str) -> Result<StartMachineResponse, FlyError> {
        let mut state = self.begin(FlyCall::StartMachine, format!("{app}/{machine_id}"))?;
        let context = "start machine";
        let (previous, region) = {
            let fake = state.app(app, context)?;
            let machine = fake
                .machines
                .get(machine_id)
                .ok_or_else(|| not_found(context, "machine"))?;
            (machine.state.clone(), machine.region.clone())
        };
        if state.full_regions.contains(&region) {
            return Err(status_error(
                context,
                409,
                json!({"error": "aborted: could not reserve resource for machine: insufficient memory available to fulfill request"}),
            ));
        }
        state.launch(app, machine_id);
        Ok(StartMachineResponse {
            previous_state: Some(previous),
            ..StartMachineResponse::default()
        })
    }

    fn stop_machine(&self, app: &str, machine_id: &str) -> Result<(), FlyError> {
        let mut state = self.begin(FlyCall::StopMachine, format!("{app}/{machine_id}"))?;
        let fake = state.app(app, "stop machine")?;
        let machine = fake
            .machines
            .get_mut(machine_id)
            .ok_or_else(|| not_found("stop machine", "machine"))?;
        if machine.state == MachineState::Started || machine.state == MachineState::Starting {
            machine.state = MachineState::Stopped;
        }
        Ok(())
    }

    fn destroy_machine(&self, app: &str, machine_id: &str, force: bool) -> Result<(), FlyError> {
        let mut state = self.begin(
            FlyCall::DestroyMachine,
            format!("{app}/{machine_id} force={force}"),
        )?;
        let asynchronous = state.asynchronous_destroy;
        let fake = state.app(app, "destroy machine")?;
        let machine = fake
            .machines
            .get(machine_id)
            .ok_or_else(|| not_found("destroy machine", "machine"))?;
        if machine.state == MachineState::Started && !force {
            return Err(status_error(
                "destroy machine",
                412,
                json!({"error": "machine is started; use force"}),
            ));
        }
        if asynchronous {
            if let Some(machine) = fake.machines.get_mut(machine_id) {
                machine.state = MachineState::Destroying;
            }
            return Ok(());
        }
        fake.finish_destroy(machine_id);
        Ok(())
    }

    fn wait_machine(
        &self,
        app: &str,
        machine_id: &str,
        request: &WaitRequest,
    ) -> Result<WaitResponse, FlyError> {
        let mut state = self.begin(
            FlyCall::WaitMachine,
            format!(
                "{app}/{machine_id} state={} timeout={} instance_id={:?}",
                request.state, request.timeout_s, request.instance_id
            ),
        )?;
        let context = "wait machine";
        if request.timeout_s > 60 {
            return Err(status_error(
                context,
                400,
                json!({"error": "timeout must be at most 60s"}),
            ));
        }
        if request.state == WaitState::Stopped && request.instance_id.is_none() {
            return Err(status_error(
                context,
                400,
                json!({"error": "instance_id is required when waiting for stopped"}),
            ));
        }
        let fake = state.app(app, context)?;
        if request.state == WaitState::Destroyed
            && fake
                .machines
                .get(machine_id)
                .is_some_and(|m| m.state == MachineState::Destroying)
        {
            fake.finish_destroy(machine_id);
            return Ok(WaitResponse {
                ok: true,
                state: Some(MachineState::Destroyed),
                ..WaitResponse::default()
            });
        }
        let machine = fake
            .machines
            .get(machine_id)
            .ok_or_else(|| not_found(context, "machine"))?;
        if let Some(instance) = &request.instance_id
            && instance != &machine.instance_id
        {
            return Err(status_error(
                context,
                400,
                json!({"error": "instance_id does not match"}),
            ));
        }
        if machine.state.as_str() == request.state.as_str() {
            Ok(WaitResponse {
                ok: true,
                state: Some(machine.state.clone()),
                ..WaitResponse::default()
            })
        } else {
            Err(status_error(
                context,
                408,
                json!({"error": "deadline_exceeded: timeout waiting for machine"}),
            ))
        }
    }

    fn exec_machine(
        &self,
        app: &str,
        machine_id: &str,
        request: &ExecRequest,
    ) -> Result<ExecResponse, FlyError> {
        let mut state = self.begin(
            FlyCall::ExecMachine,
            format!("{app}/{machine_id} {:?}", request.command),
        )?;
        let response = state.exec_response.clone().unwrap_or_default();
        let fake = state.app(app, "exec")?;
        fake.machines
            .get(machine_id)
            .ok_or_else(|| not_found("exec", "machine"))?;
        Ok(response)
    }

    fn list_volumes(&self, app: &str) -> Result<Vec<Volume>, FlyError> {
        let mut state = self.begin(FlyCall::ListVolumes, app.to_owned())?;
        Ok(state
            .app(app, "list volumes")?
            .volumes
            .values()
            .cloned()
            .collect())
    }

    fn create_volume(&self, app: &str, request: &CreateVolumeRequest) -> Result<Volume, FlyError> {
        let mut state = self.begin(
            FlyCall::CreateVolume,
            format!(
                "{app} region={} source={:?}",
                request.region, request.source_volume_id
            ),
        )?;
        let context = "create volume";
        state.app(app, context)?;
        if request.region.contains(',') || request.region.is_empty() {
            return Err(status_error(
                context,
                400,
                json!({"error": "invalid region"}),
            ));
        }
        if state.full_regions.contains(&request.region) {
            return Err(status_error(
                context,
                412,
                json!({"error": "insufficient resources available in region", "status": "insufficient_capacity"}),
            ));
        }
        if let Some(source) = &request.source_volume_id
            && !state.app(app, context)?.volumes.contains_key(source)
        {
            return Err(not_found(context, "source volume"));
        }
        let id = state.id("vol_");
        let volume = new_volume(&id, request);
        state.app(app, context)?.volumes.insert(id, volume.clone());
        state.error_after_effect(FlyCall::CreateVolume)?;
        Ok(volume)
    }

    fn get_volume(&self, app: &str, volume_id: &str) -> Result<Volume, FlyError> {
        let mut state = self.begin(FlyCall::GetVolume, format!("{app}/{volume_id}"))?;
        let fake = state.app(app, "get volume")?;
        fake.volumes
            .get(volume_id)
            .cloned()
            .ok_or_else(|| not_found("get volume", "volume"))
    }

    fn delete_volume(&self, app: &str, volume_id: &str) -> Result<(), FlyError> {
        let mut state = self.begin(FlyCall::DeleteVolume, format!("{app}/{volume_id}"))?;
        let fake = state.app(app, "delete volume")?;
        let volume = fake
            .volumes
            .get(volume_id)
            .ok_or_else(|| not_found("delete volume", "volume"))?;
        if let Some(machine) = &volume.attached_machine_id
            && fake.machines.contains_key(machine)
        {
            return Err(status_error(
                "delete volume",
                412,
                json!({"error": "volume is attached to a machine"}),
            ));
        }
        fake.volumes.remove(volume_id);
        Ok(())
    }

    fn list_volume_snapshots(
        &self,
        app: &str,
        volume_id: &str,
    ) -> Result<Vec<VolumeSnapshot>, FlyError> {
        let mut state = self.begin(FlyCall::ListVolumeSnapshots, format!("{app}/{volume_id}"))?;
        let fake = state.app(app, "list snapshots")?;
        fake.volumes
            .get(volume_id)
            .ok_or_else(|| not_found("list snapshots", "volume"))?;
        Ok(Vec::new())
    }

    fn create_app(&self, request: &CreateAppRequest) -> Result<CreateAppResponse, FlyError> {
        let name = request.effective_name().to_owned();
        let mut state = self.begin(FlyCall::CreateApp, name.clone())?;
        if state.apps.contains_key(&name) {
            return Err(status_error(
                "create app",
                422,
                json!({"error": "Validation failed: Name has already been taken", "status": "name_taken"}),
            ));
        }
        state.apps.insert(
            name.clone(),
            FakeApp {
                org: request.org_slug.clone(),
                ..FakeApp::default()
            },
        );
        Ok(CreateAppResponse {
            id: name,
            created_at: 1,
        })
    }

    fn get_app(&self, app: &str) -> Result<Option<App>, FlyError> {
        let state = self.begin(FlyCall::GetApp, app.to_owned())?;
        if state.foreign_apps.contains(app) {
            return Ok(None);
        }
        Ok(state.apps.get(app).map(|a| {
            serde_json::from_value(json!({"id": app, "name": app, "status": "deployed",
                "organization": {"name": a.org, "slug": a.org}}))
            .unwrap_or_else(|e| panic!("fake app must deserialize: {e}"))
        }))
    }

    fn list_apps(&self, org_slug: &str) -> Result<AppList, FlyError> {
        let state = self.begin(FlyCall::ListApps, org_slug.to_owned())?;
        let names: Vec<String> = state
            .apps
            .iter()
            .filter(|(_, a)| a.org == org_slug)
            .map(|(n, _)| n.clone())
            .collect();
        serde_json::from_value(json!({"total_apps": names.len(), "apps": names.iter().map(|n| json!({"id": n, "name": n})).collect::<Vec<_>>()}))
            .map_err(|e| FlyError::invalid_response("list apps", 200, e.to_string(), b""))
    }

    fn delete_app(&self, app: &str) -> Result<(), FlyError> {
        let mut state = self.begin(FlyCall::DeleteApp, app.to_owned())?;
        state
            .apps
            .remove(app)
            .map(|_| ())
            .ok_or_else(|| not_found("delete app", "app"))
    }

    fn allocate_ip(
        &self,
        app: &str,
        request: &AllocateIpRequest,
    ) -> Result<IpAssignment, FlyError> {
        let mut state = self.begin(FlyCall::AllocateIp, format!("{app} {}", request.kind))?;
        let fake = state.app(app, "allocate ip")?;
        let shared = request.kind.as_str() == "shared_v4";
        let ip = if shared {
            "203.0.113.1".to_owned()
        } else {
            format!("2001:db8::{}", fake.ips.len() + 1)
        };
        if fake.ips.iter().any(|existing| existing.shared == shared) {
            return Err(status_error(
                "allocate ip",
                422,
                json!({"error": "ip already allocated"}),
            ));
        }
        let assignment: IpAssignment = serde_json::from_value(json!({"ip": ip, "region": "global",
            "service_name": "", "shared": shared, "created_at": "2026-01-01T00:00:00Z"}))
        .map_err(|e| FlyError::invalid_response("allocate ip", 200, e.to_string(), b""))?;
        fake.ips.push(assignment.clone());
        Ok(assignment)
    }

    fn list_ips(&self, app: &str) -> Result<Vec<IpAssignment>, FlyError> {
        let mut state = self.begin(FlyCall::ListIps, app.to_owned())?;
        Ok(state.app(app, "list ips")?.ips.clone())
    }

    fn set_secret(
        &self,
        app: &str,
        name: &str,
        value: &str,
    ) -> Result<SetSecretResponse, FlyError> {
        let mut state = self.begin(FlyCall::SetSecret, format!("{app} {name}"))?;
        let fake = state.app(app, "set secret")?;
        fake.secrets.insert(name.to_owned(), value.to_owned());
        fake.secrets_version += 1;
        Ok(SetSecretResponse {
            name: name.to_owned(),
            version: fake.secrets_version,
            ..SetSecretResponse::default()
        })
    }

    fn delete_secret(&self, app: &str, name: &str) -> Result<DeleteSecretResponse, FlyError> {
        let mut state = self.begin(FlyCall::DeleteSecret, format!("{app} {name}"))?;
        let fake = state.app(app, "delete secret")?;
        fake.secrets
            .remove(name)
            .ok_or_else(|| not_found("delete secret", "secret"))?;
        fake.secrets_version += 1;
        Ok(DeleteSecretResponse {
            version: fake.secrets_version,
        })
    }

    fn list_secrets(&self, app: &str) -> Result<Vec<SecretInfo>, FlyError> {
        let mut state = self.begin(FlyCall::ListSecrets, app.to_owned())?;
        let fake = state.app(app, "list secrets")?;
        Ok(fake
            .secrets
            .keys()
            .map(|name| SecretInfo {
                name: name.clone(),
                ..SecretInfo::default()
            })
            .collect())
    }
}
