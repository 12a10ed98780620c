//! The end-to-end suite: one test binary, one module per concern.
//!
//! - `imports`: every built component stays inside what Spin hosts provide (WASI 0.2,
//!   `fermyon:spin@2.0.0`, `wasi:keyvalue@0.2.0-draft2`, the cron world) plus our own WIT, and
//!   exports what its role requires.
//! - `manifest`: `spin.toml` loads in our host and wires the components as the WIT needs.
//! - `e2e`: the running system over HTTP: the components in our host, and on real Spin
//!   (`e2e::on_spin`), against the Fly simulator.
//! - `spin`: running the bundled real Spin CLI; `spin_parity`: manifests Spin refuses are
//!   refused by our host too, with the same reason.

mod e2e;
mod imports;
mod manifest;
mod spin;
mod spin_parity;
