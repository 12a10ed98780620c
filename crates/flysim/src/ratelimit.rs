//! Fly's documented rate limits as token buckets: each action 1 req/s with bursts of 3 per machine (or
//! per app for app-level calls), Get Machine 5 req/s with bursts of 10, app deletions 100 per minute.
//! Which identifier an action counts against is unconfirmed; the simulator uses the machine when the
//! path names one, else the app; the org-wide machine listing (`list_org_machines`, 1 req/s burst 3)
//! counts against the org. Off unless enabled.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    enabled: AtomicBool,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

impl RateLimiter {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled: AtomicBool::new(enabled),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// `(per second, burst)` for an operation.
    fn limits(operation: &str) -> (f64, f64) {
        match operation {
            "get_machine" | "wait_machine" | "list_machines" | "get_volume" | "list_volumes"
            | "get_app" => (5.0, 10.0),
            "delete_app" => (100.0 / 60.0, 100.0),
            _ => (1.0, 3.0),
        }
    }

    /// Takes a token; `false` means answer 429.
    pub fn allow(&self, operation: &str, app: Option<&str>, machine_id: Option<&str>) -> bool {
        if !self.enabled() {
            return true;
        }
        let identifier = match operation {
            "delete_app" => "org".to_owned(),
            _ => machine_id.or(app).unwrap_or("-").to_owned(),
        };
        let (rate, burst) = Self::limits(operation);
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets
            .entry((operation.to_owned(), identifier))
            .or_insert(Bucket {
                tokens: burst,
                last: now,
            });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
