//! Retrying DynamoDB batch calls that leave work unprocessed (throttling), shared by the tables.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, WriteRequest};

use segments_core::ports::StoreError;

/// Attempts of one batch while DynamoDB leaves items unprocessed.
pub(super) const MAX_BATCH_ATTEMPTS: u32 = 8;
const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(3);

/// Exponential backoff with jitter: writers retrying together do not collide again.
pub(super) fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(1 << attempt.min(16)).min(BACKOFF_CAP);
    let half = ceiling / 2;
    half + half.mul_f64(rand::random_range(0.0..1.0))
}

/// One BatchWriteItem of at most 25 requests to `table`, resending the unprocessed items with
/// backoff until none are left or the attempts run out. `what` names the data in errors.
pub(super) async fn batch_write(
    client: &Client,
    table: &str,
    mut batch: Vec<WriteRequest>,
    what: &'static str,
) -> Result<(), StoreError> {
    for attempt in 0..MAX_BATCH_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        let out = client
            .batch_write_item()
            .request_items(table, batch)
            .send()
            .await
            .map_err(|e| StoreError::unavailable(what, e.into_service_error()))?;
        batch = out.unprocessed_items.and_then(|mut u| u.remove(table)).unwrap_or_default();
        if batch.is_empty() {
            return Ok(());
        }
        tracing::debug!(unprocessed = batch.len(), attempt, what, "retrying unprocessed items");
    }
    Err(StoreError::unavailable(
        what,
        format!("{} items still unprocessed after {MAX_BATCH_ATTEMPTS} attempts", batch.len()),
    ))
}

/// One BatchGetItem of at most 100 `keys` of `table`, read consistently, resending the
/// unprocessed keys with backoff until none are left or the attempts run out. Returns the items
/// found, in no particular order; a key without an item is simply absent.
pub(super) async fn batch_get(
    client: &Client,
    table: &str,
    mut keys: Vec<HashMap<String, AttributeValue>>,
    what: &'static str,
) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
    let mut found = Vec::with_capacity(keys.len());
    for attempt in 0..MAX_BATCH_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(|e| StoreError::unavailable(what, e))?;
        let out = client
            .batch_get_item()
            .request_items(table, request)
            .send()
            .await
            .map_err(|e| StoreError::unavailable(what, e.into_service_error()))?;
        found.extend(out.responses.and_then(|mut r| r.remove(table)).unwrap_or_default());
        keys = out.unprocessed_keys.and_then(|mut u| u.remove(table)).map(|k| k.keys).unwrap_or_default();
        if keys.is_empty() {
            return Ok(found);
        }
        tracing::debug!(unprocessed = keys.len(), attempt, what, "retrying unprocessed keys");
    }
    Err(StoreError::unavailable(
        what,
        format!("{} keys still unprocessed after {MAX_BATCH_ATTEMPTS} attempts", keys.len()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..MAX_BATCH_ATTEMPTS + 10 {
            let d = backoff(attempt);
            assert!(d <= BACKOFF_CAP);
            let ceiling = BACKOFF_BASE.saturating_mul(1 << attempt.min(16)).min(BACKOFF_CAP);
            assert!(d >= ceiling / 2);
        }
    }
}
