//! Admission: requests beyond `max_instances` wait for an instance slot, and are refused with a
//! JSON 503 only when none frees up within the admission wait (issue 11: the pool used to run out
//! and answer 500 with an empty body).

use crate::harness::Scenario;
use std::time::{Duration, Instant};

/// Sends `count` concurrent GETs of `path_and_query` and returns their statuses and bodies.
async fn concurrent_gets(
    host: &crate::harness::Running,
    path_and_query: &str,
    count: usize,
) -> Vec<(u16, String)> {
    let requests = (0..count).map(|_| {
        let client = host.client.clone();
        let url = format!("{}{path_and_query}", host.base);
        tokio::spawn(async move {
            let response = client.get(url).send().await.expect("request");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        })
    });
    let mut answers = Vec::new();
    for request in requests.collect::<Vec<_>>() {
        answers.push(request.await.expect("join"));
    }
    answers
}

#[tokio::test]
async fn requests_beyond_the_instance_slots_wait_for_one() {
    let mut s = Scenario::new("body-limit", &[]);
    s.config.limits.max_instances = 2;
    s.config.limits.admission_wait = Duration::from_secs(20);
    let host = s.start().await;
    let started = Instant::now();
    let answers = concurrent_gets(&host, "/?op=sleep&ms=200", 12).await;
    for (status, body) in &answers {
        assert_eq!((*status, body.as_str()), (200, "slept 200"));
    }
    // Two at a time: six rounds of 200 ms, so the requests really queued.
    assert!(
        started.elapsed() >= Duration::from_millis(1100),
        "{:?}",
        started.elapsed()
    );
    host.stop().await;
}

#[tokio::test]
async fn a_composed_component_can_fill_every_slot() {
    let mut s = Scenario::new("composition", &[]);
    s.config.limits.max_instances = 3;
    s.config.limits.admission_wait = Duration::from_secs(20);
    let host = s.start().await;
    let answers = concurrent_gets(&host, "/in-app/x?name=Ada", 40).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(body.starts_with("Hej, Ada!"), "{body}");
    }
    host.stop().await;
}

#[tokio::test]
async fn a_full_house_is_refused_with_a_json_503_after_the_admission_wait() {
    let mut s = Scenario::new("body-limit", &[]);
    s.config.limits.max_instances = 2;
    s.config.limits.admission_wait = Duration::from_millis(200);
    let host = s.start().await;
    let holders = {
        let host_base = host.base.clone();
        let client = host.client.clone();
        (0..2)
            .map(|_| {
                let url = format!("{host_base}/?op=sleep&ms=2000");
                let client = client.clone();
                tokio::spawn(async move { client.get(url).send().await.expect("request").status() })
            })
            .collect::<Vec<_>>()
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    let refused = host
        .client
        .get(format!("{}/?op=body-len", host.base))
        .send()
        .await
        .expect("request");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_eq!(
        refused.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let body: serde_json::Value = refused.json().await.expect("a JSON body");
    let message = body["error"].as_str().expect("an error message");
    assert!(message.contains("2 instance slots"), "{message}");
    for holder in holders {
        assert_eq!(holder.await.expect("join").as_u16(), 200);
    }
    // The slots are back.
    assert_eq!(host.get("/?op=body-len").await, (200, "0".into()));
    host.stop().await;
}
