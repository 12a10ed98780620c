//! Cron: scheduled ticks with a fresh instance each, manual ticks, guest errors surfaced.

use crate::harness::Scenario;
use kiloclaw_host::CronError;
use std::time::{Duration, Instant};

#[tokio::test]
async fn run_cron_once_calls_handle_cron_event() {
    let s = Scenario::new("cron", &[]);
    let host = s.start().await;
    host.app.run_cron_once("ticker").await.expect("tick");
    host.app.run_cron_once("ticker").await.expect("tick");
    assert_eq!(
        host.get("/?op=incr&key=ticks&delta=0").await,
        (200, "2".into())
    );
    let (status, ts) = host.get("/?op=kv-get&key=last-timestamp").await;
    assert_eq!(status, 200);
    let ts: u64 = ts.parse().expect("timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(now.abs_diff(ts) <= 5, "timestamp {ts} vs now {now}");
    assert!(matches!(
        host.app.run_cron_once("probe").await,
        Err(CronError::UnknownComponent(_))
    ));
    host.stop().await;
}

#[tokio::test]
async fn schedule_ticks_every_second_while_serving() {
    let mut s = Scenario::new("cron", &[]);
    s.config.cron = true;
    let host = s.start().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = host.get("/?op=incr&key=ticks&delta=0").await;
        if body.parse::<i64>().unwrap_or(0) >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 2 ticks in 10 s (last: {body})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    host.stop().await;
}

#[tokio::test]
async fn guest_errors_are_reported_not_swallowed() {
    let mut s = Scenario::new("cron", &[]);
    s.config.variables.push(("fail".into(), "true".into()));
    let app = s.load().await.expect("load");
    match app.run_cron_once("ticker").await {
        Err(CronError::Guest { component, message }) => {
            assert_eq!(component, "ticker");
            assert_eq!(message, "asked to fail");
        }
        other => panic!("expected a guest error, got {other:?}"),
    }
}
