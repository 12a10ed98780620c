//! Request limits: body size (413) and header size.

use crate::harness::Scenario;

#[tokio::test]
async fn body_over_the_limit_is_413_and_under_it_reaches_the_guest() {
    let mut s = Scenario::new("body-limit", &[]);
    s.config.limits.max_request_body_bytes = 1024;
    let host = s.start().await;
    let post = |size: usize| {
        host.client
            .post(format!("{}/?op=body-len", host.base))
            .body(vec![b'x'; size])
            .send()
    };
    let r = post(1000).await.expect("request");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.expect("body"), "1000");
    let r = post(5000).await.expect("request");
    assert_eq!(r.status().as_u16(), 413);
    host.stop().await;
}

#[tokio::test]
async fn oversized_headers_are_rejected() {
    let mut s = Scenario::new("body-limit", &[]);
    s.config.limits.max_request_header_bytes = 8192;
    let host = s.start().await;
    let r = host
        .client
        .get(format!("{}/?op=headers", host.base))
        .header("x-big", "y".repeat(20_000))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 431);
    assert_eq!(host.get("/?op=body-len").await, (200, "0".into()));
    host.stop().await;
}
