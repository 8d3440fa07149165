//! The SQS edge: a worker's and the dead-letter handler's batches of SQS messages, as Lambda
//! handlers over the use cases. Messages are handled one by one and only the ones to retry are
//! reported, so one bad message never fails the batch (ReportBatchItemFailures).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::Utc;
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};

use crate::domain::SegmentType;
use crate::ports::{JobStore, MessageVisibility};
use crate::usecases::callbacks::Callbacks;
use crate::usecases::dead_letter::dead_letter;
use crate::usecases::run_shard::{
    Delivery, Disposition, RetrySchedule, ShardRunner, process_delivery, process_message,
};

/// The SQS handler of a worker over a transport that does not let it change a message's
/// visibility: a message to retry comes back after the queue's visibility timeout. The worker
/// Lambdas use [`handle_worker_batch`].
pub async fn handle_sqs_batch(s: &ShardRunner, worker_type: SegmentType, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let receive_count = record.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
        let body = record.body.as_deref().unwrap_or_default();
        if process_message(s, worker_type, body, receive_count, Utc::now()).await == Disposition::Retry {
            response.batch_item_failures.push(batch_item_failure(id));
        }
    }
    response
}

/// The SQS handler of a worker Lambda of `worker_type` that holds its messages through `queue`
/// (the worker's own queue, by receipt handle): a running shard's message is kept invisible by
/// the heartbeat, and a message to retry comes back after its backoff in `schedule`
/// ([`process_delivery`]).
pub async fn handle_worker_batch(
    s: &ShardRunner,
    worker_type: SegmentType,
    queue: &dyn MessageVisibility,
    schedule: &RetrySchedule,
    event: SqsEvent,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let receive_count = record.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
        let body = record.body.as_deref().unwrap_or_default();
        let disposition = match record.receipt_handle.as_deref() {
            Some(receipt_handle) => {
                let delivery = Delivery { body, receive_count, receipt_handle, queue };
                process_delivery(s, worker_type, &delivery, schedule, Utc::now()).await
            }
            // Without a receipt handle the visibility cannot be changed: the message comes back
            // after the queue's visibility timeout.
            None => process_message(s, worker_type, body, receive_count, Utc::now()).await,
        };
        if disposition == Disposition::Retry {
            response.batch_item_failures.push(batch_item_failure(id));
        }
    }
    response
}

/// The SQS handler of the dead-letter Lambda (every DLQ is its event source).
pub async fn handle_dead_letters(jobs: &dyn JobStore, callbacks: &Callbacks, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let body = record.body.as_deref().unwrap_or_default();
        if dead_letter(jobs, callbacks, body).await == Disposition::Retry {
            response.batch_item_failures.push(batch_item_failure(record.message_id.clone().unwrap_or_default()));
        }
    }
    response
}

fn batch_item_failure(id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = id;
    failure
}

/// The Lambda runtime loop of a worker: every batch through [`handle_worker_batch`], holding the
/// messages through `queue` on the [`RetrySchedule::default`] schedule.
pub async fn serve_worker(
    runner: ShardRunner,
    worker_type: SegmentType,
    queue: &dyn MessageVisibility,
) -> Result<(), lambda_runtime::Error> {
    let schedule = RetrySchedule::default();
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let (runner, schedule) = (&runner, &schedule);
        async move {
            Ok::<_, lambda_runtime::Error>(
                handle_worker_batch(runner, worker_type, queue, schedule, event.payload).await,
            )
        }
    }))
    .await
}

/// The Lambda runtime loop of the dead-letter handler.
pub async fn serve_dead_letters(jobs: &dyn JobStore, callbacks: &Callbacks) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(handle_dead_letters(jobs, callbacks, event.payload).await)
    }))
    .await
}
