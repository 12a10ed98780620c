//! User JWT verification and minting (original-behaviour.md §2.1): HS256 only, keyed by the UTF-8 bytes of
//! `nextauth_secret`, claims `kiloUserId`, `version == 3`, optional `apiTokenPepper` and `env`.
//!
//! Deliberate differences from the original: `exp` is *required* (jose only enforced it when present), and a
//! secret shorter than 32 bytes is rejected when the verifier is built, i.e. at configuration time, never at
//! request time. Time is passed in (`now_s`) so expiry is tested without a wall clock.
//!
//! The pepper check against the user table is not done here: [`VerifiedClaims::api_token_pepper`] carries
//! the token's pepper to the caller that owns the database lookup.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

/// The only token version the worker accepts (`KILO_TOKEN_VERSION`).
pub const KILO_TOKEN_VERSION: i64 = 3;

/// HS256 keys shorter than this are refused: RFC 7518 §3.2 requires a key at least as long as the hash.
pub const MIN_SECRET_LEN: usize = 32;

/// Lifetime of tokens the worker mints after access-code redemption (`KILOCLAW_AUTH_COOKIE_MAX_AGE`).
pub const AUTH_COOKIE_MAX_AGE_S: u64 = 86_400;

/// A configuration problem found when building a verifier. Not retryable: fix the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("nextauth_secret must be at least {MIN_SECRET_LEN} bytes (got {len})")]
    SecretTooShort {
        /// Length of the configured secret in bytes.
        len: usize,
    },
}

/// Why a token was refused. Every variant maps to HTTP 401 with the `Display` text as `{error}`; none is
/// retryable with the same token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Bad signature, wrong algorithm, malformed token, or a missing `exp`.
    #[error("{0}")]
    Invalid(String),
    /// `exp` is in the past.
    #[error("\"exp\" claim timestamp check failed")]
    Expired,
    /// `nbf` is in the future.
    #[error("\"nbf\" claim timestamp check failed")]
    NotYetValid,
    /// `kiloUserId` is absent or not a string.
    #[error("Missing or invalid kiloUserId")]
    MissingUserId,
    /// `apiTokenPepper` is neither a string, null nor absent.
    #[error("Invalid apiTokenPepper type")]
    InvalidPepperType,
    /// `version` is absent or not a number.
    #[error("Missing or invalid version")]
    MissingVersion,
    /// `version` is a number other than 3.
    #[error("Invalid token version: {0}")]
    WrongVersion(String),
    /// Both the deployment and the token name an environment, and they differ.
    #[error("Token env mismatch: {token_env} !== {worker_env}")]
    EnvMismatch {
        /// `env` claim of the token.
        token_env: String,
        /// The deployment's `worker_env`.
        worker_env: String,
    },
}

/// The claims of an accepted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims {
    /// `kiloUserId`.
    pub user_id: String,
    /// `apiTokenPepper`, with absent normalised to `None`; the caller compares it with the user table.
    pub api_token_pepper: Option<String>,
    /// `env`, when present.
    pub env: Option<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at_s: u64,
}

/// Verifies user JWTs under one secret. Build it once per configuration.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    worker_env: Option<String>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never print it.
        f.debug_struct("JwtVerifier")
            .field("worker_env", &self.worker_env)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Builds a verifier; `worker_env` enables the `env` claim check when set.
    pub fn new(secret: &str, worker_env: Option<String>) -> Result<Self, AuthConfigError> {
        check_secret(secret)?;
        Ok(Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            worker_env: worker_env.filter(|e| !e.is_empty()),
        })
    }

    /// Verifies `token` at time `now_s` (seconds since the epoch).
    pub fn verify(&self, token: &str, now_s: u64) -> Result<VerifiedClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the caller's clock, with no leeway (jose's default was none).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let claims = data.claims;

        let expires_at_s = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or_else(|| TokenError::Invalid("\"exp\" claim must be a number".into()))?;
        if expires_at_s <= now_s as f64 {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf
                .as_f64()
                .ok_or_else(|| TokenError::Invalid("\"nbf\" claim must be a number".into()))?;
            if nbf > now_s as f64 {
                return Err(TokenError::NotYetValid);
            }
        }

        let user_id = match claims.get("kiloUserId") {
            Some(Value::String(id)) => id.clone(),
            _ => return Err(TokenError::MissingUserId),
        };
        let api_token_pepper = match claims.get("apiTokenPepper") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(p.clone()),
            Some(_) => return Err(TokenError::InvalidPepperType),
        };
        match claims.get("version") {
            Some(Value::Number(n)) => {
                if n.as_i64() != Some(KILO_TOKEN_VERSION) {
                    return Err(TokenError::WrongVersion(n.to_string()));
                }
            }
            _ => return Err(TokenError::MissingVersion),
        }
        let env = match claims.get("env") {
            Some(Value::String(e)) => Some(e.clone()),
            _ => None,
        };
        if let (Some(token_env), Some(worker_env)) = (&env, &self.worker_env)
            && token_env != worker_env
        {
            return Err(TokenError::EnvMismatch {
                token_env: token_env.clone(),
                worker_env: worker_env.clone(),
            });
        }
        Ok(VerifiedClaims {
            user_id,
            api_token_pepper,
            env,
            expires_at_s: expires_at_s as u64,
        })
    }
}

/// What to put in a minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRequest {
    /// `kiloUserId`.
    pub user_id: String,
    /// `apiTokenPepper`; written as JSON null when `None`, as the worker did.
    pub api_token_pepper: Option<String>,
    /// `env`; omitted when `None`.
    pub env: Option<String>,
    /// `iat`, seconds since the epoch.
    pub issued_at_s: u64,
    /// `exp - iat`.
    pub ttl_s: u64,
}

/// Why minting failed. Not retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The secret is unusable.
    #[error(transparent)]
    Config(#[from] AuthConfigError),
    /// The signer failed.
    #[error("cannot sign token: {0}")]
    Sign(String),
}

/// Mints an HS256 token with the claims the worker and Next.js put in theirs (for `kiloclaw token`).
pub fn mint_token(secret: &str, request: &MintRequest) -> Result<String, MintError> {
    check_secret(secret)?;
    let mut claims = Map::new();
    claims.insert("kiloUserId".into(), Value::String(request.user_id.clone()));
    claims.insert(
        "apiTokenPepper".into(),
        request
            .api_token_pepper
            .clone()
            .map(Value::String)
            .unwrap_or(Value::Null),
    );
    claims.insert("version".into(), Value::from(KILO_TOKEN_VERSION));
    if let Some(env) = &request.env {
        claims.insert("env".into(), Value::String(env.clone()));
    }
    claims.insert("iat".into(), Value::from(request.issued_at_s));
    claims.insert(
        "exp".into(),
        Value::from(request.issued_at_s.saturating_add(request.ttl_s)),
    );
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| MintError::Sign(e.to_string()))
}

/// Refuses a secret too short for HS256 (checked before anything is consumed on its behalf).
pub fn check_secret(secret: &str) -> Result<(), AuthConfigError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(AuthConfigError::SecretTooShort { len: secret.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;

    fn mint(user: &str, env: Option<&str>, ttl_s: u64) -> String {
        let request = MintRequest {
            user_id: user.into(),
            api_token_pepper: None,
            env: env.map(str::to_string),
            issued_at_s: NOW,
            ttl_s,
        };
        mint_token(SECRET, &request).expect("mint")
    }

    fn sign(claims: Value, secret: &str, alg: Algorithm) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    }

    #[test]
    fn minted_token_verifies_with_claims() {
        let verifier = JwtVerifier::new(SECRET, Some("production".into())).expect("verifier");
        let claims = verifier
            .verify(&mint("user-1", Some("production"), 300), NOW)
            .expect("valid");
        assert_eq!(claims.user_id, "user-1");
        assert_eq!(claims.api_token_pepper, None);
        assert_eq!(claims.expires_at_s, NOW + 300);
    }

    #[test]
    fn short_secret_rejected_at_configuration_time() {
        assert_eq!(
            JwtVerifier::new("short", None).err(),
            Some(AuthConfigError::SecretTooShort { len: 5 })
        );
        assert!(matches!(
            mint_token(
                "short",
                &MintRequest {
                    user_id: "u".into(),
                    api_token_pepper: None,
                    env: None,
                    issued_at_s: 0,
                    ttl_s: 1
                }
            ),
            Err(MintError::Config(_))
        ));
    }

    #[test]
    fn expired_token_rejected() {
        let verifier = JwtVerifier::new(SECRET, None).expect("verifier");
        let token = mint("user-1", None, 60);
        assert_eq!(verifier.verify(&token, NOW + 60), Err(TokenError::Expired));
        assert!(verifier.verify(&token, NOW + 59).is_ok());
    }

    #[test]
    fn token_without_exp_rejected() {
        let verifier = JwtVerifier::new(SECRET, None).expect("verifier");
        let token = sign(
            serde_json::json!({"kiloUserId": "u", "version": 3}),
            SECRET,
            Algorithm::HS256,
        );
        assert!(matches!(
            verifier.verify(&token, NOW),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn wrong_signature_and_algorithm_rejected() {
        let verifier = JwtVerifier::new(SECRET, None).expect("verifier");
        let claims = serde_json::json!({"kiloUserId": "u", "version": 3, "exp": NOW + 10});
        let other = sign(
            claims.clone(),
            "another-secret-another-secret-xx",
            Algorithm::HS256,
        );
        assert!(matches!(
            verifier.verify(&other, NOW),
            Err(TokenError::Invalid(_))
        ));
        let hs512 = sign(claims, SECRET, Algorithm::HS512);
        assert!(matches!(
            verifier.verify(&hs512, NOW),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn version_and_user_id_and_pepper_types_checked() {
        let verifier = JwtVerifier::new(SECRET, None).expect("verifier");
        let exp = NOW + 10;
        let case = |claims: Value| verifier.verify(&sign(claims, SECRET, Algorithm::HS256), NOW);
        assert_eq!(
            case(serde_json::json!({"version": 3, "exp": exp})),
            Err(TokenError::MissingUserId)
        );
        assert_eq!(
            case(serde_json::json!({"kiloUserId": 7, "version": 3, "exp": exp})),
            Err(TokenError::MissingUserId)
        );
        assert_eq!(
            case(serde_json::json!({"kiloUserId": "u", "exp": exp})),
            Err(TokenError::MissingVersion)
        );
        assert_eq!(
            case(serde_json::json!({"kiloUserId": "u", "version": 2, "exp": exp})),
            Err(TokenError::WrongVersion("2".into()))
        );
        assert_eq!(
            case(
                serde_json::json!({"kiloUserId": "u", "version": 3, "exp": exp, "apiTokenPepper": 5})
            ),
            Err(TokenError::InvalidPepperType)
        );
        let ok = case(
            serde_json::json!({"kiloUserId": "u", "version": 3, "exp": exp, "apiTokenPepper": "p"}),
        );
        assert_eq!(ok.map(|c| c.api_token_pepper), Ok(Some("p".into())));
    }

    #[test]
    fn env_checked_only_when_both_sides_set() {
        let prod = JwtVerifier::new(SECRET, Some("production".into())).expect("verifier");
        let unset = JwtVerifier::new(SECRET, None).expect("verifier");
        let dev_token = mint("u", Some("development"), 60);
        assert_eq!(
            prod.verify(&dev_token, NOW),
            Err(TokenError::EnvMismatch {
                token_env: "development".into(),
                worker_env: "production".into()
            })
        );
        assert!(unset.verify(&dev_token, NOW).is_ok());
        assert!(prod.verify(&mint("u", None, 60), NOW).is_ok());
    }

    #[test]
    fn nbf_in_future_rejected() {
        let verifier = JwtVerifier::new(SECRET, None).expect("verifier");
        let token = sign(
            serde_json::json!({"kiloUserId": "u", "version": 3, "exp": NOW + 100, "nbf": NOW + 50}),
            SECRET,
            Algorithm::HS256,
        );
        assert_eq!(verifier.verify(&token, NOW), Err(TokenError::NotYetValid));
    }
}
