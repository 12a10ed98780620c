//! `FlyError`: one failed Fly call, with the HTTP status, body and the classification every caller needs.
//!
//! Rules (original-behaviour.md §6, fact sheet §1 and §7):
//! - 404 is the ONLY status that means "confirmed gone" and permits recreating resources or clearing ids.
//! - Capacity: 409/412 whose body carries a capacity marker (`insufficient resources`, `insufficient
//!   memory`, `insufficient cpus`, `could not reserve resource`, case-insensitive) in the JSON `status`
//!   field, the JSON `error`/`message` field or the raw body; or whose `status` field is Fly's machine
//!   code `insufficient_capacity` / `volume_placement_capacity` (also accepted on 422, where the spec ties
//!   that code to create failures). Every other 409/412 is not capacity and is logged once when asked.
//! - Transient: 429, 408, 5xx and transport failures (no response). Never masked, never "gone".

use std::time::Duration;

use serde_json::Value;

use super::transport::{HttpResponse, TransportError, TransportErrorKind};

/// Longest body kept in an error; Fly's error bodies are short, an HTML error page is not.
const MAX_BODY_CHARS: usize = 4096;

const CAPACITY_MARKERS: [&str; 4] = [
    "insufficient resources",
    "insufficient memory",
    "insufficient cpus",
    "could not reserve resource",
];
const CAPACITY_STATUS_CODES: [&str; 2] = ["insufficient_capacity", "volume_placement_capacity"];

/// What kind of failure a [`FlyError`] is, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlyErrorKind {
    /// 404: the app, machine or volume does not exist (any more).
    NotFound,
    /// 409/412/422 that says the host or region has no room.
    Capacity,
    /// 429.
    RateLimited,
    /// 408: a `/wait` that did not reach its state, or a request Fly timed out.
    Timeout,
    /// 5xx.
    ServerError,
    /// No HTTP response at all.
    Transport,
    /// 422 `name_taken` (or a 409 on create): the name exists already.
    NameTaken,
    /// Any other 409.
    Conflict,
    /// Any other 412.
    PreconditionFailed,
    /// 401 or 403.
    Unauthorized,
    /// 400 or any other 422.
    InvalidArgument,
    /// A 2xx whose body could not be read as the expected JSON.
    InvalidResponse,
    /// Refused before sending (the request would certainly be rejected).
    InvalidRequest,
    /// Any other status.
    Other,
}

/// A failed Fly API call. Cheap to move (boxed); `Display` reads like
/// `Fly API get_machine failed (404): machine not found`.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct FlyError(Box<Repr>);

#[derive(Debug, Clone, thiserror::Error)]
enum Repr {
    #[error("Fly API {context} failed ({status}): {message}")]
    Status {
        context: String,
        status: u16,
        body: String,
        message: String,
        /// The JSON `status` field (Fly's machine-readable code), when present.
        fly_status: Option<String>,
        retry_after: Option<Duration>,
        request_id: Option<String>,
    },
    #[error("Fly API {context} failed: no response: {source}")]
    Transport {
        context: String,
        source: TransportError,
    },
    #[error("Fly API {context} returned an unreadable response ({status}): {detail}")]
    InvalidResponse {
        context: String,
        status: u16,
        detail: String,
        body: String,
    },
    #[error("Fly API {context} not sent: {detail}")]
    InvalidRequest { context: String, detail: String },
}

impl FlyError {
    /// The error for a non-2xx response.
    pub fn from_response(context: impl Into<String>, response: &HttpResponse) -> Self {
        let body = truncate(&String::from_utf8_lossy(&response.body));
        let json: Option<Value> = serde_json::from_str(&body).ok();
        // An empty `message`/`error` says nothing (found by the fly_response fuzz target): skip it.
        let field = |name: &str| {
            json.as_ref()?
                .get(name)?
                .as_str()
                .filter(|text| !text.trim().is_empty())
                .map(str::to_owned)
        };
        // fly-go's order: `message`, then `error`, then the raw body.
        let message = field("message")
            .or_else(|| field("error"))
            .unwrap_or_else(|| {
                if body.is_empty() {
                    "(empty body)".to_owned()
                } else {
                    body.clone()
                }
            });
        let fly_status = field("status");
        Self(Box::new(Repr::Status {
            context: context.into(),
            status: response.status,
            message,
            fly_status,
            retry_after: response.header("retry-after").and_then(parse_retry_after),
            request_id: response.header("fly-request-id").map(str::to_owned),
            body,
        }))
    }

    /// A synthetic status error (used by tests and by callers that map other failures onto Fly's).
    pub fn status(context: impl Into<String>, status: u16, body: impl Into<String>) -> Self {
        Self::from_response(
            context,
            &HttpResponse {
                status,
                headers: Vec::new(),
                body: body.into().into_bytes(),
            },
        )
    }

    pub fn transport(context: impl Into<String>, source: TransportError) -> Self {
        Self(Box::new(Repr::Transport {
            context: context.into(),
            source,
        }))
    }

    pub fn invalid_response(
        context: impl Into<String>,
        status: u16,
        detail: impl Into<String>,
        body: &[u8],
    ) -> Self {
        Self(Box::new(Repr::InvalidResponse {
            context: context.into(),
            status,
            detail: detail.into(),
            body: truncate(&String::from_utf8_lossy(body)),
        }))
    }

    pub fn invalid_request(context: impl Into<String>, detail: impl Into<String>) -> Self {
        Self(Box::new(Repr::InvalidRequest {
            context: context.into(),
            detail: detail.into(),
        }))
    }

    /// The operation that failed, e.g. `create_machine`.
    pub fn context(&self) -> &str {
        match &*self.0 {
            Repr::Status { context, .. }
            | Repr::Transport { context, .. }
            | Repr::InvalidResponse { context, .. }
            | Repr::InvalidRequest { context, .. } => context,
        }
    }

    /// HTTP status of a non-2xx answer; `None` when there was no (error) response.
    pub fn http_status(&self) -> Option<u16> {
        match &*self.0 {
            Repr::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The response body (truncated to 4 KiB), empty when there was none.
    pub fn body(&self) -> &str {
        match &*self.0 {
            Repr::Status { body, .. } | Repr::InvalidResponse { body, .. } => body,
            _ => "",
        }
    }

    /// Fly's human message (`message`, else `error`, else the raw body), or the failure detail.
    pub fn message(&self) -> String {
        match &*self.0 {
            Repr::Status { message, .. } => message.clone(),
            Repr::Transport { source, .. } => source.to_string(),
            Repr::InvalidResponse { detail, .. } | Repr::InvalidRequest { detail, .. } => {
                detail.clone()
            }
        }
    }

    /// The body's machine-readable `status` code (`insufficient_capacity`, `name_taken`, …).
    pub fn fly_status(&self) -> Option<&str> {
        match &*self.0 {
            Repr::Status { fly_status, .. } => fly_status.as_deref(),
            _ => None,
        }
    }

    /// `Retry-After` sent with the response (seconds form), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match &*self.0 {
            Repr::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// `fly-request-id` of the failed response, for support tickets and logs.
    pub fn request_id(&self) -> Option<&str> {
        match &*self.0 {
            Repr::Status { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// The transport failure, when no response arrived.
    pub fn transport_error(&self) -> Option<&TransportError> {
        match &*self.0 {
            Repr::Transport { source, .. } => Some(source),
            _ => None,
        }
    }

    pub fn kind(&self) -> FlyErrorKind {
        match &*self.0 {
            Repr::Transport { source, .. } if source.kind == TransportErrorKind::InvalidRequest => {
                FlyErrorKind::InvalidRequest
            }
            Repr::Transport { .. } => FlyErrorKind::Transport,
            Repr::InvalidResponse { .. } => FlyErrorKind::InvalidResponse,
            Repr::InvalidRequest { .. } => FlyErrorKind::InvalidRequest,
            Repr::Status { status, .. } => match *status {
                404 => FlyErrorKind::NotFound,
                409 | 412 | 422 if self.capacity_marker_found() => FlyErrorKind::Capacity,
                422 | 409 if self.name_taken_marker_found() => FlyErrorKind::NameTaken,
                409 => FlyErrorKind::Conflict,
                412 => FlyErrorKind::PreconditionFailed,
                429 => FlyErrorKind::RateLimited,
                408 => FlyErrorKind::Timeout,
                401 | 403 => FlyErrorKind::Unauthorized,
                400 | 422 => FlyErrorKind::InvalidArgument,
                500..=599 => FlyErrorKind::ServerError,
                _ => FlyErrorKind::Other,
            },
        }
    }

    /// 404: the resource is confirmed gone. The only error that permits recreation or clearing ids.
    pub fn is_not_found(&self) -> bool {
        self.http_status() == Some(404)
    }

    /// The host/region lacks room (see the module docs for the exact rule). A 409/412 that is not
    /// capacity is logged as a warning, because the caller is about to treat it as a plain failure.
    pub fn is_capacity(&self) -> bool {
        let capacity = self.kind() == FlyErrorKind::Capacity;
        if !capacity && matches!(self.http_status(), Some(409 | 412)) {
            tracing::warn!(
                tag = "fly_error",
                reason = "unclassified_conflict",
                status = self.http_status(),
                context = self.context(),
                message = %self.message(),
                "Fly {} not treated as capacity",
                self.http_status().unwrap_or_default()
            );
        }
        capacity
    }

    /// Worth retrying later: 429, 408, 5xx or no response.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            FlyErrorKind::RateLimited
                | FlyErrorKind::Timeout
                | FlyErrorKind::ServerError
                | FlyErrorKind::Transport
        )
    }

    /// 429.
    pub fn is_rate_limited(&self) -> bool {
        self.http_status() == Some(429)
    }

    /// The name already exists (app create): 422 `name_taken`, or 409 as older docs describe.
    pub fn is_name_taken(&self) -> bool {
        self.kind() == FlyErrorKind::NameTaken
    }

    /// A resource of that kind is already there (IP allocate): 409 or 422, as the original treated it.
    pub fn is_already_exists(&self) -> bool {
        matches!(self.http_status(), Some(409 | 422))
    }

    fn capacity_marker_found(&self) -> bool {
        let Repr::Status {
            status,
            body,
            message,
            fly_status,
            ..
        } = &*self.0
        else {
            return false;
        };
        let code = fly_status.as_deref().map(str::to_ascii_lowercase);
        if code
            .as_deref()
            .is_some_and(|code| CAPACITY_STATUS_CODES.contains(&code))
        {
            return true;
        }
        if *status == 422 {
            return false;
        }
        let has_marker = |text: &str| {
            let text = text.to_ascii_lowercase();
            CAPACITY_MARKERS.iter().any(|marker| text.contains(marker))
        };
        code.as_deref().is_some_and(has_marker) || has_marker(message) || has_marker(body)
    }

    fn name_taken_marker_found(&self) -> bool {
        let Repr::Status {
            context,
            status,
            message,
            fly_status,
            ..
        } = &*self.0
        else {
            return false;
        };
        // Older docs answer an app-name collision with 409; only app creation can mean that.
        fly_status.as_deref() == Some("name_taken")
            || message.to_ascii_lowercase().contains("already been taken")
            || (*status == 409 && context == "create_app")
    }
}

fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_BODY_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
