//! Authenticate and route: the first two phases for every request.

use kiloclaw_core::edge::errors::EdgeError;
use kiloclaw_core::edge::routes::{Route, Scope, classify, required_settings};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};

use crate::http::{self, ReadError, Reply, Request};
use crate::imports::{Credentials, Principal, auth};
use crate::{forward, gateway, platform, settings, user};

/// One JSON log line: `{"tag": tag, …fields}`. Callers never pass secrets, tokens or cookies.
pub fn log_event(tag: &str, fields: &[(&str, &str)]) {
    let mut line = serde_json::Map::new();
    line.insert("tag".to_owned(), tag.into());
    for (key, value) in fields {
        line.insert((*key).to_owned(), (*value).into());
    }
    println!("{}", serde_json::Value::Object(line));
}

/// Serves one request.
pub async fn handle(incoming: IncomingRequest, response_out: ResponseOutparam) {
    let request = match http::read(incoming).await {
        Ok(request) => request,
        Err(ReadError::TooLarge) => {
            let reply = Reply::json(413, &serde_json::json!({"error": "Request body too large"}));
            return http::send(response_out, reply).await;
        }
        Err(ReadError::Broken) => {
            let reply = Reply::json(
                400,
                &serde_json::json!({"error": "Request body could not be read"}),
            );
            return http::send(response_out, reply).await;
        }
    };
    // No line per request here: the host's access log has one. The router logs what only it
    // knows (errors, recoveries), so a healthy request costs no guest logging.
    let reply = route(&request).await;
    http::send(response_out, reply).await;
}

async fn route(request: &Request) -> Reply {
    let route = classify(&request.method, &request.path);
    match route {
        Route::Health => {
            return Reply::json(
                200,
                &serde_json::json!({"status": "ok", "service": "kiloclaw", "gateway_port": 18789}),
            );
        }
        Route::DebugGone => {
            return Reply::bytes(404, "text/plain; charset=utf-8", b"404 Not Found".to_vec());
        }
        Route::AccessGatewayForm => return gateway::form(request),
        Route::AccessGatewayRedeem => return gateway::redeem(request),
        _ => {}
    }
    let scope = route.scope();
    if !settings::dev_mode() {
        let missing = settings::missing(required_settings(scope));
        if !missing.is_empty() {
            return Reply::error(&EdgeError::MissingSettings {
                missing,
                platform: scope == Scope::Platform,
            });
        }
    }
    match route {
        Route::Platform(platform_route) => match check_internal_key(request) {
            Ok(()) => platform::serve(platform_route, request),
            Err(error) => Reply::error(&error),
        },
        Route::PlatformNotFound => match check_internal_key(request) {
            Ok(()) => Reply::error(&EdgeError::NotFound),
            Err(error) => Reply::error(&error),
        },
        Route::PlatformMethodNotAllowed { allow } => match check_internal_key(request) {
            Ok(()) => Reply::error(&EdgeError::MethodNotAllowed { allow }),
            Err(error) => Reply::error(&error),
        },
        Route::User(user_route) => match authenticate(request) {
            Ok(principal) => user::serve(user_route, &principal),
            Err(error) => Reply::error(&error),
        },
        Route::Proxy => match authenticate(request) {
            Ok(principal) => forward::serve(request, &principal).await,
            // The proxy's own wording for "no session" (original §3 step 1).
            Err(EdgeError::AuthenticationRequired) => Reply::error(&EdgeError::NoSession),
            Err(error) => Reply::error(&error),
        },
        Route::Health
        | Route::DebugGone
        | Route::AccessGatewayForm
        | Route::AccessGatewayRedeem => Reply::error(&EdgeError::Internal(
            "public route reached the authenticated path".to_owned(),
        )),
    }
}

fn check_internal_key(request: &Request) -> Result<(), EdgeError> {
    auth::check_internal_key(request.header("x-internal-api-key")).map_err(EdgeError::from)
}

/// The user's credentials as the auth component expects them (raw headers).
pub fn credentials(request: &Request) -> Credentials {
    Credentials {
        authorization: request.header("authorization").map(str::to_owned),
        cookie: request.cookie_header(),
    }
}

fn authenticate(request: &Request) -> Result<Principal, EdgeError> {
    auth::authenticate(&credentials(request)).map_err(EdgeError::from)
}
