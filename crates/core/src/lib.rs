//! Domain logic of KiloClaw, free of I/O: ids, auth, instance record, store protocol, lifecycle, reconcile
//! planner, Fly API types.
//!
//! Every decision lives here as plain synchronous Rust over three boundary traits — [`kv::KeyValue`],
//! [`fly::FlyApi`] and [`clock::Clock`] — so the wasm components stay thin adapters and everything is
//! tested natively with the fakes in [`testing`].

pub mod auth;
pub mod clock;
pub mod due;
pub mod edge;
pub mod env;
pub mod fly;
pub mod ids;
pub mod kv;
pub mod lifecycle;
pub mod machine;
pub mod record;
pub mod requests;
pub mod settings;
pub mod store;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
