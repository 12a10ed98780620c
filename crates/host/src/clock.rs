//! An adjustable wall clock for the guests: the real wall clock plus a shared offset.
//!
//! It exists for benchmarks and tests that compress time (e.g. `bench/fleet` runs ten "minutes" of
//! reconciler ticks in less real time by moving every replica's clock forward between ticks); a host
//! serving real traffic leaves [`crate::HostConfig::clock_offset`] at `None` and its guests see the real
//! clock. Only `wasi:clocks/wall-clock` moves: the monotonic clock (timeouts, sleeps, durations) stays
//! real, and so does the host's own time (logs, metrics, cron schedules).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime_wasi::HostWallClock;

/// Milliseconds added to the wall clock every guest of an app sees. Cloning shares the offset, so a
/// change through any clone applies to every instance created (or running) afterwards.
#[derive(Debug, Clone, Default)]
pub struct WallClockOffset(Arc<AtomicI64>);

impl WallClockOffset {
    /// An offset of `ms` milliseconds.
    pub fn new(ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(ms)))
    }

    /// Sets the offset (milliseconds, may be negative).
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// The current offset in milliseconds.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The guests' wall clock: real time plus the offset, never before the Unix epoch.
#[derive(Debug, Clone)]
pub(crate) struct OffsetWallClock {
    offset: WallClockOffset,
}

impl OffsetWallClock {
    pub(crate) fn new(offset: WallClockOffset) -> Self {
        Self { offset }
    }
}

impl HostWallClock for OffsetWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let offset = self.offset.get();
        let magnitude = Duration::from_millis(offset.unsigned_abs());
        if offset >= 0 {
            real.saturating_add(magnitude)
        } else {
            real.saturating_sub(magnitude)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real_now() -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }

    #[test]
    fn the_clock_reports_real_time_plus_the_offset() {
        let offset = WallClockOffset::default();
        let clock = OffsetWallClock::new(offset.clone());
        let within = |expected: Duration, got: Duration| {
            let diff = expected.abs_diff(got);
            assert!(
                diff < Duration::from_secs(1),
                "expected about {expected:?}, got {got:?}"
            );
        };
        within(real_now(), clock.now());
        // A change through a clone reaches the clock that was built earlier.
        offset.clone().set(3_600_000);
        assert_eq!(offset.get(), 3_600_000);
        within(real_now() + Duration::from_secs(3_600), clock.now());
        offset.set(-86_400_000);
        within(real_now() - Duration::from_secs(86_400), clock.now());
    }
}
