//! Browser sign-in and token revocation (original-behaviour.md §1.1, §2.1 step 6), free of I/O.
//!
//! Two boundaries, each with a PostgreSQL implementation (the Next.js app's tables, in the
//! components) and a database-free one for local runs:
//! - [`UserDirectory`]: a user's current `api_token_pepper`. The revocation check
//!   ([`revocation`]) compares it with the token's pepper, through a short-lived key-value cache
//!   so that the hot path does not ask the database on every request.
//! - [`AccessCodeStore`]: one-time access codes. [`access_codes::KvAccessCodes`] keeps them in
//!   the app's key-value store with the same expiry and one-time rules as the PostgreSQL table.
//!
//! [`redeem::SignIn`] ties them together for the access gateway: attempt limits
//! ([`attempts`]), redemption, the pepper lookup and the session JWT.

pub mod access_codes;
pub mod attempts;
pub mod redeem;
pub mod revocation;

use sha2::{Digest, Sha256};

/// What the user table says about a user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "pepper", rename_all = "camelCase")]
pub enum PepperLookup {
    /// No row for this id.
    UserNotFound,
    /// The row's `api_token_pepper` (`None`: SQL NULL).
    Pepper(Option<String>),
}

/// The backing store could not answer. Retryable; never treated as an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// The user table (`kilocode_users`).
pub trait UserDirectory {
    /// The user's current pepper, or that there is no such user.
    fn pepper(&self, user_id: &str) -> Result<PepperLookup, Unavailable>;
}

/// A freshly issued access code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCode {
    /// `XXXXX-XXXXX`.
    pub code: String,
    /// When it stops being accepted, milliseconds since the epoch.
    pub expires_at_ms: i64,
}

/// One-time access codes (`kiloclaw_access_codes`): at most one active code per user; a code is
/// accepted once, for its own user, before it expires.
pub trait AccessCodeStore {
    /// Stores `code` as the user's only active code (older active codes stop being accepted).
    fn issue(
        &self,
        user_id: &str,
        code: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), Unavailable>;

    /// Marks `code` redeemed if it is active, belongs to `user_id` and has not expired; `true`
    /// when this call redeemed it. Of two concurrent calls for one code, at most one gets `true`.
    fn redeem(&self, code: &str, user_id: &str, now_ms: i64) -> Result<bool, Unavailable>;
}

/// A fixed-length key-value key fragment for a user id: any id (length, `/`, `#`) maps to 32 hex
/// characters, so keys built from it can neither collide with other key shapes nor grow too long.
pub fn user_key(user_id: &str) -> String {
    let digest = Sha256::digest(user_id.as_bytes());
    hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_keys_are_fixed_length_and_distinct() {
        let a = user_key("user-1");
        let b = user_key("user-1#created");
        assert_eq!(a.len(), 32);
        assert_eq!(b.len(), 32);
        assert_ne!(a, b);
        assert_eq!(user_key(&"x".repeat(10_000)).len(), 32);
    }
}
