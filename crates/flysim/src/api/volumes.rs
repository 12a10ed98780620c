//! `/v1/apps/{app}/volumes…`: list, create (region, size, fork, compute hint), get, delete, snapshots.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::{Sim, json_response, parse_body};
use crate::error::ApiResult;
use crate::state::{DataEffects, World};

pub async fn list(sim: Sim, Path(app): Path<String>) -> ApiResult<Response> {
    let volumes = sim.read(|world| {
        world.app(&app)?;
        Ok::<_, crate::error::ApiError>(
            world
                .volumes
                .values()
                .filter(|v| v.app == app)
                .map(World::volume_view)
                .collect::<Vec<_>>(),
        )
    })?;
    Ok(json_response(StatusCode::OK, &volumes))
}

pub async fn create(sim: Sim, Path(app): Path<String>, body: Bytes) -> ApiResult<Response> {
    let request: Value = parse_body(&body)?;
    if !request.is_object() {
        return Err(crate::error::ApiError::bad_request(
            "request body must be a JSON object",
        ));
    }
    let mut effects = DataEffects::default();
    let volume = sim.write(|world| world.create_volume(&app, &request, &mut effects))?;
    sim.apply_effects(effects);
    if let Err(err) = std::fs::create_dir_all(sim.volume_dir(&volume.id)) {
        tracing::warn!(tag = "flysim", reason = "volume_dir_create_failed", volume_id = %volume.id, error = %err);
    }
    tracing::info!(tag = "flysim", action = "create_volume", app = %app, volume_id = %volume.id, region = %volume.region);
    Ok(json_response(StatusCode::OK, &volume))
}

pub async fn get(sim: Sim, Path((app, id)): Path<(String, String)>) -> ApiResult<Response> {
    let volume = sim.read(|world| world.volume(&app, &id).map(World::volume_view))?;
    Ok(json_response(StatusCode::OK, &volume))
}

pub async fn delete(sim: Sim, Path((app, id)): Path<(String, String)>) -> ApiResult<Response> {
    let delays = sim.delays();
    let mut effects = DataEffects::default();
    let (volume, steps) =
        sim.write(|world| world.delete_volume(&app, &id, &delays, &mut effects))?;
    sim.apply_effects(effects);
    sim.schedule(steps);
    tracing::info!(tag = "flysim", action = "delete_volume", app = %app, volume_id = %id);
    Ok(json_response(StatusCode::OK, &volume))
}

pub async fn snapshots(sim: Sim, Path((app, id)): Path<(String, String)>) -> ApiResult<Response> {
    let list = sim.read(|world| world.volume(&app, &id).map(|v| v.snapshots.clone()))?;
    Ok(json_response(StatusCode::OK, &list))
}

pub async fn snapshot(sim: Sim, Path((app, id)): Path<(String, String)>) -> ApiResult<Response> {
    sim.write(|world| world.snapshot_volume(&app, &id))?;
    Ok(super::empty(StatusCode::OK))
}
