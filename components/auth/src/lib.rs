//! The `auth` component: exports `kiloclaw:auth/auth` (see `wit/deps/auth/auth.wit` for the contract).
//!
//! A thin adapter: it reads the Spin variables it needs on every call (components keep no state
//! between requests), takes the token from the raw headers with `kiloclaw_core::edge::credentials`,
//! and verifies it with `kiloclaw_core::auth`. The clock is the host's wall clock.
//!
//! With `database_url` set, a verified token must also pass the revocation check
//! (`kiloclaw_core::signin::revocation`: the user's `api_token_pepper` in PostgreSQL, cached in
//! key-value for `revocation_cache_ttl_seconds`), and access codes are redeemed in PostgreSQL.
//! Without it (local runs) there is no revocation check and access codes live in the app's
//! key-value store (`kiloclaw_core::signin::access_codes`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiloclaw_core::auth::{JwtVerifier, TokenError, VerifiedClaims};
use kiloclaw_core::clock::{Clock, SystemClock};
use kiloclaw_core::edge::credentials::session_token;
use kiloclaw_core::ids;
use kiloclaw_core::kv::KeyValue;
use kiloclaw_core::signin::access_codes::KvAccessCodes;
use kiloclaw_core::signin::attempts::{AttemptLimiter, AttemptLimits};
use kiloclaw_core::signin::redeem::{
    IssueError as CoreIssueError, RedeemError as CoreRedeemError, SignIn,
};
use kiloclaw_core::signin::revocation::{DEFAULT_CACHE_TTL, RevocationCheck, RevocationError};
use kiloclaw_core::signin::{AccessCodeStore, UserDirectory};
use kiloclaw_spin_adapters::postgres::Database;
use kiloclaw_spin_adapters::{HostRandom, install_logger, kv};

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
    AuthError, Credentials, GatewayTokenError, Guest, InternalKeyError, IssueError, IssuedCode,
    Principal, RedeemError, Session,
};

/// The synthetic user `dev_mode` authenticates every request as (original §2.1 step 1).
const DEV_USER_ID: &str = "dev@kilocode.ai";

struct AuthComponent;

/// A Spin variable, `None` when unset, empty, or not visible to this component.
fn setting(name: &str) -> Option<String> {
    kiloclaw_spin_adapters::variable(name)
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
fn verify(credentials: &Credentials) -> Result<VerifiedClaims, AuthError> {
    let Some(secret) = setting("nextauth_secret") else {
        return Err(AuthError::NotConfigured);
    };
    let verifier = JwtVerifier::new(&secret, setting("worker_env")).map_err(|error| {
        // Logged, not returned: the caller only learns that the server is misconfigured.
        install_logger();
        tracing::error!(tag = "auth", action = "config_rejected", reason = %error);
        AuthError::NotConfigured
    })?;
    let token = session_token(
        credentials.authorization.as_deref(),
        credentials.cookie.as_deref(),
    )
    .ok_or(AuthError::MissingToken)?;
    verifier
        .verify(token, now_seconds())
        .map_err(|error: TokenError| AuthError::InvalidToken(error.to_string()))
}

/// `revocation_cache_ttl_seconds`, or the default; a value that is not a number of seconds is
/// a configuration error, refused rather than guessed.
fn cache_ttl() -> Result<Duration, AuthError> {
    match setting("revocation_cache_ttl_seconds") {
        None => Ok(DEFAULT_CACHE_TTL),
        Some(value) => value.parse::<u64>().map(Duration::from_secs).map_err(|_| {
            tracing::error!(
                tag = "auth",
                action = "config_rejected",
                reason = "revocation_cache_ttl_seconds is not a whole number of seconds"
            );
            AuthError::NotConfigured
        }),
    }
}

/// The token verified, then (with a database) checked against the user's current pepper.
fn verify_and_check(credentials: &Credentials) -> Result<Principal, AuthError> {
    let claims = verify(credentials)?;
    if let Some(database) = Database::configured() {
        install_logger();
        let ttl = cache_ttl()?;
        let bucket = kv::open_configured().map_err(|error| {
            tracing::error!(tag = "auth", action = "store_unavailable", reason = %error);
            AuthError::RevocationUnavailable
        })?;
        let check = RevocationCheck {
            directory: &database,
            kv: bucket.as_ref(),
            ttl,
        };
        check
            .check(&claims.user_id, claims.api_token_pepper.as_deref(), SystemClock.now_ms())
            .map_err(|error| match error {
                RevocationError::UserNotFound => AuthError::UserNotFound,
                RevocationError::TokenRevoked => AuthError::TokenRevoked,
                RevocationError::Unavailable(reason) => {
                    tracing::error!(tag = "auth", action = "revocation_unavailable", reason = %reason);
                    AuthError::RevocationUnavailable
                }
            })?;
    }
    principal_for(claims.user_id, false)
}

/// Runs `body` with sign-in wired to the configured stores: PostgreSQL's tables when
/// `database_url` is set, the app's key-value store otherwise.
fn with_sign_in<T>(unavailable: impl Fn(String) -> T, body: impl FnOnce(&SignIn<'_>) -> T) -> T {
    install_logger();
    let bucket = match kv::open_configured() {
        Ok(bucket) => bucket,
        Err(error) => return unavailable(error.to_string()),
    };
    let database = Database::configured();
    let local_codes = KvAccessCodes::new(bucket.as_ref());
    let codes: &dyn AccessCodeStore = match &database {
        Some(database) => database,
        None => &local_codes,
    };
    let secret = setting("nextauth_secret");
    let worker_env = setting("worker_env");
    let sign_in = SignIn {
        codes,
        directory: database.as_ref().map(|d| d as &dyn UserDirectory),
        limiter: AttemptLimiter {
            kv: bucket.as_ref() as &dyn KeyValue,
            limits: AttemptLimits::default(),
        },
        nextauth_secret: secret.as_deref(),
        worker_env: worker_env.as_deref(),
    };
    body(&sign_in)
}

impl Guest for AuthComponent {
    fn authenticate(credentials: Credentials) -> Result<Principal, AuthError> {
        if dev_mode() {
            return principal_for(DEV_USER_ID.to_owned(), true);
        }
        verify_and_check(&credentials)
    }

    fn verify_session(credentials: Credentials) -> Result<Principal, AuthError> {
        verify_and_check(&credentials)
    }

    fn redeem_access_code(
        code: String,
        user_id: String,
        client_address: Option<String>,
    ) -> Result<Session, RedeemError> {
        with_sign_in(
            |reason| Err(RedeemError::Unavailable(reason)),
            |sign_in| {
                let session = sign_in
                    .redeem(
                        &code,
                        &user_id,
                        client_address.as_deref(),
                        SystemClock.now_ms(),
                    )
                    .map_err(|error| match error {
                        CoreRedeemError::MissingFields => RedeemError::MissingFields,
                        CoreRedeemError::RateLimited(limited) => {
                            RedeemError::RateLimited(limited.retry_after_s)
                        }
                        CoreRedeemError::InvalidCode => RedeemError::InvalidCode,
                        CoreRedeemError::UserNotFound => RedeemError::UserNotFound,
                        CoreRedeemError::Unavailable(reason) => RedeemError::Unavailable(reason),
                        CoreRedeemError::NotConfigured => RedeemError::NotConfigured,
                    })?;
                Ok(Session {
                    token: session.token,
                    user_id: session.user_id,
                    sandbox_id: session.sandbox_id,
                })
            },
        )
    }

    fn issue_access_code(user_id: String) -> Result<IssuedCode, IssueError> {
        with_sign_in(
            |reason| Err(IssueError::Unavailable(reason)),
            |sign_in| {
                let issued = sign_in
                    .issue(&user_id, &HostRandom, SystemClock.now_ms())
                    .map_err(|error| match error {
                        CoreIssueError::InvalidUser(reason) => IssueError::InvalidUser(reason),
                        CoreIssueError::Unavailable(reason) => IssueError::Unavailable(reason),
                    })?;
                Ok(IssuedCode {
                    code: issued.code,
                    expires_at_ms: issued.expires_at_ms,
                })
            },
        )
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
