//! Route precedence, Spin's `spin-*` headers, well-known endpoints, static responses, errors.

use crate::harness::Scenario;

#[tokio::test]
async fn exact_beats_wildcard_and_longest_prefix_wins() {
    let s = Scenario::new("routing", &[]);
    let host = s.start().await;
    let exact = host.get_json("/exact?op=headers").await;
    assert_eq!(exact["headers"]["spin-raw-component-route"], "/exact");
    let cart = host.get_json("/users/42/cart/items/3?op=headers").await;
    assert_eq!(
        cart["headers"]["spin-raw-component-route"],
        "/users/:user_id/cart/..."
    );
    let other = host.get_json("/somewhere/else?op=headers").await;
    assert_eq!(other["headers"]["spin-raw-component-route"], "/...");
    host.stop().await;
}

#[tokio::test]
async fn spin_headers_have_spins_exact_values_and_spoofs_are_replaced() {
    let s = Scenario::new("routing", &[]);
    let host = s.start().await;
    let response = host
        .client
        .get(format!(
            "{}/users/7/cart/items/3/edit?op=headers",
            host.base
        ))
        .header("spin-client-addr", "6.6.6.6:6")
        .header("spin-injected", "evil")
        .send()
        .await
        .expect("request");
    let v: serde_json::Value = response.json().await.expect("json");
    let h = &v["headers"];
    let port = host.base.rsplit(':').next().expect("port");
    assert_eq!(
        h["spin-full-url"],
        format!("http://127.0.0.1:{port}/users/7/cart/items/3/edit?op=headers")
    );
    assert_eq!(h["spin-path-info"], "/items/3/edit");
    assert_eq!(h["spin-matched-route"], "/users/:user_id/cart/...");
    assert_eq!(h["spin-base-path"], "/");
    assert_eq!(h["spin-raw-component-route"], "/users/:user_id/cart/...");
    assert_eq!(h["spin-component-route"], "/users/:user_id/cart");
    assert_eq!(h["spin-path-match-user-id"], "7");
    let client_addr = h["spin-client-addr"].as_str().expect("client addr");
    assert!(client_addr.starts_with("127.0.0.1:"), "{client_addr}");
    assert!(
        h.get("spin-injected").is_none(),
        "client spin-* header must be removed"
    );
    let exact = host.get_json("/exact?op=headers").await;
    assert_eq!(exact["headers"]["spin-path-info"], "");
    host.stop().await;
}

#[tokio::test]
async fn well_known_static_private_and_errors() {
    let s = Scenario::new("routing", &[]);
    let host = s.start().await;
    assert_eq!(
        host.get("/.well-known/spin/health").await,
        (200, "OK".to_string())
    );
    let (status, info) = host.get("/.well-known/spin/info").await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&info).expect("json");
    assert_eq!(info["name"], "routing");
    assert_eq!(info["version"], "1.2.3");
    assert_eq!(
        host.get("/.well-known/spin/other").await,
        (404, String::new())
    );
    let r = host
        .client
        .get(format!("{}/static", host.base))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["x-static"], "yes");
    assert_eq!(r.text().await.expect("body"), "static body");
    // A trap is a 500 with an empty body, and the server keeps serving.
    assert_eq!(host.get("/exact?op=trap").await, (500, String::new()));
    assert_eq!(
        host.get("/exact?op=print&msg=hi").await,
        (200, "printed".to_string())
    );
    host.stop().await;
}

#[tokio::test]
async fn no_route_is_404_with_empty_body() {
    let mut s = Scenario::new("routing", &[]);
    // Same app without the catch-all: replace the manifest's first trigger route.
    let manifest = s.dir.path().join("spin.toml");
    let text = std::fs::read_to_string(&manifest).expect("read");
    std::fs::write(
        &manifest,
        text.replacen("route = \"/...\"", "route = \"/only/...\"", 1),
    )
    .expect("write");
    s.config.manifest_path = manifest;
    let host = s.start().await;
    assert_eq!(host.get("/nothing-here").await, (404, String::new()));
    assert_eq!(host.get("/only?op=print&msg=x").await.0, 200);
    host.stop().await;
}
