//! The secret that signs a mandator's callbacks, and a callback kept for retries after its
//! delivery gave up (the outbox, `usecases::callbacks::outbox`).

use std::fmt;

use chrono::{DateTime, Duration, SubsecRound, Utc};

use super::{JobId, MandatorId};

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

/// How long after the first failed delivery the outbox keeps trying; the stores expire an entry
/// with it.
pub const OUTBOX_RETENTION: Duration = Duration::hours(24);
/// The first retry comes this long after the failure; each further one waits twice as long as the
/// one before, up to [`MAX_RETRY_BACKOFF`].
pub const FIRST_RETRY_BACKOFF: Duration = Duration::minutes(5);
/// The longest wait between two retries: 5, 10, 20, 40, 80 minutes, then every 2 hours, so a day
/// holds 15 retries.
pub const MAX_RETRY_BACKOFF: Duration = Duration::hours(2);

/// A callback waiting in the outbox: the one final report of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCallback {
    pub mandator_id: MandatorId,
    pub job_id: JobId,
    pub url: String,
    /// The JSON body, exactly as the first delivery sent it.
    pub body: String,
    /// Retries made from the outbox so far.
    pub retries: u32,
    /// When the next retry is due (whole seconds, as the stores index it).
    pub next_at: DateTime<Utc>,
    /// When the first delivery gave up; the outbox gives up [`OUTBOX_RETENTION`] later.
    pub failed_at: DateTime<Utc>,
}

impl PendingCallback {
    /// The entry for a delivery that gave up at `now`.
    pub fn new(mandator_id: MandatorId, job_id: JobId, url: String, body: String, now: DateTime<Utc>) -> Self {
        let now = now.trunc_subsecs(0);
        PendingCallback {
            mandator_id,
            job_id,
            url,
            body,
            retries: 0,
            next_at: now + FIRST_RETRY_BACKOFF,
            failed_at: now,
        }
    }

    /// When the stores may forget the entry.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.failed_at + OUTBOX_RETENTION
    }

    /// The entry after one more retry at `now`: the next is due after twice the last backoff.
    pub fn after_retry(&self, now: DateTime<Utc>) -> PendingCallback {
        let doublings = self.retries.min(16);
        let backoff = (FIRST_RETRY_BACKOFF * 2i32.pow(doublings + 1)).min(MAX_RETRY_BACKOFF);
        PendingCallback { retries: self.retries + 1, next_at: now.trunc_subsecs(0) + backoff, ..self.clone() }
    }
}
