//! Domain logic of KiloClaw, free of I/O: ids, auth, instance record, store protocol, lifecycle, reconcile
//! planner, Fly API types.
//!
//! Every decision lives here as plain synchronous Rust over three boundary traits — [`kv::KeyValue`],
//! [`fly::FlyApi`] and [`clock::Clock`] — so the wasm components stay thin adapters and everything is
//! tested natively with the fakes in `testing` (enabled by the `testing` feature).
//!
//! Layers, bottom up:
//! - [`ids`], [`auth`]: sandbox id, app and volume names, gateway token, JWT verify/mint.
//! - [`kv`], [`clock`]: the key-value, time and randomness boundaries.
//! - [`record`]: the per-user instance record and its tolerant, schema-versioned JSON.
//! - [`store`]: compare-and-swap read-modify-write and the fenced single-writer lease (contract in its doc).
//! - [`due`]: the reconciler's time-bucketed due index.
//! - [`settings`], [`requests`]: configuration from Spin variables; platform request parsing with
//!   field-level errors.
//! - [`env`](mod@env), [`secrets`], [`machine`]: machine environment layers, envelope decryption and the
//!   encrypted machine env, Fly machine/volume request building.
//! - [`fly`]: Fly Machines API types, client and error classification.
//! - [`lifecycle`]: provision, start, stop, destroy, restart, config patches, reads, and the reconciler.
//! - [`signin`]: token revocation (cached pepper check), one-time access codes, attempt limits.
//! - [`edge`]: the router's pure decisions.

pub mod auth;
pub mod clock;
pub mod due;
pub mod edge;
pub mod env;
pub mod fleet;
pub mod fly;
pub mod ids;
pub mod kv;
pub mod lifecycle;
pub mod machine;
pub mod record;
pub mod redis_store;
pub mod requests;
pub mod secrets;
pub mod settings;
pub mod signin;
pub mod store;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
