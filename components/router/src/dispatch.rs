//! Admit and route: every request is classified and admitted (settings, internal key or user
//! session) on its head alone; its body is read only after that.

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

/// Serves one request: route and admit it on its head alone, and only then read its body, so that
/// nobody can make the host hold an instance and buffer a body before proving who they are.
pub async fn handle(incoming: IncomingRequest, response_out: ResponseOutparam) {
    let mut request = http::head(&incoming);
    let route = classify(&request.method, &request.path);
    let admitted = match admit(&route, &request) {
        Ok(admitted) => admitted,
        Err(reply) => return http::send(response_out, reply).await,
    };
    if let Err(error) = http::read_body(incoming, &mut request).await {
        let reply = match error {
            ReadError::TooLarge => {
                Reply::json(413, &serde_json::json!({"error": "Request body too large"}))
            }
            ReadError::Broken => Reply::json(
                400,
                &serde_json::json!({"error": "Request body could not be read"}),
            ),
        };
        return http::send(response_out, reply).await;
    }
    // No line per request here: the host's access log has one. The router logs what only it
    // knows (errors, recoveries), so a healthy request costs no guest logging.
    let reply = serve(route, admitted, &request).await;
    http::send(response_out, reply).await;
}

/// Who a request was admitted as.
enum Admitted {
    /// A public route: nobody needs to be anybody.
    Public,
    /// The backend, by its internal key.
    Backend,
    /// A user.
    User(Principal),
}

/// The checks that need only the request head: settings present, internal key, user session.
fn admit(route: &Route, request: &Request) -> Result<Admitted, Reply> {
    let scope = route.scope();
    if scope == Scope::Public {
        return Ok(Admitted::Public);
    }
    if !settings::dev_mode() {
        let missing = settings::missing(required_settings(scope));
        if !missing.is_empty() {
            return Err(Reply::error(&EdgeError::MissingSettings {
                missing,
                platform: scope == Scope::Platform,
            }));
        }
    }
    match route {
        Route::Platform(_) | Route::PlatformNotFound | Route::PlatformMethodNotAllowed { .. } => {
            check_internal_key(request)
                .map(|()| Admitted::Backend)
                .map_err(|error| Reply::error(&error))
        }
        Route::User(_) => authenticate(request)
            .map(Admitted::User)
            .map_err(|error| Reply::error(&error)),
        Route::Proxy => match authenticate(request) {
            Ok(principal) => Ok(Admitted::User(principal)),
            // The proxy's own wording for "no session" (original §3 step 1).
            Err(EdgeError::AuthenticationRequired) => Err(Reply::error(&EdgeError::NoSession)),
            Err(error) => Err(Reply::error(&error)),
        },
        Route::Health
        | Route::DebugGone
        | Route::AccessGatewayForm
        | Route::AccessGatewayRedeem => Ok(Admitted::Public),
    }
}

async fn serve(route: Route, admitted: Admitted, request: &Request) -> Reply {
    match (route, admitted) {
        (Route::Health, _) => Reply::json(
            200,
            &serde_json::json!({"status": "ok", "service": "kiloclaw", "gateway_port": 18789}),
        ),
        (Route::DebugGone, _) => {
            Reply::bytes(404, "text/plain; charset=utf-8", b"404 Not Found".to_vec())
        }
        (Route::AccessGatewayForm, _) => gateway::form(request),
        (Route::AccessGatewayRedeem, _) => gateway::redeem(request),
        (Route::Platform(platform_route), Admitted::Backend) => {
            platform::serve(platform_route, request)
        }
        (Route::PlatformNotFound, Admitted::Backend) => Reply::error(&EdgeError::NotFound),
        (Route::PlatformMethodNotAllowed { allow }, Admitted::Backend) => {
            Reply::error(&EdgeError::MethodNotAllowed { allow })
        }
        (Route::User(user_route), Admitted::User(principal)) => user::serve(user_route, &principal),
        (Route::Proxy, Admitted::User(principal)) => forward::serve(request, &principal).await,
        _ => Reply::error(&EdgeError::Internal(
            "a request reached a route it was not admitted to".to_owned(),
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
