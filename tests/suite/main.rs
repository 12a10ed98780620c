//! The end-to-end suite: one test binary, one module per concern.
//!
//! - `imports`: every built component stays inside what Spin hosts provide (WASI 0.2,
//!   `fermyon:spin@2.0.0`, `wasi:keyvalue@0.2.0-draft2`, the cron world) plus our own WIT, and
//!   exports what its role requires.
//! - `manifest`: `spin.toml` loads in our host and wires the components as the WIT needs.
//! - `e2e`: the running system over HTTP: the components in our host against the Fly simulator.

mod e2e;
mod imports;
mod manifest;
