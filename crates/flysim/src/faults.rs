//! Fault injection: explicit per-endpoint rules (errors, latency, hung requests, capacity exhaustion,
//! "done but reported as failed") and a seeded random profile for soak tests.
//!
//! Operations are named like `kiloclaw_core::fly::FlyError::context()` (`create_machine`, `wait_machine`,
//! …; `*` matches all). Rules are checked in insertion order; the first match applies.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultEffect {
    /// Answer with this status and body (default body: Fly's usual text for the status).
    Error {
        status: u16,
        #[serde(default)]
        body: Option<Value>,
    },
    /// Delay the request, then serve it normally.
    Latency { ms: u64 },
    /// Hold the request this long without answering, then give up with 504 (clients time out first).
    Timeout { ms: u64 },
    /// Answer with Fly's capacity error for this operation (412 on create, 409 on update/start).
    Capacity,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Assigned by the simulator.
    #[serde(default)]
    pub id: u64,
    /// Operation name or `*`.
    #[serde(default = "any_operation")]
    pub operation: String,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub machine_id: Option<String>,
    pub effect: FaultEffect,
    /// How many requests it applies to; `None` until removed.
    #[serde(default)]
    pub times: Option<u32>,
    /// Chance (0..=1) that a matching request is affected.
    #[serde(default = "always")]
    pub probability: f64,
    /// Perform the operation first, then answer with the fault (e.g. a create that happened but
    /// returned 503): the case that tests whether intent was recorded before the call.
    #[serde(default)]
    pub after_effect: bool,
}

fn any_operation() -> String {
    "*".to_owned()
}

fn always() -> f64 {
    1.0
}

impl FaultRule {
    pub fn new(operation: &str, effect: FaultEffect) -> Self {
        Self {
            id: 0,
            operation: operation.to_owned(),
            app: None,
            machine_id: None,
            effect,
            times: None,
            probability: 1.0,
            after_effect: false,
        }
    }

    pub fn error(operation: &str, status: u16) -> Self {
        Self::new(operation, FaultEffect::Error { status, body: None })
    }

    pub fn times(mut self, times: u32) -> Self {
        self.times = Some(times);
        self
    }

    pub fn for_machine(mut self, machine_id: &str) -> Self {
        self.machine_id = Some(machine_id.to_owned());
        self
    }

    pub fn for_app(mut self, app: &str) -> Self {
        self.app = Some(app.to_owned());
        self
    }

    pub fn after_effect(mut self) -> Self {
        self.after_effect = true;
        self
    }

    fn matches(&self, operation: &str, app: Option<&str>, machine_id: Option<&str>) -> bool {
        (self.operation == "*" || self.operation == operation)
            && self.app.as_deref().is_none_or(|a| Some(a) == app)
            && self
                .machine_id
                .as_deref()
                .is_none_or(|m| Some(m) == machine_id)
            && self.times != Some(0)
    }
}

/// A seeded random fault mix applied to every Machines API request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosProfile {
    pub seed: u64,
    /// Chance of a transient error (one of `statuses`).
    #[serde(default)]
    pub error_rate: f64,
    #[serde(default = "transient_statuses")]
    pub statuses: Vec<u16>,
    /// Chance that an error is reported after the operation was performed.
    #[serde(default)]
    pub after_effect_rate: f64,
    /// Chance of added latency, uniformly up to `max_latency_ms`.
    #[serde(default)]
    pub latency_rate: f64,
    #[serde(default)]
    pub max_latency_ms: u64,
}

fn transient_statuses() -> Vec<u16> {
    vec![429, 500, 502, 503]
}

/// What to do to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub effect: FaultEffect,
    pub after_effect: bool,
    pub rule_id: Option<u64>,
}

#[derive(Debug)]
pub struct FaultEngine {
    rules: Mutex<Vec<FaultRule>>,
    next_id: AtomicU64,
    rng: Mutex<StdRng>,
    chaos: Mutex<Option<(ChaosProfile, StdRng)>>,
}

impl FaultEngine {
    pub fn new(chaos: Option<ChaosProfile>) -> Self {
        let engine = Self {
            rules: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            rng: Mutex::new(StdRng::seed_from_u64(0x5eed)),
            chaos: Mutex::new(None),
        };
        engine.set_chaos(chaos);
        engine
    }

    pub fn add(&self, mut rule: FaultRule) -> u64 {
        rule.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        rule.probability = rule.probability.clamp(0.0, 1.0);
        let id = rule.id;
        lock(&self.rules).push(rule);
        id
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut rules = lock(&self.rules);
        let before = rules.len();
        rules.retain(|r| r.id != id);
        rules.len() != before
    }

    pub fn clear(&self) {
        lock(&self.rules).clear();
    }

    pub fn rules(&self) -> Vec<FaultRule> {
        lock(&self.rules).clone()
    }

    pub fn set_chaos(&self, profile: Option<ChaosProfile>) {
        *lock(&self.chaos) = profile.map(|p| {
            let rng = StdRng::seed_from_u64(p.seed);
            (p, rng)
        });
    }

    pub fn chaos(&self) -> Option<ChaosProfile> {
        lock(&self.chaos).as_ref().map(|(p, _)| p.clone())
    }

    /// The fault for this request, if any.
    pub fn decide(
        &self,
        operation: &str,
        app: Option<&str>,
        machine_id: Option<&str>,
    ) -> Option<Decision> {
        {
            let mut rules = lock(&self.rules);
            for rule in rules.iter_mut() {
                if !rule.matches(operation, app, machine_id) {
                    continue;
                }
                if rule.probability < 1.0 && lock(&self.rng).random::<f64>() >= rule.probability {
                    continue;
                }
                if let Some(times) = rule.times.as_mut() {
                    *times -= 1;
                }
                return Some(Decision {
                    effect: rule.effect.clone(),
                    after_effect: rule.after_effect,
                    rule_id: Some(rule.id),
                });
            }
            rules.retain(|r| r.times != Some(0));
        }
        let mut chaos = lock(&self.chaos);
        let (profile, rng) = chaos.as_mut()?;
        if profile.error_rate > 0.0
            && rng.random::<f64>() < profile.error_rate
            && !profile.statuses.is_empty()
        {
            let status = profile.statuses[rng.random_range(0..profile.statuses.len())];
            let after_effect = rng.random::<f64>() < profile.after_effect_rate;
            return Some(Decision {
                effect: FaultEffect::Error { status, body: None },
                after_effect,
                rule_id: None,
            });
        }
        if profile.latency_rate > 0.0 && rng.random::<f64>() < profile.latency_rate {
            let ms = rng.random_range(0..=profile.max_latency_ms);
            return Some(Decision {
                effect: FaultEffect::Latency { ms },
                after_effect: false,
                rule_id: None,
            });
        }
        None
    }
}

/// The API error an `Error`/`Capacity` effect answers with.
pub fn effect_error(effect: &FaultEffect, operation: &str) -> Option<ApiError> {
    match effect {
        FaultEffect::Error { status, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = match body {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Object(map)) => map
                    .get("error")
                    .and_then(Value::as_str)
                    .map_or_else(|| json!(map).to_string(), str::to_owned),
                Some(other) => other.to_string(),
                None => default_message(status).to_owned(),
            };
            let mut error = ApiError::new(status, message);
            if status == StatusCode::TOO_MANY_REQUESTS {
                error.retry_after_s = Some(1);
            }
            Some(error)
        }
        FaultEffect::Capacity => Some(match operation {
            "update_machine" | "start_machine" => ApiError::conflict(
                "aborted: could not reserve resource for machine: insufficient memory available to fulfill request",
            ),
            "create_volume" => ApiError::precondition("insufficient resources to create volume in this region")
                .with_code("insufficient_capacity"),
            _ => ApiError::precondition(
                "insufficient resources to create new machine with existing volume 'vol_injected000000'",
            )
            .with_code("volume_placement_capacity"),
        }),
        FaultEffect::Latency { .. } | FaultEffect::Timeout { .. } => None,
    }
}

fn default_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        408 => "request timed out",
        409 => "aborted: machine is replacing: concurrent update in progress",
        429 => "rate limit exceeded",
        502 => "bad gateway",
        503 => {
            "unavailable: deploys to this host are temporarily disabled, please try again later or check the status page: https://status.flyio.net/"
        }
        504 => "gateway timeout",
        _ => "internal error",
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
