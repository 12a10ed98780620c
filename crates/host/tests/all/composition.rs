//! Composition: an importing component and an exporting one, in-app and by path; the
//! dependency uses its parent's variables and key-value stores.

use crate::harness::Scenario;

#[tokio::test]
async fn in_app_and_path_dependencies_are_composed_with_parent_configuration() {
    let s = Scenario::new("composition", &[]);
    let host = s.start().await;
    assert_eq!(
        host.get("/in-app/x?name=Ada").await,
        (200, "Hej, Ada! (#1)".into())
    );
    assert_eq!(
        host.get("/in-app/x?name=Bo").await,
        (200, "Hej, Bo! (#2)".into())
    );
    // Same store (the parent's `default`), the other parent's variables.
    assert_eq!(
        host.get("/by-path/x?name=Cy").await,
        (200, "Hallo, Cy! (#3)".into())
    );
    host.stop().await;
}

#[tokio::test]
async fn compose_component_writes_a_self_contained_component() {
    let s = Scenario::new("composition", &[]);
    let bytes =
        kiloclaw_host::compose_component(&s.config.manifest_path, "frontend").expect("compose");
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::new(&engine, &bytes).expect("valid component");
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(
        !imports
            .iter()
            .any(|i| i.starts_with("kiloclaw-test:greeter")),
        "the dependency import must be satisfied inside: {imports:?}"
    );
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("fermyon:spin/variables")),
        "{imports:?}"
    );
    let exports: Vec<String> = component
        .component_type()
        .exports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(
        exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler")),
        "{exports:?}"
    );
    // A component without dependencies comes back unchanged.
    let plain =
        kiloclaw_host::compose_component(&s.config.manifest_path, "greeter").expect("plain");
    assert_eq!(
        plain,
        std::fs::read(crate::harness::guest("greeter-exporter")).expect("read")
    );
}

#[tokio::test]
async fn a_dependency_matching_no_import_fails_the_load() {
    let s = Scenario::new("composition", &[]);
    let manifest = s.dir.path().join("spin.toml");
    let text = std::fs::read_to_string(&manifest).expect("read");
    std::fs::write(
        &manifest,
        text.replace(
            "\"kiloclaw-test:greeter/greet\" = ",
            "\"kiloclaw-test:other/thing\" = ",
        ),
    )
    .expect("write");
    let err = s.load().await.expect_err("unmatched dependency");
    let message = err.to_string();
    assert!(
        message.contains("frontend") && message.contains("kiloclaw-test:other/thing"),
        "{message}"
    );
}
