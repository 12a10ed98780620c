//! `/v1/apps/{app}/machines…`: create, get, list (metadata filters), update, start, stop, destroy, wait, exec.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiloclaw_core::fly::{
    CreateMachineRequest, ExecRequest, ExecResponse, MachineState, UpdateMachineRequest,
};
use serde_json::json;

use super::{Pairs, Sim, json_response, parse_body, query_flag, query_list, query_value};
use crate::error::{ApiError, ApiResult};
use crate::exec;
use crate::state::{state_matches, wait_targets};

pub async fn list(sim: Sim, Path(app): Path<String>, query: Pairs) -> ApiResult<Response> {
    let filters: Vec<(String, String)> = query
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata.")
                .map(|key| (key.to_owned(), v.clone()))
        })
        .collect();
    let include_deleted = query_flag(&query, "include_deleted");
    let region = query_value(&query, "region").map(str::to_owned);
    let states = query_list(&query, "state");
    let machines = sim.read(|world| {
        world.app(&app)?;
        Ok::<_, ApiError>(
            world
                .machines
                .values()
                .filter(|m| m.app == app)
                .filter(|m| include_deleted || !m.state.is_gone())
                .filter(|m| region.as_deref().is_none_or(|r| r == m.region))
                .filter(|m| states.is_empty() || states.iter().any(|s| s == m.state.as_str()))
                .filter(|m| {
                    filters
                        .iter()
                        .all(|(k, v)| m.config.metadata.get(k) == Some(v))
                })
                .map(|m| world.machine_view(m))
                .collect::<Vec<_>>(),
        )
    })?;
    Ok(json_response(StatusCode::OK, &machines))
}

pub async fn create(sim: Sim, Path(app): Path<String>, body: Bytes) -> ApiResult<Response> {
    let request: CreateMachineRequest = parse_body(&body)?;
    let delays = sim.delays();
    let (machine, steps) = sim.write(|world| world.create_machine(&app, &request, &delays))?;
    tracing::info!(tag = "flysim", action = "create_machine", app = %app, machine_id = %machine.id, region = %machine.region);
    sim.schedule(steps);
    Ok(json_response(StatusCode::OK, &machine))
}

pub async fn get(sim: Sim, Path((app, id)): Path<(String, String)>) -> ApiResult<Response> {
    let machine = sim.read(|world| world.machine(&app, &id).map(|m| world.machine_view(m)))?;
    Ok(json_response(StatusCode::OK, &machine))
}

pub async fn update(
    sim: Sim,
    Path((app, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: UpdateMachineRequest = parse_body(&body)?;
    let delays = sim.delays();
    let starts_stopped = sim.update_starts_stopped.load(Ordering::Relaxed);
    let (machine, steps) =
        sim.write(|world| world.update_machine(&app, &id, &request, &delays, starts_stopped))?;
    tracing::info!(tag = "flysim", action = "update_machine", app = %app, machine_id = %id, instance_id = %machine.instance_id);
    sim.schedule(steps);
    Ok(json_response(StatusCode::OK, &machine))
}

pub async fn start(sim: Sim, Path((app, id)): Path<(String, String)>) -> ApiResult<Response> {
    let delays = sim.delays();
    let (body, steps) = sim.write(|world| world.start_machine(&app, &id, &delays))?;
    sim.schedule(steps);
    Ok(json_response(StatusCode::OK, &body))
}

pub async fn stop(
    sim: Sim,
    Path((app, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    // Fly decodes an optional `{signal, timeout}` object; anything else (e.g. an array) is a 400.
    if !body.iter().all(u8::is_ascii_whitespace) {
        let value: serde_json::Value = parse_body(&body)?;
        if !value.is_object() {
            return Err(ApiError::bad_request(format!(
                "json: cannot unmarshal {} into Go value of type main.stopRequest",
                if value.is_array() { "array" } else { "value" }
            )));
        }
    }
    let delays = sim.delays();
    let steps = sim.write(|world| world.stop_machine(&app, &id, &delays))?;
    sim.schedule(steps);
    Ok(json_response(StatusCode::OK, &json!({"ok": true})))
}

pub async fn destroy(
    sim: Sim,
    Path((app, id)): Path<(String, String)>,
    query: Pairs,
) -> ApiResult<Response> {
    // Docs say `force`, fly-go sends `kill`; both are honoured.
    let force = query_flag(&query, "force") || query_flag(&query, "kill");
    let delays = sim.delays();
    let steps = sim.write(|world| world.destroy_machine(&app, &id, force, &delays))?;
    tracing::info!(tag = "flysim", action = "destroy_machine", app = %app, machine_id = %id, force);
    sim.schedule(steps);
    Ok(json_response(StatusCode::OK, &json!({"ok": true})))
}

/// Long poll until the machine is in one of the wanted states, or 408 after `timeout` seconds.
pub async fn wait(
    sim: Sim,
    Path((app, id)): Path<(String, String)>,
    query: Pairs,
) -> ApiResult<Response> {
    let states: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "state")
        .map(|(_, v)| v.clone())
        .collect();
    let targets = wait_targets(&states)?;
    let timeout_s = match query_value(&query, "timeout") {
        None => 60,
        Some(raw) => raw
            .trim_end_matches('s')
            .parse::<u64>()
            .ok()
            .filter(|t| (1..=60).contains(t))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid_argument: timeout {raw} out of range, must be within [1s, 1m0s]"
                ))
            })?,
    };
    let version = query_value(&query, "instance_id")
        .or_else(|| query_value(&query, "version"))
        .map(str::to_owned);
    if targets.iter().any(|t| t == "stopped") && version.is_none() {
        return Err(ApiError::bad_request(
            "instance_id required when waiting for stopped machine",
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s);
    let mut changes = sim.subscribe();
    loop {
        changes.borrow_and_update();
        let current = sim.read(|world| {
            world.machine(&app, &id).map(|m| {
                (
                    m.state.clone(),
                    m.instance_id.clone(),
                    m.events.first().and_then(|e| e.id.clone()),
                )
            })
        })?;
        let (state, instance_id, event_id) = current;
        if let Some(version) = &version
            && version != &instance_id
        {
            return Err(ApiError::bad_request(format!(
                "machine version {version} is not the current version ({instance_id})"
            )));
        }
        if let Some(target) = targets.iter().find(|t| state_matches(&state, t)) {
            let reached = if target == "settled" {
                state.as_str().to_owned()
            } else {
                target.clone()
            };
            return Ok(json_response(
                StatusCode::OK,
                &json!({"ok": true, "state": reached, "version": instance_id, "event_id": event_id}),
            ));
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "simulator shutting down"));
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("machine failed to reach desired state, {}, currently {state}", targets.join(",")),
                ));
            }
        }
    }
}

pub async fn exec(
    sim: Sim,
    Path((app, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: ExecRequest = parse_body(&body)?;
    if request.command.is_empty() {
        return Err(ApiError::bad_request("command is required"));
    }
    let (state, volume_dir) = sim.read(|world| {
        world.machine(&app, &id).map(|m| {
            let dir = m
                .config
                .mounts
                .first()
                .filter(|mount| {
                    world
                        .volumes
                        .get(&mount.volume)
                        .is_some_and(|v| !v.state.is_deleted())
                })
                .map(|mount| (mount.path.clone(), sim.volume_dir(&mount.volume)));
            (m.state.clone(), dir)
        })
    })?;
    if state != MachineState::Started {
        return Err(ApiError::precondition(format!(
            "failed_precondition: machine is {state}, not started"
        )));
    }
    let result: ExecResponse = exec::run(
        &request.command,
        request.stdin.as_deref(),
        volume_dir.as_ref(),
    );
    Ok((StatusCode::OK, axum::Json(result)).into_response())
}
