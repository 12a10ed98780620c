//! [`LifecycleError`]: every way a lifecycle operation fails, with its HTTP status and retryability.

use crate::env::EnvError;
use crate::fly::FlyError;
use crate::ids::IdError;
use crate::store::StoreError;

/// Why a lifecycle operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LifecycleError {
    /// The user id cannot become a sandbox id (empty, too long). HTTP 400; not retryable.
    #[error(transparent)]
    InvalidUserId(#[from] IdError),
    /// No provisioned instance for this user. HTTP 404 `Instance not provisioned`; not retryable.
    #[error("Instance not provisioned")]
    NotProvisioned,
    /// The instance is being destroyed, so `operation` is refused. HTTP 409; retry after the destroy.
    #[error("Cannot {operation}: instance is being destroyed")]
    Destroying {
        /// What was attempted (`provision`, `start`, …).
        operation: &'static str,
    },
    /// Restart needs a running instance with a machine. HTTP 409 (the route answers `{success:false}`).
    #[error("Instance is not running")]
    NotRunning,
    /// Neither a per-user app nor the legacy `fly_app_name` is available. HTTP 503; fix configuration.
    #[error("No Fly app name: flyAppName not set and FLY_APP_NAME not configured")]
    NoFlyApp,
    /// The derived per-user app name belongs to another user (an 80-bit hash collision). HTTP 500; needs
    /// an operator.
    #[error("Fly app {app} belongs to another user (app name collision)")]
    AppNameCollision {
        /// The app name.
        app: String,
    },
    /// The machine environment could not be built (missing private key, bad stored names). HTTP 500.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The store failed; see [`StoreError::is_retryable`]. `Busy` and `LeaseLost` are HTTP 409, the rest
    /// 503 or 500. `LeaseLost` means this operation stalled past its lease and another one took the
    /// instance over: it stopped (before its next Fly call, or without writing its result) and the
    /// request may be retried, to act on the new holder's result (the `instances` component answers
    /// both as "busy").
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A Fly call failed. Transient failures (429, 408, 5xx, no response) are HTTP 503 and retryable;
    /// others are HTTP 502 and need a different request or an operator.
    #[error("{operation}: {source}")]
    Fly {
        /// Which step failed.
        operation: &'static str,
        /// Fly's error, classified.
        source: FlyError,
    },
    /// No region could host a volume (all capacity errors, or no regions). HTTP 503; retryable later.
    #[error("no region could create a volume: {0}")]
    NoRegion(String),
}

impl LifecycleError {
    /// Wraps a Fly error with the step it happened in.
    pub fn fly(operation: &'static str, source: FlyError) -> Self {
        Self::Fly { operation, source }
    }

    /// Whether the same request may succeed later without changes.
    pub fn is_retryable(&self) -> bool {
        match self {
            // The commit itself must not be retried (the new holder's view wins), the request may.
            Self::Store(StoreError::LeaseLost) => true,
            Self::Store(error) => error.is_retryable(),
            Self::Fly { source, .. } => source.is_transient() || source.is_capacity(),
            Self::Destroying { .. } | Self::NoRegion(_) => true,
            _ => false,
        }
    }

    /// The HTTP status the platform API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidUserId(_) => 400,
            Self::NotProvisioned => 404,
            Self::Destroying { .. }
            | Self::NotRunning
            | Self::Store(StoreError::Busy { .. } | StoreError::LeaseLost) => 409,
            Self::Store(error) if error.is_retryable() => 503,
            Self::NoFlyApp | Self::NoRegion(_) => 503,
            Self::Fly { source, .. } if source.is_transient() => 503,
            Self::Fly { .. } => 502,
            Self::AppNameCollision { .. } | Self::Env(_) | Self::Store(_) => 500,
        }
    }
}
