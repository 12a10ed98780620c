//! A Fly.io simulator: Machines API, Fly Proxy, OpenClaw gateway stand-in and fault injection.
