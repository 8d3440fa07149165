//! The worker runtime shared by every `worker-*` function and the local runner: run one job from
//! its message, and handle an SQS batch with partial batch failures (DESIGN §7).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use tracing::instrument;

use crate::app::{Services, write_result};
use crate::domain::{SegmentType, UserId};
use crate::jobs::JobMessage;
use crate::ports::StoreError;

/// Why a job run did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A store or queue failed; the same message may succeed later.
    #[error("transient failure: {0}")]
    Transient(#[source] StoreError),
    /// The job can never succeed (bad stored data, a type this worker cannot compute). The job
    /// has been marked FAILED.
    #[error("job failed permanently: {0}")]
    Permanent(String),
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() { RunError::Transient(e) } else { RunError::Permanent(e.to_string()) }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Completed {
        total_elements: u64,
    },
    /// Completed, failed, expired or unknown already: a redelivered message, nothing to do.
    NothingToDo,
}

/// Runs the job of `message` to completion: streams every shard of the mandator's account data,
/// computes each user's entry, writes the result and marks the job COMPLETED. Idempotent: result
/// keys are deterministic and completion is a conditional write, so a redelivered message that
/// races or follows a finished run changes nothing.
#[instrument(skip_all, fields(mandator_id = %message.mandator_id, job_id = %message.job_id, segment_type = %message.segment_type))]
pub async fn run_job(s: &Services, message: &JobMessage, now: DateTime<Utc>) -> Result<RunOutcome, RunError> {
    let mandator = &message.mandator_id;
    let Some(job) = s.jobs.get(mandator, message.job_id).await? else {
        tracing::warn!("message for an unknown job; dropped");
        return Ok(RunOutcome::NothingToDo);
    };
    if job.status.is_final() || job.is_expired(now) {
        return Ok(RunOutcome::NothingToDo);
    }
    if job.segment_type != message.segment_type {
        return fail(s, message, "message and job disagree on the segment type").await;
    }
    s.jobs.mark_running(mandator, job.job_id).await?;
    let spec = job.spec();
    let mut entries: Vec<(UserId, String)> = Vec::new();
    for shard in 0..job.shards_total {
        let mut users = s.accounts.users(mandator, shard);
        while let Some(user) = users.try_next().await? {
            let entry = match spec.evaluate(&user) {
                Ok(entry) => entry,
                Err(e) => return fail(s, message, &e.to_string()).await,
            };
            if let Some(entry) = entry {
                let line = serde_json::to_string(&entry).map_err(|e| RunError::Permanent(e.to_string()))?;
                entries.push((user.user_id, line));
            }
        }
        s.jobs.record_progress(mandator, job.job_id, shard + 1).await?;
        tracing::debug!(shard, "shard done");
    }
    // Users are unique per mandator and live on one shard each; the result is in userId byte order.
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let lines: Vec<String> = entries.into_iter().map(|(_, l)| l).collect();
    let summary = write_result(s.results.as_ref(), &job, &lines, s.config.chunk_size).await?;
    let completed = s.jobs.complete(mandator, job.job_id, summary).await?;
    if completed {
        tracing::info!(total_elements = summary.total_elements, "job completed");
    }
    Ok(RunOutcome::Completed { total_elements: summary.total_elements })
}

async fn fail(s: &Services, message: &JobMessage, reason: &str) -> Result<RunOutcome, RunError> {
    tracing::error!(reason, "job failed");
    s.jobs.fail(&message.mandator_id, message.job_id, reason).await?;
    Err(RunError::Permanent(reason.to_owned()))
}

/// What to do with a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done (or never doable): delete the message.
    Ack,
    /// Leave it to be delivered again.
    Retry,
}

/// Handles one delivery of a message body. `receive_count` is how often it has been delivered
/// (SQS's ApproximateReceiveCount). A transient failure is retried until the last allowed
/// receive; then the job is marked FAILED with the reason, so it never stays RUNNING while its
/// message sits in the DLQ.
pub async fn process_message(
    s: &Services,
    worker_type: SegmentType,
    body: &str,
    receive_count: u32,
    now: DateTime<Utc>,
) -> Disposition {
    let message: JobMessage = match serde_json::from_str(body) {
        Ok(m) => m,
        Err(e) => {
            // No job to mark; let it reach the DLQ for an operator to look at.
            tracing::error!(error = %e, "undecodable message");
            return Disposition::Retry;
        }
    };
    if message.segment_type != worker_type {
        tracing::error!(expected = %worker_type, got = %message.segment_type, "message on the wrong queue");
        return Disposition::Retry;
    }
    match run_job(s, &message, now).await {
        Ok(_) | Err(RunError::Permanent(_)) => Disposition::Ack,
        Err(RunError::Transient(e)) if receive_count >= s.config.max_receive_count => {
            tracing::error!(error = %e, receive_count, "giving up on the job");
            let reason = format!("gave up after {receive_count} attempts: storage unavailable");
            match s.jobs.fail(&message.mandator_id, message.job_id, &reason).await {
                Ok(_) => Disposition::Ack,
                Err(_) => Disposition::Retry,
            }
        }
        Err(RunError::Transient(e)) => {
            tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), receive_count, "transient failure; will retry");
            Disposition::Retry
        }
    }
}

/// The SQS handler of a worker Lambda: messages are processed one by one and only the ones to
/// retry are reported, so one bad message never fails the batch (ReportBatchItemFailures).
pub async fn handle_sqs_batch(s: &Services, worker_type: SegmentType, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let receive_count = record.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
        let body = record.body.as_deref().unwrap_or_default();
        if process_message(s, worker_type, body, receive_count, Utc::now()).await == Disposition::Retry {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// The whole `main` of a worker Lambda: the runtime's logging (JSON with
/// `AWS_LAMBDA_LOG_FORMAT=JSON`), the services built once from the environment, and the SQS batch
/// handler for `worker_type`.
pub async fn run_lambda(worker_type: SegmentType) -> Result<(), lambda_http::Error> {
    use lambda_http::lambda_runtime::{LambdaEvent, run, service_fn};
    lambda_http::tracing::init_default_subscriber();
    let services = crate::adapters::aws_services_from_env().await?;
    run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let services = &services;
        async move { Ok::<_, lambda_http::Error>(handle_sqs_batch(services, worker_type, event.payload).await) }
    }))
    .await
}
