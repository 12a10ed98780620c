//! The RSA envelopes made by Node's `crypto` as the original's Next.js does
//! (`tests/fixtures/envelopes/make-envelopes.mjs`, which regenerates them), with their private keys.

use serde::Deserialize;

use crate::record::Envelope;

/// The committed fixture file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEnvelopes {
    /// The PKCS#8 PEM that opens every `ok` envelope.
    pub private_key_pem: String,
    /// The same key as PKCS#1 PEM.
    pub private_key_pkcs1_pem: String,
    /// Another key, which opens none of them.
    pub other_private_key_pem: String,
    /// Envelopes that open, with their plaintexts.
    pub ok: Vec<GoodEnvelope>,
    /// Envelopes that must be refused, with the expected reason.
    pub bad: Vec<BadEnvelope>,
}

/// An envelope and what it holds.
#[derive(Debug, Clone, Deserialize)]
pub struct GoodEnvelope {
    /// Case name (`empty`, `unicode`, `large_64k`, `telegram`, …).
    pub name: String,
    /// Where such a value lives in an instance config.
    pub field: String,
    /// The value.
    pub plaintext: String,
    /// The envelope Node made.
    pub envelope: Envelope,
}

/// An envelope that must not open.
#[derive(Debug, Clone, Deserialize)]
pub struct BadEnvelope {
    /// Case name.
    pub name: String,
    /// The expected reason (`wrong_key`, `authentication`, `algorithm`, …).
    pub expect: String,
    /// The envelope.
    pub envelope: Envelope,
}

impl NodeEnvelopes {
    /// The committed fixtures.
    pub fn load() -> Self {
        // The file is committed and checked by the tests that use it; a parse failure is a broken checkout.
        #[allow(clippy::expect_used)]
        serde_json::from_str(include_str!(
            "../../../../tests/fixtures/envelopes/envelopes.json"
        ))
        .expect("tests/fixtures/envelopes/envelopes.json parses")
    }

    /// The `ok` case named `name`.
    pub fn case(&self, name: &str) -> &GoodEnvelope {
        #[allow(clippy::expect_used)]
        self.ok
            .iter()
            .find(|case| case.name == name)
            .expect("fixture case exists")
    }
}
