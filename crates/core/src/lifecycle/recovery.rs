//! Crash recovery for the proxy, bounded per user.
//!
//! A 502/503/504 from a user's machine (which the user's own agent can produce at will) or a
//! transport error asks for recovery: start the machine again if its stored status is `running`.
//! Unbounded, every such response ran a full `start` under the user's lease and every concurrent
//! request queued for that lease for up to `lease_wait`, so one tenant could fill the host's
//! instance slots. Here at most one recovery per user runs per [`RECOVERY_WINDOW`]: the caller
//! that wins `increment("recovery/{user}/{window}") == 1` (atomic on every key-value backend)
//! recovers; everybody else in that window — concurrent requests, and the same user's next
//! failures — is answered at once with "not restarted", so the proxy passes the machine's own
//! answer through or replays once and gives up, without touching the lease.

use std::time::Duration;

use super::{Instances, LifecycleError, Route};
use crate::record::InstanceState;
use crate::signin::user_key;

/// At most one recovery per user starts in each window of this length.
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(30);

/// What a recovery attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Where the user's traffic goes now.
    pub route: Route,
    /// Whether the machine was actually (re)started or replaced; `false` also when recovery was
    /// not attempted because another one ran in this window.
    pub restarted: bool,
}

fn window_key(user_id: &str, window: i64) -> String {
    format!("recovery/{}/{window}", user_key(user_id))
}

impl Instances<'_> {
    /// Recovers the user's machine after forwarding to `failed_machine_id` failed, at most once per
    /// user per [`RECOVERY_WINDOW`] (see the module doc). `NotProvisioned`/`NotRunning` when there
    /// is nothing to recover.
    pub fn recover_route(
        &self,
        user_id: &str,
        failed_machine_id: &str,
    ) -> Result<Recovery, LifecycleError> {
        let before = self
            .record(user_id)?
            .ok_or(LifecycleError::NotProvisioned)?;
        if before.status != Some(InstanceState::Running) {
            return Err(LifecycleError::NotRunning);
        }
        let window_ms = i64::try_from(RECOVERY_WINDOW.as_millis()).unwrap_or(i64::MAX);
        let window = self.now().div_euclid(window_ms);
        let attempt = self
            .kv
            .increment(&window_key(user_id, window), 1)
            .map_err(|error| LifecycleError::Store(error.into()))?;
        if attempt > 1 {
            tracing::info!(
                tag = "proxy",
                action = "recovery_skipped",
                reason = "another recovery ran in this window",
                user_id,
                machine_id = failed_machine_id,
            );
            return Ok(Recovery {
                route: self.route(user_id)?,
                restarted: false,
            });
        }
        // The previous window's counter is done with; a leftover only costs space.
        let _ = self.kv.delete(&window_key(user_id, window - 1));
        tracing::info!(
            tag = "proxy",
            action = "recovery_start",
            reason = "machine unreachable",
            user_id,
            machine_id = failed_machine_id,
        );
        self.start(user_id)?;
        let after = self
            .record(user_id)?
            .ok_or(LifecycleError::NotProvisioned)?;
        let restarted = after.last_started_at != before.last_started_at
            || after.fly_machine_id.as_deref() != Some(failed_machine_id);
        Ok(Recovery {
            route: self.route(user_id)?,
            restarted,
        })
    }
}
