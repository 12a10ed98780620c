//! The reconciler's due index: which users to look at in which minute, without listing keys.
//!
//! # Flow
//!
//! - **Schedule** ([`DueIndex::schedule`]): `n = increment("due/{minute}/n", 1)`, then
//!   `set("due/{minute}/{n}", userId)`. Every entry gets its own slot key, so writers never contend and no
//!   key is ever created by CAS. The minute is never earlier than the next one, so a minute being
//!   processed receives no new entries.
//! - **Process** (`reconcile::Reconciler::reconcile_due`): walk minutes from the stored cursor up to
//!   `now - 1 minute` (one minute of grace for clock skew between writers and the reconciler). A minute
//!   is processed by whoever wins `increment("due/{minute}/claim", 1) == 1`, so overlapping cron ticks
//!   and replicas split the work instead of repeating it. Its entries are read with one `get_many`, each
//!   user is checked, entries left over when the time budget runs out are scheduled into the next minute,
//!   and the minute's keys are deleted.
//! - **Cursor**: `due/cursor` (plain JSON number) only says where to start walking; a stale or lost
//!   cursor costs a few extra claim calls, never a missed entry.
//!
//! # Guarantees
//!
//! - Scaling: one tick costs O(entries due) store calls, never O(instances). With 100,000 instances at
//!   the idle cadence about 3,400 entries fall in a minute, read in one `get_many`.
//! - Entries are idempotent: the record's `nextCheckAtMs` decides whether an entry is current. A stale
//!   entry (superseded by a later schedule) is skipped, a duplicate causes one harmless extra check.
//!
//! # Assumptions and caveats
//!
//! - Writers order their work as "append the entry, then commit `nextCheckAtMs`", so a record never names
//!   a check time without an entry. A process that dies between the `increment` and the `set` of a slot
//!   leaves an empty slot (skipped); the user is picked up again by its next lifecycle operation.
//! - Clocks must agree within the one-minute grace.

use crate::kv::{KeyValue, KvError};

/// Milliseconds in an index bucket.
pub const MINUTE_MS: i64 = 60_000;
const CURSOR_KEY: &str = "due/cursor";

/// The due index over a key-value bucket.
#[derive(Debug)]
pub struct DueIndex<'a, K: ?Sized> {
    kv: &'a K,
}

fn count_key(minute: i64) -> String {
    format!("due/{minute}/n")
}

fn slot_key(minute: i64, slot: i64) -> String {
    format!("due/{minute}/{slot}")
}

fn claim_key(minute: i64) -> String {
    format!("due/{minute}/claim")
}

/// The bucket (minute number) holding `at_ms`.
pub fn minute_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(MINUTE_MS)
}

impl<'a, K: KeyValue + ?Sized> DueIndex<'a, K> {
    /// The index in `kv`.
    pub fn new(kv: &'a K) -> Self {
        Self { kv }
    }

    /// Adds `user_id` to the bucket of `at_ms` (never earlier than the minute after `now_ms`). Returns the
    /// minute used.
    pub fn schedule(&self, user_id: &str, at_ms: i64, now_ms: i64) -> Result<i64, KvError> {
        let minute = minute_of(at_ms).max(minute_of(now_ms) + 1);
        let slot = self.kv.increment(&count_key(minute), 1)?;
        self.kv.set(&slot_key(minute, slot), user_id.as_bytes())?;
        Ok(minute)
    }

    /// Claims `minute` for processing; `false` if another reconciler already has it.
    pub fn claim(&self, minute: i64) -> Result<bool, KvError> {
        Ok(self.kv.increment(&claim_key(minute), 1)? == 1)
    }

    /// The distinct users scheduled in `minute`, in scheduling order.
    pub fn entries(&self, minute: i64) -> Result<Vec<String>, KvError> {
        let count = self.kv.increment(&count_key(minute), 0)?;
        if count <= 0 {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = (1..=count).map(|slot| slot_key(minute, slot)).collect();
        let mut seen = std::collections::HashSet::new();
        Ok(self
            .kv
            .get_many(&keys)?
            .into_iter()
            .filter_map(|(_, value)| value.and_then(|v| String::from_utf8(v).ok()))
            .filter(|user| seen.insert(user.clone()))
            .collect())
    }

    /// Deletes a processed minute's keys.
    pub fn clear(&self, minute: i64) -> Result<(), KvError> {
        let count = self.kv.increment(&count_key(minute), 0)?;
        for slot in 1..=count {
            self.kv.delete(&slot_key(minute, slot))?;
        }
        self.kv.delete(&count_key(minute))?;
        self.kv.delete(&claim_key(minute))
    }

    /// Where the last walk stopped, if any.
    pub fn cursor(&self) -> Result<Option<i64>, KvError> {
        Ok(self
            .kv
            .get(CURSOR_KEY)?
            .and_then(|v| serde_json::from_slice::<i64>(&v).ok()))
    }

    /// Records where the next walk should start.
    pub fn set_cursor(&self, minute: i64) -> Result<(), KvError> {
        self.kv.set(CURSOR_KEY, minute.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryKv;

    #[test]
    fn due_index_schedules_into_future_minutes_and_dedupes() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        let now = 10 * MINUTE_MS + 5;
        assert_eq!(
            index.schedule("a", now - MINUTE_MS, now),
            Ok(11),
            "never into the past or current minute"
        );
        assert_eq!(index.schedule("b", 15 * MINUTE_MS + 1, now), Ok(15));
        assert_eq!(index.schedule("a", 11 * MINUTE_MS, now), Ok(11));
        assert_eq!(index.entries(11), Ok(vec!["a".to_owned()]));
        assert_eq!(index.entries(15), Ok(vec!["b".to_owned()]));
        assert_eq!(index.entries(12), Ok(vec![]));
    }

    #[test]
    fn due_index_minute_is_claimed_once_and_cleared() {
        let kv = MemoryKv::new();
        let index = DueIndex::new(&kv);
        index.schedule("a", 11 * MINUTE_MS, 0).expect("schedule");
        assert_eq!(index.claim(11), Ok(true));
        assert_eq!(
            index.claim(11),
            Ok(false),
            "an overlapping tick must not process the same minute"
        );
        index.clear(11).expect("clear");
        assert!(
            kv.keys().iter().all(|k| !k.starts_with("due/11/")),
            "{:?}",
            kv.keys()
        );
        index.set_cursor(12).expect("cursor");
        assert_eq!(index.cursor(), Ok(Some(12)));
    }

    #[test]
    fn memory_kv_meets_the_key_value_contract() {
        crate::testing::check_key_value_contract(&MemoryKv::new(), "t/").expect("contract");
    }

    proptest::proptest! {
        #[test]
        fn every_scheduled_user_is_found_in_exactly_one_walk(
            schedules in proptest::collection::vec((0usize..20, 0i64..120), 1..60)
        ) {
            let kv = MemoryKv::new();
            let index = DueIndex::new(&kv);
            let now = 1_000 * MINUTE_MS;
            let mut expected = std::collections::BTreeSet::new();
            for (user, offset_min) in &schedules {
                let minute = index.schedule(&format!("u{user}"), now + offset_min * MINUTE_MS, now).expect("schedule");
                proptest::prop_assert!(minute > minute_of(now));
                expected.insert((minute, format!("u{user}")));
            }
            let mut found = std::collections::BTreeSet::new();
            for minute in minute_of(now)..=minute_of(now) + 121 {
                if index.claim(minute).expect("claim") {
                    for user in index.entries(minute).expect("entries") {
                        proptest::prop_assert!(found.insert((minute, user)), "no duplicates within a minute");
                    }
                    index.clear(minute).expect("clear");
                }
                proptest::prop_assert!(!index.claim(minute).expect("claim again") || index.entries(minute).expect("e").is_empty());
            }
            proptest::prop_assert_eq!(found, expected);
        }
    }
}
