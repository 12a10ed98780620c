//! The forward phase's decisions (original-behaviour.md §3, with §10 #20 fixed): the upstream URL,
//! WebSocket detection (WebSockets cannot pass through Spin — DESIGN decision 6), and when a failed
//! forward may trigger crash recovery.

use super::headers::Header;

/// The placeholder in `fly_proxy_base_url` replaced by the instance's Fly app name.
pub const APP_PLACEHOLDER: &str = "{app}";

/// The default `fly_proxy_base_url`.
pub const DEFAULT_PROXY_BASE_URL: &str = "https://{app}.fly.dev";

/// The proxy base for an app: `{app}` in the template replaced by `app_name`, no trailing slash.
/// A template without the placeholder (the local simulator's `http://127.0.0.1:PORT`) is used as is;
/// the machine is then located by `fly-force-instance-id` alone.
pub fn proxy_base(template: &str, app_name: &str) -> String {
    template
        .replace(APP_PLACEHOLDER, app_name)
        .trim_end_matches('/')
        .to_owned()
}

/// The upstream URL for a request target (`/path?query`).
pub fn upstream_url(template: &str, app_name: &str, path_and_query: &str) -> String {
    let target = if path_and_query.starts_with('/') {
        path_and_query.to_owned()
    } else {
        format!("/{path_and_query}")
    };
    format!("{}{target}", proxy_base(template, app_name))
}

/// The URL a browser's WebSocket should use to reach the gateway directly (`wss://{app}.fly.dev`).
pub fn direct_gateway_url(template: &str, app_name: &str) -> String {
    let base = proxy_base(template, app_name);
    if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base
    }
}

/// True for a WebSocket handshake. Hosts strip `Upgrade`/`Connection` before the component sees
/// them (wasi:http forbidden headers), so the `sec-websocket-key` a handshake must carry counts too.
pub fn is_websocket_upgrade(headers: &[Header]) -> bool {
    headers.iter().any(|(name, value)| {
        (name.eq_ignore_ascii_case("upgrade")
            && std::str::from_utf8(value)
                .is_ok_and(|v| v.to_ascii_lowercase().contains("websocket")))
            || name.eq_ignore_ascii_case("sec-websocket-key")
    })
}

/// True when an upstream status may mean "Fly Proxy could not reach the machine" (502/503/504), so
/// crash recovery is worth asking for. Recovery itself decides whether a retry is safe: it retries
/// only when it really restarted the machine, since otherwise the status came from the app.
pub fn may_be_unreachable_machine(status: u16) -> bool {
    matches!(status, 502..=504)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        assert_eq!(
            upstream_url(DEFAULT_PROXY_BASE_URL, "acct-1", "/ui/index.html?x=1"),
            "https://acct-1.fly.dev/ui/index.html?x=1"
        );
        assert_eq!(
            upstream_url("http://127.0.0.1:9000/", "acct-1", "/"),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(
            upstream_url("http://127.0.0.1:9000", "a", "x"),
            "http://127.0.0.1:9000/x"
        );
        assert_eq!(
            direct_gateway_url(DEFAULT_PROXY_BASE_URL, "acct-1"),
            "wss://acct-1.fly.dev"
        );
        assert_eq!(
            direct_gateway_url("http://127.0.0.1:9000", "a"),
            "ws://127.0.0.1:9000"
        );
    }

    #[test]
    fn websocket_detection() {
        let h = |n: &str, v: &str| (n.to_owned(), v.as_bytes().to_vec());
        assert!(is_websocket_upgrade(&[h("Upgrade", "WebSocket")]));
        assert!(is_websocket_upgrade(&[h(
            "sec-websocket-key",
            "dGhlIHNhbXBsZQ=="
        )]));
        assert!(!is_websocket_upgrade(&[
            h("upgrade", "h2c"),
            h("accept", "*/*")
        ]));
    }

    #[test]
    fn recovery_candidates() {
        assert!(may_be_unreachable_machine(502));
        assert!(may_be_unreachable_machine(503));
        assert!(!may_be_unreachable_machine(500));
        assert!(!may_be_unreachable_machine(404));
    }
}
