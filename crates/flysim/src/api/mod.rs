//! The Machines API (`/v1/...`): routes, bearer auth, rate limits, injected faults, the request log and
//! per-operation counters.

mod apps;
mod machines;
mod orgs;
mod secrets;
mod volumes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};
use crate::faults::{self, FaultEffect};
use crate::ids;
use crate::sim::{RequestRecord, SimState};

pub type Sim = State<Arc<SimState>>;

pub fn router(sim: Arc<SimState>) -> Router {
    Router::new()
        .route("/v1/apps", get(apps::list).post(apps::create))
        .route("/v1/apps/{app}", get(apps::get).delete(apps::delete))
        .route(
            "/v1/apps/{app}/ip_assignments",
            get(apps::list_ips).post(apps::allocate_ip),
        )
        .route(
            "/v1/apps/{app}/ip_assignments/{ip}",
            delete(apps::delete_ip),
        )
        .route(
            "/v1/apps/{app}/machines",
            get(machines::list).post(machines::create),
        )
        .route(
            "/v1/apps/{app}/machines/{id}",
            get(machines::get)
                .post(machines::update)
                .delete(machines::destroy),
        )
        .route("/v1/apps/{app}/machines/{id}/start", post(machines::start))
        .route("/v1/apps/{app}/machines/{id}/stop", post(machines::stop))
        .route("/v1/apps/{app}/machines/{id}/wait", get(machines::wait))
        .route("/v1/apps/{app}/machines/{id}/exec", post(machines::exec))
        .route("/v1/orgs/{org}/machines", get(orgs::list_machines))
        .route(
            "/v1/apps/{app}/volumes",
            get(volumes::list).post(volumes::create),
        )
        .route(
            "/v1/apps/{app}/volumes/{id}",
            get(volumes::get).delete(volumes::delete),
        )
        .route(
            "/v1/apps/{app}/volumes/{id}/snapshots",
            get(volumes::snapshots).post(volumes::snapshot),
        )
        .route(
            "/v1/apps/{app}/secrets",
            get(secrets::list).post(secrets::set_many),
        )
        .route(
            "/v1/apps/{app}/secrets/{name}",
            get(secrets::get)
                .post(secrets::set_one)
                .delete(secrets::delete_one),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&sim), api_layer))
        .with_state(sim)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found")
}

/// Which operation a request is, with the app (or org) and machine/volume it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub name: &'static str,
    pub app: Option<String>,
    /// The org of an org-wide call: what its rate limit counts against.
    pub org: Option<String>,
    pub target: Option<String>,
}

pub fn classify(method: &Method, path: &str) -> Option<Operation> {
    if let Some(rest) = path.strip_prefix("/v1/orgs/") {
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        return match (segments.as_slice(), method.as_str()) {
            ([org, "machines"], "GET") => Some(Operation {
                name: "list_org_machines",
                app: None,
                org: Some((*org).to_owned()),
                target: Some((*org).to_owned()),
            }),
            _ => None,
        };
    }
    let rest = path.strip_prefix("/v1/apps")?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let m = method.as_str();
    let name = match (segments.as_slice(), m) {
        ([], "GET") => "list_apps",
        ([], "POST") => "create_app",
        ([_], "GET") => "get_app",
        ([_], "DELETE") => "delete_app",
        ([_, "machines"], "GET") => "list_machines",
        ([_, "machines"], "POST") => "create_machine",
        ([_, "machines", _], "GET") => "get_machine",
        ([_, "machines", _], "POST") => "update_machine",
        ([_, "machines", _], "DELETE") => "destroy_machine",
        ([_, "machines", _, "start"], "POST") => "start_machine",
        ([_, "machines", _, "stop"], "POST") => "stop_machine",
        ([_, "machines", _, "wait"], "GET") => "wait_machine",
        ([_, "machines", _, "exec"], "POST") => "exec",
        ([_, "volumes"], "GET") => "list_volumes",
        ([_, "volumes"], "POST") => "create_volume",
        ([_, "volumes", _], "GET") => "get_volume",
        ([_, "volumes", _], "DELETE") => "delete_volume",
        ([_, "volumes", _, "snapshots"], "GET") => "list_volume_snapshots",
        ([_, "volumes", _, "snapshots"], "POST") => "create_volume_snapshot",
        ([_, "ip_assignments"], "GET") => "list_ips",
        ([_, "ip_assignments"], "POST") => "allocate_ip",
        ([_, "ip_assignments", _], "DELETE") => "delete_ip",
        ([_, "secrets"], "GET") => "list_secrets",
        ([_, "secrets"], "POST") => "set_secrets",
        ([_, "secrets", _], "GET") => "get_secret",
        ([_, "secrets", _], "POST") => "set_secret",
        ([_, "secrets", _], "DELETE") => "delete_secret",
        _ => return None,
    };
    Some(Operation {
        name,
        app: segments.first().map(|s| (*s).to_owned()),
        org: None,
        target: segments.get(2).map(|s| (*s).to_owned()),
    })
}

/// Accepts `Bearer X`, `FlyV1 X` and `Bearer FlyV1 X` (fact sheet §1.2).
fn bearer_token(request: &Request) -> Option<String> {
    let header = request
        .headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .trim();
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .or_else(|| header.starts_with("FlyV1 ").then_some(header))?;
    Some(
        token
            .strip_prefix("FlyV1 ")
            .unwrap_or(token)
            .trim()
            .to_owned(),
    )
}

async fn api_layer(State(sim): Sim, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let operation = classify(&method, &path);
    let (op_name, app, org, target) = match &operation {
        Some(op) => (op.name, op.app.clone(), op.org.clone(), op.target.clone()),
        None => ("unknown", None, None, None),
    };
    let machine_id = if path.contains("/machines/") {
        target.clone()
    } else {
        None
    };
    let mut fault_note = None;

    let response = 'respond: {
        if !bearer_token(&request).is_some_and(|token| sim.token_ok(&token)) {
            break 'respond ApiError::unauthorized().into_response();
        }
        if operation.is_none() {
            break 'respond next.run(request).await;
        }
        // An org-wide call has no app: it counts against its org (its own bucket per operation).
        if !sim.limiter.allow(
            op_name,
            app.as_deref().or(org.as_deref()),
            machine_id.as_deref(),
        ) {
            fault_note = Some("rate_limit".to_owned());
            break 'respond ApiError::rate_limited().into_response();
        }
        let Some(decision) = sim
            .faults
            .decide(op_name, app.as_deref(), machine_id.as_deref())
        else {
            break 'respond next.run(request).await;
        };
        // `+after`: Fly did the work and still answered the fault.
        let source = decision
            .rule_id
            .map_or_else(|| "chaos".to_owned(), |id| format!("rule:{id}"));
        fault_note = Some(if decision.after_effect {
            format!("{source}+after")
        } else {
            source
        });
        match &decision.effect {
            FaultEffect::Latency { ms } => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                next.run(request).await
            }
            FaultEffect::Timeout { ms } => {
                if decision.after_effect {
                    drop(next.run(request).await);
                }
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "gateway timeout").into_response()
            }
            effect => {
                let error = faults::effect_error(effect, op_name).unwrap_or_else(|| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                });
                if decision.after_effect {
                    drop(next.run(request).await);
                }
                error.into_response()
            }
        }
    };

    let mut response = response;
    let region = sim
        .read(|w| w.regions.first().cloned())
        .unwrap_or_else(|| "sim".to_owned());
    if let Ok(value) = HeaderValue::from_str(&ids::request_id(&region)) {
        response.headers_mut().insert("fly-request-id", value);
    }
    sim.count(op_name, response.status().as_u16());
    sim.record(RequestRecord {
        seq: 0,
        method: method.to_string(),
        path,
        operation: op_name.to_owned(),
        app,
        target,
        status: response.status().as_u16(),
        fault: fault_note,
    });
    response
}

/// Parses a JSON body with Fly-like 400s instead of axum's plain-text rejections.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("invalid request body: {err}")))
}

/// Parses an optional JSON body: empty means `T::default()`.
pub fn parse_optional_body<T: DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_body(body)
    }
}

pub fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    (status, axum::Json(value)).into_response()
}

pub fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

/// `?key=value` pairs, repeated keys kept.
pub type Pairs = axum::extract::Query<Vec<(String, String)>>;

pub fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub fn query_flag(pairs: &[(String, String)], key: &str) -> bool {
    query_value(pairs, key).is_some_and(|v| v == "true" || v == "1")
}

/// A comma list (`state=started,stopped`), blanks dropped; empty when the key is absent.
pub fn query_list(pairs: &[(String, String)], key: &str) -> Vec<String> {
    query_value(pairs, key)
        .map(|s| {
            s.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default()
}
