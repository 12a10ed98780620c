//! Time and randomness as boundary traits, so every timing decision (lease expiry, waits, reconcile
//! cadence, jitter) is deterministic in tests.

use std::time::Duration;

/// Wall-clock time plus the ability to wait.
///
/// Components use [`SystemClock`]; tests use `testing::FakeClock`, whose `sleep` advances its time at once.
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Blocks the caller for `duration` (a component runs one request at a time, so blocking is fine).
    fn sleep(&self, duration: Duration);
}

/// The real clock: `std::time::SystemTime` and `std::thread::sleep` (both work on wasm32-wasip2).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// A source of random numbers for jitter and lease owner ids.
pub trait Random {
    /// A uniformly distributed 64-bit value.
    fn next_u64(&self) -> u64;

    /// A value uniformly distributed in `0..bound` (`0` when `bound == 0`).
    fn below(&self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }
}

/// SplitMix64: a small, fast, well-distributed generator. Not cryptographic; it only spreads timers and
/// makes lease owner ids unique, so seed it from something that differs per process (time, request id).
#[derive(Debug)]
pub struct SplitMix64 {
    state: std::cell::Cell<u64>,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: std::cell::Cell::new(seed),
        }
    }
}

impl Random for SplitMix64 {
    fn next_u64(&self) -> u64 {
        let next = self.state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_bounded() {
        let (a, b) = (SplitMix64::new(7), SplitMix64::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        assert!((0..1000).all(|_| a.below(60_000) < 60_000));
        assert_eq!(a.below(0), 0);
    }
}
