//! `/v1/apps…`: create (org, network), list by org, get, delete (cascading), IP assignments.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{Pairs, Sim, empty, json_response, parse_body, query_value};
use crate::error::{ApiError, ApiResult};
use crate::state::{DataEffects, World};

/// Docs name the field `app_name`, the 2026 spec and fly-go `name`; both are accepted.
#[derive(Debug, Deserialize)]
struct CreateApp {
    #[serde(default)]
    app_name: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    org_slug: Option<String>,
    #[serde(default)]
    network: Option<String>,
}

pub async fn create(sim: Sim, body: Bytes) -> ApiResult<Response> {
    let request: CreateApp = parse_body(&body)?;
    let name = request.app_name.or(request.name).unwrap_or_default();
    let org = request.org_slug.unwrap_or_default();
    let created = sim
        .write(|world| world.create_app(&name, &org, request.network.filter(|n| !n.is_empty())))?;
    tracing::info!(tag = "flysim", action = "create_app", app = %name, org = %org);
    Ok(json_response(StatusCode::CREATED, &created))
}

pub async fn list(sim: Sim, query: Pairs) -> ApiResult<Response> {
    let org = query_value(&query, "org_slug")
        .filter(|o| !o.is_empty())
        .ok_or_else(|| ApiError::bad_request("org_slug is required"))?
        .to_owned();
    let apps = sim.read(|world| {
        let counts = world.app_counts();
        world
            .apps
            .values()
            .filter(|a| a.org_slug == org)
            .map(|a| {
                World::app_view_counted(a, counts.get(a.name.as_str()).copied().unwrap_or_default())
            })
            .collect::<Vec<_>>()
    });
    Ok(json_response(
        StatusCode::OK,
        &json!({"total_apps": apps.len(), "apps": apps}),
    ))
}

pub async fn get(sim: Sim, Path(app): Path<String>) -> ApiResult<Response> {
    let view = sim.read(|world| world.app(&app).map(|a| world.app_view(a)))?;
    Ok(json_response(StatusCode::OK, &view))
}

pub async fn delete(sim: Sim, Path(app): Path<String>) -> ApiResult<Response> {
    let mut effects = DataEffects::default();
    sim.write(|world| world.delete_app(&app, &mut effects))?;
    sim.apply_effects(effects);
    tracing::info!(tag = "flysim", action = "delete_app", app = %app);
    Ok(empty(StatusCode::ACCEPTED))
}

#[derive(Debug, Deserialize)]
struct AllocateIp {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    network: Option<String>,
}

pub async fn allocate_ip(sim: Sim, Path(app): Path<String>, body: Bytes) -> ApiResult<Response> {
    let request: AllocateIp = parse_body(&body)?;
    let assignment = sim.write(|world| world.allocate_ip(&app, &request.kind, request.network))?;
    Ok(json_response(StatusCode::OK, &assignment))
}

pub async fn list_ips(sim: Sim, Path(app): Path<String>) -> ApiResult<Response> {
    let ips = sim.read(|world| world.app(&app).map(|a| a.ips.clone()))?;
    Ok(json_response(StatusCode::OK, &json!({"ips": ips})))
}

pub async fn delete_ip(sim: Sim, Path((app, ip)): Path<(String, String)>) -> ApiResult<Response> {
    sim.write(|world| {
        let app = world.app_mut(&app)?;
        let before = app.ips.len();
        app.ips.retain(|a| a.ip.as_deref() != Some(ip.as_str()));
        if app.ips.len() == before {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ip assignment not found",
            ))
        } else {
            Ok(())
        }
    })?;
    Ok(empty(StatusCode::NO_CONTENT))
}
