//! The org-wide machine listing (`GET /v1/orgs/{org}/machines`), lost-machine tombstones, bulk fleet
//! seeding (`POST /_sim/fleet`) and the per-operation counters (`/_sim/stats`), over raw HTTP.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kiloclaw_core::fly::{FlyApi, MachineState, WaitRequest, WaitState};
use kiloclaw_flysim::{Delays, FleetSeed, SeedInstance, SeedState, SimConfig};
use serde_json::{Value, json};

use crate::support::*;

const BENCH_ORG: &str = "bench";

/// One page of the org listing: status and JSON body.
fn org_page(env: &Env, org: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let response = env
        .http
        .get(env.url(&format!("/v1/orgs/{org}/machines")))
        .bearer_auth(TOKEN)
        .query(query)
        .send()
        .expect("send");
    let status = response.status().as_u16();
    (status, response.json().expect("json body"))
}

/// Every item of the listing from `cursor` on, following `next_cursor` with pages of `limit`; also
/// returns the number of pages.
fn page_from(
    env: &Env,
    org: &str,
    limit: usize,
    extra: &[(&str, &str)],
    mut cursor: Option<String>,
) -> (Vec<Value>, usize) {
    let limit = limit.to_string();
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let mut query: Vec<(&str, &str)> = vec![("limit", limit.as_str())];
        query.extend_from_slice(extra);
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.as_str()));
        }
        let (status, page) = org_page(env, org, &query);
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let machines = page["machines"].as_array().expect("machines").clone();
        assert_eq!(page["error_regions"], json!([]));
        match machines.last() {
            Some(last) => {
                assert_eq!(page["last_machine_id"], last["id"]);
                assert_eq!(page["last_updated_at"], last["updated_at"]);
            }
            None => {
                assert!(page["last_machine_id"].is_null() && page["last_updated_at"].is_null());
            }
        }
        items.extend(machines);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (items, pages),
        }
        assert!(pages < 10_000, "paging does not end");
    }
}

fn page_all(env: &Env, org: &str, limit: usize, extra: &[(&str, &str)]) -> (Vec<Value>, usize) {
    page_from(env, org, limit, extra, None)
}

fn key(item: &Value) -> (String, String) {
    (
        item["updated_at"].as_str().expect("updated_at").to_owned(),
        item["id"].as_str().expect("id").to_owned(),
    )
}

fn instances(count: usize, prefix: &str) -> Vec<SeedInstance> {
    (0..count)
        .map(|i| SeedInstance {
            app: format!("{prefix}-{i}"),
            user_id: format!("user-{prefix}-{i}"),
            state: if i % 3 == 0 {
                SeedState::Stopped
            } else {
                SeedState::Started
            },
            image: None,
            metadata_key: None,
        })
        .collect()
}

fn seed(env: &Env, count: usize, prefix: &str) -> Vec<kiloclaw_flysim::SeededInstance> {
    env.admin()
        .seed_fleet(&FleetSeed {
            org_slug: BENCH_ORG.to_owned(),
            region: None,
            instances: instances(count, prefix),
        })
        .expect("seeded")
}

/// Sleeps until the wall clock is in a later second than `after` (RFC 3339 seconds), so the next
/// change gets a strictly later `updated_at`.
fn wait_for_next_second(after: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .as_str()
        <= after
    {
        assert!(Instant::now() < deadline, "clock does not advance");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn org_listing_pages_through_ties_in_updated_at_in_id_order() {
    let env = start();
    let seeded = seed(&env, 10, "tie");
    let (items, pages) = page_all(&env, BENCH_ORG, 3, &[]);
    assert_eq!(pages, 4, "10 items in pages of 3");
    let keys: Vec<(String, String)> = items.iter().map(key).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "ascending by (updated_at, id)");
    let ids: HashSet<&str> = keys.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), 10, "no item twice");
    for instance in &seeded {
        assert!(ids.contains(instance.machine_id.as_str()));
    }
    let item = &items[0];
    let app = item["app_name"].as_str().expect("app_name");
    assert!(app.starts_with("tie-"));
    let mut expected: Value = env
        .http
        .get(env.url(&format!(
            "/v1/apps/{app}/machines/{}",
            item["id"].as_str().expect("id")
        )))
        .bearer_auth(TOKEN)
        .send()
        .expect("send")
        .json()
        .expect("json");
    expected["app_name"] = json!(app);
    assert_eq!(
        item, &expected,
        "the per-app API's machine JSON plus app_name, config (metadata, mounts) included"
    );
    // Another org sees none of them; an org without apps is an empty page, not an error.
    let (status, page) = org_page(&env, ORG, &[]);
    assert_eq!((status, page["machines"].clone()), (200, json!([])));
    let (status, page) = org_page(&env, "nobody", &[]);
    assert_eq!(status, 200);
    assert_eq!(page["machines"], json!([]));
    assert!(page["next_cursor"].is_null());
}

#[test]
fn org_listing_updated_after_is_strict_and_validated() {
    let env = start();
    let first = seed(&env, 3, "early");
    let early_at = env
        .fly
        .get_machine("early-0", &first[0].machine_id)
        .expect("get")
        .updated_at;
    wait_for_next_second(&early_at);
    let second = seed(&env, 2, "late");
    let late: HashSet<String> = second.iter().map(|s| s.machine_id.clone()).collect();

    let listed = |after: &str| -> HashSet<String> {
        let (status, page) = org_page(&env, BENCH_ORG, &[("updated_after", after)]);
        assert_eq!(status, 200, "{page}");
        page["machines"]
            .as_array()
            .expect("machines")
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(listed(&early_at), late, "strictly after, not at");
    let fractional = early_at.replace('Z', ".500Z");
    assert_eq!(listed(&fractional), late);
    let offset = early_at.replace('Z', "+00:00");
    assert_eq!(listed(&offset), late, "a numeric offset works too");
    assert_eq!(listed("2000-01-01T00:00:00Z").len(), 5);

    let (status, body) = org_page(&env, BENCH_ORG, &[("updated_after", "yesterday")]);
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("updated_after"))
    );
}

#[test]
fn machine_updated_while_paging_moves_to_the_end_and_is_still_seen() {
    let env = start();
    seed(&env, 6, "move");
    let (status, first) = org_page(&env, BENCH_ORG, &[("limit", "2")]);
    assert_eq!(status, 200);
    let first_items = first["machines"].as_array().expect("machines").clone();
    assert_eq!(first_items.len(), 2);
    // Change a machine of the page already served, in a later second.
    let item = &first_items[0];
    let id = item["id"].as_str().expect("id");
    let old_at = item["updated_at"].as_str().expect("updated_at");
    wait_for_next_second(old_at);
    if item["state"] == "started" {
        env.admin().exit_machine(id, 0).expect("exit");
    } else {
        let app = item["app_name"].as_str().expect("app");
        env.fly.start_machine(app, id).expect("start");
    }
    let cursor = first["next_cursor"]
        .as_str()
        .expect("more follow")
        .to_owned();
    let (rest, _) = page_from(&env, BENCH_ORG, 2, &[], Some(cursor));
    assert_eq!(rest.len(), 5, "the 4 not yet seen, then the changed one");
    let last = rest.last().expect("items");
    assert_eq!(last["id"], id, "the changed machine comes last");
    assert!(last["updated_at"].as_str().expect("at") > old_at);
    assert!(
        rest[..4]
            .iter()
            .all(|m| m["id"] != id && m["id"] != first_items[1]["id"]),
        "nothing else repeats"
    );
}

#[test]
fn org_listing_validates_limit_and_cursor_and_needs_a_token() {
    let env = start();
    seed(&env, 3, "lim");
    for (query, what) in [
        (("limit", "1001"), "limit above 1000"),
        (("limit", "abc"), "non-numeric limit"),
        (("limit", "0"), "zero limit"),
        (("cursor", "bm90LWEtY3Vyc29y"), "foreign cursor"),
    ] {
        let (status, body) = org_page(&env, BENCH_ORG, &[query]);
        assert_eq!(status, 400, "{what}");
        assert!(body["error"].is_string(), "{what}: Fly's JSON error shape");
    }
    let (status, page) = org_page(&env, BENCH_ORG, &[("limit", "1000")]);
    assert_eq!(status, 200);
    assert_eq!(page["machines"].as_array().map(Vec::len), Some(3));
    assert!(page["next_cursor"].is_null(), "no more items, no cursor");
    let (status, page) = org_page(
        &env,
        BENCH_ORG,
        &[("summary", "true"), ("state", "stopped")],
    );
    assert_eq!(status, 200);
    let items = page["machines"].as_array().expect("machines");
    assert_eq!(items.len(), 1, "lim-0 is the stopped one");
    assert!(items[0].get("config").is_none(), "summary omits config");
    assert_eq!(items[0]["app_name"], "lim-0");
    let (status, page) = org_page(&env, BENCH_ORG, &[("region", "cdg")]);
    assert_eq!((status, page["machines"].clone()), (200, json!([])));

    let response = env
        .http
        .get(env.url(&format!("/v1/orgs/{BENCH_ORG}/machines")))
        .send()
        .expect("send");
    assert_eq!(response.status(), 401);
}

#[test]
fn include_deleted_shows_destroyed_and_lost_machines() {
    let env = start_with(SimConfig {
        delays: Delays::instant(),
        ..config()
    });
    let kept = create_machine(&env, None, "kept");
    let destroyed = create_machine(&env, None, "destroyed");
    let lost = create_machine(&env, None, "lost");
    env.fly
        .destroy_machine(APP, &destroyed.id, true)
        .expect("destroy");
    env.fly
        .wait_machine(
            APP,
            &destroyed.id,
            &WaitRequest::new(WaitState::Destroyed, 10),
        )
        .expect("destroyed");
    let before = env.fly.get_machine(APP, &lost.id).expect("get").updated_at;
    env.admin().lose_machine(&lost.id).expect("lose");
    assert!(
        env.fly
            .get_machine(APP, &lost.id)
            .expect_err("lost machines answer 404 as before")
            .is_not_found()
    );

    let states = |query: &[(&str, &str)]| -> Vec<(String, String)> {
        let (status, page) = org_page(&env, ORG, query);
        assert_eq!(status, 200, "{page}");
        let mut out: Vec<(String, String)> = page["machines"]
            .as_array()
            .expect("machines")
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().expect("id").to_owned(),
                    m["state"].as_str().expect("state").to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let without = states(&[]);
    assert_eq!(without.len(), 1);
    assert_eq!(without[0].0, kept.id);
    let with = states(&[("include_deleted", "true")]);
    assert_eq!(with.len(), 3, "{with:?}");
    for id in [&destroyed.id, &lost.id] {
        assert!(
            with.iter().any(|(i, s)| i == id && s == "destroyed"),
            "{id} listed as destroyed: {with:?}"
        );
    }
    let (_, page) = org_page(
        &env,
        ORG,
        &[("include_deleted", "true"), ("state", "destroyed")],
    );
    let tombstone = page["machines"]
        .as_array()
        .expect("machines")
        .iter()
        .find(|m| m["id"] == lost.id.as_str())
        .cloned()
        .expect("the lost machine is listed");
    assert_eq!(tombstone["app_name"], APP);
    assert!(tombstone["updated_at"].as_str().expect("at") >= before.as_str());
    assert_eq!(
        tombstone["config"]["metadata"]["kiloclaw_user_id"], "lost",
        "the tombstone keeps the config the client needs to match it"
    );
}

#[test]
fn org_listing_is_rate_limited_per_org_when_enabled() {
    let env = start();
    seed(&env, 1, "rl");
    env.admin().set_rate_limits(true);
    for _ in 0..3 {
        assert_eq!(org_page(&env, BENCH_ORG, &[]).0, 200, "burst of 3");
    }
    let response = env
        .http
        .get(env.url(&format!("/v1/orgs/{BENCH_ORG}/machines")))
        .bearer_auth(TOKEN)
        .send()
        .expect("send");
    assert_eq!(response.status(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        org_page(&env, ORG, &[]).0,
        200,
        "another org has its own bucket"
    );
    assert!(
        env.fly.list_machines(APP, &Default::default()).is_ok(),
        "per-app actions have their own buckets"
    );
    env.admin().set_rate_limits(false);
}

#[test]
fn fleet_of_2000_seeds_over_http_and_pages_through_the_org_listing() {
    let env = start();
    let body = json!({
        "org_slug": BENCH_ORG,
        "region": "iad",
        "instances": (0..2000).map(|i| json!({
            "app": format!("fleet-{i}"),
            "user_id": format!("u{i}"),
            "state": if i % 2 == 0 { "started" } else { "stopped" },
        })).collect::<Vec<_>>(),
    });
    let began = Instant::now();
    let response = env
        .http
        .post(env.url("/_sim/fleet"))
        .json(&body)
        .send()
        .expect("send");
    assert_eq!(response.status(), 200);
    let seeded: Value = response.json().expect("json");
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "seeding is quick: {:?}",
        began.elapsed()
    );
    let seeded = seeded["instances"].as_array().expect("instances").clone();
    assert_eq!(seeded.len(), 2000);
    for (i, instance) in seeded.iter().enumerate() {
        assert_eq!(instance["app"], format!("fleet-{i}"), "input order");
        assert_eq!(instance["user_id"], format!("u{i}"));
    }

    let (items, pages) = page_all(&env, BENCH_ORG, 1000, &[]);
    assert_eq!((items.len(), pages), (2000, 2));
    let (items_small, _) = page_all(&env, BENCH_ORG, 333, &[]);
    assert_eq!(
        items_small.iter().map(key).collect::<Vec<_>>(),
        items.iter().map(key).collect::<Vec<_>>(),
        "page size does not change the order"
    );
    let by_id: std::collections::HashMap<&str, &Value> = items
        .iter()
        .map(|m| (m["id"].as_str().expect("id"), m))
        .collect();
    for (i, instance) in seeded.iter().enumerate() {
        let item = by_id[instance["machine_id"].as_str().expect("machine_id")];
        assert_eq!(item["app_name"], format!("fleet-{i}"));
        assert_eq!(item["region"], "iad");
        assert_eq!(
            item["state"],
            if i % 2 == 0 { "started" } else { "stopped" }
        );
        assert_eq!(
            item["config"]["metadata"]["kiloclaw_user_id"],
            format!("u{i}")
        );
        assert_eq!(item["config"]["mounts"][0]["volume"], instance["volume_id"]);
        assert_eq!(item["config"]["mounts"][0]["path"], "/root");
    }

    // Seeded resources are ordinary ones for the API.
    let volume = env
        .fly
        .get_volume("fleet-1", seeded[1]["volume_id"].as_str().expect("volume"))
        .expect("volume");
    assert_eq!(volume.size_gb, 1);
    assert_eq!(
        volume.attached_machine_id.as_deref(),
        seeded[1]["machine_id"].as_str()
    );
    let stopped = seeded[1]["machine_id"].as_str().expect("id");
    env.fly.start_machine("fleet-1", stopped).expect("start");
    env.fly
        .wait_machine(
            "fleet-1",
            stopped,
            &WaitRequest::new(WaitState::Started, 10),
        )
        .expect("a seeded machine boots");
    assert_eq!(
        env.fly.get_machine("fleet-1", stopped).expect("get").state,
        MachineState::Started
    );

    // All or nothing: an app of another org fails the whole batch.
    let response = env
        .http
        .post(env.url("/_sim/fleet"))
        .json(&json!({"org_slug": "other", "instances": [
            {"app": "fresh-app", "user_id": "x", "state": "started"},
            {"app": "fleet-0", "user_id": "x", "state": "started"},
        ]}))
        .send()
        .expect("send");
    assert_eq!(response.status(), 422);
    assert!(env.fly.get_app("fresh-app").expect("get").is_none());
}

#[test]
fn fleet_seeding_honours_image_metadata_key_and_default_region() {
    let env = start();
    let seeded = env
        .admin()
        .seed_fleet(&FleetSeed {
            org_slug: BENCH_ORG.to_owned(),
            region: None,
            instances: vec![SeedInstance {
                app: "custom".to_owned(),
                user_id: "u-custom".to_owned(),
                state: SeedState::Started,
                image: Some("example/image:1".to_owned()),
                metadata_key: Some("owner".to_owned()),
            }],
        })
        .expect("seeded");
    let machine = env
        .fly
        .get_machine("custom", &seeded[0].machine_id)
        .expect("get");
    assert_eq!(machine.region, "dfw", "the simulator's first region");
    let config = machine.config.expect("config");
    assert_eq!(config.image, "example/image:1");
    assert_eq!(
        config.metadata.get("owner").map(String::as_str),
        Some("u-custom")
    );
    let bad = env.admin().seed_fleet(&FleetSeed {
        org_slug: BENCH_ORG.to_owned(),
        region: Some("nowhere".to_owned()),
        instances: instances(1, "bad"),
    });
    assert_eq!(bad.map_err(|e| e.status.as_u16()), Err(400));
}

/// Not run by default: a benchmark-sized fleet (`cargo test -p kiloclaw-flysim -- --ignored`).
#[test]
#[ignore = "benchmark-sized; run with --ignored"]
fn fleet_of_100_000_seeds_in_seconds() {
    let env = start();
    let began = Instant::now();
    let seeded = seed(&env, 100_000, "big");
    let seeded_in = began.elapsed();
    assert_eq!(seeded.len(), 100_000);
    let began = Instant::now();
    let (items, pages) = page_all(&env, BENCH_ORG, 1000, &[("summary", "true")]);
    assert_eq!((items.len(), pages), (100_000, 100));
    eprintln!("seeded in {seeded_in:?}, listed in {:?}", began.elapsed());
    assert!(seeded_in < Duration::from_secs(60));
}

#[test]
fn stats_count_requests_by_operation_and_status() {
    let env = start();
    let machine = create_machine(&env, None, "stats");
    let clear = env
        .http
        .delete(env.url("/_sim/stats"))
        .send()
        .expect("send");
    assert_eq!(clear.status(), 204);
    env.fly.get_machine(APP, &machine.id).expect("get");
    env.fly.get_machine(APP, &machine.id).expect("get");
    assert!(
        env.fly
            .get_machine(APP, "00000000000000")
            .expect_err("404")
            .is_not_found()
    );
    assert_eq!(org_page(&env, ORG, &[]).0, 200);
    assert_eq!(org_page(&env, ORG, &[("limit", "5000")]).0, 400);
    let unauthorized = env
        .http
        .get(env.url(&format!("/v1/apps/{APP}/machines")))
        .send()
        .expect("send");
    assert_eq!(unauthorized.status(), 401);

    let stats: Value = env
        .http
        .get(env.url("/_sim/stats"))
        .send()
        .expect("send")
        .json()
        .expect("json");
    assert_eq!(
        stats,
        json!({"requests": {
            "get_machine": {"200": 2, "404": 1},
            "list_org_machines": {"200": 1, "400": 1},
            "list_machines": {"401": 1},
        }})
    );
    let in_process = env.admin().request_stats();
    assert_eq!(
        in_process.get("get_machine").and_then(|s| s.get(&200)),
        Some(&2)
    );
    env.admin().clear_request_stats();
    let stats: Value = env
        .http
        .get(env.url("/_sim/stats"))
        .send()
        .expect("send")
        .json()
        .expect("json");
    assert_eq!(stats, json!({"requests": {}}));
}
