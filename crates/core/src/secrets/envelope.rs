//! Opening the RSA envelopes Next.js produces (original-behaviour.md §7.4): `encryptedDEK` is base64 of
//! RSA-OAEP (SHA-256, MGF1-SHA-256) over a 32-byte data key; `encryptedData` is base64 of
//! `iv(16) || AES-256-GCM ciphertext || tag(16)`; `algorithm` is `rsa-aes-256-gcm`, `version` 1.
//!
//! Interoperability with Node's `crypto` is proven by fixtures made with it
//! (`tests/fixtures/envelopes/make-envelopes.mjs`). Errors say what is wrong with the envelope or the key,
//! never anything about the value.

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Oaep, RsaPrivateKey};
use sha2::Sha256;
use std::sync::OnceLock;

use super::CryptoRandom;
use crate::clock::Random;
use crate::env::EnvelopeDecryptor;
use crate::record::Envelope;

/// `algorithm` of every envelope.
pub const ALGORITHM: &str = "rsa-aes-256-gcm";
/// `version` of every envelope.
pub const VERSION: u32 = 1;
const IV_LEN: usize = 16;
const TAG_LEN: usize = 16;
const DATA_KEY_LEN: usize = 32;

/// AES-256-GCM with Node's 16-byte IV (the common 12-byte IV is what `aes_gcm::Aes256Gcm` fixes).
type Aes256Gcm16 = AesGcm<Aes256, U16>;

/// Why an envelope does not open. The messages name the problem, never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// `algorithm` is not `rsa-aes-256-gcm`.
    #[error("unsupported algorithm '{0}' (expected rsa-aes-256-gcm)")]
    Algorithm(String),
    /// `version` is not 1.
    #[error("unsupported version {0} (expected 1)")]
    Version(u32),
    /// A field is not base64.
    #[error("{0} is not valid base64")]
    Base64(&'static str),
    /// `encryptedData` cannot hold an IV and a tag.
    #[error("encryptedData is too short ({0} bytes; at least 32)")]
    TooShort(usize),
    /// The configured private key is not a PEM RSA private key.
    #[error("agent_env_vars_private_key is not a PEM RSA private key (PKCS#8 or PKCS#1)")]
    BadPrivateKey,
    /// RSA-OAEP failed: another key encrypted it, or `encryptedDEK` is corrupt.
    #[error(
        "the data key does not decrypt with agent_env_vars_private_key (wrong key or corrupt encryptedDEK)"
    )]
    DataKey,
    /// AES-GCM authentication failed: corrupt or tampered `encryptedData`.
    #[error("encryptedData fails authentication (corrupt or tampered)")]
    Authentication,
    /// The plaintext is not UTF-8.
    #[error("the plaintext is not UTF-8")]
    NotUtf8,
}

/// Decrypts envelopes with the deployment's RSA private key. The PEM is parsed on first use, so a
/// request that decrypts nothing never pays for (or fails on) the key.
pub struct RsaEnvelopeDecryptor<'a> {
    pem: String,
    key: OnceLock<Result<RsaPrivateKey, DecryptError>>,
    random: &'a dyn Random,
}

impl std::fmt::Debug for RsaEnvelopeDecryptor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaEnvelopeDecryptor")
            .finish_non_exhaustive()
    }
}

impl<'a> RsaEnvelopeDecryptor<'a> {
    /// A decryptor for the PEM in `agent_env_vars_private_key`. Literal `\n` sequences are accepted as
    /// newlines, because a PEM put in one environment variable or TOML string often arrives that way.
    /// `random` blinds the RSA operation against timing attacks.
    pub fn new(pem: &str, random: &'a dyn Random) -> Self {
        Self {
            pem: pem.trim().replace("\\n", "\n"),
            key: OnceLock::new(),
            random,
        }
    }

    fn key(&self) -> Result<&RsaPrivateKey, DecryptError> {
        self.key
            .get_or_init(|| {
                RsaPrivateKey::from_pkcs8_pem(&self.pem)
                    .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&self.pem))
                    .map_err(|_| DecryptError::BadPrivateKey)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Opens one envelope.
    pub fn open(&self, envelope: &Envelope) -> Result<String, DecryptError> {
        if envelope.algorithm != ALGORITHM {
            return Err(DecryptError::Algorithm(envelope.algorithm.clone()));
        }
        if envelope.version != VERSION {
            return Err(DecryptError::Version(envelope.version));
        }
        let data = STANDARD
            .decode(envelope.encrypted_data.trim())
            .map_err(|_| DecryptError::Base64("encryptedData"))?;
        if data.len() < IV_LEN + TAG_LEN {
            return Err(DecryptError::TooShort(data.len()));
        }
        let wrapped = STANDARD
            .decode(envelope.encrypted_dek.trim())
            .map_err(|_| DecryptError::Base64("encryptedDEK"))?;
        let key = self.key()?;
        let data_key = key
            .decrypt_blinded(
                &mut CryptoRandom(self.random),
                Oaep::new::<Sha256>(),
                &wrapped,
            )
            .map_err(|_| DecryptError::DataKey)?;
        if data_key.len() != DATA_KEY_LEN {
            return Err(DecryptError::DataKey);
        }
        let cipher = Aes256Gcm16::new_from_slice(&data_key).map_err(|_| DecryptError::DataKey)?;
        let (iv, sealed) = data.split_at(IV_LEN);
        let plain = cipher
            .decrypt(Nonce::<U16>::from_slice(iv), sealed)
            .map_err(|_| DecryptError::Authentication)?;
        String::from_utf8(plain).map_err(|_| DecryptError::NotUtf8)
    }
}

impl EnvelopeDecryptor for RsaEnvelopeDecryptor<'_> {
    fn decrypt(&self, envelope: &Envelope) -> Result<String, DecryptError> {
        self.open(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{NodeEnvelopes, SeqRandom};

    fn fixtures() -> NodeEnvelopes {
        NodeEnvelopes::load()
    }

    #[test]
    fn opens_every_envelope_node_made() {
        let fixtures = fixtures();
        let random = SeqRandom::new(7);
        let decryptor = RsaEnvelopeDecryptor::new(&fixtures.private_key_pem, &random);
        assert!(fixtures.ok.len() >= 9, "every case is present");
        for case in &fixtures.ok {
            assert_eq!(
                decryptor.open(&case.envelope).as_deref(),
                Ok(case.plaintext.as_str()),
                "case {}",
                case.name
            );
        }
        assert_eq!(fixtures.case("large_64k").plaintext.len(), 65536);
    }

    #[test]
    fn refuses_every_bad_envelope_with_its_reason() {
        let fixtures = fixtures();
        let random = SeqRandom::new(1);
        let decryptor = RsaEnvelopeDecryptor::new(&fixtures.private_key_pem, &random);
        for case in &fixtures.bad {
            let error = decryptor.open(&case.envelope).expect_err(&case.name);
            let expected = match case.expect.as_str() {
                "wrong_key" => DecryptError::DataKey,
                "authentication" => DecryptError::Authentication,
                "algorithm" => DecryptError::Algorithm(case.envelope.algorithm.clone()),
                "version" => DecryptError::Version(case.envelope.version),
                "too_short" => DecryptError::TooShort(31),
                "data_base64" => DecryptError::Base64("encryptedData"),
                "dek_base64" => DecryptError::Base64("encryptedDEK"),
                other => panic!("unknown expectation {other}"),
            };
            assert_eq!(error, expected, "case {}", case.name);
        }
    }

    #[test]
    fn a_key_with_escaped_newlines_or_pkcs1_works_and_garbage_is_named() {
        let fixtures = fixtures();
        let random = SeqRandom::new(3);
        let escaped = fixtures.private_key_pem.replace('\n', "\\n");
        let case = &fixtures.ok[1];
        let decryptor = RsaEnvelopeDecryptor::new(&escaped, &random);
        assert_eq!(
            decryptor.open(&case.envelope).as_deref(),
            Ok(case.plaintext.as_str())
        );

        let pkcs1 = RsaEnvelopeDecryptor::new(&fixtures.private_key_pkcs1_pem, &random);
        assert_eq!(
            pkcs1.open(&case.envelope).as_deref(),
            Ok(case.plaintext.as_str())
        );

        let other = RsaEnvelopeDecryptor::new(&fixtures.other_private_key_pem, &random);
        assert_eq!(other.open(&case.envelope), Err(DecryptError::DataKey));

        let garbage = RsaEnvelopeDecryptor::new(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            &random,
        );
        assert_eq!(
            garbage.open(&case.envelope),
            Err(DecryptError::BadPrivateKey)
        );
        // The value never shows in an error message.
        for error in [
            DecryptError::DataKey,
            DecryptError::Authentication,
            DecryptError::BadPrivateKey,
        ] {
            assert!(!error.to_string().contains(&case.plaintext));
        }
    }
}
