//! Outbound HTTP: allowed hosts (with a `{{ var }}` template), denial, pooled connections.

use crate::harness::Scenario;
use bytes::Bytes;
use http_body_util::Full;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A real upstream on 127.0.0.1 that counts TCP connections and requests.
struct Upstream {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                            let host_header = req
                                .headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            async move {
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                    Bytes::from(format!(
                                        "upstream#{n} path={} host={host_header}",
                                        req.uri().path()
                                    )),
                                )))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            port,
            connections,
            requests,
            task,
        }
    }
}

#[tokio::test]
async fn allowed_host_is_reached_through_a_pooled_connection() {
    let upstream = Upstream::start().await;
    let mut s = Scenario::new("outbound", &[]);
    s.config
        .variables
        .push(("upstream_port".into(), upstream.port.to_string()));
    let host = s.start().await;
    for i in 1..=5 {
        let (status, body) = host
            .get(&format!(
                "/allowed/x?op=fetch&url=http://127.0.0.1:{}/hello",
                upstream.port
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.starts_with(&format!("status=200 body=upstream#{i} path=/hello")),
            "{body}"
        );
    }
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 5);
    assert_eq!(
        upstream.connections.load(Ordering::SeqCst),
        1,
        "sequential requests must reuse one pooled keep-alive connection"
    );
    host.stop().await;
    upstream.task.abort();
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_denied() {
    let upstream = Upstream::start().await;
    let mut s = Scenario::new("outbound", &[]);
    s.config
        .variables
        .push(("upstream_port".into(), upstream.port.to_string()));
    let host = s.start().await;
    let (status, body) = host
        .get(&format!(
            "/denied/x?op=fetch&url=http://127.0.0.1:{}/",
            upstream.port
        ))
        .await;
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");
    // Allowed component, wrong port: also denied.
    let (status, body) = host
        .get(&format!(
            "/allowed/x?op=fetch&url=http://127.0.0.1:{}/",
            upstream.port + 1
        ))
        .await;
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert_eq!(
        upstream.requests.load(Ordering::SeqCst),
        0,
        "nothing may reach the upstream"
    );
    host.stop().await;
    upstream.task.abort();
}
