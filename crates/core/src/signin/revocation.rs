//! The token-revocation check (original §2.1 step 6) with a key-value cache.
//!
//! A token is accepted only when the user exists and the token's `apiTokenPepper` equals the
//! user's current pepper (null/null or two equal strings). The answer of the user table is cached
//! in key-value for `ttl` (default 60 s), so a changed pepper revokes within that time and the
//! hot path asks the database at most once per user per `ttl`. Failing closed: when the table
//! cannot be asked and no fresh cache entry exists, the request is refused
//! ([`RevocationError::Unavailable`]), never let through.
//!
//! Cache entries are written with a plain `set` (last writer wins: every writer writes what the
//! table said at some moment within the window). A cache that cannot be read or written only
//! costs a database query.

use std::time::Duration;

use super::{PepperLookup, Unavailable, UserDirectory, user_key};
use crate::kv::KeyValue;

/// The cache lifetime when the `revocation_cache_ttl_seconds` variable is unset.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);

/// Why a verified token is still refused. The router's status codes follow the original.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// No such user. 401 "User not found".
    #[error("User not found")]
    UserNotFound,
    /// The token's pepper is not the user's current pepper. 401 "Token revoked".
    #[error("Token revoked")]
    TokenRevoked,
    /// The user table could not be asked. 500 "Authentication service unavailable".
    #[error("Authentication service unavailable")]
    Unavailable(String),
}

/// The cache key of a user's pepper.
pub fn cache_key(user_id: &str) -> String {
    format!("auth/pepper/{}", user_key(user_id))
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheEntry {
    lookup: PepperLookup,
    checked_at_ms: i64,
}

/// Checks tokens against a [`UserDirectory`] through the cache in `kv`.
pub struct RevocationCheck<'a> {
    /// The user table.
    pub directory: &'a dyn UserDirectory,
    /// Where answers are cached.
    pub kv: &'a dyn KeyValue,
    /// How long an answer is trusted.
    pub ttl: Duration,
}

impl std::fmt::Debug for RevocationCheck<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationCheck")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RevocationCheck<'_> {
    /// Accepts a token of `user_id` carrying `token_pepper` at `now_ms`, or says why not.
    pub fn check(
        &self,
        user_id: &str,
        token_pepper: Option<&str>,
        now_ms: i64,
    ) -> Result<(), RevocationError> {
        let lookup = self.lookup(user_id, now_ms)?;
        verdict(&lookup, token_pepper)
    }

    /// The user table's answer, from the cache while it is fresh.
    fn lookup(&self, user_id: &str, now_ms: i64) -> Result<PepperLookup, RevocationError> {
        let key = cache_key(user_id);
        if let Some(entry) = self.cached(&key)
            && is_fresh(entry.checked_at_ms, now_ms, self.ttl)
        {
            return Ok(entry.lookup);
        }
        let lookup = self
            .directory
            .pepper(user_id)
            .map_err(|Unavailable(reason)| RevocationError::Unavailable(reason))?;
        let entry = CacheEntry {
            lookup,
            checked_at_ms: now_ms,
        };
        if let Ok(bytes) = serde_json::to_vec(&entry)
            && let Err(error) = self.kv.set(&key, &bytes)
        {
            tracing::warn!(tag = "auth", action = "pepper_cache_write_failed", error = %error);
        }
        Ok(entry.lookup)
    }

    fn cached(&self, key: &str) -> Option<CacheEntry> {
        match self.kv.get(key) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(tag = "auth", action = "pepper_cache_read_failed", error = %error);
                None
            }
        }
    }
}

/// An entry checked at `checked_at_ms` is trusted until `ttl` has passed; one from the future
/// (clock skew between replicas) is not trusted at all.
fn is_fresh(checked_at_ms: i64, now_ms: i64, ttl: Duration) -> bool {
    let age = now_ms.saturating_sub(checked_at_ms);
    age >= 0 && u128::try_from(age).is_ok_and(|age| age < ttl.as_millis())
}

/// The original's rule: `(db pepper ?? null) === token pepper`.
pub fn verdict(lookup: &PepperLookup, token_pepper: Option<&str>) -> Result<(), RevocationError> {
    match lookup {
        PepperLookup::UserNotFound => Err(RevocationError::UserNotFound),
        PepperLookup::Pepper(current) if current.as_deref() == token_pepper => Ok(()),
        PepperLookup::Pepper(_) => Err(RevocationError::TokenRevoked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::testing::{FakeClock, KvOp, MemoryKv};
    use std::cell::{Cell, RefCell};

    /// A user table whose answer the test changes, counting the questions it gets.
    struct Table {
        answer: RefCell<Result<PepperLookup, Unavailable>>,
        asked: Cell<u32>,
    }

    impl Table {
        fn new(answer: PepperLookup) -> Self {
            Self {
                answer: RefCell::new(Ok(answer)),
                asked: Cell::new(0),
            }
        }
        fn set(&self, answer: Result<PepperLookup, Unavailable>) {
            *self.answer.borrow_mut() = answer;
        }
    }

    impl UserDirectory for Table {
        fn pepper(&self, _user_id: &str) -> Result<PepperLookup, Unavailable> {
            self.asked.set(self.asked.get() + 1);
            self.answer.borrow().clone()
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    fn pepper(p: &str) -> PepperLookup {
        PepperLookup::Pepper(Some(p.to_owned()))
    }

    #[test]
    fn the_original_pairs_null_null_and_equal_strings_pass() {
        assert_eq!(verdict(&PepperLookup::Pepper(None), None), Ok(()));
        assert_eq!(verdict(&pepper("p"), Some("p")), Ok(()));
        assert_eq!(
            verdict(&PepperLookup::Pepper(None), Some("p")),
            Err(RevocationError::TokenRevoked)
        );
        assert_eq!(
            verdict(&pepper("p"), None),
            Err(RevocationError::TokenRevoked)
        );
        assert_eq!(
            verdict(&pepper("p"), Some("q")),
            Err(RevocationError::TokenRevoked)
        );
        assert_eq!(
            verdict(&PepperLookup::UserNotFound, None),
            Err(RevocationError::UserNotFound)
        );
    }

    #[test]
    fn a_changed_pepper_revokes_once_the_ttl_has_passed_and_not_before() {
        let clock = FakeClock::new(1_000_000);
        let kv = MemoryKv::new();
        let table = Table::new(pepper("p1"));
        let check = RevocationCheck {
            directory: &table,
            kv: &kv,
            ttl: TTL,
        };
        assert_eq!(check.check("u", Some("p1"), clock.now_ms()), Ok(()));
        assert_eq!(table.asked.get(), 1);
        table.set(Ok(pepper("p2")));
        clock.advance(TTL - Duration::from_millis(1));
        assert_eq!(
            check.check("u", Some("p1"), clock.now_ms()),
            Ok(()),
            "cached within the TTL"
        );
        assert_eq!(table.asked.get(), 1, "the cache answered");
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            check.check("u", Some("p1"), clock.now_ms()),
            Err(RevocationError::TokenRevoked)
        );
        assert_eq!(table.asked.get(), 2);
        assert_eq!(check.check("u", Some("p2"), clock.now_ms()), Ok(()));
        assert_eq!(table.asked.get(), 2);
    }

    #[test]
    fn a_missing_user_is_cached_too_and_users_do_not_share_entries() {
        let clock = FakeClock::new(0);
        let kv = MemoryKv::new();
        let table = Table::new(PepperLookup::UserNotFound);
        let check = RevocationCheck {
            directory: &table,
            kv: &kv,
            ttl: TTL,
        };
        assert_eq!(
            check.check("a", None, clock.now_ms()),
            Err(RevocationError::UserNotFound)
        );
        table.set(Ok(PepperLookup::Pepper(None)));
        assert_eq!(
            check.check("a", None, clock.now_ms()),
            Err(RevocationError::UserNotFound)
        );
        assert_eq!(check.check("b", None, clock.now_ms()), Ok(()));
    }

    #[test]
    fn the_database_down_refuses_unless_a_fresh_answer_is_cached() {
        let clock = FakeClock::new(0);
        let kv = MemoryKv::new();
        let table = Table::new(PepperLookup::Pepper(None));
        let check = RevocationCheck {
            directory: &table,
            kv: &kv,
            ttl: TTL,
        };
        table.set(Err(Unavailable("connection refused".into())));
        assert_eq!(
            check.check("u", None, clock.now_ms()),
            Err(RevocationError::Unavailable("connection refused".into())),
            "nothing cached: fail closed"
        );
        table.set(Ok(PepperLookup::Pepper(None)));
        assert_eq!(check.check("u", None, clock.now_ms()), Ok(()));
        table.set(Err(Unavailable("down".into())));
        clock.advance(Duration::from_secs(30));
        assert_eq!(check.check("u", None, clock.now_ms()), Ok(()), "fresh");
        clock.advance(Duration::from_secs(30));
        assert!(matches!(
            check.check("u", None, clock.now_ms()),
            Err(RevocationError::Unavailable(_))
        ));
    }

    #[test]
    fn an_entry_from_the_future_or_garbage_is_not_trusted() {
        let kv = MemoryKv::new();
        let table = Table::new(pepper("now"));
        let check = RevocationCheck {
            directory: &table,
            kv: &kv,
            ttl: TTL,
        };
        let future = CacheEntry {
            lookup: pepper("old"),
            checked_at_ms: 10_000_000,
        };
        kv.put_raw(&cache_key("u"), &serde_json::to_vec(&future).expect("json"));
        assert_eq!(check.check("u", Some("now"), 0), Ok(()));
        kv.put_raw(&cache_key("v"), b"not json");
        assert_eq!(check.check("v", Some("now"), 0), Ok(()));
        assert_eq!(table.asked.get(), 2);
    }

    #[test]
    fn a_broken_cache_costs_a_query_not_an_answer() {
        let kv = MemoryKv::new();
        kv.fail_next(KvOp::Get, 1);
        kv.fail_next(KvOp::Set, 1);
        let table = Table::new(pepper("p"));
        let check = RevocationCheck {
            directory: &table,
            kv: &kv,
            ttl: TTL,
        };
        assert_eq!(check.check("u", Some("p"), 0), Ok(()));
        assert_eq!(
            check.check("u", Some("x"), 0),
            Err(RevocationError::TokenRevoked)
        );
        assert_eq!(table.asked.get(), 2, "the failed write left no entry");
    }
}
