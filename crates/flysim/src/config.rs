//! Simulator configuration: listeners, accepted tokens, timing, regions and their hosts, persistence.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long each lifecycle step takes. Defaults are small so tests run fast; 0 makes steps immediate
/// (still asynchronous: the API answers first, the state moves right after).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delays {
    /// `created` → `starting` after a create without `skip_launch`.
    #[serde(with = "millis")]
    pub create: Duration,
    /// `starting` → `started` (boot).
    #[serde(with = "millis")]
    pub boot: Duration,
    /// `stopping` → `stopped`.
    #[serde(with = "millis")]
    pub stop: Duration,
    /// `replacing` → next state after an update.
    #[serde(with = "millis")]
    pub replace: Duration,
    /// `destroying` → `destroyed`.
    #[serde(with = "millis")]
    pub destroy: Duration,
    /// How long a volume keeps `attached_machine_id` after its machine is destroyed (Fly: up to ~1 min).
    #[serde(with = "millis")]
    pub volume_detach: Duration,
    /// How long a destroyed machine stays visible (state `destroyed`) before it answers 404.
    #[serde(with = "millis")]
    pub destroyed_retention: Duration,
}

impl Default for Delays {
    fn default() -> Self {
        Self {
            create: Duration::from_millis(20),
            boot: Duration::from_millis(150),
            stop: Duration::from_millis(80),
            replace: Duration::from_millis(100),
            destroy: Duration::from_millis(50),
            volume_detach: Duration::ZERO,
            destroyed_retention: Duration::from_secs(30),
        }
    }
}

impl Delays {
    /// Every step immediate.
    pub fn instant() -> Self {
        Self {
            create: Duration::ZERO,
            boot: Duration::ZERO,
            stop: Duration::ZERO,
            replace: Duration::ZERO,
            destroy: Duration::ZERO,
            volume_detach: Duration::ZERO,
            destroyed_retention: Duration::from_secs(30),
        }
    }
}

/// A region and the hosts in it. Every host has the same RAM; machines reserve their guest memory on the
/// host of their volume (or any host with room) while they run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionConfig {
    pub code: String,
    pub hosts: u32,
    pub host_memory_mb: u64,
}

impl RegionConfig {
    pub fn new(code: &str, hosts: u32, host_memory_mb: u64) -> Self {
        Self {
            code: code.to_owned(),
            hosts,
            host_memory_mb,
        }
    }
}

/// Everything the simulator needs to start.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Machines API, admin API and (by `fly-force-instance-id` or `{app}.localhost` host) Fly Proxy.
    pub listen: SocketAddr,
    /// An optional extra listener that serves only the proxy (every request is proxied).
    pub proxy_listen: Option<SocketAddr>,
    /// Accepted API tokens. Empty: any non-empty token is accepted (local runs); a missing token is
    /// always 401.
    pub api_tokens: Vec<String>,
    pub delays: Delays,
    /// Regions in preference order; the first is the default for creates without a region.
    pub regions: Vec<RegionConfig>,
    /// Apps that exist from the start (the legacy shared app), as `(name, org_slug)`.
    pub apps: Vec<(String, String)>,
    /// Whether an update of a stopped machine boots it (old docs) or leaves it stopped (Fly since 2026).
    pub update_starts_stopped_machine: bool,
    /// Fly's documented per-action rate limits; off by default so runs are predictable.
    pub rate_limits: bool,
    /// Persist state (`state.json`) and volume data here; `None` keeps state in memory and volume data in
    /// a temporary directory removed at shutdown.
    pub state_dir: Option<PathBuf>,
    /// Seeded random faults from the start (see [`crate::faults::ChaosProfile`]).
    pub chaos: Option<crate::faults::ChaosProfile>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            proxy_listen: None,
            api_tokens: Vec::new(),
            delays: Delays::default(),
            regions: default_regions(),
            apps: Vec::new(),
            update_starts_stopped_machine: false,
            rate_limits: false,
            state_dir: None,
            chaos: None,
        }
    }
}

/// The production region list (`dfw,yyz,cdg`) first, then a few more; two 64 GiB hosts each.
pub fn default_regions() -> Vec<RegionConfig> {
    ["dfw", "yyz", "cdg", "iad", "ord", "sjc", "lhr", "ams"]
        .iter()
        .map(|code| RegionConfig::new(code, 2, 65_536))
        .collect()
}

/// Fly's region aliases for machine placement.
pub fn region_alias(alias: &str) -> Option<&'static [&'static str]> {
    match alias {
        "us" | "na" => Some(&["dfw", "iad", "ord", "sjc", "yyz"]),
        "eu" => Some(&["cdg", "lhr", "ams"]),
        "any" => Some(&["dfw", "yyz", "cdg", "iad", "ord", "sjc", "lhr", "ams"]),
        _ => None,
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}
