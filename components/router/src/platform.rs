//! Platform routes (`/api/platform/*`, backend to backend, already key-checked): the original's
//! paths, bodies and status codes (original-behaviour.md §1.3), plus `POST /api/platform/reconcile`.

use kiloclaw_core::edge::body::{json_object, query_param, required_query_param, user_id_field};
use kiloclaw_core::edge::errors::EdgeError;
use kiloclaw_core::edge::proxy::direct_gateway_url;
use kiloclaw_core::edge::routes::PlatformRoute;
use serde_json::json;

use crate::http::{Reply, Request};
use crate::imports::{self, IssueError, auth, instances};
use crate::settings;

/// Default and ceiling of the reconcile budget a caller may ask for: under typical gateway
/// request timeouts, so the caller gets the summary instead of a timeout.
const DEFAULT_RECONCILE_BUDGET_MS: u32 = 20_000;
const MAX_RECONCILE_BUDGET_MS: u32 = 55_000;

const USER_ID_REQUIRED: &str = "userId query parameter is required";

/// Serves a platform route.
pub fn serve(route: PlatformRoute, request: &Request) -> Reply {
    match respond(route, request) {
        Ok(reply) => reply,
        Err(error) => Reply::error(&error),
    }
}

/// The body as a JSON object plus its `userId`.
fn body_with_user(request: &Request) -> Result<(String, String), EdgeError> {
    let object = json_object(&request.body)?;
    let user_id = user_id_field(&object)?;
    Ok((user_id, serde_json::Value::Object(object).to_string()))
}

/// A required non-empty string field of a JSON body (`z.string().min(1)`).
fn non_empty_string(
    object: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<String, EdgeError> {
    match object.get(field) {
        Some(serde_json::Value::String(value)) if !value.is_empty() => Ok(value.clone()),
        other => Err(EdgeError::InvalidRequest(vec![
            kiloclaw_core::edge::errors::FieldError {
                field: field.to_owned(),
                message: match other {
                    None | Some(serde_json::Value::Null) => "Required",
                    Some(serde_json::Value::String(_)) => {
                        "String must contain at least 1 character(s)"
                    }
                    Some(_) => "Expected string",
                }
                .to_owned(),
            },
        ])),
    }
}

fn query_user(request: &Request) -> Result<String, EdgeError> {
    required_query_param(request.query.as_deref(), "userId", USER_ID_REQUIRED)
}

fn ok() -> Reply {
    Reply::json(200, &json!({"ok": true}))
}

fn respond(route: PlatformRoute, request: &Request) -> Result<Reply, EdgeError> {
    match route {
        PlatformRoute::Provision => {
            let (user_id, config) = body_with_user(request)?;
            let sandbox_id = instances::provision(&user_id, &config)?;
            Ok(Reply::json(201, &json!({"sandboxId": sandbox_id})))
        }
        PlatformRoute::KilocodeConfig => {
            let (user_id, patch) = body_with_user(request)?;
            let config = instances::patch_kilocode_config(&user_id, &patch)?;
            let models = config.models.map(|models| {
                models
                    .into_iter()
                    .map(|m| json!({"id": m.id, "name": m.name}))
                    .collect::<Vec<_>>()
            });
            Ok(Reply::json(
                200,
                &json!({
                    "kilocodeApiKey": config.api_key,
                    "kilocodeApiKeyExpiresAt": config.api_key_expires_at,
                    "kilocodeDefaultModel": config.default_model,
                    "kilocodeModels": models,
                }),
            ))
        }
        PlatformRoute::Channels => {
            let (user_id, patch) = body_with_user(request)?;
            let channels = instances::patch_channels(&user_id, &patch)?;
            Ok(Reply::json(
                200,
                &json!({
                    "telegram": channels.telegram,
                    "discord": channels.discord,
                    "slackBot": channels.slack_bot,
                    "slackApp": channels.slack_app,
                }),
            ))
        }
        PlatformRoute::Start => {
            let (user_id, _) = body_with_user(request)?;
            instances::start(&user_id)?;
            Ok(ok())
        }
        PlatformRoute::Stop => {
            let (user_id, _) = body_with_user(request)?;
            instances::stop(&user_id)?;
            Ok(ok())
        }
        PlatformRoute::Destroy => {
            let (user_id, _) = body_with_user(request)?;
            // An incomplete destroy is finished by the reconciler; the API still answers 200.
            instances::destroy(&user_id)?;
            Ok(ok())
        }
        PlatformRoute::Status => {
            let user_id = query_user(request)?;
            let status = instances::status(&user_id)?;
            Ok(Reply::json(200, &imports::status_json(&status)))
        }
        PlatformRoute::GatewayToken => {
            let user_id = query_user(request)?;
            let status = instances::status(&user_id)?;
            let sandbox_id = status.sandbox_id.ok_or(EdgeError::NotProvisioned)?;
            let token = auth::gateway_token(&sandbox_id)?;
            // WebSockets go to the gateway directly (Spin cannot proxy them), so the client needs its
            // URL beside the token; null until the instance has its own Fly app.
            let gateway_url = status
                .fly_app_name
                .map(|app| direct_gateway_url(&settings::proxy_base_template(), &app));
            Ok(Reply::json(
                200,
                &json!({"gatewayToken": token, "gatewayUrl": gateway_url}),
            ))
        }
        PlatformRoute::VolumeSnapshots => {
            let user_id = query_user(request)?;
            let snapshots: Vec<_> = instances::volume_snapshots(&user_id)?
                .into_iter()
                .map(|s| {
                    json!({
                        "id": s.id,
                        "created_at": s.created_at,
                        "digest": s.digest,
                        "retention_days": s.retention_days,
                        "size": s.size,
                        "status": s.status,
                        "volume_size": s.volume_size,
                    })
                })
                .collect();
            Ok(Reply::json(200, &json!({"snapshots": snapshots})))
        }
        PlatformRoute::Pairing => {
            let user_id =
                required_query_param(request.query.as_deref(), "userId", "userId is required")?;
            // Only `refresh=true` bypasses the cache, as in the original.
            let refresh =
                query_param(request.query.as_deref(), "refresh").as_deref() == Some("true");
            let requests = instances::pairing_requests(&user_id, refresh)?;
            let requests: serde_json::Value = serde_json::from_str(&requests).map_err(|error| {
                EdgeError::Internal(format!("pairing list is not JSON: {error}"))
            })?;
            Ok(Reply::json(200, &json!({"requests": requests})))
        }
        PlatformRoute::PairingApprove => {
            let object = json_object(&request.body)?;
            let user_id = user_id_field(&object)?;
            let channel = non_empty_string(&object, "channel")?;
            let code = non_empty_string(&object, "code")?;
            let outcome = instances::approve_pairing(&user_id, &channel, &code)?;
            // The original answers a failed approval with the same body and status 500.
            let status = if outcome.success { 200 } else { 500 };
            Ok(Reply::json(
                status,
                &json!({"success": outcome.success, "message": outcome.message}),
            ))
        }
        PlatformRoute::Doctor => {
            let (user_id, _) = body_with_user(request)?;
            let outcome = instances::run_doctor(&user_id)?;
            Ok(Reply::json(
                200,
                &json!({"success": outcome.success, "output": outcome.message}),
            ))
        }
        PlatformRoute::Reconcile => reconcile(request),
        PlatformRoute::AccessCode => issue_access_code(request),
    }
}

/// `POST /api/platform/access-code` `{"userId": …}` → 201 `{"code", "expiresAt"}`: a one-time code
/// for the access gateway, in the store the gateway redeems from.
fn issue_access_code(request: &Request) -> Result<Reply, EdgeError> {
    let (user_id, _) = body_with_user(request)?;
    let issued = auth::issue_access_code(&user_id).map_err(|error| match error {
        IssueError::InvalidUser(message) => {
            EdgeError::InvalidRequest(vec![kiloclaw_core::edge::errors::FieldError {
                field: "userId".to_owned(),
                message,
            }])
        }
        IssueError::Unavailable(detail) => EdgeError::StoreUnavailable(detail),
    })?;
    let expires_at = chrono::DateTime::from_timestamp_millis(issued.expires_at_ms)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    Ok(Reply::json(
        201,
        &json!({"code": issued.code, "expiresAt": expires_at}),
    ))
}

/// `POST /api/platform/reconcile`: `{"userId": …}` reconciles that instance now; otherwise
/// (`{}`, `{"budgetMs": n}` or an empty body) runs the due reconciles within the budget.
fn reconcile(request: &Request) -> Result<Reply, EdgeError> {
    let object = if request.body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        json_object(&request.body)?
    };
    if object.contains_key("userId") {
        let user_id = user_id_field(&object)?;
        let outcome = instances::reconcile(&user_id)?;
        return Ok(Reply::json(
            200,
            &json!({
                "checked": outcome.checked,
                "rateLimited": outcome.rate_limited,
                "status": outcome.status.map(imports::lifecycle_name),
                "nextCheckAt": outcome.next_check_at,
            }),
        ));
    }
    let budget_ms = match object.get("budgetMs") {
        None | Some(serde_json::Value::Null) => DEFAULT_RECONCILE_BUDGET_MS,
        Some(value) => value
            .as_u64()
            .filter(|&ms| ms > 0)
            .map(|ms| {
                u32::try_from(ms)
                    .unwrap_or(u32::MAX)
                    .min(MAX_RECONCILE_BUDGET_MS)
            })
            .ok_or_else(|| {
                EdgeError::InvalidRequest(vec![kiloclaw_core::edge::errors::FieldError {
                    field: "budgetMs".to_owned(),
                    message: "Expected a positive integer (milliseconds)".to_owned(),
                }])
            })?,
    };
    let summary = instances::reconcile_due(budget_ms)?;
    Ok(Reply::json(
        200,
        &json!({
            "minutes": summary.minutes,
            "checked": summary.checked,
            "skipped": summary.skipped,
            "requeued": summary.requeued,
            "errors": summary.errors,
            "rateLimited": summary.rate_limited,
            "elapsedMs": summary.elapsed_ms,
        }),
    ))
}
