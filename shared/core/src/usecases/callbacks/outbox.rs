//! The callback outbox (docs/api.md, "Callbacks"): a job's callback whose five attempts failed is
//! not given up; it is kept, per mandator, and the sweeper delivers it again with a growing backoff
//! for up to 24 hours after the first failure. A receiver that is down for a while — a deployment,
//! an outage — still gets the report once it is back.
//!
//! What is kept is the URL and the body, never the secret: each delivery signs anew with the
//! mandator's current secret and a fresh timestamp, and the URL is checked against the policy
//! again before each attempt, as on the first delivery. Logs name the URL's host, never the URL
//! (its query may carry a receiver's token).

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tracing::instrument;

use super::{Callbacks, NotifyError};
use crate::domain::PendingCallback;
use crate::ports::{CallbackOutbox, StoreError};

/// How many pending callbacks one sweep delivers at once.
const CONCURRENT_DELIVERIES: usize = 8;
/// The most pending callbacks one sweep takes; the rest wait for the next sweep.
const SWEEP_BATCH: u32 = 200;

/// The URL's host, for logs.
fn host(url: &str) -> String {
    url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default()
}

/// What the outbox's part of a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxReport {
    /// Pending callbacks delivered now.
    pub delivered: u32,
    /// Pending callbacks that failed again and wait for their next retry.
    pub retrying: u32,
    /// Pending callbacks given up: 24 hours passed, or the receiver refused them for good.
    pub given_up: u32,
}

/// Delivers the pending callbacks due at `now`, a few at a time. Each is first moved to its next
/// retry with a conditional write, so two sweeps at once deliver it once, and a sweep that dies
/// mid-delivery leaves it due again later; delivered, it is removed.
#[instrument(skip_all)]
pub async fn retry_due(
    callbacks: &Callbacks,
    outbox: &dyn CallbackOutbox,
    now: DateTime<Utc>,
) -> Result<OutboxReport, StoreError> {
    let due = outbox.due_callbacks(now, SWEEP_BATCH).await?;
    let outcomes: Vec<Result<Retried, StoreError>> = futures::stream::iter(due)
        .map(|pending| async move { retry(callbacks, outbox, &pending, now).await })
        .buffer_unordered(CONCURRENT_DELIVERIES)
        .collect()
        .await;
    let mut report = OutboxReport::default();
    for outcome in outcomes {
        match outcome {
            Ok(Retried::Delivered) => report.delivered += 1,
            Ok(Retried::Retrying) => report.retrying += 1,
            Ok(Retried::GivenUp) => report.given_up += 1,
            Ok(Retried::Skipped) => {}
            Err(e) => tracing::error!(error = %e, "retrying a pending callback failed; it stays due"),
        }
    }
    Ok(report)
}

enum Retried {
    Delivered,
    Retrying,
    GivenUp,
    Skipped,
}

#[instrument(skip_all, fields(mandator_id = %pending.mandator_id, job_id = %pending.job_id, host = %host(&pending.url), retry = pending.retries + 1))]
async fn retry(
    callbacks: &Callbacks,
    outbox: &dyn CallbackOutbox,
    pending: &PendingCallback,
    now: DateTime<Utc>,
) -> Result<Retried, StoreError> {
    if now >= pending.expires_at() {
        tracing::error!(retries = pending.retries, "callback given up: not delivered within 24 hours");
        outbox.remove_callback(pending).await?;
        return Ok(Retried::GivenUp);
    }
    let next = pending.after_retry(now);
    if !outbox.replace_callback(pending, &next).await? {
        return Ok(Retried::Skipped);
    }
    let secret = callbacks.secrets.secret(&pending.mandator_id).await?;
    match callbacks.notifier.deliver(&pending.url, &secret, pending.body.as_bytes()).await {
        Ok(attempts) => {
            tracing::info!(attempts, "pending callback delivered");
            outbox.remove_callback(&next).await?;
            Ok(Retried::Delivered)
        }
        Err(e @ (NotifyError::Refused(_) | NotifyError::Rejected(_) | NotifyError::Encoding(_))) => {
            // Another try would end the same way.
            tracing::error!(error = %e, "pending callback given up: the receiver refuses it");
            outbox.remove_callback(&next).await?;
            Ok(Retried::GivenUp)
        }
        Err(e) => {
            tracing::warn!(error = %e, next_at = %next.next_at, "pending callback failed again; retried later");
            Ok(Retried::Retrying)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobId, MandatorId};
    use chrono::Duration;

    #[test]
    fn retries_back_off_from_5_minutes_to_2_hours_and_a_day_holds_15() {
        let t0 = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z").unwrap().with_timezone(&Utc);
        let mut pending = PendingCallback::new(
            MandatorId::parse("m").unwrap(),
            JobId::new(),
            "https://example.com/hook".to_owned(),
            "{}".to_owned(),
            t0,
        );
        assert_eq!(pending.next_at, t0 + Duration::minutes(5));
        let mut waits = Vec::new();
        let mut retries_in_a_day = 0;
        while pending.next_at < pending.expires_at() {
            let at = pending.next_at;
            pending = pending.after_retry(at);
            waits.push((pending.next_at - at).num_minutes());
            retries_in_a_day += 1;
        }
        assert_eq!(waits[..6], [10, 20, 40, 80, 120, 120]);
        assert_eq!(retries_in_a_day, 15);
        assert_eq!(host(&pending.url), "example.com");
    }
}
