//! The `kiloclaw` command: `up` (build, then serve the app locally against the Fly simulator or
//! the real Fly API), `token` (mint a user JWT), `fly-sim` (the simulator alone) and `compose`
//! (pre-composed components for Spin hosts without component dependencies).
//!
//! The library half exists so the end-to-end tests can reuse the secret handling and token
//! minting exactly as the binary does them.

pub mod args;
pub mod build;
pub mod commands;
pub mod manifest;
pub mod metric_labels;
pub mod project;
pub mod secrets;
pub mod token;
