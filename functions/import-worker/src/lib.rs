//! The import worker function: the import queue is its event source, one message (one started
//! import) per invocation. Each message's files are downloaded to the function's ephemeral
//! storage, imported and deleted again ([`ImportWorker::process`]); only the messages to deliver
//! again are reported, so the outcome of one never touches another (ReportBatchItemFailures).

use std::time::SystemTime;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use segments_core::usecases::import_worker::ImportWorker;
use segments_core::usecases::run_shard::Disposition;

/// The function's ephemeral storage: the downloaded files and what the import spills while
/// grouping them, about twice the size of the files. An invocation handles one import at a time,
/// so the folder is the import's alone.
pub const SCRATCH_DIR: &str = "/tmp/imports";

/// Handles a batch of import messages, by `deadline` (the invocation's) when given.
pub async fn handle(worker: &ImportWorker, event: SqsEvent, deadline: Option<SystemTime>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let receive_count = record.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
        let body = record.body.as_deref().unwrap_or_default();
        let budget = deadline.map(|d| d.duration_since(SystemTime::now()).unwrap_or_default());
        if worker.process(body, receive_count, budget).await == Disposition::Retry {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = record.message_id.clone().unwrap_or_default();
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// The Lambda runtime loop.
pub async fn serve(worker: ImportWorker) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let worker = &worker;
        let deadline = event.context.deadline();
        async move { Ok::<_, lambda_runtime::Error>(handle(worker, event.payload, Some(deadline)).await) }
    }))
    .await
}
