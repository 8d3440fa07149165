//! The worker runtime shared by every `worker-*` function and the local runner (docs/architecture.md, docs/jobs.md).
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
//! failed, so SQS moves it to the dead-letter queue, whose handler (`usecases::dead_letter`)
//! marks the job FAILED as well — the safety net for anything that slipped past.

use std::time::Instant;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use tracing::instrument;

use super::dead_letter::count_and_call_back;
use super::finalize::finalize;
pub use super::shard_runner::{RunError, RunOutcome, ShardRunner};
use crate::domain::{SegmentType, UserId};
use crate::jobs::{Job, JobMessage, JobRef, JobStatus};
use crate::telemetry::{self, JobContext, ReadMeter};

/// A part is uploaded in pieces of about this size.
const PART_PIECE_BYTES: usize = 1024 * 1024;

/// Runs the shard of `message`: its part, its record, and the finalize when it is the last.
#[instrument(skip_all, fields(mandator_id = %message.mandator_id, job_id = %message.job_id, segment_type = %message.segment_type, shard = message.shard))]
pub async fn run_shard(s: &ShardRunner, message: &JobMessage, now: DateTime<Utc>) -> Result<RunOutcome, RunError> {
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
        let started = Instant::now();
        let reads = ReadMeter::default();
        let written = reads.measure(write_part(s, &job, message.shard)).await;
        // Every run of a shard counts, a failed one too: its reads cost the same.
        telemetry::shard_run(JobContext::of(&job), message.shard, started.elapsed(), reads.totals());
        if let Err(e) = written {
            return match e {
                RunError::Permanent(reason) => fail(s, &job, &reason).await,
                transient => Err(transient),
            };
        }
        job = match s.jobs.record_shard(mandator, job.job_id, message.shard).await? {
            Some(job) => job,
            None => return Ok(RunOutcome::NothingToDo),
        };
        tracing::debug!(shards_done = job.shards_done, shards_total = job.shards_total, "shard recorded");
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

async fn fail(s: &ShardRunner, job: &Job, reason: &str) -> Result<RunOutcome, RunError> {
    tracing::error!(reason, "job failed");
    if s.jobs.fail(&job.mandator_id, job.job_id, reason).await? {
        telemetry::job_failed(JobContext::of(job));
        let failed = Job { status: JobStatus::Failed, error: Some(reason.to_owned()), ..job.clone() };
        s.callbacks.call_back(&failed).await;
    }
    Err(RunError::Permanent(reason.to_owned()))
}

/// Streams one shard's users and writes the entries of those the segment selects, one JSON line
/// each, in userId order (the order the shard yields them), as the shard's part.
async fn write_part(s: &ShardRunner, job: &Job, shard: u32) -> Result<(), RunError> {
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
    s: &ShardRunner,
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
async fn fail_named(s: &ShardRunner, job: &JobRef, reason: &str) {
    match s.jobs.fail(&job.mandator_id, job.job_id, reason).await {
        Ok(true) => {
            tracing::error!(job_id = %job.job_id, reason, "job failed");
            count_and_call_back(s.jobs.as_ref(), &s.callbacks, job).await;
        }
        Ok(false) => {}
        Err(e) => tracing::error!(job_id = %job.job_id, error = %e, "marking the job FAILED failed"),
    }
}
