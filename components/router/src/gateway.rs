//! The access gateway (`/kilo-access-gateway`, public): the dashboard's "Open" link lands here
//! (original-behaviour.md §1.1).
//!
//! GET: with a valid, unrevoked session cookie for the same user, redirect into the Control UI with
//! the gateway token and the direct gateway URL in the fragment; otherwise show the access-code form.
//! POST: the auth component redeems the one-time code (PostgreSQL with `database_url`, else the
//! app's key-value store) under per-user and per-address attempt limits; success sets the
//! `kiloclaw-auth` cookie and sends the browser on to the Control UI.

use kiloclaw_core::edge::access_gateway::{
    INVALID_CODE, MISSING_FIELDS, SERVER_CONFIGURATION, USER_NOT_FOUND, accepted_page,
    control_ui_location, form_page, session_cookie,
};
use kiloclaw_core::edge::body::{form_pairs, query_param};
use kiloclaw_core::edge::credentials::{SESSION_COOKIE, cookie_value};
use kiloclaw_core::edge::proxy::direct_gateway_url;

use crate::dispatch::log_event;
use crate::http::{Reply, Request};
use crate::imports::{Credentials, RedeemError, auth, instances};
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
        // Only the cookie counts here (not a Bearer header). Unlike the original, the revocation
        // check applies: a revoked cookie gets the form, not the gateway token.
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
    let code = field("code");
    let user_id = field("userId");
    let client_address = request.header("spin-client-addr").map(str::to_owned);
    match auth::redeem_access_code(&code, &user_id, client_address.as_deref()) {
        Ok(session) => {
            let secure = settings::get("worker_env").as_deref() != Some("development");
            let location = redirect_target(&session.user_id, &session.sandbox_id);
            Reply::html(200, accepted_page(&location))
                .with_header("set-cookie", &session_cookie(&session.token, secure))
                .with_header("cache-control", "no-store")
        }
        Err(RedeemError::MissingFields) => {
            Reply::html(400, form_page(&user_id, Some(MISSING_FIELDS)))
        }
        Err(RedeemError::InvalidCode) => Reply::html(401, form_page(&user_id, Some(INVALID_CODE))),
        Err(RedeemError::UserNotFound) => {
            Reply::html(401, form_page(&user_id, Some(USER_NOT_FOUND)))
        }
        Err(RedeemError::RateLimited(retry_after_s)) => Reply::html(
            429,
            form_page(&user_id, Some(&too_many_attempts(retry_after_s))),
        )
        .with_header("retry-after", &retry_after_s.to_string()),
        Err(RedeemError::NotConfigured) => {
            Reply::html(500, form_page(&user_id, Some(SERVER_CONFIGURATION)))
        }
        Err(RedeemError::Unavailable(reason)) => {
            log_event(
                "access_gateway",
                &[("action", "redeem_unavailable"), ("reason", &reason)],
            );
            Reply::html(500, form_page(&user_id, Some(SIGN_IN_UNAVAILABLE)))
        }
    }
}

/// Shown when the store of codes or the user table cannot be asked.
const SIGN_IN_UNAVAILABLE: &str = "Sign-in is temporarily unavailable. Please try again shortly.";

/// Shown with a 429, in whole minutes rounded up.
fn too_many_attempts(retry_after_s: u64) -> String {
    let minutes = retry_after_s.div_ceil(60).max(1);
    let unit = if minutes == 1 { "minute" } else { "minutes" };
    format!("Too many attempts. Please try again in {minutes} {unit}.")
}
