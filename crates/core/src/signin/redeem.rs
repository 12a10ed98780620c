//! The access gateway's sign-in (original §1.1 POST, steps 1–7): attempt limits, one-time code
//! redemption, the pepper lookup, and the 24-hour session JWT for the `kiloclaw-auth` cookie.
//!
//! Beyond the original: attempts are limited per user and per client address, and a malformed,
//! unknown, expired, used or foreign code all get the same answer ([`RedeemError::InvalidCode`]),
//! so the answer tells a guesser nothing.

use super::access_codes::{CODE_TTL, generate_code, is_well_formed, normalize_code};
use super::attempts::{AttemptLimiter, RateLimited};
use super::{AccessCodeStore, IssuedCode, PepperLookup, Unavailable, UserDirectory};
use crate::auth::{AUTH_COOKIE_MAX_AGE_S, MintRequest, check_secret, mint_token};
use crate::clock::Random;
use crate::ids;

/// A signed-in browser's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The JWT for the `kiloclaw-auth` cookie.
    pub token: String,
    /// Whose session it is.
    pub user_id: String,
    /// `sandbox_id(user_id)`.
    pub sandbox_id: String,
}

/// Why a code was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedeemError {
    /// The code or the user id is empty. 400.
    #[error("Access code and user ID are required.")]
    MissingFields,
    /// Too many attempts. 429 with `Retry-After`.
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    /// Unknown, expired, already used, another user's, or not a code at all. 401.
    #[error("Invalid or expired access code. Please generate a new one from your dashboard.")]
    InvalidCode,
    /// The code was valid but its user is gone from the user table. 401.
    #[error("User not found.")]
    UserNotFound,
    /// A store could not be asked. 500.
    #[error("sign-in unavailable: {0}")]
    Unavailable(String),
    /// `nextauth_secret` is missing or unusable. 500.
    #[error("Server configuration error.")]
    NotConfigured,
}

impl From<Unavailable> for RedeemError {
    fn from(Unavailable(reason): Unavailable) -> Self {
        Self::Unavailable(reason)
    }
}

/// Why a code could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The user id is empty or too long for a sandbox id.
    #[error("{0}")]
    InvalidUser(String),
    /// The store of codes could not be written.
    #[error("access codes unavailable: {0}")]
    Unavailable(String),
}

/// What sign-in works with.
pub struct SignIn<'a> {
    /// Where codes live (PostgreSQL's table, or key-value locally).
    pub codes: &'a dyn AccessCodeStore,
    /// The user table; `None` locally, where every user's pepper is null.
    pub directory: Option<&'a dyn UserDirectory>,
    /// Attempt counting.
    pub limiter: AttemptLimiter<'a>,
    /// The HS256 key of session tokens (`nextauth_secret`).
    pub nextauth_secret: Option<&'a str>,
    /// `worker_env`, the `env` claim of minted tokens.
    pub worker_env: Option<&'a str>,
}

impl std::fmt::Debug for SignIn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("has_directory", &self.directory.is_some())
            .field("worker_env", &self.worker_env)
            .finish_non_exhaustive()
    }
}

impl SignIn<'_> {
    /// Redeems the form's `code` for the form's `user_id` at `now_ms`.
    pub fn redeem(
        &self,
        code: &str,
        user_id: &str,
        client_addr: Option<&str>,
        now_ms: i64,
    ) -> Result<Session, RedeemError> {
        let code = normalize_code(code);
        let user_id = user_id.trim();
        if code.is_empty() || user_id.is_empty() {
            return Err(RedeemError::MissingFields);
        }
        // Checked before anything is consumed: a code must not be spent on a session that
        // cannot be signed.
        let secret = self.nextauth_secret.ok_or(RedeemError::NotConfigured)?;
        check_secret(secret).map_err(|_| RedeemError::NotConfigured)?;
        self.limiter.attempt(user_id, client_addr, now_ms)?;
        let Ok(sandbox_id) = ids::sandbox_id_from_user_id(user_id) else {
            return Err(RedeemError::InvalidCode);
        };
        if !is_well_formed(&code) || !self.codes.redeem(&code, user_id, now_ms)? {
            tracing::info!(
                tag = "access_gateway",
                action = "code_refused",
                reason = "invalid_or_expired"
            );
            return Err(RedeemError::InvalidCode);
        }
        let api_token_pepper = match self.directory {
            None => None,
            Some(directory) => match directory.pepper(user_id)? {
                PepperLookup::UserNotFound => return Err(RedeemError::UserNotFound),
                PepperLookup::Pepper(pepper) => pepper,
            },
        };
        let request = MintRequest {
            user_id: user_id.to_owned(),
            api_token_pepper,
            env: self.worker_env.map(str::to_owned),
            issued_at_s: u64::try_from(now_ms / 1000).unwrap_or(0),
            ttl_s: AUTH_COOKIE_MAX_AGE_S,
        };
        let token = mint_token(secret, &request).map_err(|_| RedeemError::NotConfigured)?;
        tracing::info!(
            tag = "access_gateway",
            action = "code_redeemed",
            sandbox_id = %sandbox_id
        );
        Ok(Session {
            token,
            user_id: user_id.to_owned(),
            sandbox_id,
        })
    }

    /// Issues a fresh code for `user_id`, retiring the user's older ones; with a user table, only
    /// for a user it has.
    pub fn issue(
        &self,
        user_id: &str,
        random: &dyn Random,
        now_ms: i64,
    ) -> Result<IssuedCode, IssueError> {
        ids::sandbox_id_from_user_id(user_id)
            .map_err(|error| IssueError::InvalidUser(error.to_string()))?;
        if let Some(directory) = self.directory {
            let lookup = directory
                .pepper(user_id)
                .map_err(|Unavailable(reason)| IssueError::Unavailable(reason))?;
            if lookup == PepperLookup::UserNotFound {
                return Err(IssueError::InvalidUser("no such user".to_owned()));
            }
        }
        let code = generate_code(random);
        let expires_at_ms =
            now_ms.saturating_add(i64::try_from(CODE_TTL.as_millis()).unwrap_or(i64::MAX));
        self.codes
            .issue(user_id, &code, now_ms, expires_at_ms)
            .map_err(|Unavailable(reason)| IssueError::Unavailable(reason))?;
        Ok(IssuedCode {
            code,
            expires_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::JwtVerifier;
    use crate::signin::access_codes::KvAccessCodes;
    use crate::signin::attempts::AttemptLimits;
    use crate::testing::{MemoryKv, SeqRandom};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const NOW: i64 = 1_700_000_000_000;

    struct Users(Option<&'static str>, bool);

    impl UserDirectory for Users {
        fn pepper(&self, _user_id: &str) -> Result<PepperLookup, Unavailable> {
            if !self.1 {
                return Ok(PepperLookup::UserNotFound);
            }
            Ok(PepperLookup::Pepper(self.0.map(str::to_owned)))
        }
    }

    fn sign_in<'a>(
        kv: &'a MemoryKv,
        codes: &'a KvAccessCodes<'a>,
        users: Option<&'a Users>,
    ) -> SignIn<'a> {
        SignIn {
            codes,
            directory: users.map(|u| u as &dyn UserDirectory),
            limiter: AttemptLimiter {
                kv,
                limits: AttemptLimits::default(),
            },
            nextauth_secret: Some(SECRET),
            worker_env: Some("production"),
        }
    }

    #[test]
    fn an_issued_code_signs_in_once_with_the_users_pepper() {
        let kv = MemoryKv::new();
        let codes = KvAccessCodes::new(&kv);
        let users = Users(Some("pepper-1"), true);
        let sign_in = sign_in(&kv, &codes, Some(&users));
        let issued = sign_in
            .issue("user-1", &SeqRandom::new(1), NOW)
            .expect("issue");
        assert_eq!(issued.expires_at_ms, NOW + 600_000);
        let lower = issued.code.to_lowercase();
        let session = sign_in
            .redeem(&format!(" {lower} "), " user-1 ", Some("1.2.3.4:5"), NOW)
            .expect("redeem");
        assert_eq!(session.sandbox_id, "dXNlci0x");
        let claims = JwtVerifier::new(SECRET, Some("production".into()))
            .expect("verifier")
            .verify(&session.token, 1_700_000_001)
            .expect("valid token");
        assert_eq!(claims.user_id, "user-1");
        assert_eq!(claims.api_token_pepper.as_deref(), Some("pepper-1"));
        assert_eq!(claims.expires_at_s, 1_700_000_000 + 86_400);
        assert_eq!(
            sign_in.redeem(&issued.code, "user-1", None, NOW),
            Err(RedeemError::InvalidCode)
        );
    }

    #[test]
    fn every_kind_of_bad_code_gets_the_same_answer() {
        let kv = MemoryKv::new();
        let codes = KvAccessCodes::new(&kv);
        let sign_in = sign_in(&kv, &codes, None);
        let issued = sign_in
            .issue("user-1", &SeqRandom::new(1), NOW)
            .expect("issue");
        for (code, user) in [
            ("nonsense", "user-1"),
            ("ABCDE-FGHJK", "user-1"),
            (issued.code.as_str(), "user-2"),
            (issued.code.as_str(), &"x".repeat(60)),
        ] {
            assert_eq!(
                sign_in.redeem(code, user, None, NOW),
                Err(RedeemError::InvalidCode),
                "{code} {user}"
            );
        }
        assert_eq!(
            sign_in.redeem(&issued.code, "user-1", None, NOW + 600_000),
            Err(RedeemError::InvalidCode),
            "expired"
        );
        assert_eq!(
            sign_in.redeem(" ", "user-1", None, NOW),
            Err(RedeemError::MissingFields)
        );
    }

    #[test]
    fn a_missing_user_or_secret_and_a_rate_limit() {
        let kv = MemoryKv::new();
        let codes = KvAccessCodes::new(&kv);
        let gone = Users(None, false);
        let sign_in_gone = sign_in(&kv, &codes, Some(&gone));
        assert_eq!(
            sign_in_gone.issue("user-1", &SeqRandom::new(3), NOW),
            Err(IssueError::InvalidUser("no such user".into()))
        );
        let issued = sign_in(&kv, &codes, None)
            .issue("user-1", &SeqRandom::new(3), NOW)
            .expect("issue");
        assert_eq!(
            sign_in_gone.redeem(&issued.code, "user-1", None, NOW),
            Err(RedeemError::UserNotFound),
            "deleted between issue and redeem"
        );

        let mut unconfigured = sign_in(&kv, &codes, None);
        unconfigured.nextauth_secret = Some("short");
        let issued = unconfigured
            .issue("user-2", &SeqRandom::new(4), NOW)
            .expect("issue");
        assert_eq!(
            unconfigured.redeem(&issued.code, "user-2", None, NOW),
            Err(RedeemError::NotConfigured)
        );
        let configured = sign_in(&kv, &codes, None);
        assert!(
            configured.redeem(&issued.code, "user-2", None, NOW).is_ok(),
            "the code was not spent by the misconfigured attempt"
        );

        for _ in 0..10 {
            let _ = configured.redeem("ABCDE-FGHJK", "user-3", None, NOW);
        }
        assert!(matches!(
            configured.redeem("ABCDE-FGHJK", "user-3", None, NOW),
            Err(RedeemError::RateLimited(_))
        ));
    }
}
