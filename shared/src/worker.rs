//! The worker runtime shared by every `worker-*` function and the local runner (DESIGN §2, §7).
//!
//! A job has one message per shard. A delivery of a shard's message streams that shard's users,
//! writes their entries, sorted by userId, as the shard's part (a deterministic key), and then
//! records the shard on the job (a set: a redelivery does not count twice). The delivery that
//! finds every shard recorded finalizes: it merges the parts into result chunks, the export and
//! the manifest (same keys, same bytes whenever it runs), then completes the job and meters its
//! usage in one conditional write. A crash at any point leaves state a redelivery finishes from:
//! - after the part write: the shard is not recorded, so the redelivery writes the part again;
//! - after the shard record: the shard is recorded, so the redelivery goes straight to finalize;
//! - during finalize: the job is not COMPLETED, so any redelivered message of the job finalizes.
//!
//! A message is acknowledged only when its work is durable or can never be done (the job is then
//! FAILED). On the last allowed receive a failing message marks its job FAILED and is reported as
//! failed, so SQS moves it to the dead-letter queue, whose handler ([`handle_dead_letters`])
//! marks the job FAILED as well — the safety net for anything that slipped past.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use tracing::instrument;

use crate::adapters::faults::CrashPoint;
use crate::app::{ResultWriter, Services};
use crate::callbacks::Callbacks;
use crate::domain::{SegmentType, UserId};
use crate::jobs::{Job, JobMessage, JobRef, JobStatus};
use crate::ports::{ByteStream, JobStore, StoreError};

/// A part is uploaded in pieces of about this size.
const PART_PIECE_BYTES: usize = 1024 * 1024;

/// Why a run did not finish.
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
    /// The shard's part is written and recorded; other shards are still to come.
    ShardDone,
    /// This run finalized the job (or found it finalized meanwhile by another run).
    Completed { total_elements: u64 },
    /// Completed, failed, expired or unknown already: a redelivered message, nothing to do.
    NothingToDo,
}

/// Runs the shard of `message`: its part, its record, and the finalize when it is the last.
#[instrument(skip_all, fields(mandator_id = %message.mandator_id, job_id = %message.job_id, segment_type = %message.segment_type, shard = message.shard))]
pub async fn run_shard(s: &Services, message: &JobMessage, now: DateTime<Utc>) -> Result<RunOutcome, RunError> {
    let mandator = &message.mandator_id;
    let Some(mut job) = s.jobs.get(mandator, message.job_id).await? else {
        tracing::warn!("message for an unknown job; dropped");
        return Ok(RunOutcome::NothingToDo);
    };
    if job.status.is_final() || job.is_expired(now) {
        return Ok(RunOutcome::NothingToDo);
    }
    if job.segment_type != message.segment_type {
        return fail(s, &job, "message and job disagree on the segment type").await;
    }
    if message.shard >= job.shards_total {
        let reason = format!("message names shard {} of a job with {} shards", message.shard, job.shards_total);
        return fail(s, &job, &reason).await;
    }
    if !job.done_shards.contains(&message.shard) {
        s.jobs.mark_running(mandator, job.job_id).await?;
        if let Err(e) = write_part(s, &job, message.shard).await {
            return match e {
                RunError::Permanent(reason) => fail(s, &job, &reason).await,
                transient => Err(transient),
            };
        }
        s.faults.check(CrashPoint::AfterPartWrite)?;
        job = match s.jobs.record_shard(mandator, job.job_id, message.shard).await? {
            Some(job) => job,
            None => return Ok(RunOutcome::NothingToDo),
        };
        tracing::debug!(shards_done = job.shards_done, shards_total = job.shards_total, "shard recorded");
        s.faults.check(CrashPoint::AfterShardRecord)?;
        if job.status.is_final() {
            return Ok(RunOutcome::NothingToDo);
        }
    }
    if !job.all_shards_done() {
        return Ok(RunOutcome::ShardDone);
    }
    match finalize(s, &job).await {
        Err(RunError::Permanent(reason)) => fail(s, &job, &reason).await,
        other => other,
    }
}

async fn fail(s: &Services, job: &Job, reason: &str) -> Result<RunOutcome, RunError> {
    tracing::error!(reason, "job failed");
    if s.jobs.fail(&job.mandator_id, job.job_id, reason).await? {
        let failed = Job { status: JobStatus::Failed, error: Some(reason.to_owned()), ..job.clone() };
        call_back(&s.callbacks, &failed).await;
    }
    Err(RunError::Permanent(reason.to_owned()))
}

/// Calls the job's callback URL, if it has one, once the job's final state is durable. Only the
/// run whose write made the job final calls, so a redelivered message does not call again. A
/// callback that cannot be delivered after its retries is logged: the result stays readable
/// by polling, and the message's work is done either way.
async fn call_back(callbacks: &Callbacks, job: &Job) {
    // Nothing happens without a URL; failures are logged by `job_final`.
    let _ = callbacks.job_final(job).await;
}

/// [`call_back`] for a job known by its id only: reads it first.
async fn call_back_by_id(jobs: &dyn JobStore, callbacks: &Callbacks, job: &JobRef) {
    match jobs.get(&job.mandator_id, job.job_id).await {
        Ok(Some(job)) => call_back(callbacks, &job).await,
        Ok(None) => {}
        Err(e) => tracing::warn!(job_id = %job.job_id, error = %e, "cannot read the failed job to call back"),
    }
}

/// Streams one shard's users and writes the entries of those the segment selects, one JSON line
/// each, in userId order (the order the shard yields them), as the shard's part.
async fn write_part(s: &Services, job: &Job, shard: u32) -> Result<(), RunError> {
    let spec = job.spec();
    let mut part = s.results.writer(&job.layout().part(shard)).await?;
    let mut users = s.accounts.users(&job.mandator_id, shard);
    let mut buffer = BytesMut::new();
    let mut previous: Option<UserId> = None;
    let mut entries = 0u64;
    while let Some(user) = users.try_next().await? {
        if previous.as_ref().is_some_and(|p| p >= &user.user_id) {
            return Err(RunError::Permanent(format!("shard {shard} yields users out of order")));
        }
        let entry = spec.evaluate(&user).map_err(|e| RunError::Permanent(e.to_string()))?;
        if let Some(entry) = entry {
            serde_json::to_writer((&mut buffer).writer(), &entry).map_err(|e| RunError::Permanent(e.to_string()))?;
            buffer.put_u8(b'\n');
            entries += 1;
            if buffer.len() >= PART_PIECE_BYTES {
                part.write(buffer.split().freeze()).await?;
            }
        }
        previous = Some(user.user_id);
    }
    part.write(buffer.freeze()).await?;
    part.finish().await?;
    tracing::debug!(shard, entries, "part written");
    Ok(())
}

/// Merges the parts of every shard, by userId, into the result (chunks, export, manifest) and
/// completes the job, metering its usage. Streams: it holds one line per shard and the chunk
/// being filled, never the whole result. Idempotent: the same parts give the same objects under
/// the same keys, and only the first completion counts.
#[instrument(skip_all, fields(mandator_id = %job.mandator_id, job_id = %job.job_id, segment_type = %job.segment_type))]
pub async fn finalize(s: &Services, job: &Job) -> Result<RunOutcome, RunError> {
    let layout = job.layout();
    let mut parts = Vec::with_capacity(job.shards_total as usize);
    for shard in 0..job.shards_total {
        let key = layout.part(shard);
        let stream = s
            .results
            .get_stream(&key)
            .await?
            .ok_or_else(|| RunError::Permanent(format!("the part of shard {shard} is missing")))?;
        parts.push(LineReader::new(stream));
    }
    let mut heads: BinaryHeap<Reverse<(String, usize)>> = BinaryHeap::new();
    let mut lines: Vec<Option<Bytes>> = vec![None; parts.len()];
    for (i, part) in parts.iter_mut().enumerate() {
        advance(part, i, &mut heads, &mut lines).await?;
    }
    let mut result = ResultWriter::new(s.results.as_ref(), job, s.config.chunk_size).await?;
    let mut previous: Option<String> = None;
    while let Some(Reverse((user_id, i))) = heads.pop() {
        if previous.as_ref().is_some_and(|p| p.as_bytes() >= user_id.as_bytes()) {
            return Err(RunError::Permanent(format!("user {user_id} appears twice or out of order in the parts")));
        }
        let Some(line) = lines[i].take() else {
            return Err(RunError::Permanent("a part's line went missing during the merge".to_owned()));
        };
        result.push(&line).await?;
        previous = Some(user_id);
        advance(&mut parts[i], i, &mut heads, &mut lines).await?;
    }
    let summary = result.finish_chunks().await?;
    s.faults.check(CrashPoint::MidFinalize)?;
    result.finish().await?;
    let completed = s.jobs.complete(job, summary).await?;
    if completed {
        tracing::info!(total_elements = summary.total_elements, "job completed");
        let done = Job { status: JobStatus::Completed, result: Some(summary), ..job.clone() };
        call_back(&s.callbacks, &done).await;
    }
    Ok(RunOutcome::Completed { total_elements: summary.total_elements })
}

/// Reads the next line of part `i` into `lines[i]` and puts its userId on the heap.
async fn advance(
    part: &mut LineReader,
    i: usize,
    heads: &mut BinaryHeap<Reverse<(String, usize)>>,
    lines: &mut [Option<Bytes>],
) -> Result<(), RunError> {
    let Some(line) = part.next_line().await? else { return Ok(()) };
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow, rename = "userId")]
        user_id: std::borrow::Cow<'a, str>,
    }
    let head: Head = serde_json::from_slice(&line)
        .map_err(|e| RunError::Permanent(format!("a line of the part of shard {i} is not an entry: {e}")))?;
    heads.push(Reverse((head.user_id.into_owned(), i)));
    lines[i] = Some(line);
    Ok(())
}

/// The lines of a streamed object, without their `\n`; empty lines are skipped.
struct LineReader {
    stream: ByteStream,
    buffer: BytesMut,
    /// How much of `buffer` is known to hold no `\n`.
    scanned: usize,
    ended: bool,
}

impl LineReader {
    fn new(stream: ByteStream) -> Self {
        LineReader { stream, buffer: BytesMut::new(), scanned: 0, ended: false }
    }

    async fn next_line(&mut self) -> Result<Option<Bytes>, StoreError> {
        loop {
            if let Some(at) = self.buffer[self.scanned..].iter().position(|b| *b == b'\n') {
                let mut line = self.buffer.split_to(self.scanned + at + 1);
                line.truncate(line.len() - 1);
                self.scanned = 0;
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line.freeze()));
            }
            self.scanned = self.buffer.len();
            if self.ended {
                self.scanned = 0;
                let rest = self.buffer.split();
                return Ok((!rest.is_empty()).then(|| rest.freeze()));
            }
            match self.stream.next().await {
                Some(piece) => self.buffer.extend_from_slice(&piece?),
                None => self.ended = true,
            }
        }
    }
}

/// What to do with a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done (or never doable): delete the message.
    Ack,
    /// Leave it to be delivered again (after the last receive: to the dead-letter queue).
    Retry,
}

/// Handles one delivery of a message body. `receive_count` is how often it has been delivered
/// (SQS's ApproximateReceiveCount). A transient failure is retried; on the last allowed receive
/// the job is marked FAILED with the reason first, so it never stays RUNNING while its message
/// sits in the DLQ. A message that cannot be decoded is never acknowledged: it ends in the DLQ,
/// and when it still names a job, that job is marked FAILED at once.
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
            tracing::error!(error = %e, receive_count, "undecodable message");
            if let Some(job) = JobRef::from_body(body) {
                fail_named(s, &job, "a work message of the job cannot be decoded").await;
            }
            return Disposition::Retry;
        }
    };
    if message.segment_type != worker_type {
        tracing::error!(expected = %worker_type, got = %message.segment_type, "message on the wrong queue");
        let job = JobRef { mandator_id: message.mandator_id, job_id: message.job_id };
        fail_named(s, &job, "a work message of the job reached the wrong worker").await;
        return Disposition::Retry;
    }
    match run_shard(s, &message, now).await {
        Ok(_) | Err(RunError::Permanent(_)) => Disposition::Ack,
        Err(RunError::Transient(e)) if receive_count >= s.config.max_receive_count => {
            tracing::error!(error = %e, cause = ?std::error::Error::source(&e), receive_count, "giving up on the shard");
            let reason = format!("shard {} failed {receive_count} times; last error: {e}", message.shard);
            let job = JobRef { mandator_id: message.mandator_id, job_id: message.job_id };
            fail_named(s, &job, &reason).await;
            Disposition::Retry
        }
        Err(RunError::Transient(e)) => {
            tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), receive_count, "transient failure; will retry");
            Disposition::Retry
        }
    }
}

/// Marks a job FAILED, logging (not returning) a failure to do so: the message is left to be
/// retried or dead-lettered either way, and the dead-letter handler tries again.
async fn fail_named(s: &Services, job: &JobRef, reason: &str) {
    match s.jobs.fail(&job.mandator_id, job.job_id, reason).await {
        Ok(true) => {
            tracing::error!(job_id = %job.job_id, reason, "job failed");
            call_back_by_id(s.jobs.as_ref(), &s.callbacks, job).await;
        }
        Ok(false) => {}
        Err(e) => tracing::error!(job_id = %job.job_id, error = %e, "marking the job FAILED failed"),
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
            response.batch_item_failures.push(batch_item_failure(id));
        }
    }
    response
}

fn batch_item_failure(id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = id;
    failure
}

/// The reason a job gets when one of its messages reaches a dead-letter queue.
pub const DEAD_LETTER_REASON: &str = "a work message of the job kept failing and was moved to the dead-letter queue";

/// Handles one message of a dead-letter queue: marks the job it names FAILED (a no-op when it is
/// final already). `Retry` only when the job store could not be reached; a message that names
/// no job is logged and acknowledged, as retrying it cannot help.
pub async fn dead_letter(jobs: &dyn JobStore, callbacks: &Callbacks, body: &str) -> Disposition {
    let Some(job) = JobRef::from_body(body) else {
        tracing::error!(bytes = body.len(), "a dead letter names no job; dropped");
        return Disposition::Ack;
    };
    match jobs.fail(&job.mandator_id, job.job_id, DEAD_LETTER_REASON).await {
        Ok(changed) => {
            if changed {
                tracing::error!(mandator_id = %job.mandator_id, job_id = %job.job_id, "job failed: its message was dead-lettered");
                call_back_by_id(jobs, callbacks, &job).await;
            }
            Disposition::Ack
        }
        Err(e) => {
            tracing::warn!(job_id = %job.job_id, error = %e, "cannot mark the job FAILED; will retry");
            Disposition::Retry
        }
    }
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

/// The whole `main` of the dead-letter Lambda: only the Jobs table (`JOBS_TABLE`) is needed (the
/// jobs and the mandators' callback secrets).
pub async fn run_dead_letter_lambda() -> Result<(), lambda_http::Error> {
    use lambda_http::lambda_runtime::{LambdaEvent, run, service_fn};
    lambda_http::tracing::init_default_subscriber();
    let table = crate::config::required(crate::adapters::aws::JOBS_TABLE_VAR)?;
    let clients = crate::adapters::aws::AwsClients::from_env().await;
    let jobs = crate::adapters::aws::DynamoJobs::new(clients.dynamodb.clone(), table.clone());
    let secrets = crate::adapters::aws::DynamoCallbackSecrets::new(clients.dynamodb.clone(), table);
    let callbacks = Callbacks::http(std::sync::Arc::new(secrets), crate::callbacks::CallbackPolicy::strict());
    run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let (jobs, callbacks) = (&jobs, &callbacks);
        async move { Ok::<_, lambda_http::Error>(handle_dead_letters(jobs, callbacks, event.payload).await) }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(pieces: &[&str]) -> LineReader {
        let pieces: Vec<Result<Bytes, StoreError>> =
            pieces.iter().map(|p| Ok(Bytes::copy_from_slice(p.as_bytes()))).collect();
        LineReader::new(Box::pin(futures::stream::iter(pieces)))
    }

    async fn all(mut r: LineReader) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = r.next_line().await.unwrap() {
            out.push(String::from_utf8(line.to_vec()).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn lines_are_read_across_piece_boundaries() {
        assert_eq!(all(reader(&["a\nb", "c\n", "", "\nd"])).await, ["a", "bc", "d"]);
        assert_eq!(all(reader(&["x\n"])).await, ["x"]);
        assert!(all(reader(&[])).await.is_empty());
        assert_eq!(all(reader(&["long", "er", " line", "\n"])).await, ["longer line"]);
    }
}
