//! Every failure the edge can answer with, mapped to a status, a JSON body and headers.
//!
//! Bodies keep the original's shapes (`{"error": …}` plus `hint`/`missing`/`details` where it had
//! them) so the Next.js clients keep working. Whose fault it is decides the status: the client's
//! (400/401/403/404/405/409/410), a dependency that may recover (503 with `Retry-After`, or 502 when
//! Fly refused outright), or ours (500, with the detail logged and not returned). Messages are built
//! here from fixed text and identifiers; secret values never reach them.

use serde_json::{Value, json};

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// An error answer, ready to serialise.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// Extra headers (`retry-after`, `allow`).
    pub headers: Vec<(&'static str, String)>,
}

impl ErrorResponse {
    fn new(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }

    fn retry_later(mut self) -> Self {
        self.headers
            .push(("retry-after", RETRY_AFTER_SECONDS.to_string()));
        self
    }

    /// The body as bytes.
    pub fn body_bytes(&self) -> Vec<u8> {
        self.body.to_string().into_bytes()
    }
}

/// One invalid request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Why a request failed, from every phase of the edge.
#[derive(Debug, Clone, PartialEq)]
pub enum EdgeError {
    // --- configuration ---
    /// Required settings are unset (names only). `platform` picks the original's body variant.
    MissingSettings {
        /// Variable names.
        missing: Vec<String>,
        /// True on platform routes (short body), false on user routes (with message and hint).
        platform: bool,
    },
    /// A secret the route needs is unset (`nextauth_secret`, `internal_api_secret`).
    ServerConfiguration,
    /// `gateway_token_secret` is unset.
    GatewayTokenNotConfigured,

    // --- authentication ---
    /// No credentials on a user route.
    AuthenticationRequired,
    /// A token that does not verify; the message says why.
    InvalidToken(String),
    /// Revocation check: no such user.
    UserNotFound,
    /// Revocation check: pepper mismatch.
    TokenRevoked,
    /// Revocation check: the database could not be asked.
    AuthenticationUnavailable,
    /// Wrong or missing internal API key.
    Forbidden,
    /// The proxy was reached without a session.
    NoSession,

    // --- request shape ---
    /// The body is not JSON (or not a JSON object).
    MalformedJson,
    /// Schema validation failed.
    InvalidRequest(Vec<FieldError>),
    /// A required query parameter is missing; the message is the original's.
    MissingQuery(&'static str),
    /// No such platform route.
    NotFound,
    /// Known platform path, wrong method.
    MethodNotAllowed {
        /// The accepted method.
        allow: &'static str,
    },
    /// A WebSocket upgrade, which cannot pass through Spin.
    WebSocketNotProxied {
        /// The direct URL the client should use instead (`wss://{app}.fly.dev`), when known.
        direct_url: Option<String>,
    },

    // --- instance state ---
    /// No instance, or no machine yet.
    NotProvisioned,
    /// The instance is being destroyed.
    BeingDestroyed,
    /// The instance is not running (restart, crash recovery).
    NotRunning,
    /// Another operation holds the instance's lease.
    Busy,

    // --- dependencies ---
    /// Fly is unavailable or rate limiting; detail for the log only.
    FlyUnavailable(String),
    /// Fly refused the request.
    FlyRejected {
        /// Fly's status.
        status: u16,
        /// Fly's message.
        message: String,
    },
    /// The key-value store failed; detail for the log only.
    StoreUnavailable(String),
    /// The machine could not be reached and recovery did not help.
    InstanceUnreachable {
        /// Whether a restart was attempted (picks the original's message).
        after_restart: bool,
    },
    /// The user's secrets cannot be decrypted; the message names the field, never a value, and is
    /// returned as the original returned it.
    Secrets(String),
    /// A bug or unexpected state; detail for the log only.
    Internal(String),
}

impl EdgeError {
    /// The answer for this error.
    pub fn response(&self) -> ErrorResponse {
        match self {
            EdgeError::MissingSettings { missing, platform: true } => {
                ErrorResponse::new(503, json!({"error": "Configuration error", "missing": missing}))
            }
            EdgeError::MissingSettings { missing, platform: false } => ErrorResponse::new(
                503,
                json!({
                    "error": "Configuration error",
                    "message": "Required environment variables are not configured",
                    "missing": missing,
                    "hint": "Set these as Spin variables (SPIN_VARIABLE_<NAME> or your host's variable provider)",
                }),
            ),
            EdgeError::ServerConfiguration => {
                ErrorResponse::new(500, json!({"error": "Server configuration error"}))
            }
            EdgeError::GatewayTokenNotConfigured => {
                ErrorResponse::new(503, json!({"error": "GATEWAY_TOKEN_SECRET is not configured"}))
            }
            EdgeError::AuthenticationRequired => {
                ErrorResponse::new(401, json!({"error": "Authentication required"}))
            }
            EdgeError::InvalidToken(message) => ErrorResponse::new(401, json!({"error": message})),
            EdgeError::UserNotFound => ErrorResponse::new(401, json!({"error": "User not found"})),
            EdgeError::TokenRevoked => ErrorResponse::new(401, json!({"error": "Token revoked"})),
            EdgeError::AuthenticationUnavailable => {
                ErrorResponse::new(500, json!({"error": "Authentication service unavailable"}))
            }
            EdgeError::Forbidden => ErrorResponse::new(403, json!({"error": "Forbidden"})),
            EdgeError::NoSession => ErrorResponse::new(
                401,
                json!({"error": "Authentication required", "hint": "No active session. Please log in."}),
            ),
            EdgeError::MalformedJson => ErrorResponse::new(400, json!({"error": "Malformed JSON body"})),
            EdgeError::InvalidRequest(fields) => {
                let mut details = serde_json::Map::new();
                for field in fields {
                    let entry = details.entry(field.field.clone()).or_insert_with(|| json!([]));
                    if let Value::Array(messages) = entry {
                        messages.push(Value::String(field.message.clone()));
                    }
                }
                ErrorResponse::new(400, json!({"error": "Invalid request", "details": details}))
            }
            EdgeError::MissingQuery(message) => ErrorResponse::new(400, json!({"error": message})),
            EdgeError::NotFound => ErrorResponse::new(404, json!({"error": "Not found"})),
            EdgeError::MethodNotAllowed { allow } => {
                let mut response = ErrorResponse::new(405, json!({"error": "Method not allowed"}));
                response.headers.push(("allow", (*allow).to_owned()));
                response
            }
            EdgeError::WebSocketNotProxied { direct_url } => ErrorResponse::new(
                426,
                json!({
                    "error": "WebSocket connections are not proxied",
                    "hint": "Connect the WebSocket directly to your instance's gateway URL and authenticate with the gateway token.",
                    "gatewayUrl": direct_url,
                }),
            ),
            EdgeError::NotProvisioned => ErrorResponse::new(
                404,
                json!({
                    "error": "Instance not provisioned",
                    "hint": "Your instance has not been created yet. Start it from the dashboard.",
                }),
            ),
            EdgeError::BeingDestroyed => ErrorResponse::new(
                409,
                json!({"error": "Instance is being destroyed", "hint": "This instance is being torn down."}),
            ),
            EdgeError::NotRunning => ErrorResponse::new(
                409,
                json!({
                    "error": "Instance is not running",
                    "hint": "Your instance may not be running. Start it from the dashboard.",
                }),
            ),
            EdgeError::Busy => ErrorResponse::new(
                503,
                json!({"error": "Another operation on this instance is in progress", "retryable": true}),
            )
            .retry_later(),
            EdgeError::FlyUnavailable(_) => ErrorResponse::new(
                503,
                json!({"error": "Fly API temporarily unavailable", "retryable": true}),
            )
            .retry_later(),
            EdgeError::FlyRejected { status, message } => ErrorResponse::new(
                502,
                json!({"error": "Fly API request failed", "status": status, "message": message}),
            ),
            EdgeError::StoreUnavailable(_) => ErrorResponse::new(
                503,
                json!({"error": "Instance store temporarily unavailable", "retryable": true}),
            )
            .retry_later(),
            EdgeError::InstanceUnreachable { after_restart: true } => {
                ErrorResponse::new(503, json!({"error": "Instance not reachable after restart attempt"}))
                    .retry_later()
            }
            EdgeError::InstanceUnreachable { after_restart: false } => ErrorResponse::new(
                503,
                json!({
                    "error": "Instance not reachable",
                    "hint": "Your instance may not be running. Start it from the dashboard.",
                }),
            ),
            EdgeError::Secrets(message) => ErrorResponse::new(500, json!({"error": message})),
            EdgeError::Internal(_) => ErrorResponse::new(500, json!({"error": "Internal error"})),
        }
    }

    /// Detail worth logging (never returned to the client), if any.
    pub fn log_detail(&self) -> Option<&str> {
        match self {
            EdgeError::FlyUnavailable(detail)
            | EdgeError::StoreUnavailable(detail)
            | EdgeError::Internal(detail) => Some(detail),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_whose_fault_it_is() {
        let cases = [
            (EdgeError::MalformedJson, 400),
            (EdgeError::AuthenticationRequired, 401),
            (EdgeError::Forbidden, 403),
            (EdgeError::NotProvisioned, 404),
            (EdgeError::NotFound, 404),
            (EdgeError::MethodNotAllowed { allow: "POST" }, 405),
            (EdgeError::BeingDestroyed, 409),
            (EdgeError::WebSocketNotProxied { direct_url: None }, 426),
            (EdgeError::ServerConfiguration, 500),
            (EdgeError::Internal("x".into()), 500),
            (EdgeError::Secrets("Decryption failed: x".into()), 500),
            (
                EdgeError::FlyRejected {
                    status: 422,
                    message: "bad".into(),
                },
                502,
            ),
            (EdgeError::Busy, 503),
            (EdgeError::FlyUnavailable("x".into()), 503),
        ];
        for (error, status) in cases {
            assert_eq!(error.response().status, status, "{error:?}");
        }
    }

    #[test]
    fn retryable_errors_carry_retry_after_and_internal_detail_stays_out() {
        let busy = EdgeError::Busy.response();
        assert!(
            busy.headers
                .iter()
                .any(|(n, v)| *n == "retry-after" && v == "5")
        );
        let internal =
            EdgeError::Internal("record v7 did not decode: secret=abc".into()).response();
        assert!(!internal.body.to_string().contains("secret"));
        let fly = EdgeError::FlyUnavailable("token xyz".into()).response();
        assert!(!fly.body.to_string().contains("xyz"));
    }

    #[test]
    fn original_body_shapes() {
        assert_eq!(
            EdgeError::MissingSettings {
                missing: vec!["fly_api_token".into()],
                platform: true
            }
            .response()
            .body,
            json!({"error": "Configuration error", "missing": ["fly_api_token"]})
        );
        let invalid = EdgeError::InvalidRequest(vec![
            FieldError {
                field: "userId".into(),
                message: "Required".into(),
            },
            FieldError {
                field: "userId".into(),
                message: "Too short".into(),
            },
        ]);
        assert_eq!(
            invalid.response().body,
            json!({"error": "Invalid request", "details": {"userId": ["Required", "Too short"]}})
        );
        let allow = EdgeError::MethodNotAllowed { allow: "PATCH" }.response();
        assert_eq!(allow.headers, vec![("allow", "PATCH".to_owned())]);
    }
}
