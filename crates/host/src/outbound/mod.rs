//! Outbound HTTP for guests: `wasi:http/outgoing-handler` through a pooled client.
//!
//! wasmtime-wasi-http's default sender opens a new TCP (and TLS) connection per request, which
//! halved proxy throughput in our prototype. [`OutboundClient`] is one hyper-util pooled client
//! (keep-alive, rustls with the webpki roots) shared by every instance, plugged in through the
//! [`WasiHttpHooks::send_request`] hook. Each request is first checked against the component's
//! `allowed_outbound_hosts` (denied → `HttpRequestDenied`), the `Host` header is dropped as Spin
//! does, and the request options' connect and first-byte timeouts apply (default 600 s each, as
//! in Spin).

mod allowed_hosts;

pub use allowed_hosts::{AllowedHost, AllowedHosts};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The shared, pooled client.
#[derive(Clone)]
pub struct OutboundClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, WasiBody>,
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
        Self { client }
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
        Ok(response.map(|b| b.map_err(HttpError::Hyper).boxed_unsync()))
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
            let response = policy.client.send(request, options).await?;
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
