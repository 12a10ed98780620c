//! The shared simulator state: the world under one lock, a change signal for `/wait` and the proxy, timed
//! lifecycle steps, volume directories, the request log and persistence.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Delays, SimConfig};
use crate::faults::FaultEngine;
use crate::persist;
use crate::ratelimit::RateLimiter;
use crate::state::{DataEffects, Scheduled, World};

/// The request log is a ring of the latest requests: a benchmark makes millions, and counting them is
/// what [`SimState::request_stats`] is for.
const MAX_LOGGED_REQUESTS: usize = 10_000;

/// Requests per operation and status: bounded by the fixed operation names and the statuses seen, not by
/// the number of requests.
pub type RequestStats = BTreeMap<&'static str, BTreeMap<u16, u64>>;

/// One Machines API request as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub operation: String,
    pub app: Option<String>,
    /// The machine, volume, secret or IP the path names, if any (the org for an org-wide listing).
    pub target: Option<String>,
    pub status: u16,
    /// The fault rule or chaos decision that shaped the answer, if any (`+after` when Fly did the
    /// work first).
    pub fault: Option<String>,
}

#[derive(Debug)]
pub struct SimState {
    world: Mutex<World>,
    changes: watch::Sender<u64>,
    delays: Mutex<Delays>,
    pub update_starts_stopped: AtomicBool,
    pub api_tokens: Vec<String>,
    pub faults: FaultEngine,
    pub limiter: RateLimiter,
    log: Mutex<VecDeque<RequestRecord>>,
    log_seq: AtomicU64,
    stats: Mutex<RequestStats>,
    data_root: PathBuf,
    state_dir: Option<PathBuf>,
    persist_lock: Mutex<()>,
    /// Keeps the temporary volume root alive while the simulator runs.
    _temp_root: Option<tempfile::TempDir>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimState {
    pub fn new(config: &SimConfig) -> std::io::Result<Self> {
        let (temp_root, data_root) = match &config.state_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("kiloclaw-flysim-")
                    .tempdir()?;
                let path = temp.path().to_path_buf();
                (Some(temp), path)
            }
        };
        std::fs::create_dir_all(data_root.join("volumes"))?;
        let world = match &config.state_dir {
            Some(dir) => match persist::load(dir)? {
                Some(mut world) => {
                    world.settle_after_restore();
                    world.ensure_apps(&config.apps);
                    world
                }
                None => World::new(&config.regions, &config.apps),
            },
            None => World::new(&config.regions, &config.apps),
        };
        let delays = world.delays.unwrap_or(config.delays);
        let (changes, _) = watch::channel(0);
        Ok(Self {
            world: Mutex::new(world),
            changes,
            delays: Mutex::new(delays),
            update_starts_stopped: AtomicBool::new(config.update_starts_stopped_machine),
            api_tokens: config.api_tokens.clone(),
            faults: FaultEngine::new(config.chaos.clone()),
            limiter: RateLimiter::new(config.rate_limits),
            log: Mutex::new(VecDeque::new()),
            log_seq: AtomicU64::new(0),
            stats: Mutex::new(BTreeMap::new()),
            data_root,
            state_dir: config.state_dir.clone(),
            persist_lock: Mutex::new(()),
            _temp_root: temp_root,
        })
    }

    /// Read-only access to the world.
    pub fn read<R>(&self, f: impl FnOnce(&World) -> R) -> R {
        f(&lock(&self.world))
    }

    /// Mutates the world, then wakes waiters and persists.
    pub fn write<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let result = f(&mut lock(&self.world));
        self.changed();
        result
    }

    pub fn delays(&self) -> Delays {
        *lock(&self.delays)
    }

    pub fn set_delays(&self, delays: Delays) {
        *lock(&self.delays) = delays;
        self.write(|world| world.delays = Some(delays));
    }

    /// A receiver that fires after every change of the world.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        self.persist();
    }

    fn persist(&self) {
        let Some(dir) = &self.state_dir else { return };
        let _guard = lock(&self.persist_lock);
        let json = match serde_json::to_vec_pretty(&*lock(&self.world)) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(tag = "flysim", reason = "persist_failed", error = %err, "cannot serialise state");
                return;
            }
        };
        if let Err(err) = persist::save(dir, &json) {
            tracing::error!(tag = "flysim", reason = "persist_failed", error = %err, "cannot write state");
        }
    }

    /// Directory holding a volume's data.
    pub fn volume_dir(&self, volume_id: &str) -> PathBuf {
        self.data_root.join("volumes").join(volume_id)
    }

    pub fn apply_effects(&self, effects: DataEffects) {
        for id in effects.remove_volume_dirs {
            let dir = self.volume_dir(&id);
            if dir.exists()
                && let Err(err) = std::fs::remove_dir_all(&dir)
            {
                tracing::warn!(tag = "flysim", reason = "volume_dir_remove_failed", volume_id = %id, error = %err);
            }
        }
        if let Some((from, to)) = effects.copy_volume_dir
            && let Err(err) = persist::copy_dir(&self.volume_dir(&from), &self.volume_dir(&to))
        {
            tracing::warn!(tag = "flysim", reason = "volume_fork_copy_failed", volume_id = %to, error = %err);
        }
    }

    /// Runs lifecycle steps on timers (each re-checked against the machine's generation when it fires).
    pub fn schedule(self: &Arc<Self>, steps: Vec<Scheduled>) {
        for step in steps {
            let sim = Arc::clone(self);
            tokio::spawn(async move {
                if !step.delay.is_zero() {
                    tokio::time::sleep(step.delay).await;
                }
                let delays = sim.delays();
                let follow = sim.write(|world| world.apply_step(&step, &delays));
                tracing::debug!(tag = "flysim", action = ?step.step, target = %step.target, "lifecycle step");
                sim.schedule(follow);
            });
        }
    }

    /// Counts one answered request (see [`RequestStats`]).
    pub fn count(&self, operation: &'static str, status: u16) {
        *lock(&self.stats)
            .entry(operation)
            .or_default()
            .entry(status)
            .or_default() += 1;
    }

    pub fn request_stats(&self) -> RequestStats {
        lock(&self.stats).clone()
    }

    pub fn clear_request_stats(&self) {
        lock(&self.stats).clear();
    }

    pub fn record(&self, mut record: RequestRecord) {
        record.seq = self.log_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut log = lock(&self.log);
        if log.len() == MAX_LOGGED_REQUESTS {
            log.pop_front();
        }
        log.push_back(record);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.log).iter().cloned().collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.log).clear();
    }

    pub fn token_ok(&self, token: &str) -> bool {
        !token.is_empty()
            && (self.api_tokens.is_empty() || self.api_tokens.iter().any(|t| t == token))
    }
}
