//! Deterministic time and randomness.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, Random};

/// A clock that starts at a fixed instant and moves only on [`Clock::sleep`] or [`FakeClock::advance`].
#[derive(Debug)]
pub struct FakeClock {
    now_ms: AtomicI64,
    slept_ms: AtomicI64,
}

impl FakeClock {
    /// A clock at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self {
            now_ms: AtomicI64::new(start_ms),
            slept_ms: AtomicI64::new(0),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, duration: Duration) {
        self.now_ms
            .fetch_add(duration.as_millis() as i64, Ordering::SeqCst);
    }

    /// Total time callers have slept.
    pub fn total_slept(&self) -> Duration {
        Duration::from_millis(self.slept_ms.load(Ordering::SeqCst).max(0) as u64)
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        // 2026-01-01T00:00:00Z: a plausible "now" far from zero.
        Self::new(1_767_225_600_000)
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn sleep(&self, duration: Duration) {
        self.slept_ms
            .fetch_add(duration.as_millis() as i64, Ordering::SeqCst);
        self.advance(duration);
    }
}

/// Randomness that returns `start, start+1, …` (so jitter and owner ids are predictable).
#[derive(Debug, Default)]
pub struct SeqRandom {
    next: AtomicU64,
}

impl SeqRandom {
    /// Starts at `start`.
    pub fn new(start: u64) -> Self {
        Self {
            next: AtomicU64::new(start),
        }
    }
}

impl Random for SeqRandom {
    fn next_u64(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }
}
