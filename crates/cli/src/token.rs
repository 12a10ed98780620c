//! User JWTs as Next.js mints them: HS256 over `NEXTAUTH_SECRET`, claims
//! `{kiloUserId, version: 3, env?, iat, exp}` (original-behaviour.md §2.1).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The token version the router accepts (`KILO_TOKEN_VERSION`).
pub const TOKEN_VERSION: u32 = 3;

/// The shortest key the router accepts; shorter keys are refused here too, so a token is never
/// minted that the router would reject for its key.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The user id is empty.
    #[error("the user id must not be empty")]
    EmptyUser,
    /// The signing key is shorter than [`MIN_SECRET_BYTES`].
    #[error("nextauth_secret is {0} bytes; at least {MIN_SECRET_BYTES} are required")]
    WeakSecret(usize),
    /// The lifetime is zero or too large to represent.
    #[error("the token lifetime must be between 1 second and 10 years")]
    BadTtl,
    /// The clock reads before 1970.
    #[error("the system clock is before the UNIX epoch")]
    Clock,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Claims<'a> {
    kilo_user_id: &'a str,
    version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<&'a str>,
    iat: u64,
    exp: u64,
}

/// Mints a user token valid for `ttl` from now. `env` is the `WORKER_ENV` the router expects (the
/// router compares it only when both sides carry one).
pub fn mint_user_token(
    secret: &[u8],
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
    secret: &[u8],
    user_id: &str,
    ttl: Duration,
    env: Option<&str>,
    issued_at: u64,
) -> Result<String, MintError> {
    if user_id.is_empty() {
        return Err(MintError::EmptyUser);
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(MintError::WeakSecret(secret.len()));
    }
    const TEN_YEARS: u64 = 10 * 365 * 24 * 3600;
    let ttl = ttl.as_secs();
    if ttl == 0 || ttl > TEN_YEARS {
        return Err(MintError::BadTtl);
    }
    let claims = Claims {
        kilo_user_id: user_id,
        version: TOKEN_VERSION,
        env: env.filter(|e| !e.is_empty()),
        iat: issued_at,
        exp: issued_at + ttl,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

    #[test]
    fn claims_match_what_nextjs_mints() -> anyhow::Result<()> {
        let token = mint_user_token(
            SECRET,
            "user-1",
            Duration::from_secs(3600),
            Some("development"),
        )?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        let data =
            decode::<serde_json::Value>(&token, &DecodingKey::from_secret(SECRET), &validation)?;
        let claims = data.claims;
        assert_eq!(claims["kiloUserId"], "user-1");
        assert_eq!(claims["version"], 3);
        assert_eq!(claims["env"], "development");
        let iat = claims["iat"].as_u64().unwrap_or_default();
        assert_eq!(claims["exp"].as_u64(), Some(iat + 3600));
        assert_eq!(data.header.alg, Algorithm::HS256);
        Ok(())
    }

    #[test]
    fn env_is_omitted_when_not_given() -> anyhow::Result<()> {
        let token = mint_user_token_at(SECRET, "u", Duration::from_secs(60), None, 1_700_000_000)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        let data =
            decode::<serde_json::Value>(&token, &DecodingKey::from_secret(SECRET), &validation)?;
        assert!(data.claims.get("env").is_none());
        assert_eq!(data.claims["exp"], 1_700_000_060u64);
        Ok(())
    }

    #[test]
    fn refuses_what_the_router_would_reject() {
        assert!(matches!(
            mint_user_token(b"short", "u", Duration::from_secs(60), None),
            Err(MintError::WeakSecret(5))
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
