//! The access gateway (`/kilo-access-gateway`, public): the dashboard's "Open" link lands here
//! (original-behaviour.md §1.1).
//!
//! GET: with a valid session cookie for the same user, redirect into the Control UI with the gateway
//! token and the direct gateway URL in the fragment; otherwise show the access-code form.
//! POST: redeeming an access code needs PostgreSQL (`database_url`), which a later version adds;
//! until then it answers the original's "Server configuration error." page (500) after validating
//! the form, so nothing is half-done.

use kiloclaw_core::edge::access_gateway::{
    MISSING_FIELDS, SERVER_CONFIGURATION, control_ui_location, form_page,
};
use kiloclaw_core::edge::body::{form_pairs, query_param};
use kiloclaw_core::edge::credentials::{SESSION_COOKIE, cookie_value};
use kiloclaw_core::edge::proxy::direct_gateway_url;

use crate::dispatch::log_event;
use crate::http::{Reply, Request};
use crate::imports::{Credentials, auth, instances};
use crate::settings;

/// `GET /kilo-access-gateway?userId=…`.
pub fn form(request: &Request) -> Reply {
    let Some(user_id) = query_param(request.query.as_deref(), "userId").filter(|id| !id.is_empty())
    else {
        return Reply::bytes(
            400,
            "text/plain; charset=utf-8",
            b"Missing userId parameter".to_vec(),
        );
    };
    let cookie = request.cookie_header();
    if cookie_value(cookie.as_deref(), SESSION_COOKIE).is_some() {
        // Only the cookie counts here (not a Bearer header), and no revocation check (as the original).
        let credentials = Credentials {
            authorization: None,
            cookie: cookie.clone(),
        };
        if let Ok(principal) = auth::verify_session(&credentials)
            && principal.user_id == user_id
        {
            return Reply::bytes(302, "text/plain; charset=utf-8", Vec::new()).with_header(
                "location",
                &redirect_target(&principal.user_id, &principal.sandbox_id),
            );
        }
    }
    Reply::html(200, form_page(&user_id, None))
}

/// Where a signed-in user goes: the Control UI with token and direct gateway URL, or `/` when the
/// gateway token cannot be derived.
fn redirect_target(user_id: &str, sandbox_id: &str) -> String {
    let token = auth::gateway_token(sandbox_id).ok();
    let gateway_url = instances::status(user_id)
        .ok()
        .and_then(|status| status.fly_app_name)
        .map(|app| direct_gateway_url(&settings::proxy_base_template(), &app));
    control_ui_location(token.as_deref(), gateway_url.as_deref())
}

/// `POST /kilo-access-gateway` with a URL-encoded form `{code, userId}`.
pub fn redeem(request: &Request) -> Reply {
    let pairs = form_pairs(&String::from_utf8_lossy(&request.body));
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim().to_owned())
            .unwrap_or_default()
    };
    let code = field("code").to_uppercase();
    let user_id = field("userId");
    if code.is_empty() || user_id.is_empty() {
        return Reply::html(400, form_page(&user_id, Some(MISSING_FIELDS)));
    }
    if settings::get("database_url").is_none() || settings::get("nextauth_secret").is_none() {
        return Reply::html(500, form_page(&user_id, Some(SERVER_CONFIGURATION)));
    }
    log_event(
        "access_gateway",
        &[
            ("action", "redeem_unavailable"),
            ("reason", "no PostgreSQL client in this version"),
        ],
    );
    Reply::html(500, form_page(&user_id, Some(SERVER_CONFIGURATION)))
}
