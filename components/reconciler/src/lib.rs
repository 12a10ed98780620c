//! The `reconciler` component: the cron entry (`fermyon:spin-cron@2.0.0`, every minute).
//!
//! Each tick asks `instances` to reconcile the instances whose next check is due, within a time
//! budget shorter than the tick interval, and logs one JSON summary line. The instances component
//! owns the due index, the leases and the per-instance logic; ticks may overlap (the cron trigger
//! does not serialise them) and several replicas may run, which the leases make safe.
//!
//! A tick may also die at any point (trap, kill, redeploy): the shard it had claimed is free again
//! within `kiloclaw_core::due::CLAIM_TTL_MS` and the next walker carries on from its recorded
//! progress, an instance whose check failed is requeued a couple of minutes out, and
//! each tick sweeps one batch of the registry of all instances for any that fell out of the index
//! (`kiloclaw_core::due`). So nothing here needs to retry or remember anything between ticks.

use std::time::Duration;

#[allow(
    unsafe_code,
    reason = "wit-bindgen's generated canonical-ABI glue is unsafe by nature"
)]
mod bindings {
    wit_bindgen::generate!({
        world: "reconciler-component",
        path: "../../wit",
        // The cron types come from the included `fermyon:spin-cron` world: bind them here too.
        generate_all,
    });

    use super::Reconciler;
    export!(Reconciler with_types_in self);
}

use bindings::fermyon::spin_cron::cron_types::{Error, Metadata};
use bindings::kiloclaw::instances::instances::{self, InstanceError};

/// Time one tick may spend: well under the one-minute schedule, so a tick normally ends before the
/// next begins, while leaving room for a reconcile already under way to finish its Fly calls. A walker
/// renews its shard's claim before every check, so the budget need not fit in one claim's life.
const TICK_BUDGET: Duration = Duration::from_secs(45);

struct Reconciler;

fn describe(error: &InstanceError) -> String {
    match error {
        InstanceError::Configuration(missing) => {
            format!("missing settings: {}", missing.join(", "))
        }
        InstanceError::StoreUnavailable(detail) => format!("key-value store unavailable: {detail}"),
        InstanceError::FlyUnavailable(detail) => format!("Fly API unavailable: {detail}"),
        InstanceError::Secrets(message) => format!("secrets: {message}"),
        InstanceError::Internal(detail) => format!("internal error: {detail}"),
        other => format!("{other:?}"),
    }
}

impl bindings::Guest for Reconciler {
    fn handle_cron_event(metadata: Metadata) -> Result<(), Error> {
        let budget_ms = u32::try_from(TICK_BUDGET.as_millis()).unwrap_or(u32::MAX);
        match instances::reconcile_due(budget_ms) {
            Ok(summary) => {
                // A tick that found nothing due is routine: debug, so an idle system stays quiet.
                let idle = summary.checked == 0
                    && summary.requeued == 0
                    && summary.errors == 0
                    && !summary.rate_limited;
                println!(
                    "{}",
                    serde_json::json!({
                        "level": if idle { "debug" } else { "info" },
                        "tag": "reconcile_tick",
                        "reason": "cron",
                        "action": "reconcile_due",
                        "tick_timestamp": metadata.timestamp,
                        "minutes": summary.minutes,
                        "checked": summary.checked,
                        "skipped": summary.skipped,
                        "requeued": summary.requeued,
                        "errors": summary.errors,
                        "rate_limited": summary.rate_limited,
                        "elapsed_ms": summary.elapsed_ms,
                    })
                );
                Ok(())
            }
            Err(error) => {
                let message = describe(&error);
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "tag": "reconcile_tick",
                        "reason": "cron",
                        "action": "reconcile_due_failed",
                        "tick_timestamp": metadata.timestamp,
                        "error": message,
                    })
                );
                Err(Error::Other(message))
            }
        }
    }
}
