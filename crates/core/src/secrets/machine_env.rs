//! The encrypted machine environment (original-behaviour.md §7.4, "Machine env values"): a sensitive
//! variable `NAME` reaches Fly only as `KILOCLAW_ENC_NAME = "enc:v1:" + base64(iv(12) || AES-256-GCM
//! ciphertext || tag(16))`, under a per-user 32-byte key that Fly holds as the app secret
//! `KILOCLAW_ENV_KEY` and injects at boot, where the image's start script decrypts (and fails closed).
//! So the machine config that anyone with Fly API access can read holds ciphertext only.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::fill;
use crate::clock::Random;
use crate::env::MachineEnv;

/// Prefix of an encrypted variable's name.
pub const ENC_PREFIX: &str = "KILOCLAW_ENC_";
/// The app secret holding the key (base64).
pub const ENV_KEY_SECRET: &str = "KILOCLAW_ENV_KEY";
/// Prefix of an encrypted value.
pub const VALUE_PREFIX: &str = "enc:v1:";
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A user's machine-env key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvKey([u8; 32]);

impl std::fmt::Debug for EnvKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvKey(..)")
    }
}

/// Why a stored key or an encrypted value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvKeyError {
    /// The stored key is not base64 of 32 bytes.
    #[error("the stored machine-env key is not base64 of 32 bytes")]
    BadKey,
    /// A value is not `enc:v1:` + base64 of at least an IV and a tag, or fails authentication.
    #[error("the value is not a valid enc:v1 ciphertext under this key")]
    BadValue,
}

impl EnvKey {
    /// A fresh random key.
    pub fn generate(random: &dyn Random) -> Self {
        let mut key = [0u8; 32];
        fill(random, &mut key);
        Self(key)
    }

    /// The key from its base64 form (as stored and as set as the Fly secret).
    pub fn from_base64(text: &str) -> Result<Self, EnvKeyError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| EnvKeyError::BadKey)?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Self)
            .map_err(|_| EnvKeyError::BadKey)
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    fn cipher(&self) -> Aes256Gcm {
        // A 32-byte slice is always a valid AES-256 key.
        Aes256Gcm::new(&self.0.into())
    }

    /// `enc:v1:` + base64(iv || ciphertext || tag), with a fresh IV.
    pub fn seal(&self, plaintext: &str, random: &dyn Random) -> String {
        let mut iv = [0u8; IV_LEN];
        fill(random, &mut iv);
        // AES-GCM encryption of an in-memory buffer only fails beyond 64 GiB.
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&iv), plaintext.as_bytes())
            .unwrap_or_default();
        let mut bytes = Vec::with_capacity(IV_LEN + sealed.len());
        bytes.extend_from_slice(&iv);
        bytes.extend_from_slice(&sealed);
        format!("{VALUE_PREFIX}{}", STANDARD.encode(bytes))
    }

    /// The plaintext of a value [`seal`](Self::seal) made.
    pub fn open(&self, value: &str) -> Result<String, EnvKeyError> {
        let payload = value
            .strip_prefix(VALUE_PREFIX)
            .ok_or(EnvKeyError::BadValue)?;
        let bytes = STANDARD
            .decode(payload)
            .map_err(|_| EnvKeyError::BadValue)?;
        if bytes.len() < IV_LEN + TAG_LEN {
            return Err(EnvKeyError::BadValue);
        }
        let (iv, sealed) = bytes.split_at(IV_LEN);
        let plain = self
            .cipher()
            .decrypt(Nonce::from_slice(iv), sealed)
            .map_err(|_| EnvKeyError::BadValue)?;
        String::from_utf8(plain).map_err(|_| EnvKeyError::BadValue)
    }
}

/// The variables to put in the machine config: non-sensitive ones as they are, every sensitive one
/// sealed under `key` as `KILOCLAW_ENC_<NAME>`.
pub fn seal_env(env: &MachineEnv, key: &EnvKey, random: &dyn Random) -> BTreeMap<String, String> {
    env.vars
        .iter()
        .map(|(name, value)| {
            if env.sensitive.contains(name) {
                (format!("{ENC_PREFIX}{name}"), key.seal(value, random))
            } else {
                (name.clone(), value.clone())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SeqRandom;
    use std::collections::BTreeSet;

    #[test]
    fn sealed_values_open_and_every_iv_is_fresh() {
        let random = SeqRandom::new(11);
        let key = EnvKey::generate(&random);
        let again = EnvKey::from_base64(&key.to_base64()).expect("round trip");
        assert_eq!(key, again);
        let a = key.seal("token", &random);
        let b = key.seal("token", &random);
        assert_ne!(a, b, "a fresh IV per value");
        assert!(a.starts_with(VALUE_PREFIX));
        assert_eq!(again.open(&a).as_deref(), Ok("token"));
        let other = EnvKey::generate(&random);
        assert_eq!(other.open(&a), Err(EnvKeyError::BadValue));
        assert_eq!(key.open("token"), Err(EnvKeyError::BadValue));
        assert_eq!(EnvKey::from_base64("c2hvcnQ="), Err(EnvKeyError::BadKey));
        assert_eq!(format!("{key:?}"), "EnvKey(..)");
    }

    #[test]
    fn only_sensitive_values_are_sealed_and_renamed() {
        let random = SeqRandom::new(5);
        let key = EnvKey::generate(&random);
        let env = MachineEnv {
            vars: BTreeMap::from([
                ("KILOCODE_API_KEY".to_owned(), "kilo-secret".to_owned()),
                ("PLAIN".to_owned(), "visible".to_owned()),
            ]),
            sensitive: BTreeSet::from(["KILOCODE_API_KEY".to_owned()]),
        };
        let sealed = seal_env(&env, &key, &random);
        assert_eq!(sealed.get("PLAIN").map(String::as_str), Some("visible"));
        assert!(!sealed.contains_key("KILOCODE_API_KEY"));
        let value = &sealed["KILOCLAW_ENC_KILOCODE_API_KEY"];
        assert!(!value.contains("kilo-secret"));
        assert_eq!(key.open(value).as_deref(), Ok("kilo-secret"));
    }
}
