//! Integration tests: the simulator on 127.0.0.1 driven over HTTP by `kiloclaw_core::fly::FlyClient`
//! (the control plane's own client) through a blocking transport, plus raw HTTP and WebSocket clients for
//! the proxy, the gateway stand-in and the admin API.

mod apps;
mod faults;
mod machines;
mod orgs;
mod proxy;
mod support;
mod volumes;
