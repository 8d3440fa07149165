//! The SQS edge: a worker's and the dead-letter handler's batches of SQS messages, as Lambda
//! handlers over the use cases. Messages are handled one by one and only the ones to retry are
//! reported, so one bad message never fails the batch (ReportBatchItemFailures).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::Utc;
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};

use crate::domain::SegmentType;
use crate::ports::JobStore;
use crate::usecases::callbacks::Callbacks;
use crate::usecases::dead_letter::dead_letter;
use crate::usecases::run_shard::{Disposition, ShardRunner, process_message};

/// The SQS handler of a worker Lambda of `worker_type`.
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

/// The Lambda runtime loop of a worker: logging (JSON with `AWS_LAMBDA_LOG_FORMAT=JSON`), then
/// every batch through [`handle_sqs_batch`].
pub async fn serve_worker(runner: ShardRunner, worker_type: SegmentType) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let runner = &runner;
        async move { Ok::<_, lambda_runtime::Error>(handle_sqs_batch(runner, worker_type, event.payload).await) }
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
