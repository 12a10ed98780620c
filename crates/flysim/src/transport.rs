//! A blocking [`HttpTransport`] over reqwest, so that native tools and tests can drive the simulator
//! (or Fly) with the control plane's own [`kiloclaw_core::fly::FlyClient`]: this crate's tests and the
//! fleet benchmark. Not for use inside an async context (reqwest's blocking client runs its own
//! runtime).

use kiloclaw_core::fly::{
    HttpRequest, HttpResponse, HttpTransport, TransportError, TransportErrorKind,
};

/// `HttpTransport` over reqwest's blocking client.
#[derive(Debug)]
pub struct BlockingTransport {
    client: reqwest::blocking::Client,
}

impl BlockingTransport {
    /// A transport with its own connection pool. Fails only when the TLS backend cannot start.
    pub fn new() -> Result<Self, TransportError> {
        let client = reqwest::blocking::Client::builder()
            .build()
            .map_err(|e| TransportError::new(TransportErrorKind::Io, e.to_string()))?;
        Ok(Self { client })
    }
}

impl HttpTransport for BlockingTransport {
    fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let method = reqwest::Method::from_bytes(request.method.as_str().as_bytes())
            .map_err(|e| TransportError::new(TransportErrorKind::InvalidRequest, e.to_string()))?;
        let mut builder = self
            .client
            .request(method, &request.url)
            .timeout(request.timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let response = builder.send().map_err(|e| {
            let kind = if e.is_timeout() {
                TransportErrorKind::Timeout
            } else if e.is_connect() {
                TransportErrorKind::Connect
            } else {
                TransportErrorKind::Io
            };
            TransportError::new(kind, e.to_string())
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .bytes()
            .map_err(|e| TransportError::new(TransportErrorKind::Io, e.to_string()))?
            .to_vec();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}
