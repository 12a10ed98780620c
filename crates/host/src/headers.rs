//! The `spin-*` request headers Spin's HTTP trigger adds (`spin/crates/trigger-http/src/headers.rs`).
//!
//! Any `spin-*` header the client sent is removed first, so a guest can trust these values.

use crate::routes::RouteMatch;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::SocketAddr;

/// Computes the headers for a routed request.
pub fn spin_headers(
    scheme: &str,
    host: Option<&str>,
    path_and_query: &str,
    matched: &RouteMatch,
    client: SocketAddr,
) -> Vec<(String, String)> {
    let raw = &matched.target.raw_route;
    let component_route = raw.strip_suffix("/...").unwrap_or(raw);
    let mut out = vec![
        (
            "spin-full-url".to_string(),
            format!("{scheme}://{}{path_and_query}", host.unwrap_or("localhost")),
        ),
        ("spin-path-info".to_string(), matched.path_info.clone()),
        (
            "spin-matched-route".to_string(),
            matched.target.based_route.clone(),
        ),
        ("spin-base-path".to_string(), "/".to_string()),
        ("spin-raw-component-route".to_string(), raw.clone()),
        (
            "spin-component-route".to_string(),
            component_route.to_string(),
        ),
        ("spin-client-addr".to_string(), client.to_string()),
    ];
    for (name, value) in &matched.named {
        let header_name = name
            .to_ascii_uppercase()
            .replace('_', "-")
            .to_ascii_lowercase();
        out.push((format!("spin-path-match-{header_name}"), value.clone()));
    }
    out
}

/// Removes client-sent `spin-*` headers and inserts the computed ones.
pub fn apply(headers: &mut HeaderMap, computed: Vec<(String, String)>) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("spin-"))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(&name);
    }
    for (name, value) in computed {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(n), Ok(v)) => {
                headers.insert(n, v);
            }
            _ => {
                tracing::warn!(tag = "headers", header = %name, "value not representable; header skipped")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Router;

    #[test]
    fn spin_reference_example() {
        let router = Router::build([(0, "/users/:userid/cart/...")]).expect("route");
        let m = router.route("/users/1/cart/items/3/edit").expect("match");
        let h = spin_headers(
            "https",
            Some("example.com:8080"),
            "/users/1/cart/items/3/edit?theme=pink",
            &m,
            "127.0.0.1:53152".parse().expect("addr"),
        );
        let get = |n: &str| {
            h.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .unwrap_or("<missing>")
        };
        assert_eq!(
            get("spin-full-url"),
            "https://example.com:8080/users/1/cart/items/3/edit?theme=pink"
        );
        assert_eq!(get("spin-path-info"), "/items/3/edit");
        assert_eq!(get("spin-matched-route"), "/users/:userid/cart/...");
        assert_eq!(get("spin-base-path"), "/");
        assert_eq!(get("spin-raw-component-route"), "/users/:userid/cart/...");
        assert_eq!(get("spin-component-route"), "/users/:userid/cart");
        assert_eq!(get("spin-client-addr"), "127.0.0.1:53152");
        assert_eq!(get("spin-path-match-userid"), "1");
    }

    #[test]
    fn underscore_capture_names_become_dashes_and_spoofs_are_removed() {
        let router = Router::build([(0, "/:path_segment")]).expect("route");
        let m = router.route("/x").expect("match");
        let h = spin_headers("http", None, "/x", &m, "127.0.0.1:1".parse().expect("addr"));
        assert!(
            h.iter()
                .any(|(k, v)| k == "spin-path-match-path-segment" && v == "x")
        );
        assert!(
            h.iter()
                .any(|(k, v)| k == "spin-full-url" && v == "http://localhost/x")
        );
        let mut headers = HeaderMap::new();
        headers.insert("spin-client-addr", HeaderValue::from_static("6.6.6.6:6"));
        headers.insert("spin-evil", HeaderValue::from_static("1"));
        apply(&mut headers, h);
        assert_eq!(headers["spin-client-addr"], "127.0.0.1:1");
        assert!(!headers.contains_key("spin-evil"));
    }
}
