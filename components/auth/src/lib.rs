//! The `auth` component: exports `kiloclaw:auth/auth` (see `wit/deps/auth/auth.wit` for the contract).
//!
//! A thin adapter: it reads the Spin variables it needs on every call (components keep no state
//! between requests), takes the token from the raw headers with `kiloclaw_core::edge::credentials`,
//! and verifies it with `kiloclaw_core::auth`. The clock is the host's wall clock.
//!
//! The token-revocation check (the user's `api_token_pepper` in PostgreSQL) belongs between token
//! verification and success in [`authenticate`]; it runs only when `database_url` is set, and this
//! version has no PostgreSQL client yet, so with `database_url` set it answers
//! `revocation-unavailable` rather than silently accepting a possibly revoked token.

use std::time::{SystemTime, UNIX_EPOCH};

use kiloclaw_core::auth::{JwtVerifier, TokenError};
use kiloclaw_core::edge::credentials::session_token;
use kiloclaw_core::ids;

#[allow(
    unsafe_code,
    reason = "wit-bindgen's generated canonical-ABI glue is unsafe by nature"
)]
mod bindings {
    wit_bindgen::generate!({
        world: "auth-component",
        path: "../../wit",
        // The shared types live in their own package (`wit/deps/types`); bind them here.
        with: { "kiloclaw:types/types@0.1.0": generate },
    });

    use super::AuthComponent;
    export!(AuthComponent with_types_in self);
}

use bindings::exports::kiloclaw::auth::auth::{
    AuthError, Credentials, GatewayTokenError, Guest, InternalKeyError, Principal,
};

/// The synthetic user `dev_mode` authenticates every request as (original §2.1 step 1).
const DEV_USER_ID: &str = "dev@kilocode.ai";

struct AuthComponent;

/// A Spin variable, `None` when unset, empty, or not visible to this component.
fn setting(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .ok()
        .filter(|value| !value.is_empty())
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn dev_mode() -> bool {
    setting("dev_mode").is_some_and(|value| value == "true")
}

fn principal_for(user_id: String, dev_mode: bool) -> Result<Principal, AuthError> {
    let sandbox_id = ids::sandbox_id_from_user_id(&user_id)
        .map_err(|error| AuthError::InvalidToken(error.to_string()))?;
    Ok(Principal {
        user_id,
        sandbox_id,
        dev_mode,
    })
}

/// Verifies the session token in `credentials`: signature, expiry, version, env.
fn verify(credentials: &Credentials) -> Result<Principal, AuthError> {
    let Some(secret) = setting("nextauth_secret") else {
        return Err(AuthError::NotConfigured);
    };
    let verifier = JwtVerifier::new(&secret, setting("worker_env")).map_err(|error| {
        // Logged, not returned: the caller only learns that the server is misconfigured.
        eprintln!("{{\"tag\":\"auth\",\"action\":\"config_rejected\",\"reason\":\"{error}\"}}");
        AuthError::NotConfigured
    })?;
    let token = session_token(
        credentials.authorization.as_deref(),
        credentials.cookie.as_deref(),
    )
    .ok_or(AuthError::MissingToken)?;
    let claims = verifier
        .verify(token, now_seconds())
        .map_err(|error: TokenError| AuthError::InvalidToken(error.to_string()))?;
    principal_for(claims.user_id, false)
}

impl Guest for AuthComponent {
    fn authenticate(credentials: Credentials) -> Result<Principal, AuthError> {
        if dev_mode() {
            return principal_for(DEV_USER_ID.to_owned(), true);
        }
        let principal = verify(&credentials)?;
        if setting("database_url").is_some() {
            // The revocation check needs the PostgreSQL client that a later version adds; refusing
            // is the safe answer until then (a revoked token must never pass).
            return Err(AuthError::RevocationUnavailable);
        }
        Ok(principal)
    }

    fn verify_session(credentials: Credentials) -> Result<Principal, AuthError> {
        verify(&credentials)
    }

    fn check_internal_key(presented: Option<String>) -> Result<(), InternalKeyError> {
        let Some(expected) = setting("internal_api_secret") else {
            return Err(InternalKeyError::NotConfigured);
        };
        match presented {
            Some(presented) if ids::constant_time_eq(&presented, &expected) => Ok(()),
            _ => Err(InternalKeyError::Forbidden),
        }
    }

    fn gateway_token(sandbox_id: String) -> Result<String, GatewayTokenError> {
        let secret = setting("gateway_token_secret").ok_or(GatewayTokenError::NotConfigured)?;
        Ok(ids::gateway_token(&secret, &sandbox_id))
    }

    fn sandbox_id_of(user_id: String) -> Result<String, String> {
        ids::sandbox_id_from_user_id(&user_id).map_err(|error| error.to_string())
    }
}
