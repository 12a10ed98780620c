//! Adapting Spin's wasi:http types: reading the incoming request into a plain struct, and writing
//! replies (buffered, or streamed from the machine's response).

use futures_util::StreamExt;
use kiloclaw_core::edge::errors::EdgeError;
use kiloclaw_core::edge::headers::Header;
use spin_sdk::http::{
    Fields, IncomingRequest, IncomingResponse, Method, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};
use wasi::io::streams::StreamError;

/// Request bodies above this size are refused (413): everything is buffered so a failed forward
/// can be replayed once after crash recovery.
pub const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;

/// An incoming request, read completely.
pub struct Request {
    /// Upper-case method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query without the `?`, if any.
    pub query: Option<String>,
    /// Headers as received (names lower-case).
    pub headers: Vec<Header>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// Every `Cookie` header joined into one (HTTP/2 clients may split cookies over several).
    pub fn cookie_header(&self) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .filter_map(|(_, value)| std::str::from_utf8(value).ok())
            .collect();
        (!values.is_empty()).then(|| values.join("; "))
    }

    /// `path?query`.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".to_owned(),
        Method::Head => "HEAD".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        Method::Connect => "CONNECT".to_owned(),
        Method::Options => "OPTIONS".to_owned(),
        Method::Trace => "TRACE".to_owned(),
        Method::Patch => "PATCH".to_owned(),
        Method::Other(other) => other.to_ascii_uppercase(),
    }
}

/// Why a request could not be read.
pub enum ReadError {
    /// The body exceeds [`MAX_REQUEST_BODY`].
    TooLarge,
    /// The client went away or the stream failed.
    Broken,
}

/// The request head (method, target, headers), with an empty body: enough to route and
/// authenticate before anything of the body is read.
pub fn head(request: &IncomingRequest) -> Request {
    let method = method_name(&request.method());
    let target = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.clone(), None),
    };
    let headers = request
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    Request {
        method,
        path,
        query,
        headers,
        body: Vec::new(),
    }
}

/// Reads the whole body of `incoming` into `request.body`.
pub async fn read_body(incoming: IncomingRequest, request: &mut Request) -> Result<(), ReadError> {
    let mut stream = incoming.into_body_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ReadError::Broken)?;
        if request.body.len() + chunk.len() > MAX_REQUEST_BODY {
            return Err(ReadError::TooLarge);
        }
        request.body.extend_from_slice(&chunk);
    }
    Ok(())
}

/// What to send back.
pub enum Body {
    /// A complete body.
    Bytes(Vec<u8>),
    /// The machine's response body, streamed through.
    Upstream(IncomingResponse),
}

/// A reply: status, headers, body.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers (names lower-case; repeated names allowed).
    pub headers: Vec<Header>,
    /// Body.
    pub body: Body,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::bytes(status, "application/json", value.to_string().into_bytes())
    }

    /// A reply with a complete body of `content_type`.
    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("content-type".to_owned(), content_type.as_bytes().to_vec())],
            body: Body::Bytes(body),
        }
    }

    /// An HTML page.
    pub fn html(status: u16, page: String) -> Self {
        Self::bytes(status, "text/html; charset=utf-8", page.into_bytes())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }

    /// The answer for an edge error; detail meant for logs is logged here.
    pub fn error(error: &EdgeError) -> Self {
        if let Some(detail) = error.log_detail() {
            crate::dispatch::log_event(
                "edge_error",
                &[
                    ("status", &error.response().status.to_string()),
                    ("detail", detail),
                ],
            );
        }
        let response = error.response();
        let mut reply = Self::json(response.status, &response.body);
        for (name, value) in &response.headers {
            reply = reply.with_header(name, value);
        }
        reply
    }
}

/// Builds wasi:http fields header by header, skipping any the host refuses (forbidden or invalid),
/// so one odd header never turns a reply into a trap.
pub fn fields(headers: &[Header]) -> Fields {
    let fields = Fields::new();
    for (name, value) in headers {
        let _ = fields.append(name, value);
    }
    fields
}

/// Sends `reply` to the client.
pub async fn send(response_out: ResponseOutparam, reply: Reply) {
    let response = OutgoingResponse::new(fields(&reply.headers));
    if response.set_status_code(reply.status).is_err() {
        let _ = response.set_status_code(500);
    }
    match reply.body {
        Body::Bytes(bytes) => {
            if let Err(error) = response_out.set_with_body(response, bytes).await {
                crate::dispatch::log_event("reply_failed", &[("detail", &format!("{error:?}"))]);
            }
        }
        Body::Upstream(upstream) => {
            let Ok(body) = response.body() else {
                crate::dispatch::log_event("reply_failed", &[("detail", "response body taken")]);
                return;
            };
            response_out.set(response);
            relay(&upstream, &body);
            let _ = OutgoingBody::finish(body, None);
        }
    }
}

/// Most bytes one splice moves: large enough that a big body takes few calls, small enough to
/// keep memory per request flat (the host buffers at most this much).
const SPLICE_BYTES: u64 = 256 * 1024;

/// Copies the machine's response body to the client. `blocking-splice` moves the bytes inside the
/// host, from the upstream connection to the client's, without a round trip through this
/// component's memory for every chunk (for a 1 MiB body, 64 reads and writes of 16 KiB each).
fn relay(upstream: &IncomingResponse, body: &OutgoingBody) {
    let (Ok(incoming), Ok(output)) = (upstream.consume(), body.write()) else {
        crate::dispatch::log_event("upstream_body_broken", &[("detail", "body unavailable")]);
        return;
    };
    let Ok(input) = incoming.stream() else {
        crate::dispatch::log_event("upstream_body_broken", &[("detail", "stream unavailable")]);
        return;
    };
    loop {
        match output.blocking_splice(&input, SPLICE_BYTES) {
            Ok(_) => {}
            // The machine's body ended, or the client went away.
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => {
                // The machine broke off mid-body; the client sees a truncated response.
                crate::dispatch::log_event("upstream_body_broken", &[]);
                break;
            }
        }
    }
    // Child resources go before their parents: the streams before the bodies.
    drop(input);
    drop(output);
    drop(incoming);
}
