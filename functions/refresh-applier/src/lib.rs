//! The refresh applier function: the refresh queue is its event source, one message (one
//! refresh to take a step further) per invocation. Each message runs
//! `segments_core::usecases::segments::refresh::apply`: it records the refresh's difference,
//! applies it page by page and publishes the change. Only the messages worth delivering again
//! are reported (ReportBatchItemFailures): a store or queue that failed for a moment. Anything
//! else is logged and dropped — a body that is not a refresh message never becomes one, and a
//! refresh left unfinished is looked at again by the scheduler once its lease has run out.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use lambda_runtime::{LambdaEvent, service_fn};
use segments_core::domain::refresh::RefreshMessage;
use segments_core::usecases::AppError;
use segments_core::usecases::run_shard::Disposition;
use segments_core::usecases::segments::SegmentsServices;
use segments_core::usecases::segments::refresh::{ApplyOutcome, apply};

/// Handles a batch of refresh messages, each on its own.
pub async fn handle(services: &SegmentsServices, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let body = record.body.as_deref().unwrap_or_default();
        if process(services, body, Utc::now()).await == Disposition::Retry {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = record.message_id.clone().unwrap_or_default();
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// One message body at `now`: whether to delete it or let it come back.
pub async fn process(services: &SegmentsServices, body: &str, now: DateTime<Utc>) -> Disposition {
    let message: RefreshMessage = match serde_json::from_str(body) {
        Ok(message) => message,
        Err(e) => {
            // The parser's message names a position, never the body's content.
            tracing::error!(error = %e, "message dropped: not a refresh message");
            return Disposition::Ack;
        }
    };
    disposition(&message, apply(services, &message, now).await)
}

/// Retry exactly what may pass: a store or queue that was unavailable. Every other error is the
/// same on the next delivery (or means another run took the refresh over), and the scheduler
/// sends a refresh left unfinished again once its lease has run out.
fn disposition(message: &RefreshMessage, result: Result<ApplyOutcome, AppError>) -> Disposition {
    let (mandator_id, refresh_id) = (message.mandator_id.as_str(), message.refresh_id.to_string());
    match result {
        Ok(outcome) => {
            tracing::info!(mandator_id, refresh_id, ?outcome, "refresh message handled");
            Disposition::Ack
        }
        Err(AppError::Unavailable(e)) if e.is_transient() => {
            tracing::warn!(mandator_id, refresh_id, error = %e, "refresh step failed; the message comes back");
            Disposition::Retry
        }
        Err(e) => {
            tracing::error!(mandator_id, refresh_id, error = %e, "refresh step failed; message dropped, the scheduler looks again");
            Disposition::Ack
        }
    }
}

/// The Lambda runtime loop.
pub async fn serve(services: SegmentsServices) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let services = &services;
        async move { Ok::<_, lambda_runtime::Error>(handle(services, event.payload).await) }
    }))
    .await
}

#[cfg(test)]
mod tests;
