//! The `instances` component: exports `kiloclaw:instances/instances` (see `wit/deps/instances/instances.wit`).
//!
//! A thin adapter around `kiloclaw_core`: it implements the core's boundary traits over Spin —
//! `kiloclaw_spin_adapters::kv::Bucket` (`KeyValue` over `wasi:keyvalue` store + atomics + batch,
//! bucket `default`, or over outbound Redis), the registry of instances in PostgreSQL (when
//! `database_url` is set, for restoring lost records),
//! [`transport::WasiHttpTransport`] (`HttpTransport` over `wasi:http/outgoing-handler`) and the
//! core's `SystemClock` — reads its settings from Spin variables ([`context`]), runs the core's
//! operations, and maps results and errors to the WIT types ([`views`], [`errors`]). Every failure
//! is an `instance-error`; nothing here traps on bad input.

mod context;
mod errors;
mod ops;
mod transport;
mod views;

#[allow(
    unsafe_code,
    reason = "wit-bindgen's generated canonical-ABI glue is unsafe by nature"
)]
mod bindings {
    wit_bindgen::generate!({
        world: "instances-component",
        path: "../../wit",
        // The shared types live in their own package (`wit/deps/types`); bind them here.
        with: { "kiloclaw:types/types@0.1.0": generate },
    });

    use super::InstancesComponent;
    export!(InstancesComponent with_types_in self);
}

use bindings::exports::kiloclaw::instances::instances::{
    ChannelPresence, CommandOutcome, ConfigSummary, DestroyOutcome, Guest, InstanceError,
    InstanceStatus, KilocodeConfig, ProxyRoute, ReconcileOutcome, ReconcileSummary, RecoveredRoute,
    VolumeSnapshot,
};

struct InstancesComponent;

impl Guest for InstancesComponent {
    fn provision(user_id: String, config: String) -> Result<String, InstanceError> {
        ops::provision(&user_id, config.as_bytes())
    }

    fn patch_kilocode_config(
        user_id: String,
        patch: String,
    ) -> Result<KilocodeConfig, InstanceError> {
        ops::patch_kilocode_config(&user_id, patch.as_bytes())
    }

    fn patch_channels(user_id: String, patch: String) -> Result<ChannelPresence, InstanceError> {
        ops::patch_channels(&user_id, patch.as_bytes())
    }

    fn start(user_id: String) -> Result<(), InstanceError> {
        ops::start(&user_id)
    }

    fn stop(user_id: String) -> Result<(), InstanceError> {
        ops::stop(&user_id)
    }

    fn destroy(user_id: String) -> Result<DestroyOutcome, InstanceError> {
        ops::destroy(&user_id)
    }

    fn status(user_id: String) -> Result<InstanceStatus, InstanceError> {
        ops::status(&user_id)
    }

    fn summarize_config(user_id: String) -> Result<ConfigSummary, InstanceError> {
        ops::summarize_config(&user_id)
    }

    fn restart(user_id: String) -> Result<(), InstanceError> {
        ops::restart(&user_id)
    }

    fn route(user_id: String) -> Result<ProxyRoute, InstanceError> {
        ops::route(&user_id)
    }

    fn recover_route(
        user_id: String,
        failed_machine_id: String,
    ) -> Result<RecoveredRoute, InstanceError> {
        ops::recover_route(&user_id, &failed_machine_id)
    }

    fn volume_snapshots(user_id: String) -> Result<Vec<VolumeSnapshot>, InstanceError> {
        ops::volume_snapshots(&user_id)
    }

    fn pairing_requests(user_id: String, refresh: bool) -> Result<String, InstanceError> {
        ops::pairing_requests(&user_id, refresh)
    }

    fn approve_pairing(
        user_id: String,
        channel: String,
        code: String,
    ) -> Result<CommandOutcome, InstanceError> {
        ops::approve_pairing(&user_id, &channel, &code)
    }

    fn run_doctor(user_id: String) -> Result<CommandOutcome, InstanceError> {
        ops::run_doctor(&user_id)
    }

    fn reconcile(user_id: String) -> Result<ReconcileOutcome, InstanceError> {
        ops::reconcile(&user_id)
    }

    fn reconcile_due(budget_ms: u32) -> Result<ReconcileSummary, InstanceError> {
        ops::reconcile_due(budget_ms)
    }
}
