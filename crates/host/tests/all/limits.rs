//! Request limits (body size 413, header size 431) and graceful shutdown.

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

/// Opens a raw connection to the host and sends `bytes` (an unfinished request), for the tests of
/// clients that stop halfway.
async fn send_raw(host: &crate::harness::Running, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let address = host.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::AsyncReadExt;
    let mut s = Scenario::new("body-limit", &[]);
    s.config.limits.header_read_timeout = std::time::Duration::from_millis(300);
    let host = s.start().await;
    let mut stream = send_raw(&host, b"GET /?op=body-len HTTP/1.1\r\nhost: x\r\nx-slow: ").await;
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the host closed the connection in time");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    // The host still serves everyone else.
    assert_eq!(host.get("/?op=body-len").await, (200, "0".into()));
    host.stop().await;
}

#[tokio::test]
async fn a_body_that_stalls_fails_the_guests_read_instead_of_holding_the_instance() {
    use tokio::io::AsyncReadExt;
    let mut s = Scenario::new("body-limit", &[]);
    s.config.limits.body_idle_timeout = std::time::Duration::from_millis(300);
    let host = s.start().await;
    let mut stream = send_raw(
        &host,
        b"POST /?op=body-len HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nfirst",
    )
    .await;
    let started = std::time::Instant::now();
    let mut answer = vec![0_u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    let head = String::from_utf8_lossy(&answer[..read]);
    assert!(
        !head.starts_with("HTTP/1.1 200"),
        "the stalled body was not taken as complete: {head}"
    );
    host.stop().await;
}

#[tokio::test]
async fn shutdown_is_graceful_for_in_flight_requests() {
    let s = Scenario::new("body-limit", &[]);
    let host = s.start().await;
    let url = format!("{}/?op=sleep&ms=700", host.base);
    let client = host.client.clone();
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let base = host.base.clone();
    let started = std::time::Instant::now();
    host.stop().await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "shutdown must wait for the in-flight request"
    );
    let response = in_flight
        .await
        .expect("join")
        .expect("in-flight request completes");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.expect("body"), "slept 700");
    // No longer accepting.
    let fresh = reqwest::Client::new();
    assert!(
        fresh
            .get(format!("{base}/?op=body-len"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn responses_announce_how_long_an_idle_connection_is_kept() {
    let mut s = Scenario::new("body-limit", &[]);
    s.config.limits.header_read_timeout = std::time::Duration::from_secs(7);
    let host = s.start().await;
    let response = host
        .client
        .get(format!("{}/?op=body-len", host.base))
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.headers().get("keep-alive").map(|v| v.as_bytes()),
        Some(&b"timeout=7"[..])
    );
    host.stop().await;
}
