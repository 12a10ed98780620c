//! End-to-end tests: the real wasm components in the host against the Fly simulator.
