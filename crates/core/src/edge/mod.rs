//! The pure half of the `router` component (the HTTP edge): everything it decides without I/O.
//!
//! The router follows a proxy's phases (authenticate → resolve → rewrite headers → forward → map
//! failures); each phase's decision lives here so it is tested natively and fast, and the component
//! only moves bytes between Spin's HTTP types, the `auth`/`instances` imports and these functions.
//!
//! - [`routes`]: which handler a method and path reach, and which settings a scope requires.
//! - [`credentials`]: reading the Bearer token and the `kiloclaw-auth` cookie, and removing it.
//! - [`headers`]: which request headers reach the user's machine and which response headers return.
//! - [`proxy`]: the upstream URL, WebSocket detection, and when a failed forward may be retried.
//! - [`errors`]: every failure as a status, a JSON body and headers compatible with the original.
//! - [`body`]: JSON and form body parsing with client errors (400), never 500.
//! - [`access_gateway`]: the access-code pages, HTML-escaped, and the session cookie.
//! - [`redact`]: the request line as logged, with secret-looking query values hidden.

pub mod access_gateway;
pub mod body;
pub mod credentials;
pub mod errors;
pub mod headers;
pub mod proxy;
pub mod redact;
pub mod routes;
