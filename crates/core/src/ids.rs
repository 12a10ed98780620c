//! Identifiers derived from a user id, exactly as the original derived them (original-behaviour.md §2.2,
//! §2.3, §2.5, §4.2): the sandbox id, the per-user Fly app name, the volume name, the gateway token, and
//! the constant-time comparison used for shared secrets.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Longest sandbox id accepted: Fly machine names and DNS labels stop at 63 characters.
pub const MAX_SANDBOX_ID_LEN: usize = 63;

/// Fly volume names are limited to 30 characters.
const MAX_VOLUME_NAME_LEN: usize = 30;

/// Why a user id cannot be turned into a sandbox id, or a sandbox id back into a user id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The user id is empty. Not retryable: the caller sent bad input.
    #[error("userId must not be empty")]
    EmptyUserId,
    /// The user id is longer than 47 bytes, so its encoding would exceed 63 characters. Not retryable.
    #[error(
        "userId too long: encoded sandboxId would be {encoded_len} chars (max {MAX_SANDBOX_ID_LEN})"
    )]
    UserIdTooLong {
        /// Length the encoded sandbox id would have had.
        encoded_len: usize,
    },
    /// The sandbox id is not unpadded base64url of UTF-8 text. Not retryable.
    #[error("sandboxId is not base64url-encoded UTF-8")]
    InvalidSandboxId,
}

/// `base64url(UTF-8 userId)` without padding; rejects ids whose encoding exceeds 63 characters.
pub fn sandbox_id_from_user_id(user_id: &str) -> Result<String, IdError> {
    if user_id.is_empty() {
        return Err(IdError::EmptyUserId);
    }
    let encoded = URL_SAFE_NO_PAD.encode(user_id.as_bytes());
    if encoded.len() > MAX_SANDBOX_ID_LEN {
        return Err(IdError::UserIdTooLong {
            encoded_len: encoded.len(),
        });
    }
    Ok(encoded)
}

/// Reverse of [`sandbox_id_from_user_id`].
pub fn user_id_from_sandbox_id(sandbox_id: &str) -> Result<String, IdError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(sandbox_id)
        .map_err(|_| IdError::InvalidSandboxId)?;
    String::from_utf8(bytes).map_err(|_| IdError::InvalidSandboxId)
}

/// Per-user Fly app name: `{prefix}-{first 10 bytes of SHA-256(userId) as hex}`; the prefix is `acct`, or
/// `dev` when the deployment runs with `worker_env = development` so dev apps never collide with prod.
pub fn app_name_from_user_id(user_id: &str, development: bool) -> String {
    let digest = Sha256::digest(user_id.as_bytes());
    let prefix = if development { "dev" } else { "acct" };
    format!("{prefix}-{}", hex::encode(&digest[..10]))
}

/// Volume name (HEAD form): `kiloclaw_{sandboxId}` lower-cased, anything outside `[a-z0-9_]` replaced by
/// `_`, cut to Fly's 30-character limit.
pub fn volume_name(sandbox_id: &str) -> String {
    format!("kiloclaw_{sandbox_id}")
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_VOLUME_NAME_LEN)
        .collect()
}

/// Gateway token: lowercase hex of `HMAC-SHA256(key = secret, message = sandboxId)`. Deterministic, never
/// stored; every place that needs it derives it again.
pub fn gateway_token(secret: &str, sandbox_id: &str) -> String {
    // HMAC accepts keys of any length, so construction cannot fail; keep the error path explicit anyway.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac_key(),
    };
    mac.update(sandbox_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cold]
fn unreachable_hmac_key() -> ! {
    // `Hmac::new_from_slice` only fails for fixed-size-key MACs; SHA-256 HMAC takes any key length.
    panic!("HMAC-SHA256 rejected a key; hmac accepts keys of any length")
}

/// Compares two secrets in time that depends only on their lengths, never on where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        // Still spend comparable time, as the original did, so length alone is what leaks.
        let _ = a.ct_eq(a);
        return false;
    }
    a.ct_eq(b).into()
}

/// A hash of `text` that never changes between processes, releases or architectures (the first eight
/// bytes of its SHA-256, big-endian), unlike std's randomly seeded hasher: for spreading users over
/// shards and over time.
pub fn stable_hash(text: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(prefix)
}

#[cfg(test)]
mod tests {

    #[test]
    fn stable_hash_is_pinned() {
        // SHA-256("user-1") begins c6c289e49e9c05b2: the value must never change between releases.
        assert_eq!(super::stable_hash("user-1"), 0xc6c2_89e4_9e9c_05b2);
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sandbox_id_matches_original_vector() {
        assert_eq!(
            sandbox_id_from_user_id("user_abc123").as_deref(),
            Ok("dXNlcl9hYmMxMjM")
        );
    }

    #[test]
    fn sandbox_id_accepts_47_bytes_rejects_48() {
        assert_eq!(
            sandbox_id_from_user_id(&"a".repeat(47)).map(|s| s.len()),
            Ok(63)
        );
        assert_eq!(
            sandbox_id_from_user_id(&"a".repeat(48)),
            Err(IdError::UserIdTooLong { encoded_len: 64 })
        );
        assert_eq!(sandbox_id_from_user_id(""), Err(IdError::EmptyUserId));
    }

    #[test]
    fn gateway_token_matches_original_vector() {
        assert_eq!(
            gateway_token("test-gateway-secret", "sandbox-abc"),
            "ab96b33c73aff91a88b32e0225a78b3b721697dad6aa2163c7bd3c1177ab6e38"
        );
    }

    #[test]
    fn app_name_matches_computed_example_and_dev_prefix() {
        assert_eq!(
            app_name_from_user_id("user-1", false),
            "acct-c6c289e49e9c05b21458"
        );
        assert_eq!(
            app_name_from_user_id("user-1", true),
            "dev-c6c289e49e9c05b21458"
        );
    }

    #[test]
    fn volume_name_matches_head_form() {
        assert_eq!(volume_name("dXNlcl9hYmMxMjM"), "kiloclaw_dxnlcl9hymmxmjm");
        assert_eq!(volume_name(&"A-b".repeat(20)).len(), 30);
        assert!(volume_name("a-b").ends_with("a_b"));
    }

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq("secret", "secret"));
        assert!(!constant_time_eq("secret", "secreT"));
        assert!(!constant_time_eq("secret", "secret2"));
        assert!(!constant_time_eq("", "x"));
    }

    proptest! {
        #[test]
        fn sandbox_id_roundtrips_and_is_bounded(user in "\\PC{1,60}") {
            match sandbox_id_from_user_id(&user) {
                Ok(sandbox) => {
                    prop_assert!(sandbox.len() <= MAX_SANDBOX_ID_LEN);
                    prop_assert!(sandbox.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
                    prop_assert_eq!(user_id_from_sandbox_id(&sandbox), Ok(user.clone()));
                }
                Err(IdError::UserIdTooLong { encoded_len }) => {
                    prop_assert!(user.len() > 47);
                    prop_assert!(encoded_len > MAX_SANDBOX_ID_LEN);
                }
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
