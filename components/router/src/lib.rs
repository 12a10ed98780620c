//! The `router` component: KiloClaw's HTTP entry (Spin HTTP trigger, route `/...`).
//!
//! It runs a proxy's phases for every request — authenticate → resolve → rewrite headers → forward
//! → map failures — with each decision taken by `kiloclaw_core::edge` and each side effect done by
//! the imported `auth` and `instances` interfaces (composed in from the other components) or by an
//! outbound request to the user's machine. It keeps no state between requests.
//!
//! Modules: [`http`] adapts Spin's HTTP types; [`imports`] maps the WIT errors to edge errors;
//! [`dispatch`] authenticates and routes; [`platform`], [`user`], [`gateway`] and [`forward`]
//! serve the route families.

mod dispatch;
mod forward;
mod gateway;
mod http;
mod imports;
mod platform;
mod settings;
mod user;

#[allow(
    unsafe_code,
    reason = "wit-bindgen's generated canonical-ABI glue is unsafe by nature"
)]
mod bindings {
    wit_bindgen::generate!({
        world: "router-component",
        path: "../../wit",
        // Once `with` names one interface, wit-bindgen wants every foreign-package one named.
        with: {
            "kiloclaw:types/types@0.1.0": generate,
            "kiloclaw:auth/auth@0.1.0": generate,
            "kiloclaw:instances/instances@0.1.0": generate,
        },
    });
}

#[allow(
    unsafe_code,
    reason = "spin-sdk's #[http_component] expands to the unsafe wasi:http export glue"
)]
mod entry {
    use spin_sdk::http::{IncomingRequest, ResponseOutparam};
    use spin_sdk::http_component;

    /// The `wasi:http/incoming-handler` export.
    #[http_component]
    async fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        super::dispatch::handle(request, response_out).await;
    }
}
