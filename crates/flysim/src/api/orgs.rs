//! `GET /v1/orgs/{org}/machines`: the org-wide machine listing a control plane polls to learn what changed
//! across all its per-user apps without one call per app.
//!
//! - Items: the per-app listing's Machine JSON plus `app_name`; `summary=true` leaves out `config`.
//! - Order: ascending by (`updated_at`, `id`). `updated_at` has second resolution, so ties are normal;
//!   the id breaks them, which makes paging deterministic.
//! - Paging: `limit` (default 100, 1–1000, else 400); `next_cursor` (an opaque string, `null` on the
//!   last page) passed back as `cursor` yields the items strictly after the previous page's last item
//!   in that order. The cursor holds that item's (`updated_at`, `id`), not a position, so a machine
//!   updated while a client pages moves to the end and is still seen.
//! - `updated_after` (RFC 3339, `Z` or an offset): only machines with `updated_at` strictly later.
//! - `include_deleted=true` adds destroying/destroyed machines the simulator still remembers and the
//!   tombstones of lost machines ([`crate::state::LostMachine`]); `state` (comma list) and `region`
//!   filter like the per-app listing.
//! - `error_regions` is always `[]` (one simulated control plane never has a region fail to answer).
//! - An org is only the `org_slug` of its apps: an org without apps answers 200 with an empty page.
//!   Machines of a deleted app vanish with it (no tombstones), as they do from the per-app API.
//! - Cost: each page is one pass over all machines under the world lock (no index to keep in step with
//!   every `updated_at` change): about 40 ms for 100,000 machines in a release build, so a client at
//!   Fly's 1 req/s per org keeps the simulator a few percent busy.

use std::cmp::Ordering;
use std::time::{Duration, SystemTime};

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kiloclaw_core::fly::Machine;
use serde::Serialize;
use serde_json::json;

use super::{Pairs, Sim, json_response, query_flag, query_list, query_value};
use crate::error::{ApiError, ApiResult};
use crate::state::{MachineRec, World, now_ms};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Versions the cursor's layout so an old cursor is refused rather than misread if it ever changes.
const CURSOR_VERSION: &str = "v1";

pub async fn list_machines(sim: Sim, Path(org): Path<String>, query: Pairs) -> ApiResult<Response> {
    let listing = OrgListing::parse(&query)?;
    let retention = sim.delays().destroyed_retention;
    let page = sim.read(|world| listing.page(world, &org, retention, now_ms()));
    Ok(json_response(StatusCode::OK, &page))
}

/// One page of the org listing, in Fly's shape.
#[derive(Debug, Serialize)]
struct OrgMachinesPage {
    machines: Vec<Machine>,
    next_cursor: Option<String>,
    last_machine_id: Option<String>,
    last_updated_at: Option<String>,
    error_regions: Vec<String>,
}

/// The parsed query.
#[derive(Debug)]
struct OrgListing {
    limit: usize,
    /// (`updated_at`, `id`) of the previous page's last item.
    after: Option<(String, String)>,
    /// `updated_after` truncated to whole seconds, in the machines' own format: a machine's
    /// whole-second `updated_at` is later than an instant exactly when it is later than that instant's
    /// whole second, so plain string comparison suffices.
    updated_after: Option<String>,
    states: Vec<String>,
    region: Option<String>,
    summary: bool,
    include_deleted: bool,
}

impl OrgListing {
    fn parse(query: &[(String, String)]) -> ApiResult<Self> {
        let limit = match query_value(query, "limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => raw
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid limit \"{raw}\": must be a number between 1 and {MAX_LIMIT}"
                    ))
                })?,
        };
        let after = match query_value(query, "cursor").filter(|c| !c.is_empty()) {
            None => None,
            Some(raw) => Some(
                decode_cursor(raw)
                    .ok_or_else(|| ApiError::bad_request(format!("invalid cursor \"{raw}\"")))?,
            ),
        };
        let updated_after = match query_value(query, "updated_after").filter(|v| !v.is_empty()) {
            None => None,
            Some(raw) => {
                let instant = parse_rfc3339(raw).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid updated_after \"{raw}\": expected an RFC 3339 timestamp"
                    ))
                })?;
                Some(humantime::format_rfc3339_seconds(instant).to_string())
            }
        };
        let states = query_list(query, "state");
        Ok(Self {
            limit,
            after,
            updated_after,
            states,
            region: query_value(query, "region")
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
            summary: query_flag(query, "summary"),
            include_deleted: query_flag(query, "include_deleted"),
        })
    }

    /// The cheap comparisons first: past a cursor most machines fail the first test.
    fn wants(&self, org: &str, machine: &MachineRec) -> bool {
        self.after.as_ref().is_none_or(|(updated_at, id)| {
            (machine.updated_at.as_str(), machine.id.as_str()) > (updated_at.as_str(), id.as_str())
        }) && self
            .updated_after
            .as_deref()
            .is_none_or(|after| machine.updated_at.as_str() > after)
            && self.region.as_deref().is_none_or(|r| r == machine.region)
            && (self.states.is_empty() || self.states.iter().any(|s| s == machine.state.as_str()))
            && machine.org_slug == org
    }

    /// Linear in the number of machines: one filtering pass, then a selection of the first `limit`
    /// (not a full sort), so paging through 100,000 machines stays cheap per page.
    fn page(&self, world: &World, org: &str, retention: Duration, now: u64) -> OrgMachinesPage {
        let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        let live = world
            .machines
            .values()
            .filter(|m| self.include_deleted || !m.state.is_gone());
        let lost = world
            .lost_machines
            .values()
            .filter(|lost| {
                self.include_deleted && now.saturating_sub(lost.lost_at_ms) <= retention_ms
            })
            .map(|lost| &lost.machine);
        let mut picked: Vec<&MachineRec> =
            live.chain(lost).filter(|m| self.wants(org, m)).collect();
        let more = picked.len() > self.limit;
        if more {
            picked.select_nth_unstable_by(self.limit, order);
            picked.truncate(self.limit);
        }
        picked.sort_unstable_by(order);
        let last = picked.last();
        OrgMachinesPage {
            next_cursor: last
                .filter(|_| more)
                .map(|m| encode_cursor(&m.updated_at, &m.id)),
            last_machine_id: last.map(|m| m.id.clone()),
            last_updated_at: last.map(|m| m.updated_at.clone()),
            machines: picked
                .iter()
                .map(|m| {
                    let mut view = world.machine_view(m);
                    if self.summary {
                        view.config = None;
                    }
                    view.extra.insert("app_name".to_owned(), json!(m.app));
                    view
                })
                .collect(),
            error_regions: Vec::new(),
        }
    }
}

fn order(a: &&MachineRec, b: &&MachineRec) -> Ordering {
    (a.updated_at.as_str(), a.id.as_str()).cmp(&(b.updated_at.as_str(), b.id.as_str()))
}

fn encode_cursor(updated_at: &str, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_VERSION}\n{updated_at}\n{id}"))
}

fn decode_cursor(raw: &str) -> Option<(String, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split('\n');
    let (version, updated_at, id) = (parts.next()?, parts.next()?, parts.next()?);
    (version == CURSOR_VERSION && parts.next().is_none() && !id.is_empty())
        .then(|| (updated_at.to_owned(), id.to_owned()))
}

/// RFC 3339 with `Z` or a numeric offset (fractional seconds allowed). A `+` sent unencoded in a query
/// string arrives as a space, so a space before the offset counts as `+`.
fn parse_rfc3339(raw: &str) -> Option<SystemTime> {
    let raw = raw.trim();
    if let Some(local) = raw.strip_suffix(['Z', 'z']) {
        return humantime::parse_rfc3339_weak(local).ok();
    }
    let split = raw.len().checked_sub(6)?;
    let (local, offset) = (raw.get(..split)?, raw.get(split..)?.as_bytes());
    let sign = match offset.first()? {
        b'+' | b' ' => 1,
        b'-' => -1,
        _ => return None,
    };
    if offset.get(3) != Some(&b':') {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u64> {
        std::str::from_utf8(offset.get(range)?).ok()?.parse().ok()
    };
    let (hours, minutes) = (digits(1..3)?, digits(4..6)?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    let wall = humantime::parse_rfc3339_weak(local).ok()?;
    // The wall-clock time is UTC plus the offset: undo it.
    if sign > 0 {
        wall.checked_sub(shift)
    } else {
        wall.checked_add(shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zulu_and_offsets_to_the_same_instant() {
        let zulu = parse_rfc3339("2026-03-01T12:00:00Z");
        assert!(zulu.is_some());
        assert_eq!(parse_rfc3339("2026-03-01T13:30:00+01:30"), zulu);
        assert_eq!(parse_rfc3339("2026-03-01T13:30:00 01:30"), zulu);
        assert_eq!(parse_rfc3339("2026-03-01T07:00:00-05:00"), zulu);
        assert!(parse_rfc3339("2026-03-01T12:00:00.750Z").is_some());
        for bad in [
            "",
            "yesterday",
            "2026-03-01T12:00:00",
            "2026-03-01T12:00:00+1:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let cursor = encode_cursor("2026-03-01T12:00:00Z", "0123456789abcd");
        assert_eq!(
            decode_cursor(&cursor),
            Some((
                "2026-03-01T12:00:00Z".to_owned(),
                "0123456789abcd".to_owned()
            ))
        );
        assert_eq!(decode_cursor("not a cursor!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("v2\na\nb")), None);
    }

    #[test]
    fn updated_after_truncates_to_whole_seconds() {
        let listing = OrgListing::parse(&[(
            "updated_after".to_owned(),
            "2026-03-01T12:00:00.900Z".to_owned(),
        )]);
        assert!(listing.is_ok_and(|l| l.updated_after.as_deref() == Some("2026-03-01T12:00:00Z")));
    }
}
