//! Attempt limits for access-code redemption (the original had none): per user and per client
//! address, in fixed windows, counted with the key-value store's atomic `increment` (safe across
//! replicas on every backend, unlike a compare-and-swap on a fresh key).
//!
//! Every attempt counts, successful or not, so the check is one atomic step per key and a burst
//! cannot slip between a read and a write. A refused attempt is answered 429 with `Retry-After`
//! (the seconds until the window ends) and is not checked against any store of codes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::user_key;
use crate::kv::KeyValue;

/// How many attempts are allowed per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLimits {
    /// Attempts for one user id (whatever address they come from).
    pub per_user: u32,
    /// Attempts from one client address (whatever user id they name).
    pub per_address: u32,
    /// Window length.
    pub window: Duration,
}

impl Default for AttemptLimits {
    /// 10 per user and 30 per address per 15 minutes: a person mistyping a code a few times
    /// never meets them; guessing a code from a space of 32^10 is hopeless under them.
    fn default() -> Self {
        Self {
            per_user: 10,
            per_address: 30,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// Too many attempts: retry after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many attempts; retry after {retry_after_s} s")]
pub struct RateLimited {
    /// Seconds until the window ends (at least 1).
    pub retry_after_s: u64,
}

/// The address part of `spin-client-addr` (`ip:port`): a client's port changes per connection.
pub fn client_ip(client_addr: &str) -> String {
    client_addr
        .parse::<SocketAddr>()
        .map(|addr| addr.ip().to_string())
        .or_else(|_| client_addr.parse::<IpAddr>().map(|ip| ip.to_string()))
        .unwrap_or_else(|_| client_addr.to_owned())
}

/// Counts attempts in `kv`.
pub struct AttemptLimiter<'a> {
    /// Where the counters live.
    pub kv: &'a dyn KeyValue,
    /// The limits.
    pub limits: AttemptLimits,
}

impl std::fmt::Debug for AttemptLimiter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptLimiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AttemptLimiter<'_> {
    /// Counts one attempt for `user_id` from `client_addr` at `now_ms`; refuses it when either
    /// count is over its limit. A counter that cannot be updated is not a reason to refuse (the
    /// store of codes is the real gate); it is logged.
    pub fn attempt(
        &self,
        user_id: &str,
        client_addr: Option<&str>,
        now_ms: i64,
    ) -> Result<(), RateLimited> {
        let window_ms = i64::try_from(self.limits.window.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let window = now_ms.div_euclid(window_ms);
        // Positive: `now_ms` lies inside its window.
        let retry_after_ms = u64::try_from((window + 1) * window_ms - now_ms).unwrap_or(1);
        let refused = RateLimited {
            retry_after_s: retry_after_ms.div_ceil(1000).max(1),
        };
        let user_over = self.count(
            &format!("auth/attempts/user/{}", user_key(user_id)),
            window,
            self.limits.per_user,
        );
        let address_over = client_addr.is_some_and(|addr| {
            self.count(
                &format!("auth/attempts/addr/{}", user_key(&client_ip(addr))),
                window,
                self.limits.per_address,
            )
        });
        if user_over || address_over {
            tracing::warn!(
                tag = "access_gateway",
                action = "rate_limited",
                reason = if user_over { "per_user" } else { "per_address" },
            );
            return Err(refused);
        }
        Ok(())
    }

    /// Adds one to `{prefix}/{window}`; whether the count is now over `limit`.
    fn count(&self, prefix: &str, window: i64, limit: u32) -> bool {
        match self.kv.increment(&format!("{prefix}/{window}"), 1) {
            Ok(count) => {
                if count == 1 {
                    // First attempt of a window: the previous window's counter is done with.
                    let _ = self.kv.delete(&format!("{prefix}/{}", window - 1));
                }
                count > i64::from(limit)
            }
            Err(error) => {
                tracing::warn!(tag = "access_gateway", action = "attempt_count_failed", error = %error);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryKv;

    const WINDOW_START: i64 = 900_000 * 2_000_000;

    fn limiter(kv: &MemoryKv) -> AttemptLimiter<'_> {
        AttemptLimiter {
            kv,
            limits: AttemptLimits {
                per_user: 3,
                per_address: 5,
                window: Duration::from_secs(900),
            },
        }
    }

    #[test]
    fn a_user_over_the_limit_waits_for_the_window_to_end() {
        let kv = MemoryKv::new();
        let limiter = limiter(&kv);
        for _ in 0..3 {
            assert_eq!(
                limiter.attempt("u", Some("10.0.0.1:1"), WINDOW_START),
                Ok(())
            );
        }
        assert_eq!(
            limiter.attempt("u", Some("10.0.0.2:1"), WINDOW_START + 100_500),
            Err(RateLimited { retry_after_s: 800 }),
            "another address does not help"
        );
        assert_eq!(
            limiter.attempt("v", Some("10.0.0.3:1"), WINDOW_START),
            Ok(())
        );
        assert_eq!(
            limiter.attempt("u", None, WINDOW_START + 900_000),
            Ok(()),
            "new window"
        );
    }

    #[test]
    fn an_address_over_the_limit_is_refused_for_any_user_and_ports_do_not_matter() {
        let kv = MemoryKv::new();
        let limiter = limiter(&kv);
        for port in 0..5 {
            let addr = format!("10.0.0.9:{port}");
            assert_eq!(
                limiter.attempt(&format!("user{port}"), Some(&addr), WINDOW_START),
                Ok(())
            );
        }
        assert!(
            limiter
                .attempt("fresh", Some("10.0.0.9:77"), WINDOW_START)
                .is_err()
        );
        assert_eq!(
            limiter.attempt("fresh", Some("10.0.0.10:77"), WINDOW_START),
            Ok(())
        );
        assert_eq!(client_ip("[::1]:8080"), "::1");
        assert_eq!(client_ip("::1"), "::1");
    }

    #[test]
    fn old_windows_are_cleaned_up_and_a_broken_counter_does_not_refuse() {
        let kv = MemoryKv::new();
        let limiter = limiter(&kv);
        limiter.attempt("u", None, WINDOW_START).expect("first");
        limiter
            .attempt("u", None, WINDOW_START + 900_000)
            .expect("next window");
        assert_eq!(kv.keys().len(), 1, "{:?}", kv.keys());
        kv.fail_next(crate::testing::KvOp::Increment, 2);
        assert_eq!(
            limiter.attempt("u", Some("1.2.3.4:5"), WINDOW_START),
            Ok(())
        );
    }
}
