//! The kiloclaw command: up, token, fly-sim, compose.
fn main() {}
