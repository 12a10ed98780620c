//! `HttpTransport` over `wasi:http/outgoing-handler` (the Fly Machines API), fully synchronous:
//! the component's exported functions are synchronous, so it blocks on the host's pollables
//! instead of running an async executor.

use std::time::Duration;

use kiloclaw_core::fly::{
    HttpMethod, HttpRequest, HttpResponse, HttpTransport, TransportError, TransportErrorKind,
};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};

/// Connecting should never take long; the request's own timeout bounds the rest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes per blocking read or write.
const CHUNK: usize = 64 * 1024;

/// Sends Fly API requests through the host.
pub struct WasiHttpTransport;

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn invalid(message: impl Into<String>) -> TransportError {
    TransportError::new(TransportErrorKind::InvalidRequest, message)
}

fn error_kind(code: &ErrorCode) -> TransportErrorKind {
    match code {
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout => TransportErrorKind::Timeout,
        ErrorCode::DnsTimeout
        | ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionLimitReached
        | ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => TransportErrorKind::Connect,
        ErrorCode::HttpRequestDenied
        | ErrorCode::HttpRequestUriInvalid
        | ErrorCode::HttpRequestMethodInvalid => TransportErrorKind::InvalidRequest,
        ErrorCode::ConnectionTerminated
        | ErrorCode::HttpProtocolError
        | ErrorCode::HttpResponseIncomplete
        | ErrorCode::HttpResponseTimeout => TransportErrorKind::Io,
        _ => TransportErrorKind::Other,
    }
}

fn method(method: HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::Get,
        HttpMethod::Post => Method::Post,
        HttpMethod::Put => Method::Put,
        HttpMethod::Patch => Method::Patch,
        HttpMethod::Delete => Method::Delete,
    }
}

/// Splits `scheme://authority/path?query` into its parts.
fn split_url(url: &str) -> Result<(Scheme, &str, &str), TransportError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid(format!("not an absolute URL: {url}")))?;
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => return Err(invalid(format!("unsupported scheme {other}"))),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return Err(invalid(format!("no host in URL: {url}")));
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

fn build(request: &HttpRequest) -> Result<OutgoingRequest, TransportError> {
    let (scheme, authority, path) = split_url(&request.url)?;
    let headers: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&headers)
        .map_err(|error| invalid(format!("header rejected: {error:?}")))?;
    let outgoing = OutgoingRequest::new(fields);
    outgoing
        .set_method(&method(request.method))
        .map_err(|()| invalid("method rejected"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme rejected"))?;
    outgoing
        .set_authority(Some(authority))
        .map_err(|()| invalid("authority rejected"))?;
    outgoing
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path rejected"))?;
    Ok(outgoing)
}

fn write_body(outgoing_body: OutgoingBody, body: Option<&[u8]>) -> Result<(), TransportError> {
    let io = |message: String| TransportError::new(TransportErrorKind::Io, message);
    if let Some(bytes) = body.filter(|b| !b.is_empty()) {
        let stream = outgoing_body
            .write()
            .map_err(|()| io("request body not writable".to_owned()))?;
        for chunk in bytes.chunks(4096) {
            // blocking-write-and-flush accepts at most 4096 bytes per call.
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|error| io(format!("writing request body: {error:?}")))?;
        }
        drop(stream);
    }
    OutgoingBody::finish(outgoing_body, None)
        .map_err(|error| io(format!("finishing request body: {error:?}")))
}

fn read_body(body: IncomingBody) -> Result<Vec<u8>, TransportError> {
    let stream = body
        .stream()
        .map_err(|()| TransportError::new(TransportErrorKind::Io, "response body not readable"))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(CHUNK as u64) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(wasi::io::streams::StreamError::Closed) => break,
            Err(error) => {
                return Err(TransportError::new(
                    TransportErrorKind::Io,
                    format!("reading response body: {error:?}"),
                ));
            }
        }
    }
    drop(stream);
    drop(IncomingBody::finish(body));
    Ok(bytes)
}

impl HttpTransport for WasiHttpTransport {
    fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let outgoing = build(&request)?;
        let outgoing_body = outgoing.body().map_err(|()| {
            TransportError::new(TransportErrorKind::Io, "request body already taken")
        })?;
        let options = RequestOptions::new();
        // Hosts may refuse to honour a timeout; the request then runs under the host's defaults.
        let _ = options.set_connect_timeout(Some(nanos(CONNECT_TIMEOUT.min(request.timeout))));
        let _ = options.set_first_byte_timeout(Some(nanos(request.timeout)));
        let _ = options.set_between_bytes_timeout(Some(nanos(request.timeout)));
        let future = outgoing_handler::handle(outgoing, Some(options))
            .map_err(|code| TransportError::new(error_kind(&code), format!("{code:?}")))?;
        // The body is written once the host holds the request, so a large body cannot stall on a
        // stream nobody reads yet.
        write_body(outgoing_body, request.body.as_deref())?;
        let response = loop {
            match future.get() {
                Some(result) => break result,
                None => future.subscribe().block(),
            }
        };
        let response = response
            .map_err(|()| TransportError::new(TransportErrorKind::Other, "response already taken"))?
            .map_err(|code| TransportError::new(error_kind(&code), format!("{code:?}")))?;
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect();
        let body = response.consume().map_err(|()| {
            TransportError::new(TransportErrorKind::Io, "response body already taken")
        })?;
        Ok(HttpResponse {
            status,
            headers,
            body: read_body(body)?,
        })
    }
}
