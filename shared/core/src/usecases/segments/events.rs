//! Publishing segment events (docs/events.md): to the event publisher (the stack's EventBridge
//! bus, or the local runner's event file) and, when the segment has a `callbackURL`, to it —
//! signed with the mandator's secret and under the URL policy of job callbacks.

use super::SegmentsServices;
use crate::domain::events::SegmentEvent;
use crate::domain::segment::Segment;
use crate::usecases::AppError;
use crate::usecases::callbacks::{DeliverySettings, HttpNotifier, Notifier};

/// How long a segment's callback may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// Inside an API request (API Gateway gives up after 29 s): one attempt of a few seconds.
    Request,
    /// In the refresh applier: the retries of a job callback.
    Worker,
}

/// One short attempt: an API answer never waits long on a segment's receiver.
const REQUEST_DELIVERY: DeliverySettings = DeliverySettings {
    attempts: 1,
    first_backoff: std::time::Duration::from_secs(1),
    connect_timeout: std::time::Duration::from_secs(2),
    attempt_timeout: std::time::Duration::from_secs(4),
};

/// Publishes `event` about `seg`. The publisher must take it (`Err` otherwise: the caller's step
/// is then repeated, and the event with it, under the same id). The callback is best effort: a
/// receiver that is down never holds up a segment's membership or an API answer; its failure is
/// logged and counted like a job callback's, and the bus keeps the event.
pub async fn publish(
    s: &SegmentsServices,
    seg: &Segment,
    event: SegmentEvent,
    patience: Patience,
) -> Result<(), AppError> {
    s.events.publish(std::slice::from_ref(&event)).await?;
    crate::telemetry::event_published(event.kind().detail_type());
    if let Some(url) = &seg.callback_url {
        let callbacks = &s.intake.callbacks;
        let body = event.envelope().to_string();
        let quick;
        let notifier: &dyn Notifier = match patience {
            Patience::Worker => callbacks.notifier.as_ref(),
            Patience::Request => {
                quick = HttpNotifier::new(callbacks.policy, REQUEST_DELIVERY);
                &quick
            }
        };
        match callbacks.secrets.secret(&seg.mandator).await {
            Ok(secret) => {
                if let Err(e) = notifier.deliver(url, &secret, body.as_bytes()).await {
                    tracing::warn!(segment_id = %seg.id, error = %e, "segment event callback not delivered");
                }
            }
            Err(e) => tracing::warn!(segment_id = %seg.id, error = %e, "segment event callback not signed: no secret"),
        }
    }
    Ok(())
}

/// After a write through the API that is already durable: publishes, and logs a failure rather
/// than answering the caller with an error for a change that did happen.
pub async fn publish_after_write(s: &SegmentsServices, seg: &Segment, event: SegmentEvent) {
    let kind = event.kind().detail_type();
    if let Err(e) = publish(s, seg, event, Patience::Request).await {
        crate::telemetry::event_failed(kind);
        tracing::error!(segment_id = %seg.id, event = kind, error = %e, "segment event not published");
    }
}
