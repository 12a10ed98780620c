//! Fly.io Machines API: wire types, the [`FlyApi`] trait, request building, response parsing and error
//! classification, all free of I/O.
//!
//! The only I/O point is [`HttpTransport`], a tiny synchronous trait that a caller implements over its own
//! HTTP stack (wasi:http inside a component, a blocking client in tests). [`FlyClient`] combines a transport
//! with the pure request builder ([`FlyRequests`]) and response parser ([`response`]) and implements
//! [`FlyApi`], so the same code drives the real API at `https://api.machines.dev` and the local simulator.
//!
//! Facts about paths, JSON names and status codes come from `shared/reference/fly-machines-api.md`.
//! Decisions where that sheet says "unconfirmed" are noted where they are made.

mod api;
mod client;
mod error;
mod operation;
mod request;
pub mod response;
mod transport;
mod types;

pub use api::FlyApi;
pub use client::{FlyClient, FlyClientConfig};
pub use error::{FlyError, FlyErrorKind};
pub use operation::operation_of;
pub use request::{DEFAULT_BASE_URL, FlyRequests, MAX_WAIT_TIMEOUT_S, MIN_WAIT_TIMEOUT_S};
pub use transport::{
    HttpMethod, HttpRequest, HttpResponse, HttpTransport, TransportError, TransportErrorKind,
};
pub use types::*;

#[cfg(test)]
mod tests;
