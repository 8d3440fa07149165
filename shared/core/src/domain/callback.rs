//! The secret that signs a mandator's callbacks.

use std::fmt;

/// A mandator's callback signing key: 32 random bytes. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct CallbackSecret([u8; 32]);

impl CallbackSecret {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        CallbackSecret(bytes)
    }

    /// A new secret from the operating system's CSPRNG.
    pub fn generate() -> Self {
        CallbackSecret(random_key())
    }

    /// A stored secret; `None` unless exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(CallbackSecret)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The form given to the mandator: 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for CallbackSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallbackSecret(..)")
    }
}

/// 32 bytes from the operating system's CSPRNG. A failing OS random source is not something to
/// carry on from: it panics.
pub fn random_key() -> [u8; 32] {
    use rand::TryRngCore;
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng.unwrap_err(), &mut bytes);
    bytes
}
