//! Following Fly's org-wide machine listing (`GET /orgs/{org}/machines?updated_after=…`) so that a
//! periodic check of a healthy instance costs no Fly request.
//!
//! # Keys
//!
//! - `fleet/feed`: JSON [`FeedState`]: the watermark (newest `updated_at` a finished pass saw), a pass in
//!   progress (its cursor), when the last pass finished, and who is following right now.
//! - `fleet/m/{machine_id}`: JSON [`Observation`]: the machine's state, `updated_at` and volume mounts
//!   as the listing last showed them.
//!
//! # Flow
//!
//! - **Follow** ([`FleetFeed::follow`], once per cron tick, by whichever walker wins the feed): list the
//!   machines updated after the watermark (minus [`OVERLAP_S`] while the watermark's second may still
//!   receive changes, because `updated_at` has whole seconds),
//!   page by page, and write an observation for each machine whose `updated_at` is not older than the
//!   stored one. The first pass has no watermark and lists the whole org (the baseline); a pass longer
//!   than [`PAGES_PER_STEP`] pages goes on at the next tick from its cursor. Only when a pass reaches the
//!   last page do the watermark and `synced_at_ms` move. One walker follows at a time: the feed is taken
//!   by a compare-and-swap that writes `held_until_ms`, so a follower that dies blocks it for at most
//!   [`FEED_HOLD_MS`].
//! - **Use** (`reconcile`, for a due check): when the last pass finished less than [`FEED_FRESH_MS`]
//!   ago, the check reads the machine's observation instead of asking Fly, but only to *confirm* what the
//!   record says: a started machine mounting the recorded volume for a running instance, a stopped one
//!   for a stopped instance. Anything else (no observation, a disagreement, a destroyed machine, a wrong
//!   mount) falls back to the usual Fly reads, which decide. So a stale observation can delay noticing a
//!   change by at most `FEED_FRESH_MS` beyond the check's cadence, and can never make the record claim
//!   something Fly did not say.
//!
//! # Cost
//!
//! One listing request per tick while nothing changes, plus one page per 1,000 changed machines; one
//! key-value read per changed machine and one write per machine that really changed. The baseline of
//! 100,000 machines is 100 pages, read within [`BASELINE_FOLLOW_BUDGET_MS`] a tick (about 40 pages a
//! tick under Fly's one request a second).
//!
//! # Assumptions
//!
//! - Fly orders the listing by `updated_at` and pages it with a cursor, so a machine updated while a
//!   pass pages moves to the end and is seen later in the same pass (what the simulator does; Fly's exact
//!   order is unconfirmed, which is one reason checks still read Fly once per [`crate::lifecycle`] full-check
//!   interval).
//! - Fly's and our clocks agree within [`CLOCK_SKEW_MS`]: `synced_at_ms` is the pass's start on our clock
//!   minus that allowance.

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::fly::{FlyApi, FlyError, Machine, MachineState, OrgMachineQuery};
use crate::kv::{CasOutcome, KeyValue, KvError};
use crate::machine::VOLUME_MOUNT_PATH;

const FEED_KEY: &str = "fleet/feed";
/// Machines a listing page asks for (Fly's maximum).
pub const PAGE_LIMIT: u32 = 1_000;
/// Pages one follow step reads at most (the rest of a pass waits for the next tick).
pub const PAGES_PER_STEP: usize = 20;
/// How long a follower holds the feed without writing progress before another may take over.
pub const FEED_HOLD_MS: i64 = 50_000;
/// A new pass starts no sooner than this after the last one started: about one listing per tick, however
/// many walkers tick.
pub const FEED_INTERVAL_MS: i64 = 45_000;
/// Observations count as current while the last pass finished less than this ago.
pub const FEED_FRESH_MS: i64 = 3 * 60_000;
/// Seconds a pass re-reads before the watermark: `updated_at` has whole seconds, so a machine changed in
/// the watermark's second after the listing was answered would be missed by a strict `updated_after`.
pub const OVERLAP_S: i64 = 2;
/// How far Fly's clock may be ahead of ours.
pub const CLOCK_SKEW_MS: i64 = 5_000;
/// Time one follow step may spend, waiting out rate limits included (it runs before a tick's walk).
pub const FOLLOW_BUDGET_MS: i64 = 15_000;
/// Time and pages a step may spend while no pass has finished yet (the baseline): until then every due
/// check reads Fly, so the walker that follows is better used finishing the listing than checking.
pub const BASELINE_FOLLOW_BUDGET_MS: i64 = 40_000;
/// See [`BASELINE_FOLLOW_BUDGET_MS`].
pub const BASELINE_PAGES_PER_STEP: usize = 60;
/// The longest `Retry-After` a follow step waits out between pages; a longer one ends the step (the
/// pass goes on at the next tick from its recorded cursor).
pub const MAX_PAGE_WAIT_MS: i64 = 2_000;

fn observation_key(machine_id: &str) -> String {
    format!("fleet/m/{machine_id}")
}

/// What the listing last showed of one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// The machine's state.
    pub state: MachineState,
    /// Fly's `updated_at` (RFC 3339).
    pub updated_at: String,
    /// Volumes mounted at the instance's data path.
    pub root_volumes: Vec<String>,
}

impl Observation {
    /// The observation of `machine`.
    pub fn of(machine: &Machine) -> Self {
        let root_volumes = machine
            .config
            .iter()
            .flat_map(|config| config.mounts.iter())
            .filter(|mount| mount.path == VOLUME_MOUNT_PATH)
            .map(|mount| mount.volume.clone())
            .collect();
        Self {
            state: machine.state.clone(),
            updated_at: machine.updated_at.clone(),
            root_volumes,
        }
    }

    /// Whether the machine mounts `volume_id` at the instance's data path.
    pub fn mounts(&self, volume_id: &str) -> bool {
        self.root_volumes.iter().any(|v| v == volume_id)
    }
}

/// The stored state of the feed. `turn` grows with every write, so equal bytes mean "nobody wrote it",
/// also on a backend whose CAS compares values (no ABA).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedState {
    turn: u64,
    /// Newest `updated_at` a finished pass saw; `None` until the baseline pass finished.
    watermark: Option<String>,
    /// `updated_after` of the pass in progress (`None`: the baseline).
    pass_after: Option<String>,
    /// Cursor of the pass in progress, if it is not finished.
    cursor: Option<String>,
    /// Newest `updated_at` the pass in progress saw so far.
    pass_newest: Option<String>,
    /// Our clock when the pass in progress started.
    pass_started_at_ms: Option<i64>,
    /// Every change Fly made before this time (our clock) is in the observations.
    synced_at_ms: Option<i64>,
    /// A follower holds the feed until then.
    held_until_ms: i64,
}

impl FeedState {
    fn encode(&self) -> Vec<u8> {
        // Plain strings and integers always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// When the observations were last known complete, if ever.
    pub fn synced_at_ms(&self) -> Option<i64> {
        self.synced_at_ms
    }
}

/// What one follow step did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowReport {
    /// Whether this walker followed (false: another holds the feed, or it is up to date).
    pub followed: bool,
    /// Listing pages read.
    pub pages: u32,
    /// Machines listed.
    pub listed: u32,
    /// Observations written.
    pub written: u32,
    /// Whether a pass finished in this step.
    pub synced: bool,
}

/// Why a follow step failed. Nothing is lost: the pass goes on from its last recorded cursor.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FollowError {
    /// The key-value store failed.
    #[error(transparent)]
    Store(#[from] KvError),
    /// Fly refused or failed the listing (a 429 included).
    #[error(transparent)]
    Fly(#[from] FlyError),
}

/// The fleet feed over a key-value bucket and the Fly API.
pub struct FleetFeed<'a> {
    kv: &'a dyn KeyValue,
}

impl std::fmt::Debug for FleetFeed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetFeed").finish_non_exhaustive()
    }
}

/// `updated_at` minus `seconds`; unchanged when it does not parse as RFC 3339 (a pass then only risks
/// missing a change in that second, which the full checks catch).
fn seconds_before(updated_at: &str, seconds: i64) -> String {
    let rfc3339 = time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(updated_at, &rfc3339)
        .ok()
        .and_then(|at| at.checked_sub(time::Duration::seconds(seconds)))
        .and_then(|at| at.format(&rfc3339).ok())
        .unwrap_or_else(|| updated_at.to_owned())
}

/// Where a new pass starts listing. Right after the watermark when its second was already over on
/// Fly's clock when the last finished pass began (`synced_at_ms` is that start minus the clock skew):
/// no change can still receive that `updated_at`, so nothing is read twice, however many machines share
/// the second (a fleet-wide rollout, a bulk import). Otherwise [`OVERLAP_S`] before it, so a change
/// later in the watermark's second is not missed.
fn pass_after(watermark: &str, synced_at_ms: Option<i64>) -> String {
    let rfc3339 = time::format_description::well_known::Rfc3339;
    let second_ms = time::OffsetDateTime::parse(watermark, &rfc3339)
        .ok()
        .map(|at| at.unix_timestamp().saturating_mul(1_000));
    let settled = second_ms
        .zip(synced_at_ms)
        .is_some_and(|(second_ms, synced)| second_ms + 1_000 <= synced);
    if settled {
        watermark.to_owned()
    } else {
        seconds_before(watermark, OVERLAP_S)
    }
}

/// The later of two `updated_at` values (RFC 3339 in one format compares as text).
fn later(a: Option<String>, b: &str) -> Option<String> {
    match a {
        Some(a) if a.as_str() >= b => Some(a),
        _ if b.is_empty() => a,
        _ => Some(b.to_owned()),
    }
}

impl<'a> FleetFeed<'a> {
    /// The feed in `kv`.
    pub fn new(kv: &'a dyn KeyValue) -> Self {
        Self { kv }
    }

    /// The stored feed state (default when absent or unreadable).
    pub fn state(&self) -> Result<FeedState, KvError> {
        Ok(self
            .kv
            .get(FEED_KEY)?
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .unwrap_or_default())
    }

    /// The observation of `machine_id`, if the listing ever showed it.
    pub fn observation(&self, machine_id: &str) -> Result<Option<Observation>, KvError> {
        Ok(self
            .kv
            .get(&observation_key(machine_id))?
            .and_then(|raw| serde_json::from_slice(&raw).ok()))
    }

    /// Forgets a machine that is gone for good (its record no longer names it).
    pub fn forget(&self, machine_id: &str) -> Result<(), KvError> {
        self.kv.delete(&observation_key(machine_id))
    }

    /// Whether observations are current at `now_ms` (see the module doc).
    pub fn is_fresh(state: &FeedState, now_ms: i64) -> bool {
        state
            .synced_at_ms
            .is_some_and(|synced| now_ms - synced <= FEED_FRESH_MS)
    }

    /// One follow step for the machines of `org_slug` (see the module doc). Pages are read back to
    /// back; a 429 with a short `Retry-After` is waited out (Fly limits each action to about one request
    /// a second), within [`FOLLOW_BUDGET_MS`].
    pub fn follow(
        &self,
        fly: &dyn FlyApi,
        org_slug: &str,
        clock: &dyn Clock,
    ) -> Result<FollowReport, FollowError> {
        let now_ms = clock.now_ms();
        let mut report = FollowReport::default();
        let stored = self.kv.get(FEED_KEY)?;
        let decoded = stored
            .as_deref()
            .and_then(|raw| serde_json::from_slice::<FeedState>(raw).ok());
        let (raw, mut state) = match (stored, decoded) {
            (Some(raw), Some(state)) => (raw, state),
            // Absent or unreadable: a plain `set` (never CAS from absent, DESIGN decision 2); two walkers
            // doing this at once both start a baseline pass, which only repeats work.
            _ => {
                let fresh = FeedState::default();
                let raw = fresh.encode();
                self.kv.set(FEED_KEY, &raw)?;
                (raw, fresh)
            }
        };
        if state.held_until_ms > now_ms {
            return Ok(report);
        }
        let in_pass = state.cursor.is_some();
        if !in_pass
            && state
                .pass_started_at_ms
                .is_some_and(|started| now_ms - started < FEED_INTERVAL_MS)
        {
            return Ok(report);
        }
        if !in_pass {
            state.pass_after = state
                .watermark
                .as_deref()
                .map(|mark| pass_after(mark, state.synced_at_ms));
            state.pass_newest = None;
            state.pass_started_at_ms = Some(now_ms);
        }
        state.held_until_ms = now_ms + FEED_HOLD_MS;
        let Some(mut raw) = self.write_state(&raw, &mut state)? else {
            return Ok(report);
        };
        report.followed = true;
        let outcome = self.read_pages(fly, org_slug, clock, &mut state, &mut raw, &mut report);
        // Let the next tick's walker in at once, whether this step finished, paused or failed.
        state.held_until_ms = 0;
        self.write_state(&raw, &mut state)?;
        outcome
    }

    /// Writes `state` over `raw` (its turn moved on); `None` when someone else wrote first.
    fn write_state(&self, raw: &[u8], state: &mut FeedState) -> Result<Option<Vec<u8>>, KvError> {
        state.turn = state.turn.wrapping_add(1);
        let new = state.encode();
        match self.kv.compare_and_swap(FEED_KEY, Some(raw), &new)? {
            CasOutcome::Swapped => Ok(Some(new)),
            CasOutcome::Conflict { .. } => Ok(None),
        }
    }

    fn read_pages(
        &self,
        fly: &dyn FlyApi,
        org_slug: &str,
        clock: &dyn Clock,
        state: &mut FeedState,
        raw: &mut Vec<u8>,
        report: &mut FollowReport,
    ) -> Result<FollowReport, FollowError> {
        let (budget_ms, most_pages) = if state.synced_at_ms.is_none() {
            (BASELINE_FOLLOW_BUDGET_MS, BASELINE_PAGES_PER_STEP)
        } else {
            (FOLLOW_BUDGET_MS, PAGES_PER_STEP)
        };
        let until_ms = clock.now_ms() + budget_ms;
        let mut pages = 0;
        while pages < most_pages {
            let query = OrgMachineQuery {
                updated_after: state.pass_after.clone(),
                cursor: state.cursor.clone(),
                limit: Some(PAGE_LIMIT),
                include_deleted: true,
            };
            let page = match fly.list_org_machines(org_slug, &query) {
                Ok(page) => page,
                Err(error) if error.is_rate_limited() => {
                    let wait_ms = error.retry_after().map_or(1_000, crate::store::duration_ms);
                    if wait_ms > MAX_PAGE_WAIT_MS || clock.now_ms() + wait_ms > until_ms {
                        return Err(error.into());
                    }
                    clock.sleep(std::time::Duration::from_millis(wait_ms.unsigned_abs()));
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            pages += 1;
            let now_ms = clock.now_ms();
            report.pages += 1;
            report.listed += u32::try_from(page.machines.len()).unwrap_or(u32::MAX);
            report.written += self.observe(&page.machines)?;
            for machine in &page.machines {
                state.pass_newest = later(state.pass_newest.take(), &machine.updated_at);
            }
            // A cursor that does not move would page forever.
            let next = page.next_cursor.filter(|c| !c.is_empty());
            let finished = next.is_none() || next == state.cursor || page.machines.is_empty();
            if finished {
                state.cursor = None;
                if let Some(newest) = state.pass_newest.take() {
                    state.watermark = later(state.watermark.take(), &newest);
                }
                let started = state.pass_started_at_ms.unwrap_or(now_ms);
                state.synced_at_ms = Some(started - CLOCK_SKEW_MS);
                report.synced = true;
            } else {
                state.cursor = next;
            }
            // Progress is recorded page by page, so a follower that dies repeats at most one page.
            state.held_until_ms = now_ms + FEED_HOLD_MS;
            match self.write_state(raw, state)? {
                Some(written) => *raw = written,
                // Taken over (this step outlived its hold): stop, the other follower goes on.
                None => return Ok(report.clone()),
            }
            if finished {
                break;
            }
        }
        Ok(report.clone())
    }

    /// Writes the observations of `machines` that are not older than what is stored; returns how many.
    fn observe(&self, machines: &[Machine]) -> Result<u32, KvError> {
        if machines.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = machines.iter().map(|m| observation_key(&m.id)).collect();
        let stored = self.kv.get_many(&keys)?;
        let mut written = 0;
        for (machine, (key, old)) in machines.iter().zip(stored) {
            let observation = Observation::of(machine);
            let old: Option<Observation> = old.and_then(|raw| serde_json::from_slice(&raw).ok());
            if old.as_ref().is_some_and(|old| {
                old == &observation || old.updated_at.as_str() > observation.updated_at.as_str()
            }) {
                continue;
            }
            let encoded = serde_json::to_vec(&observation).unwrap_or_default();
            self.kv.set(&key, &encoded)?;
            written += 1;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_reads_the_watermarks_second_again_only_while_it_may_still_change() {
        let second_ms = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let mark = "2026-01-01T00:00:00Z";
        // The last pass began (minus skew) well after that second: no overlap, nothing re-read.
        assert_eq!(pass_after(mark, Some(second_ms + 60_000)), mark);
        assert_eq!(pass_after(mark, Some(second_ms + 1_000)), mark);
        // It began within the second (or never finished): read the last seconds again.
        assert_eq!(
            pass_after(mark, Some(second_ms + 999)),
            "2025-12-31T23:59:58Z"
        );
        assert_eq!(pass_after(mark, None), "2025-12-31T23:59:58Z");
        assert_eq!(pass_after("garbage", Some(second_ms)), "garbage");
    }

    #[test]
    fn the_overlap_steps_back_across_days_months_and_leap_years() {
        assert_eq!(
            seconds_before("2026-03-01T00:00:01Z", 2),
            "2026-02-28T23:59:59Z"
        );
        assert_eq!(
            seconds_before("2024-03-01T00:00:00Z", 1),
            "2024-02-29T23:59:59Z"
        );
        assert_eq!(seconds_before("not a time", 2), "not a time");
    }
}
