//! Errors as Fly's API returns them: a status code and `{"error": "...", "status"?: "..."}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// One API failure, rendered in Fly's JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Fly's machine-readable `status` field (`insufficient_capacity`, `name_taken`, …).
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            code: None,
            retry_after_s: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid token")
    }

    pub fn app_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "app not found")
    }

    pub fn machine_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "machine not found")
    }

    pub fn volume_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "volume not found")
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn rate_limited() -> Self {
        Self {
            retry_after_s: Some(1),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.code {
            Some(code) => json!({"error": self.message, "status": code}),
            None => json!({"error": self.message}),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert("retry-after", value);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
