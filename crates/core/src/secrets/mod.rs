//! Users' secrets on their way to the machine (original-behaviour.md §7.3, §7.4, §9):
//!
//! - [`envelope`]: the RSA envelopes Next.js stores (`encryptedSecrets`, channel tokens), opened with
//!   `agent_env_vars_private_key` (RSA-OAEP-SHA256 wrapping an AES-256-GCM data key).
//! - [`machine_env`]: the encrypted machine environment: every sensitive value goes to Fly only as
//!   `KILOCLAW_ENC_<NAME>=enc:v1:…` under the per-user key kept as the app secret `KILOCLAW_ENV_KEY`.
//!
//! Randomness (data keys, IVs, RSA blinding) comes from the caller's [`Random`](crate::clock::Random),
//! which in the components is `wasi:random/random`, the host's cryptographically secure source.

pub mod envelope;
pub mod machine_env;

use crate::clock::Random;

/// `Random` as the `rand_core` generator RustCrypto's RSA wants for blinding.
pub(crate) struct CryptoRandom<'a>(pub(crate) &'a dyn Random);

impl rsa::rand_core::RngCore for CryptoRandom<'_> {
    fn next_u32(&mut self) -> u32 {
        // Truncation is the point: the low half of a uniform u64 is a uniform u32.
        self.0.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        fill(self.0, dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        fill(self.0, dest);
        Ok(())
    }
}

// Sound because the only `Random` the components construct is `wasi:random/random` (a CSPRNG); the
// deterministic fakes exist for tests.
impl rsa::rand_core::CryptoRng for CryptoRandom<'_> {}

/// Fills `dest` from `random`, eight bytes per draw.
pub(crate) fn fill(random: &dyn Random, dest: &mut [u8]) {
    for chunk in dest.chunks_mut(8) {
        let bytes = random.next_u64().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}
