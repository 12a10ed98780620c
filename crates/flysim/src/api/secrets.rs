//! `/v1/apps/{app}/secrets…`: set (one or many), unset, list, get. Every change bumps the app's secrets
//! version, which `min_secrets_version` on machine create/update is checked against.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Pairs, Sim, json_response, parse_body, query_flag};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppRec, SecretRec};

fn secret_json(name: &str, secret: &SecretRec, show: bool) -> Value {
    let mut value = json!({"name": name, "digest": secret.digest, "created_at": secret.created_at, "updated_at": secret.updated_at});
    if show {
        value["value"] = json!(secret.value);
    }
    value
}

fn list_json(app: &AppRec, show: bool) -> Vec<Value> {
    app.secrets
        .iter()
        .map(|(name, secret)| secret_json(name, secret, show))
        .collect()
}

pub async fn list(sim: Sim, Path(app): Path<String>, query: Pairs) -> ApiResult<Response> {
    let show = query_flag(&query, "show_secrets");
    let secrets = sim.read(|world| world.app(&app).map(|a| list_json(a, show)))?;
    Ok(json_response(StatusCode::OK, &json!({"secrets": secrets})))
}

pub async fn get(
    sim: Sim,
    Path((app, name)): Path<(String, String)>,
    query: Pairs,
) -> ApiResult<Response> {
    let show = query_flag(&query, "show_secrets");
    let secret = sim.read(|world| {
        let app = world.app(&app)?;
        app.secrets
            .get(&name)
            .map(|s| secret_json(&name, s, show))
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "secret not found"))
    })?;
    Ok(json_response(StatusCode::OK, &secret))
}

#[derive(Debug, Deserialize)]
struct SetMany {
    values: BTreeMap<String, Option<String>>,
}

pub async fn set_many(sim: Sim, Path(app): Path<String>, body: Bytes) -> ApiResult<Response> {
    let request: SetMany = parse_body(&body)?;
    let (version, secrets) = sim.write(|world| {
        let version = world.set_secrets(&app, &request.values)?;
        Ok::<_, ApiError>((version, list_json(world.app(&app)?, false)))
    })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"secrets": secrets, "version": version, "Version": version}),
    ))
}

#[derive(Debug, Deserialize)]
struct SetOne {
    value: String,
}

pub async fn set_one(
    sim: Sim,
    Path((app, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: SetOne = parse_body(&body)?;
    let response = sim.write(|world| {
        let version =
            world.set_secrets(&app, &BTreeMap::from([(name.clone(), Some(request.value))]))?;
        let app = world.app(&app)?;
        let secret = app
            .secrets
            .get(&name)
            .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "lost secret"))?;
        let mut body = secret_json(&name, secret, false);
        body["version"] = json!(version);
        body["Version"] = json!(version);
        Ok::<_, ApiError>(body)
    })?;
    tracing::info!(tag = "flysim", action = "set_secret", app = %app, name = %name);
    Ok(json_response(StatusCode::CREATED, &response))
}

pub async fn delete_one(
    sim: Sim,
    Path((app, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let version = sim.write(|world| {
        if !world.app(&app)?.secrets.contains_key(&name) {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "secret not found"));
        }
        world.set_secrets(&app, &BTreeMap::from([(name.clone(), None)]))
    })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"version": version, "Version": version}),
    ))
}
