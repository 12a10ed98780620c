//! Which headers cross the proxy, in each direction (original-behaviour.md §3 step 6, with §10 #20
//! fixed).
//!
//! Towards the machine, removed: hop-by-hop headers (RFC 9110 §7.6.1 plus the ones `Connection`
//! names), `host` (the outbound request carries its own authority), everything a client could use
//! to steer Fly Proxy (`fly-*`: `fly-force-instance-id`, `fly-prefer-region`, `fly-replay…`) and
//! Spin's `spin-*` request metadata, the `Authorization` header and the `kiloclaw-auth` cookie (the
//! machine authenticates with the gateway token, never with the user's session), the
//! `x-internal-api-key` (a backend secret, never the machine's business), and every header a client
//! could use to pose as someone else (`forwarded`, `x-forwarded-*`, `x-real-ip`). Added:
//! `fly-force-instance-id` naming the user's machine, and `x-forwarded-for` with the client address
//! the host saw (`spin-client-addr`, which the host sets itself). Everything else (other cookies,
//! `origin`, `content-type`, …) passes unchanged.
//!
//! Back to the client, removed: hop-by-hop headers, which wasi:http refuses to carry anyway, and
//! `content-length`, because the body is streamed back and the host frames it (a `HEAD` response
//! would otherwise announce bytes that never come).
//!
//! The request body is forwarded byte for byte, so its `content-length` stays valid and is kept.

use super::credentials::{SESSION_COOKIE, without_cookie};

/// A header as Spin hands it over: lower- or mixed-case name, raw bytes.
pub type Header = (String, Vec<u8>);

/// Headers that describe one connection, not the message, plus those wasi:http forbids guests to set.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "host",
];

/// Client-sent headers that claim who the client is or how it connected: only the host knows.
fn is_client_claim(name: &str) -> bool {
    name == "forwarded"
        || name == "x-real-ip"
        || name.starts_with("x-forwarded-")
        || name == "x-internal-api-key"
}

/// The header Fly Proxy uses to pin a request to one machine.
pub const FORCE_INSTANCE_HEADER: &str = "fly-force-instance-id";

fn is_hop_by_hop(name: &str, connection_listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || connection_listed.iter().any(|listed| listed == name)
}

/// Header names listed in `Connection` headers (lower-cased).
fn connection_listed(headers: &[Header]) -> Vec<String> {
    headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .filter_map(|(_, value)| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// The headers to send to the user's machine for an incoming request's `headers`.
pub fn upstream_request_headers(headers: &[Header], machine_id: &str) -> Vec<Header> {
    let listed = connection_listed(headers);
    let mut out = Vec::with_capacity(headers.len() + 2);
    let mut client_ip = None;
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if lower == "spin-client-addr" {
            client_ip = std::str::from_utf8(value)
                .ok()
                .map(crate::signin::attempts::client_ip);
        }
        if is_hop_by_hop(&lower, &listed)
            || lower.starts_with("fly-")
            || lower.starts_with("spin-")
            || lower == "authorization"
            || is_client_claim(&lower)
        {
            continue;
        }
        if lower == "cookie" {
            let Ok(text) = std::str::from_utf8(value) else {
                // Not text, so it cannot be parsed: drop it rather than risk forwarding the session.
                continue;
            };
            if let Some(kept) = without_cookie(text, SESSION_COOKIE) {
                out.push((lower, kept.into_bytes()));
            }
            continue;
        }
        out.push((lower, value.clone()));
    }
    if let Some(ip) = client_ip {
        out.push(("x-forwarded-for".to_owned(), ip.into_bytes()));
    }
    out.push((
        FORCE_INSTANCE_HEADER.to_owned(),
        machine_id.as_bytes().to_vec(),
    ));
    out
}

/// The headers of the machine's response to pass back to the client.
pub fn downstream_response_headers(headers: &[Header]) -> Vec<Header> {
    let listed = connection_listed(headers);
    headers
        .iter()
        .filter(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            !is_hop_by_hop(&lower, &listed) && lower != "content-length"
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, value: &str) -> Header {
        (name.to_owned(), value.as_bytes().to_vec())
    }

    fn names(headers: &[Header]) -> Vec<&str> {
        headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn request_headers_lose_routing_credentials_and_hop_by_hop() {
        let incoming = vec![
            h("Host", "claw.example"),
            h("Authorization", "Bearer user-jwt"),
            h("Cookie", "theme=dark; kiloclaw-auth=user-jwt"),
            h("fly-force-instance-id", "someone-elses-machine"),
            h("Fly-Prefer-Region", "iad"),
            h("fly-replay", "app=other"),
            h("spin-full-url", "http://x/"),
            h("Connection", "keep-alive, X-Private"),
            h("x-private", "1"),
            h("Keep-Alive", "timeout=5"),
            h("Transfer-Encoding", "chunked"),
            h("Content-Length", "3"),
            h("Upgrade", "h2c"),
            h("Content-Type", "application/json"),
            h("Origin", "https://claw.example"),
            h("x-custom", "kept"),
        ];
        let out = upstream_request_headers(&incoming, "m-123");
        assert_eq!(
            names(&out),
            vec![
                "cookie",
                "content-length",
                "content-type",
                "origin",
                "x-custom",
                FORCE_INSTANCE_HEADER
            ]
        );
        assert_eq!(out[0].1, b"theme=dark".to_vec());
        assert_eq!(
            out.last().map(|(_, v)| v.as_slice()),
            Some(b"m-123".as_slice())
        );
        assert!(
            !out.iter()
                .any(|(_, v)| v.windows(8).any(|w| w == b"user-jwt"))
        );
    }

    #[test]
    fn client_claims_about_identity_and_the_internal_key_never_reach_the_machine() {
        let incoming = vec![
            h("X-Forwarded-For", "10.9.9.9"),
            h("x-forwarded-host", "admin.internal"),
            h("X-Forwarded-Proto", "https"),
            h("Forwarded", "for=10.9.9.9"),
            h("X-Real-IP", "10.9.9.9"),
            h("x-internal-api-key", "backend-secret"),
            h("spin-client-addr", "203.0.113.7:51234"),
            h("accept", "*/*"),
        ];
        let out = upstream_request_headers(&incoming, "m");
        assert_eq!(
            out,
            vec![
                h("accept", "*/*"),
                h("x-forwarded-for", "203.0.113.7"),
                h(FORCE_INSTANCE_HEADER, "m"),
            ]
        );
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// Whatever a client sends — any names (Fly's, Spin's, forwarding, credentials, in any
        /// case), any values, any `Connection` list — the machine gets exactly one
        /// `fly-force-instance-id`, the authenticated user's, and never the session cookie, the
        /// `Authorization` header or the internal key.
        #[test]
        fn a_request_only_ever_reaches_the_authenticated_users_machine(
            headers in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        proptest::sample::select(vec![
                            "fly-force-instance-id", "FLY-FORCE-INSTANCE-ID", "Fly-Replay",
                            "fly-prefer-region", "spin-client-addr", "Connection", "cookie",
                            "Authorization", "x-forwarded-for", "Forwarded", "x-internal-api-key",
                            "host", "x-custom",
                        ]).prop_map(str::to_owned),
                        "[A-Za-z-]{1,20}",
                    ],
                    proptest::prop_oneof![
                        proptest::sample::select(vec![
                            "someone-elses-machine", "kiloclaw-auth=session-token",
                            "a=1; kiloclaw-auth=session-token; b=2", "fly-force-instance-id, x",
                            "Bearer session-token",
                        ]).prop_map(str::to_owned),
                        "[ -~]{0,30}",
                    ],
                ),
                0..12,
            ),
            machine in "[a-f0-9]{14}".prop_map(String::from),
        ) {
            let incoming: Vec<Header> =
                headers.iter().map(|(n, v)| (n.clone(), v.as_bytes().to_vec())).collect();
            let out = upstream_request_headers(&incoming, &machine);
            let pins: Vec<&Header> = out
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(FORCE_INSTANCE_HEADER))
                .collect();
            proptest::prop_assert_eq!(pins.len(), 1);
            proptest::prop_assert_eq!(&pins[0].1, &machine.as_bytes().to_vec());
            for (name, value) in &out {
                proptest::prop_assert!(!name.starts_with("fly-") || name == FORCE_INSTANCE_HEADER);
                proptest::prop_assert!(!name.starts_with("spin-"));
                proptest::prop_assert!(name != "authorization" && name != "x-internal-api-key");
                // The session cookie never travels on (other cookies and headers do, as sent).
                proptest::prop_assert!(
                    name != "cookie" || !value.windows(14).any(|w| w == b"kiloclaw-auth=")
                );
            }
        }
    }

    #[test]
    fn a_cookie_header_holding_only_the_session_is_dropped() {
        let out = upstream_request_headers(&[h("cookie", "kiloclaw-auth=jwt")], "m");
        assert_eq!(names(&out), vec![FORCE_INSTANCE_HEADER]);
    }

    #[test]
    fn response_headers_keep_multiple_values_and_lose_hop_by_hop() {
        let upstream = vec![
            h("set-cookie", "a=1"),
            h("set-cookie", "b=2"),
            h("transfer-encoding", "chunked"),
            h("connection", "close"),
            h("content-type", "text/html"),
        ];
        let out = downstream_response_headers(&upstream);
        assert_eq!(
            names(&out),
            vec!["set-cookie", "set-cookie", "content-type"]
        );
    }
}
