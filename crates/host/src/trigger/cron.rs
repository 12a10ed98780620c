//! The cron trigger (Spin's trigger-cron plugin 0.3, world `fermyon:spin-cron@2.0.0`).
//!
//! Expressions have exactly 6 fields, seconds first, parsed by croner with seconds required and
//! day-of-month AND day-of-week (`with_dom_and_dow`), evaluated in UTC, as in the plugin. Each
//! tick instantiates the component afresh and calls `handle-cron-event` with the wall-clock
//! seconds at firing. Ticks of one schedule may overlap (each runs in its own task), missed ticks
//! are not replayed, and a guest error or trap is logged with the component id and dropped.
//!
//! Unlike the plugin, which polls every 500 ms, the scheduler sleeps until the exact next
//! occurrence, so ticks are not up to half a second late.

use crate::AppInner;
use crate::bindings::cron::{CronGuest, CronGuestPre, fermyon::spin_cron::cron_types};
use crate::state::InstanceState;
use chrono::Utc;
use std::sync::Arc;
use std::time::Instant;

/// Why a cron run failed.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// No component with that id, or it does not export `handle-cron-event`.
    #[error("component `{0}` is not a cron component of this app")]
    UnknownComponent(String),
    /// The guest returned `Err(other(message))`.
    #[error("cron handler of `{component}` returned an error: {message}")]
    Guest { component: String, message: String },
    /// No instance slot became free within the admission wait; the tick is dropped like a missed one.
    #[error("cron tick of `{component}` not run: {reason}")]
    Busy { component: String, reason: String },
    /// Instantiation failed or the guest trapped.
    #[error("cron handler of `{component}` trapped: {message}")]
    Trap { component: String, message: String },
}

pub use kiloclaw_manifest::cron::parse_expression;

/// Runs one tick of `component` now and counts its outcome.
pub(crate) async fn run_once(app: &Arc<AppInner>, component: &str) -> Result<(), CronError> {
    let result = run_tick(app, component).await;
    let outcome = match &result {
        Ok(()) => "ok",
        Err(CronError::Guest { .. }) => "error",
        Err(CronError::Trap { .. }) => "trap",
        Err(CronError::Busy { .. }) => "busy",
        Err(CronError::UnknownComponent(_)) => return result,
    };
    app.metrics.observe_cron(component, outcome);
    result
}

async fn run_tick(app: &Arc<AppInner>, component: &str) -> Result<(), CronError> {
    let prepared = app
        .cron_components
        .get(component)
        .ok_or_else(|| CronError::UnknownComponent(component.to_string()))?;
    let pre: &CronGuestPre<InstanceState> = &prepared.pre;
    let started = Instant::now();
    let slot = app.slots.take().await.map_err(|busy| CronError::Busy {
        component: component.to_string(),
        reason: busy.to_string(),
    })?;
    let mut store = wasmtime::Store::new(
        pre.engine(),
        InstanceState::new(prepared.runtime.clone(), app.outbound.clone()),
    );
    let timestamp = Utc::now().timestamp().max(0) as u64;
    let trap = |e: wasmtime::Error| CronError::Trap {
        component: component.to_string(),
        message: format!("{e:#}"),
    };
    let guest: CronGuest = pre.instantiate_async(&mut store).await.map_err(trap)?;
    let result = guest
        .call_handle_cron_event(&mut store, cron_types::Metadata { timestamp })
        .await
        .map_err(trap)?;
    drop((guest, store, slot));
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(()) => {
            // Every tick of every schedule: routine, so debug (errors are logged by the caller).
            tracing::debug!(
                tag = "cron",
                component,
                action = "tick",
                outcome = "ok",
                timestamp,
                duration_ms
            );
            Ok(())
        }
        Err(cron_types::Error::Other(message)) => Err(CronError::Guest {
            component: component.to_string(),
            message,
        }),
    }
}

/// Runs every cron trigger until `shutdown` fires.
pub(crate) async fn run_schedules(
    app: Arc<AppInner>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for trigger in app.manifest.cron_triggers.clone() {
        let app = app.clone();
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            let schedule = match parse_expression(&trigger.expression) {
                Ok(s) => s,
                Err(e) => {
                    // Validated at load; kept as a guard rather than a panic.
                    tracing::error!(tag = "cron", component = %trigger.component, error = %e, "invalid schedule");
                    return;
                }
            };
            tracing::info!(tag = "cron", component = %trigger.component, action = "schedule", expression = %trigger.expression);
            loop {
                let now = Utc::now();
                let next = match schedule.find_next_occurrence(&now, false) {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::error!(tag = "cron", component = %trigger.component, error = %e, "no next occurrence; schedule stops");
                        return;
                    }
                };
                let wait = (next - now).to_std().unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
                let app = app.clone();
                let component = trigger.component.clone();
                // Overlapping ticks are allowed, as in the plugin.
                tokio::spawn(async move {
                    if let Err(e) = run_once(&app, &component).await {
                        tracing::error!(tag = "cron", component = %component, action = "tick", outcome = "error", error = %e);
                    }
                });
            }
        });
    }
    let _ = shutdown.changed().await;
    tasks.abort_all();
}
