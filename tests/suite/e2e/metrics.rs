//! Prometheus metrics after an end-to-end scenario: scraped over HTTP from the metrics listener,
//! parsed as the text exposition, and checked family by family (requests by route and status,
//! latencies, Fly calls by operation with a 429, key-value operations, guest lifecycle and reconcile
//! events, cron ticks, instance slots).

use std::collections::BTreeMap;

use anyhow::{Context, ensure};
use kiloclaw_flysim::FaultRule;
use reqwest::Method;

use super::system::System;

/// One sample line: `name{labels} value`, labels as a map.
type Sample = (String, BTreeMap<String, String>, f64);

fn samples(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').context("a value")?;
        let value: f64 = value.parse().with_context(|| format!("number in {line}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').context("closing brace")?;
                let labels = inner
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").context("label pair")?;
                        Ok((k.to_owned(), v.trim_end_matches('"').to_owned()))
                    })
                    .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.push((name, labels, value));
    }
    Ok(out)
}

/// The sum of `name` over the samples whose labels include every pair of `with`.
fn total(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, value)| value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_a_scenario_shows_every_metric_family() -> anyhow::Result<()> {
    let sys = System::boot().await?;
    let user = "user-metrics";
    sys.provision(user).await?;
    sys.start(user).await?;
    sys.send(sys.as_user(user, Method::GET, "/hello")?)
        .await?
        .expect(200)?;
    sys.send(sys.request(Method::GET, "/api/platform/status"))
        .await?
        .expect(403)?;
    sys.stop(user).await?;
    // Fly rate-limits a machine delete once: the 429 is counted under its operation.
    sys.sim()
        .add_fault_rule(FaultRule::error("destroy_machine", 429));
    let _ = sys.destroy(user).await;
    sys.sim().clear_faults().await?;
    sys.cron_tick().await?;

    let text = sys.scrape_metrics().await?;
    let all = samples(&text)?;
    let at_least_one = |name: &str, with: &[(&str, &str)]| -> anyhow::Result<()> {
        ensure!(
            total(&all, name, with) >= 1.0,
            "no {name} {with:?} in:\n{text}"
        );
        Ok(())
    };
    at_least_one(
        "kiloclaw_http_requests_total",
        &[("route", "platform_provision"), ("status", "201")],
    )?;
    at_least_one(
        "kiloclaw_http_requests_total",
        &[("route", "proxy"), ("status", "200")],
    )?;
    at_least_one(
        "kiloclaw_http_requests_total",
        &[("route", "platform_status"), ("status", "403")],
    )?;
    at_least_one(
        "kiloclaw_http_request_duration_seconds_count",
        &[("route", "platform_start")],
    )?;
    at_least_one(
        "kiloclaw_outbound_http_requests_total",
        &[("operation", "create_machine"), ("status", "200")],
    )?;
    at_least_one(
        "kiloclaw_outbound_http_requests_total",
        &[("operation", "destroy_machine"), ("status", "429")],
    )?;
    at_least_one(
        "kiloclaw_outbound_http_requests_total",
        &[("operation", "proxy"), ("status", "200")],
    )?;
    at_least_one(
        "kiloclaw_outbound_http_request_duration_seconds_count",
        &[("operation", "wait_machine")],
    )?;
    at_least_one(
        "kiloclaw_kv_operations_total",
        &[("operation", "compare-and-swap"), ("outcome", "ok")],
    )?;
    at_least_one("kiloclaw_guest_events_total", &[("tag", "lifecycle")])?;
    at_least_one("kiloclaw_guest_events_total", &[("tag", "reconcile_tick")])?;
    at_least_one(
        "kiloclaw_cron_ticks_total",
        &[("component", "reconciler"), ("outcome", "ok")],
    )?;
    ensure!(
        total(&all, "kiloclaw_instance_slots", &[]) == 256.0,
        "{text}"
    );
    ensure!(
        total(&all, "kiloclaw_admission_refused_total", &[]) == 0.0,
        "{text}"
    );
    // No user id, machine id or token is ever a label value.
    ensure!(!text.contains(user), "a user id reached the metrics");
    Ok(())
}
