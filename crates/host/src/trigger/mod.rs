//! Triggers: the HTTP server and the cron scheduler. Both create a fresh instance per event
//! from a pre-instantiated component, as Spin does for WASI 0.2 guests.

pub mod cron;
pub mod http;
