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

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use tracing::instrument;

use super::finalize::finalize;
pub use super::shard_runner::{RunError, RunOutcome, ShardRunner};
use crate::domain::{SegmentType, UserId};
use crate::jobs::{Job, JobMessage, JobRef};
use crate::ports::MessageVisibility;
use crate::telemetry::{self, JobContext, ReadMeter};

/// A part is uploaded in pieces of about this size.
const PART_PIECE_BYTES: usize = 1024 * 1024;

/// Runs the shard of `message`: its part, its record, and the finalize when it is the last.
///
/// Whatever permanent fault stops it — a job record or part that cannot be decoded, stored data
/// out of order, a message that does not fit its job — fails the job with the reason before the
/// message is acknowledged: no message is dropped while its job stays live. When marking the job
/// FAILED itself fails, the error is transient, so the message comes back (and, at worst, the
/// dead-letter handler marks the job).
#[instrument(skip_all, fields(mandator_id = %message.mandator_id, job_id = %message.job_id, segment_type = %message.segment_type, shard = message.shard))]
pub async fn run_shard(s: &ShardRunner, message: &JobMessage, now: DateTime<Utc>) -> Result<RunOutcome, RunError> {
    match run_shard_steps(s, message, now).await {
        Err(RunError::Permanent(reason)) => {
            let job = JobRef { mandator_id: message.mandator_id.clone(), job_id: message.job_id };
            fail(s, &job, &reason).await
        }
        other => other,
    }
}

async fn run_shard_steps(s: &ShardRunner, message: &JobMessage, now: DateTime<Utc>) -> Result<RunOutcome, RunError> {
    let mandator = &message.mandator_id;
    let Some(mut job) = s.jobs.get(mandator, message.job_id).await? else {
        tracing::warn!("message for an unknown job; dropped");
        return Ok(RunOutcome::NothingToDo);
    };
    if job.status.is_final() || job.is_expired(now) {
        return Ok(RunOutcome::NothingToDo);
    }
    if job.segment_type != message.segment_type {
        return Err(RunError::Permanent("message and job disagree on the segment type".to_owned()));
    }
    if message.shard >= job.shards_total {
        let reason = format!("message names shard {} of a job with {} shards", message.shard, job.shards_total);
        return Err(RunError::Permanent(reason));
    }
    if !job.done_shards.contains(&message.shard) {
        s.jobs.mark_running(mandator, job.job_id).await?;
        let started = Instant::now();
        let reads = ReadMeter::default();
        let written = reads.measure(write_part(s, &job, message.shard)).await;
        // Every run of a shard counts, a failed one too: its reads cost the same.
        telemetry::shard_run(JobContext::of(&job), message.shard, started.elapsed(), reads.totals());
        written?;
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
    finalize(s, &job).await
}

/// Marks the job FAILED with `reason` (counted and called back by the run that made it final),
/// then answers the permanent error, which acknowledges the message.
async fn fail(s: &ShardRunner, job: &JobRef, reason: &str) -> Result<RunOutcome, RunError> {
    tracing::error!(reason, "job failed");
    if s.jobs.fail(&job.mandator_id, job.job_id, reason).await.map_err(RunError::Transient)? {
        s.callbacks.report_failed(s.jobs.as_ref(), job).await;
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

/// How long a delivered work message stays away: the backoff after a failed run, by receive
/// count, and the heartbeat that holds the message while a run works on it. The one place the
/// retry schedule is defined (docs/jobs.md, "Retries").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    /// The backoff after the first failed receive; each further receive doubles it.
    pub first_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// How often a running shard extends its message's visibility.
    pub heartbeat_every: Duration,
    /// How far ahead each extension reaches: more than `heartbeat_every`, so one late or failed
    /// extension does not free the message at once.
    pub heartbeat_hold: Duration,
}

impl Default for RetrySchedule {
    /// 30 s, 1, 2, 4, 8 minutes: with `maxReceiveCount` 5 a shard that keeps failing is given up
    /// (its job FAILED with the reason) on the 5th receive, 7.5 minutes of backoff plus its run
    /// times after the first. A run extends its message every minute to three minutes ahead.
    fn default() -> Self {
        RetrySchedule {
            first_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(8 * 60),
            heartbeat_every: Duration::from_secs(60),
            heartbeat_hold: Duration::from_secs(3 * 60),
        }
    }
}

impl RetrySchedule {
    /// The visibility a message gets after its `receive_count`-th receive failed.
    pub fn backoff(&self, receive_count: u32) -> Duration {
        let doublings = receive_count.saturating_sub(1).min(31);
        self.first_backoff.saturating_mul(1u32 << doublings).min(self.max_backoff)
    }
}

/// A delivered message as a worker holds it: its body and receive count, and where its
/// visibility is changed.
pub struct Delivery<'a> {
    pub body: &'a str,
    /// How often the message has been delivered, this time included (SQS's ApproximateReceiveCount).
    pub receive_count: u32,
    pub receipt_handle: &'a str,
    pub queue: &'a dyn MessageVisibility,
}

/// Handles one delivery like [`process_message`], holding the message while it runs and setting
/// its backoff when it is to be retried. While the run works, the message's visibility is
/// extended every `heartbeat_every` to `heartbeat_hold` ahead, so the queue does not hand a second
/// copy to another worker; a failed extension is logged, not fatal (the run goes on; at worst a
/// second copy runs, which the idempotent shard steps allow). A message to retry is made
/// receivable again after [`RetrySchedule::backoff`] of its receive count instead of after the
/// queue's visibility timeout; if that change fails, it comes back after whatever visibility it
/// had.
pub async fn process_delivery(
    s: &ShardRunner,
    worker_type: SegmentType,
    delivery: &Delivery<'_>,
    schedule: &RetrySchedule,
    now: DateTime<Utc>,
) -> Disposition {
    let run = process_message(s, worker_type, delivery.body, delivery.receive_count, now);
    let disposition = tokio::select! {
        disposition = run => disposition,
        never = heartbeat(delivery, schedule) => match never {},
    };
    if disposition == Disposition::Retry {
        let backoff = schedule.backoff(delivery.receive_count);
        match delivery.queue.change_visibility(delivery.receipt_handle, backoff).await {
            Ok(()) => tracing::info!(
                receive_count = delivery.receive_count,
                backoff_seconds = backoff.as_secs(),
                "message comes back after its backoff"
            ),
            Err(e) => {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "setting the backoff failed; the message comes back after its visibility timeout")
            }
        }
    }
    disposition
}

/// Extends the delivery's visibility every `heartbeat_every`, forever: it ends when the run it
/// accompanies ends and drops it.
async fn heartbeat(delivery: &Delivery<'_>, schedule: &RetrySchedule) -> std::convert::Infallible {
    let mut ticks = tokio::time::interval(schedule.heartbeat_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once: the message was just received with the queue's full
    // visibility timeout.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(e) = delivery.queue.change_visibility(delivery.receipt_handle, schedule.heartbeat_hold).await {
            tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "extending the message's visibility failed");
        }
    }
}

/// Marks a job FAILED, logging (not returning) a failure to do so: the message is left to be
/// retried or dead-lettered either way, and the dead-letter handler tries again.
async fn fail_named(s: &ShardRunner, job: &JobRef, reason: &str) {
    match s.jobs.fail(&job.mandator_id, job.job_id, reason).await {
        Ok(true) => {
            tracing::error!(job_id = %job.job_id, reason, "job failed");
            s.callbacks.report_failed(s.jobs.as_ref(), job).await;
        }
        Ok(false) => {}
        Err(e) => tracing::error!(job_id = %job.job_id, error = %e, "marking the job FAILED failed"),
    }
}
