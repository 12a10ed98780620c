//! **Test-only** crash points: lets a test kill the host process at a chosen point between a side
//! effect and the guest learning about it, to prove that the control plane survives a crash there
//! (issue 11, proof 2: `crates/cli/tests/crash_points.rs`).
//!
//! Inert unless the environment variable `KILOCLAW_CRASH_AFTER=<n>` (a positive integer) is set
//! when the process first reaches a crash point. Then the process counts crash-point events:
//!
//! - a key-value write that completed, before the guest sees its result: `set`, `delete`,
//!   `set-many`, `delete-many`, a compare-and-swap that swapped, `increment` (both key-value
//!   interfaces), and over outbound Redis `SET`, `DEL`, `INCRBY` and an `EVAL` that answered the
//!   integer 1 (how the instance store's compare-and-swap script reports a swap);
//! - an outbound HTTP response whose head was received (Fly has done the work), before the guest
//!   sees it.
//!
//! With `KILOCLAW_CRASH_MATCH=<text>` only events whose description contains the text count (for
//! example `HTTP POST` or `HTTP DELETE`, to aim at the Fly calls that create or delete).
//!
//! At the n-th event it prints one line to stderr, `kiloclaw: crash point <n>: <event>; SIGKILL`,
//! and sends itself SIGKILL: no destructor, flush or graceful shutdown runs, exactly as when the
//! machine dies. Any other value of the variable is reported once on stderr and ignored. Never set
//! it in production.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms the crash points.
pub const CRASH_AFTER_ENV: &str = "KILOCLAW_CRASH_AFTER";
/// The environment variable that narrows the counted events to those whose description contains
/// its value (e.g. `HTTP POST`: only Fly creates, starts, stops and updates).
pub const CRASH_MATCH_ENV: &str = "KILOCLAW_CRASH_MATCH";

static CRASH_AFTER: OnceLock<Option<u64>> = OnceLock::new();
static EVENTS: AtomicU64 = AtomicU64::new(0);

fn armed() -> Option<u64> {
    *CRASH_AFTER.get_or_init(|| {
        let value = std::env::var(CRASH_AFTER_ENV).ok()?;
        match value.trim().parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                eprintln!("kiloclaw: ignoring {CRASH_AFTER_ENV}={value:?}: not a positive integer");
                None
            }
        }
    })
}

/// Whether `KILOCLAW_CRASH_AFTER` armed the crash points (callers skip describing events if not).
pub fn is_armed() -> bool {
    armed().is_some()
}

/// `KILOCLAW_CRASH_MATCH`: when set, only events whose description contains it are counted.
fn filter() -> Option<&'static str> {
    static FILTER: OnceLock<Option<String>> = OnceLock::new();
    FILTER
        .get_or_init(|| {
            std::env::var(CRASH_MATCH_ENV)
                .ok()
                .filter(|f| !f.is_empty())
        })
        .as_deref()
}

/// Counts one crash-point event (described lazily by `event`); kills the process at the n-th.
pub fn point(event: impl FnOnce() -> String) {
    let Some(after) = armed() else {
        return;
    };
    let mut event = Some(event);
    let mut described = None;
    if let Some(filter) = filter() {
        let text = event.take().map(|event| event()).unwrap_or_default();
        if !text.contains(filter) {
            return;
        }
        described = Some(text);
    }
    let seen = EVENTS.fetch_add(1, Ordering::SeqCst) + 1;
    if seen == after {
        let described = described
            .or_else(|| event.take().map(|event| event()))
            .unwrap_or_default();
        eprintln!("kiloclaw: crash point {seen}: {described}; SIGKILL");
        kill_self();
    }
}

fn kill_self() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    // SIGKILL cannot be caught, so this is not reached; if the signal could not be sent at all,
    // still die without running anything else.
    std::process::abort()
}
