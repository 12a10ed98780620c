//! One-time access codes: their format, and [`KvAccessCodes`], the database-free store that local
//! runs use (`kiloclaw access-code --user U`), with the PostgreSQL table's rules.
//!
//! Codes are 10 characters from an alphabet without look-alikes (`0/O`, `1/I`), written
//! `XXXXX-XXXXX`, valid for 10 minutes, as Next.js makes them (original §1.1). In key-value:
//! `auth/code/{code}` holds `{userId, expiresAtMs}` while the code is active, and
//! `auth/code-of/{user}` names the user's active code, so issuing a new code retires the old one.
//! Redemption deletes nothing before it has won: it swaps the code's value for a `redeemed`
//! marker by compare-and-swap against the exact bytes it read, so of two concurrent redemptions
//! exactly one succeeds on every backend (a swap with an expected value compares values on Spin's
//! SQLite store too). The marker is then removed.

use std::time::Duration;

use super::{AccessCodeStore, Unavailable, user_key};
use crate::clock::Random;
use crate::kv::{CasOutcome, KeyValue};

/// How long a code is accepted after it is issued.
pub const CODE_TTL: Duration = Duration::from_secs(10 * 60);

/// The characters a code is made of (no `0`, `O`, `1`, `I`).
pub const CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A fresh code, `XXXXX-XXXXX`, drawn from `random` (the host's cryptographic source in the
/// components).
pub fn generate_code(random: &dyn Random) -> String {
    let mut code = String::with_capacity(11);
    for index in 0..10 {
        if index == 5 {
            code.push('-');
        }
        let pick = usize::try_from(random.below(CODE_ALPHABET.len() as u64)).unwrap_or(0);
        code.push(char::from(CODE_ALPHABET[pick % CODE_ALPHABET.len()]));
    }
    code
}

/// The form's code as the original compares it: trimmed and upper-cased.
pub fn normalize_code(input: &str) -> String {
    input.trim().to_uppercase()
}

/// Whether `code` can be a code at all (shape only); anything else is answered as unknown
/// without touching a store.
pub fn is_well_formed(code: &str) -> bool {
    let bytes = code.as_bytes();
    bytes.len() == 11
        && bytes.iter().enumerate().all(|(index, byte)| {
            if index == 5 {
                *byte == b'-'
            } else {
                CODE_ALPHABET.contains(byte)
            }
        })
}

fn code_key(code: &str) -> String {
    format!("auth/code/{code}")
}

fn active_code_key(user_id: &str) -> String {
    format!("auth/code-of/{}", user_key(user_id))
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredCode {
    user_id: String,
    expires_at_ms: i64,
    #[serde(default)]
    redeemed: bool,
}

/// Access codes in the app's key-value store.
pub struct KvAccessCodes<'a> {
    kv: &'a dyn KeyValue,
}

impl std::fmt::Debug for KvAccessCodes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvAccessCodes").finish_non_exhaustive()
    }
}

impl<'a> KvAccessCodes<'a> {
    /// Codes kept in `kv`.
    pub fn new(kv: &'a dyn KeyValue) -> Self {
        Self { kv }
    }
}

fn unavailable(error: crate::kv::KvError) -> Unavailable {
    Unavailable(error.to_string())
}

impl AccessCodeStore for KvAccessCodes<'_> {
    fn issue(
        &self,
        user_id: &str,
        code: &str,
        _now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), Unavailable> {
        let index = active_code_key(user_id);
        if let Some(previous) = self.kv.get(&index).map_err(unavailable)? {
            let previous = String::from_utf8_lossy(&previous).into_owned();
            self.kv.delete(&code_key(&previous)).map_err(unavailable)?;
        }
        let stored = StoredCode {
            user_id: user_id.to_owned(),
            expires_at_ms,
            redeemed: false,
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| Unavailable(e.to_string()))?;
        self.kv.set(&code_key(code), &bytes).map_err(unavailable)?;
        self.kv.set(&index, code.as_bytes()).map_err(unavailable)
    }

    fn redeem(&self, code: &str, user_id: &str, now_ms: i64) -> Result<bool, Unavailable> {
        let key = code_key(code);
        let Some(current) = self.kv.get(&key).map_err(unavailable)? else {
            return Ok(false);
        };
        let Ok(stored) = serde_json::from_slice::<StoredCode>(&current) else {
            return Ok(false);
        };
        if stored.redeemed || stored.user_id != user_id || stored.expires_at_ms <= now_ms {
            return Ok(false);
        }
        let marker = StoredCode {
            redeemed: true,
            ..stored
        };
        let marker = serde_json::to_vec(&marker).map_err(|e| Unavailable(e.to_string()))?;
        match self
            .kv
            .compare_and_swap(&key, Some(&current), &marker)
            .map_err(unavailable)?
        {
            CasOutcome::Swapped => {}
            CasOutcome::Conflict { .. } => return Ok(false),
        }
        // Won: the marker has done its job; leftovers only cost space.
        let index = active_code_key(user_id);
        if self.kv.get(&index).ok().flatten().as_deref() == Some(code.as_bytes()) {
            let _ = self.kv.delete(&index);
        }
        let _ = self.kv.delete(&key);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemoryKv, SeqRandom};
    use std::sync::Arc;

    const NOW: i64 = 1_700_000_000_000;
    const LATER: i64 = NOW + 600_000;

    #[test]
    fn codes_have_the_dashboard_shape() {
        let random = SeqRandom::new(7);
        let code = generate_code(&random);
        assert!(is_well_formed(&code), "{code}");
        assert_ne!(code, generate_code(&random));
        assert!(!is_well_formed("ABCDE-FGHI0"), "0 is not in the alphabet");
        assert!(!is_well_formed("ABCDEFGHJKL"));
        assert!(!is_well_formed("ABCDE-FGHJ"));
        assert_eq!(normalize_code("  abcde-fghjk "), "ABCDE-FGHJK");
    }

    #[test]
    fn a_code_redeems_once_for_its_own_user_before_it_expires() {
        let kv = MemoryKv::new();
        let codes = KvAccessCodes::new(&kv);
        codes.issue("u1", "AAAAA-BBBBB", NOW, LATER).expect("issue");
        assert_eq!(
            codes.redeem("AAAAA-BBBBB", "u2", NOW),
            Ok(false),
            "other user"
        );
        assert_eq!(codes.redeem("AAAAA-CCCCC", "u1", NOW), Ok(false), "unknown");
        assert_eq!(codes.redeem("AAAAA-BBBBB", "u1", NOW), Ok(true));
        assert_eq!(codes.redeem("AAAAA-BBBBB", "u1", NOW), Ok(false), "reused");
        assert!(kv.keys().is_empty(), "nothing left behind: {:?}", kv.keys());
    }

    #[test]
    fn an_expired_code_is_refused_and_a_new_code_retires_the_old_one() {
        let kv = MemoryKv::new();
        let codes = KvAccessCodes::new(&kv);
        codes.issue("u1", "AAAAA-BBBBB", NOW, LATER).expect("issue");
        assert_eq!(
            codes.redeem("AAAAA-BBBBB", "u1", LATER),
            Ok(false),
            "expired"
        );
        codes.issue("u1", "CCCCC-DDDDD", NOW, LATER).expect("issue");
        codes.issue("u1", "EEEEE-FFFFF", NOW, LATER).expect("issue");
        assert_eq!(codes.redeem("CCCCC-DDDDD", "u1", NOW), Ok(false), "retired");
        assert_eq!(codes.redeem("EEEEE-FFFFF", "u1", NOW), Ok(true));
    }

    #[test]
    fn of_concurrent_redemptions_exactly_one_wins() {
        for round in 0..20 {
            let kv = Arc::new(MemoryKv::new());
            KvAccessCodes::new(kv.as_ref())
                .issue("u1", "AAAAA-BBBBB", NOW, LATER)
                .expect("issue");
            let winners: usize = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        let kv = kv.clone();
                        scope.spawn(move || {
                            KvAccessCodes::new(kv.as_ref())
                                .redeem("AAAAA-BBBBB", "u1", NOW)
                                .expect("redeem")
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| usize::from(h.join().expect("thread")))
                    .sum()
            });
            assert_eq!(winners, 1, "round {round}");
        }
    }

    #[test]
    fn a_concurrent_swap_between_read_and_cas_loses() {
        let kv = MemoryKv::new();
        let codes = KvAccessCodes::new(&kv);
        codes.issue("u1", "AAAAA-BBBBB", NOW, LATER).expect("issue");
        kv.force_conflicts("auth/code/AAAAA-BBBBB", 1);
        assert_eq!(codes.redeem("AAAAA-BBBBB", "u1", NOW), Ok(false));
    }
}
