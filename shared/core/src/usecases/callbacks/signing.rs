//! Callback signatures (docs/security.md). A delivery carries two headers:
//!
//! - `X-Segments-Timestamp`: the sending time, Unix seconds;
//! - `X-Segments-Signature`: `sha256=` + lower-case hex of HMAC-SHA256, keyed with the
//!   mandator's 32-byte secret, over `{timestamp}.{raw body}`.
//!
//! The timestamp is inside the MAC, so a receiver that refuses timestamps older than a few minutes
//! (and remembers the job ids it has seen) cannot be fed a recorded delivery again.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::CallbackSecret;

pub const SIGNATURE_HEADER: &str = "X-Segments-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Segments-Timestamp";
/// How far a receiver should accept a timestamp from its own clock.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &CallbackSecret, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; a 32-byte key never fails.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Segments-Signature` value of a body sent at `timestamp`.
pub fn signature(secret: &CallbackSecret, timestamp: i64, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// Why a receiver refuses a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is not sha256=<64 hex digits>")]
    Malformed,
    #[error("the timestamp is not within the tolerance of the receiver's clock")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// Verifies a delivery as a receiver should: the timestamp within `tolerance_secs` of `now`, and
/// the signature compared in constant time.
pub fn verify(
    secret: &CallbackSecret,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let timestamp: i64 = timestamp.trim().parse().map_err(|_| SignatureError::Stale)?;
    if (now - timestamp).abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let hex_mac = signature_header.trim().strip_prefix("sha256=").ok_or(SignatureError::Malformed)?;
    let given = hex::decode(hex_mac).map_err(|_| SignatureError::Malformed)?;
    if given.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    mac(secret, timestamp, body).verify_slice(&given).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> CallbackSecret {
        CallbackSecret::from_bytes(std::array::from_fn(|i| i as u8))
    }

    #[test]
    fn known_answer() {
        // openssl: printf '1700000000.{"a":1}' | openssl dgst -sha256 -mac HMAC -macopt hexkey:0001…1f
        assert_eq!(
            signature(&secret(), 1_700_000_000, br#"{"a":1}"#),
            "sha256=03348adc068f3e120398d321e294ed21d5531ba19808733437c88c51d9ffdb14"
        );
    }

    #[test]
    fn verify_accepts_the_signature_and_refuses_tampering_replays_and_other_secrets() {
        let body = br#"{"jobId":"x","status":"COMPLETED"}"#;
        let sig = signature(&secret(), 1_700_000_000, body);
        assert_eq!(verify(&secret(), "1700000000", &sig, body, 1_700_000_100, 300), Ok(()));
        assert_eq!(
            verify(&secret(), "1700000000", &sig, br#"{"jobId":"y","status":"COMPLETED"}"#, 1_700_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        // The same body and signature with another timestamp: the timestamp is inside the MAC.
        assert_eq!(verify(&secret(), "1700000200", &sig, body, 1_700_000_200, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(&secret(), "1700000000", &sig, body, 1_700_001_000, 300), Err(SignatureError::Stale));
        let other = CallbackSecret::from_bytes([7; 32]);
        assert_eq!(verify(&other, "1700000000", &sig, body, 1_700_000_000, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(&secret(), "1700000000", "md5=00", body, 1_700_000_000, 300), Err(SignatureError::Malformed));
        assert_eq!(
            verify(&secret(), "1700000000", "sha256=zz", body, 1_700_000_000, 300),
            Err(SignatureError::Malformed)
        );
    }
}
