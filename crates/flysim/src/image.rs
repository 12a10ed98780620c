//! What the OpenClaw image's start script does with the environment at boot (original-behaviour.md
//! §7.4, machine side): every `KILOCLAW_ENC_{NAME}` value is `enc:v1:` + base64(iv(12) ‖ AES-256-GCM
//! ciphertext ‖ tag(16)) under the base64 key in the app secret `KILOCLAW_ENV_KEY`; it is decrypted into
//! `{NAME}`, and the key and encrypted variables are removed. Any problem is fatal (the script exits 1),
//! so the machine stops right after booting, fail-closed.

use std::collections::BTreeMap;

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub const ENC_PREFIX: &str = "KILOCLAW_ENC_";
pub const ENV_KEY: &str = "KILOCLAW_ENV_KEY";
const VALUE_PREFIX: &str = "enc:v1:";

/// The environment the gateway process ends up with, or why the start script would exit.
pub fn boot_environment(
    mut env: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let encrypted: Vec<(String, String)> = env
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(ENC_PREFIX)
                .map(|name| (name.to_owned(), v.clone()))
        })
        .collect();
    let key = env.remove(ENV_KEY);
    env.retain(|k, _| !k.starts_with(ENC_PREFIX));
    if encrypted.is_empty() {
        return Ok(env);
    }
    let key = key.ok_or_else(|| {
        format!("FATAL: {ENC_PREFIX}* variables present but {ENV_KEY} is not set")
    })?;
    let key = STANDARD
        .decode(key.trim())
        .map_err(|_| format!("FATAL: {ENV_KEY} is not base64"))?;
    if key.len() != 32 {
        return Err(format!("FATAL: {ENV_KEY} must be 32 bytes"));
    }
    let cipher = Aes256Gcm::new_from_slice(&key)
        .map_err(|_| format!("FATAL: {ENV_KEY} is not a valid key"))?;
    for (name, value) in encrypted {
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(format!("FATAL: invalid variable name {name}"));
        }
        let payload = value.strip_prefix(VALUE_PREFIX).ok_or_else(|| {
            format!("FATAL: {ENC_PREFIX}{name} does not start with {VALUE_PREFIX}")
        })?;
        let bytes = STANDARD
            .decode(payload)
            .map_err(|_| format!("FATAL: {ENC_PREFIX}{name} is not base64"))?;
        if bytes.len() < 12 + 16 {
            return Err(format!("FATAL: {ENC_PREFIX}{name} is too short"));
        }
        let (iv, sealed) = bytes.split_at(12);
        let plain = cipher
            .decrypt(Nonce::from_slice(iv), sealed)
            .map_err(|_| format!("FATAL: cannot decrypt {ENC_PREFIX}{name}"))?;
        let plain = String::from_utf8(plain)
            .map_err(|_| format!("FATAL: {ENC_PREFIX}{name} is not UTF-8"))?;
        env.insert(name, plain);
    }
    Ok(env)
}

/// Encrypts a value the way the control plane does (for tests and tools).
pub fn encrypt_value(key_b64: &str, plaintext: &str, iv: [u8; 12]) -> Result<String, String> {
    let key = STANDARD.decode(key_b64).map_err(|e| e.to_string())?;
    let cipher = Aes256Gcm::new_from_slice(&key).map_err(|e| e.to_string())?;
    let sealed = cipher
        .encrypt(Nonce::from_slice(&iv), plaintext.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut bytes = iv.to_vec();
    bytes.extend(sealed);
    Ok(format!("{VALUE_PREFIX}{}", STANDARD.encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn decrypts_and_strips_encrypted_vars() {
        let value = encrypt_value(KEY, "gw-token", [7; 12]).expect("encrypts");
        let env = BTreeMap::from([
            ("KILOCLAW_ENC_OPENCLAW_GATEWAY_TOKEN".to_owned(), value),
            (ENV_KEY.to_owned(), KEY.to_owned()),
            ("PLAIN".to_owned(), "1".to_owned()),
        ]);
        let booted = boot_environment(env).expect("boots");
        assert_eq!(
            booted.get("OPENCLAW_GATEWAY_TOKEN").map(String::as_str),
            Some("gw-token")
        );
        assert_eq!(booted.len(), 2, "{booted:?}");
    }

    #[test]
    fn fails_closed() {
        let value = encrypt_value(KEY, "x", [1; 12]).expect("encrypts");
        let without_key = BTreeMap::from([("KILOCLAW_ENC_A".to_owned(), value.clone())]);
        assert!(boot_environment(without_key).is_err());
        let other_key = "HwECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let wrong = BTreeMap::from([
            ("KILOCLAW_ENC_A".to_owned(), value),
            (ENV_KEY.to_owned(), other_key.to_owned()),
        ]);
        assert!(boot_environment(wrong).is_err());
        let unprefixed = BTreeMap::from([
            ("KILOCLAW_ENC_A".to_owned(), "plain".to_owned()),
            (ENV_KEY.to_owned(), KEY.to_owned()),
        ]);
        assert!(boot_environment(unprefixed).is_err());
    }
}
