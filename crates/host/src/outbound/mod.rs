//! Outbound HTTP for guests: `wasi:http/outgoing-handler` through a pooled client. Outbound
//! Redis (`fermyon:spin/redis@2.0.0`) is in [`redis`], outbound PostgreSQL
//! (`spin:postgres/postgres@4.0.0`) in [`postgres`].
//!
//! wasmtime-wasi-http's default sender opens a new TCP (and TLS) connection per request, which
//! halved proxy throughput in our prototype. [`OutboundClient`] is one hyper-util pooled client
//! (keep-alive, rustls with the webpki roots) shared by every instance, plugged in through the
//! [`WasiHttpHooks::send_request`] hook. Each request is first checked against the component's
//! `allowed_outbound_hosts` (denied → `HttpRequestDenied`), the `Host` header is dropped as Spin
//! does, and the request options' connect, first-byte and between-bytes timeouts apply (default
//! 600 s each, as in Spin). A received response head is a test-only crash point
//! ([`crate::crash`]).

pub mod postgres;
pub mod redis;

pub use kiloclaw_manifest::allowed_hosts::{AllowedHost, AllowedHosts};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The shared, pooled clients: HTTP, and Redis and PostgreSQL connections by address.
#[derive(Clone)]
pub struct OutboundClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, WasiBody>,
    redis: redis::RedisPool,
    postgres: postgres::PgPool,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutboundClient")
    }
}

impl OutboundClient {
    /// Builds the client. Connections idle for 30 s are closed.
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|e| {
                // The ring provider supports the default protocol versions; this cannot fail.
                panic!("rustls configuration: {e}")
            });
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(https);
        Self {
            client,
            redis: redis::RedisPool::default(),
            postgres: postgres::PgPool::default(),
        }
    }

    /// The same client with PostgreSQL connections under `timeouts` (a new, empty pool).
    pub fn with_postgres_timeouts(mut self, timeouts: postgres::PgTimeouts) -> Self {
        self.postgres = postgres::PgPool::new(timeouts);
        self
    }

    /// The host-wide Redis connections (`fermyon:spin/redis`).
    pub fn redis(&self) -> &redis::RedisPool {
        &self.redis
    }

    /// The host-wide PostgreSQL connection pools (`spin:postgres/postgres@4.0.0`).
    pub fn postgres(&self) -> &postgres::PgPool {
        &self.postgres
    }

    async fn send(
        &self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<WasiBody>, HttpError> {
        request.headers_mut().remove(http::header::HOST);
        let connect = options
            .and_then(|o| o.connect_timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        let first_byte = options
            .and_then(|o| o.first_byte_timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        // The pooled client connects lazily inside `request`, so the two budgets add up.
        let response = tokio::time::timeout(connect + first_byte, self.client.request(request))
            .await
            .map_err(|_| HttpError::ConnectionTimeout)?
            .map_err(|e| {
                if e.is_connect() {
                    tracing::debug!(tag = "outbound", error = %e, "connect failed");
                    HttpError::ConnectionRefused
                } else {
                    tracing::debug!(tag = "outbound", error = %e, "request failed");
                    HttpError::HttpProtocolError
                }
            })?;
        let between_bytes = options
            .and_then(|o| o.between_bytes_timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        Ok(response.map(|b| {
            BetweenBytesTimeout::new(b.map_err(HttpError::Hyper), between_bytes).boxed_unsync()
        }))
    }
}

/// Fails a body that stalls longer than `timeout` between two frames (outbound responses; inbound
/// request bodies, see [`crate::Limits::body_idle_timeout`]).
pub(crate) struct BetweenBytesTimeout<B> {
    inner: std::pin::Pin<Box<B>>,
    timeout: Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<B> BetweenBytesTimeout<B> {
    pub(crate) fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner: Box::pin(inner),
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<B> http_body::Body for BetweenBytesTimeout<B>
where
    B: http_body::Body<Data = Bytes, Error = HttpError>,
{
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        use std::task::Poll;
        match self.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + self.timeout;
                self.sleep.as_mut().reset(deadline);
                Poll::Ready(frame)
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Default for OutboundClient {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-instance outbound policy: who is calling and where it may go.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    pub component_id: Arc<str>,
    pub allowed: Arc<AllowedHosts>,
    pub client: OutboundClient,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl WasiHttpHooks for OutboundPolicy {
    fn set_host_header(&mut self) -> bool {
        // Spin removes `Host` before sending; the client derives it from the URI.
        false
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                )>,
            > + Send,
    > {
        let policy = self.clone();
        Box::new(async move {
            let uri = request.uri();
            let scheme = uri.scheme_str().unwrap_or("https").to_string();
            let host = uri.host().unwrap_or_default().to_string();
            let port = uri
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            if !policy.allowed.allows(&scheme, &host, port) {
                tracing::warn!(
                    tag = "outbound",
                    component = %policy.component_id,
                    action = "deny",
                    reason = "not in allowed_outbound_hosts",
                    destination = %format!("{scheme}://{host}:{port}"),
                );
                return Err(HttpError::HttpRequestDenied);
            }
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let started = std::time::Instant::now();
            let sent = policy.client.send(request, options).await;
            policy.metrics.observe_outbound(
                &method,
                &host,
                &path,
                sent.as_ref()
                    .ok()
                    .map(|response| response.status().as_u16()),
                started.elapsed(),
            );
            let response = sent?;
            if crate::crash::is_armed() {
                crate::crash::point(|| {
                    format!(
                        "after outbound HTTP {method} {scheme}://{host}:{port}{path} answered {}",
                        response.status().as_u16()
                    )
                });
            }
            Ok((response, fut))
        })
    }
}

/// A request body type for tests and embedders that build requests by hand.
pub fn full_body(bytes: impl Into<Bytes>) -> WasiBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_body_times_out_between_frames() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, HttpError>>(1);
        let stalled =
            http_body_util::StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async {
                rx.recv().await.map(|frame| (frame, rx))
            }));
        let mut body = BetweenBytesTimeout::new(stalled, Duration::from_millis(50));
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"first"))))
            .await
            .expect("send");
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"first")));
        let started = std::time::Instant::now();
        let stalled = body.frame().await.expect("a result");
        assert!(matches!(stalled, Err(HttpError::ConnectionReadTimeout)));
        assert!(started.elapsed() >= Duration::from_millis(45));
        drop(tx);
    }

    #[test]
    fn exact_host_does_not_match_lookalike_suffixes() {
        let allowed =
            AllowedHosts::parse(&["https://api.machines.dev".to_string()]).expect("parse");
        assert!(allowed.allows("https", "api.machines.dev", 443));
        assert!(!allowed.allows("https", "api.machines.dev.evil.com", 443));
    }
}
