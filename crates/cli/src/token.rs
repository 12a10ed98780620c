//! User JWTs as Next.js mints them (original-behaviour.md §2.1), through the core's minting so
//! the CLI and the router can never disagree on the claims: HS256 over `nextauth_secret`, claims
//! `{kiloUserId, apiTokenPepper: null, version: 3, env?, iat, exp}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiloclaw_core::auth::{MintRequest, mint_token};

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The user id is empty.
    #[error("the user id must not be empty")]
    EmptyUser,
    /// The lifetime is zero or longer than ten years.
    #[error("the token lifetime must be between 1 second and 10 years")]
    BadTtl,
    /// The clock reads before 1970.
    #[error("the system clock is before the UNIX epoch")]
    Clock,
    /// The secret is unusable (too short) or signing failed.
    #[error(transparent)]
    Core(#[from] kiloclaw_core::auth::MintError),
}

const TEN_YEARS_S: u64 = 10 * 365 * 24 * 3600;

/// Mints a user token valid for `ttl` from now. `env` is the `worker_env` the router expects (the
/// router compares it only when both sides carry one).
pub fn mint_user_token(
    secret: &str,
    user_id: &str,
    ttl: Duration,
    env: Option<&str>,
) -> Result<String, MintError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| MintError::Clock)?
        .as_secs();
    mint_user_token_at(secret, user_id, ttl, env, now)
}

/// [`mint_user_token`] with an explicit issue time (seconds since the epoch).
pub fn mint_user_token_at(
    secret: &str,
    user_id: &str,
    ttl: Duration,
    env: Option<&str>,
    issued_at_s: u64,
) -> Result<String, MintError> {
    if user_id.is_empty() {
        return Err(MintError::EmptyUser);
    }
    let ttl_s = ttl.as_secs();
    if ttl_s == 0 || ttl_s > TEN_YEARS_S {
        return Err(MintError::BadTtl);
    }
    let request = MintRequest {
        user_id: user_id.to_owned(),
        api_token_pepper: None,
        env: env.filter(|e| !e.is_empty()).map(str::to_owned),
        issued_at_s,
        ttl_s,
    };
    Ok(mint_token(secret, &request)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiloclaw_core::auth::JwtVerifier;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    #[test]
    fn the_routers_verifier_accepts_it() -> anyhow::Result<()> {
        let token = mint_user_token(
            SECRET,
            "user-1",
            Duration::from_secs(3600),
            Some("development"),
        )?;
        let verifier = JwtVerifier::new(SECRET, Some("development".into()))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = verifier.verify(&token, now)?;
        assert_eq!(claims.user_id, "user-1");
        assert_eq!(claims.env.as_deref(), Some("development"));
        assert_eq!(claims.api_token_pepper, None);
        assert!(claims.expires_at_s >= now + 3599 && claims.expires_at_s <= now + 3601);
        // Another deployment's secret or env does not accept it.
        assert!(
            JwtVerifier::new("another-secret-that-is-32-bytes-long!", None)?
                .verify(&token, now)
                .is_err()
        );
        assert!(
            JwtVerifier::new(SECRET, Some("production".into()))?
                .verify(&token, now)
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn it_expires_after_the_ttl() -> anyhow::Result<()> {
        let token = mint_user_token_at(SECRET, "u", Duration::from_secs(60), None, 1_700_000_000)?;
        let verifier = JwtVerifier::new(SECRET, None)?;
        assert!(verifier.verify(&token, 1_700_000_030).is_ok());
        assert!(verifier.verify(&token, 1_700_000_061).is_err());
        Ok(())
    }

    #[test]
    fn refuses_what_the_router_would_reject() {
        assert!(matches!(
            mint_user_token("short", "u", Duration::from_secs(60), None),
            Err(MintError::Core(_))
        ));
        assert!(matches!(
            mint_user_token(SECRET, "", Duration::from_secs(60), None),
            Err(MintError::EmptyUser)
        ));
        assert!(matches!(
            mint_user_token(SECRET, "u", Duration::ZERO, None),
            Err(MintError::BadTtl)
        ));
    }
}
