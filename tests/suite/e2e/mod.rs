//! End-to-end scenarios: the four real wasm components, composed and run by our Spin-compatible
//! host, against the in-process Fly simulator, driven over HTTP only (plus the simulator's admin
//! API to look at and disturb Fly's side). Each test starts its own system on 127.0.0.1:0, so tests
//! run in parallel and never see each other's state.

mod database;
mod sim;
mod system;

mod chaos;
mod compose;
mod errors;
mod isolation;
mod lifecycle;
mod metrics;
mod on_spin;
mod openapi;
mod reconcile;
mod recovery;
mod secrets;
mod signin;
