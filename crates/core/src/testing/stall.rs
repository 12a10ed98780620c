//! [`Stall`]: holds one call of a fake at a chosen point until the test lets it go, so a test can run
//! other operations "while" a caller is stuck between two steps (a slow creator, a holder whose lease
//! expires between a Fly call and its commit).
//!
//! The stalled caller runs on its own thread (`std::thread::scope`); the test waits with
//! [`Stall::wait_until_reached`], does what it wants, then calls [`Stall::release`]. Both waits give up
//! after a real-time bound, so a test whose code path no longer reaches the stall fails instead of hanging.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long either side waits for the other before giving up (real time; the stalled work itself is
/// instant, so this only matters when a test is wrong).
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Debug, Default)]
struct Progress {
    reached: bool,
    released: bool,
}

/// A one-shot meeting point between a stalled call and the test (cheap to clone; clones share it).
#[derive(Debug, Clone, Default)]
pub struct Stall {
    inner: Arc<(Mutex<Progress>, Condvar)>,
}

impl Stall {
    /// A stall nobody has reached yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Blocks the test until the stalled call has arrived. Panics after a generous real-time bound: the
    /// code under test never made the call the stall was set on.
    pub fn wait_until_reached(&self) {
        let (lock, signal) = &*self.inner;
        let deadline = Instant::now() + PATIENCE;
        let mut progress = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !progress.reached {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the stalled call was never made");
            progress = signal
                .wait_timeout(progress, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Whether the stalled call has arrived.
    pub fn reached(&self) -> bool {
        let (lock, _) = &*self.inner;
        lock.lock().unwrap_or_else(PoisonError::into_inner).reached
    }

    /// Lets the stalled call go on.
    pub fn release(&self) {
        let (lock, signal) = &*self.inner;
        lock.lock().unwrap_or_else(PoisonError::into_inner).released = true;
        signal.notify_all();
    }

    /// Called by a fake at the stall point: announces arrival, then waits for [`Stall::release`] (or the
    /// real-time bound, so a failing test's thread still finishes).
    pub(crate) fn hold(&self) {
        let (lock, signal) = &*self.inner;
        let deadline = Instant::now() + PATIENCE;
        let mut progress = lock.lock().unwrap_or_else(PoisonError::into_inner);
        progress.reached = true;
        signal.notify_all();
        while !progress.released {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            progress = signal
                .wait_timeout(progress, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
