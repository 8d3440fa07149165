//! The sweeper: no job stays QUEUED or RUNNING forever (docs/jobs.md, "No job hangs").
//!
//! A job can stall without any worker noticing: its request died between storing the job and
//! sending its last shard messages, a message was lost, or the finalizing run crashed after the
//! last retry. Every live job carries a progress watch ([`ProgressWatch`]): when it last
//! progressed and how many shards were done then. A sweep, every few minutes, reads the watches
//! that have seen no progress for the progress deadline (through the stores' index of live jobs,
//! never all jobs) and for each:
//! - a job with more shards done than its watch saw is progressing: the watch moves to now;
//! - a job without progress gets the messages of its unfinished shards again (a shard is recorded
//!   once and its part has a fixed key, so a copy of a message still in flight is harmless), at
//!   most once per deadline, and at most [`SweepConfig::max_resends`] times in a row;
//! - a job that still does not progress after that is FAILED with the reason, and called back.
//!
//! A sweep also retries the callbacks kept in the outbox that are due (`callbacks::outbox`).
//!
//! Each step on a job is one conditional write on its watch first: of two sweeps that run at
//! once (a scheduled run that overlaps the next), one acts and the other finds the watch changed.

use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use tracing::instrument;

use super::callbacks::Callbacks;
use super::callbacks::outbox::{OutboxReport, retry_due};
use crate::config::{ConfigError, parsed_or};
use crate::jobs::{Job, JobRef, ProgressWatch};
use crate::ports::{JobQueue, JobStore, StoreError};

/// What a sweep needs: the job records with their watches, the work queues to send unfinished
/// shards to, and callbacks for the jobs it fails.
#[derive(Clone)]
pub struct Sweeper {
    pub jobs: Arc<dyn JobStore>,
    pub queue: Arc<dyn JobQueue>,
    pub callbacks: Callbacks,
    pub config: SweepConfig,
}

/// How often the sweeper runs: the SAM template's schedule (`rate(5 minutes)`) and the local
/// runner's timer. A stalled job waits at most this long past its deadline.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The variable that sets [`SweepConfig::progress_deadline`], in minutes.
pub const PROGRESS_DEADLINE_MINUTES_VAR: &str = "PROGRESS_DEADLINE_MINUTES";
/// The variable that sets [`SweepConfig::max_resends`].
pub const MAX_RESENDS_VAR: &str = "MAX_RESENDS";

/// When a job counts as stalled, and how often it is given another chance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepConfig {
    /// How long a live job may go without one more shard recorded before a sweep acts on it.
    /// Longer than the longest run of one shard (a worker runs for at most 15 minutes), so a job
    /// whose shards are all still running is not sent again.
    pub progress_deadline: Duration,
    /// How many times in a row a stalled job's unfinished shards are sent again before the job is
    /// FAILED.
    pub max_resends: u32,
    /// The most jobs one sweep handles; the rest wait for the next sweep.
    pub batch_size: u32,
}

impl Default for SweepConfig {
    /// A 20-minute deadline and 3 re-sends: a job whose messages were lost is sent again within
    /// about 25 minutes (deadline plus the sweep interval), and one that can never progress is
    /// FAILED after about 80 minutes without progress.
    fn default() -> Self {
        SweepConfig { progress_deadline: Duration::minutes(20), max_resends: 3, batch_size: 1000 }
    }
}

impl SweepConfig {
    /// `PROGRESS_DEADLINE_MINUTES` (default 20, at least 1) and `MAX_RESENDS` (default 3).
    pub fn from_env() -> Result<SweepConfig, ConfigError> {
        let d = SweepConfig::default();
        let minutes: i64 = parsed_or(PROGRESS_DEADLINE_MINUTES_VAR, d.progress_deadline.num_minutes())?;
        if minutes < 1 {
            return Err(ConfigError::Invalid {
                name: PROGRESS_DEADLINE_MINUTES_VAR.into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(SweepConfig {
            progress_deadline: Duration::minutes(minutes),
            max_resends: parsed_or(MAX_RESENDS_VAR, d.max_resends)?,
            batch_size: d.batch_size,
        })
    }
}

/// What one sweep did, for its log line and the function's answer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// Live jobs found without progress for the deadline.
    pub stalled: u32,
    /// Of those, jobs that had progressed after all (their watch moved on).
    pub progressing: u32,
    /// Jobs whose unfinished shards were sent again.
    pub resent: u32,
    /// Jobs FAILED for lack of progress (or expired while live).
    pub failed: u32,
    /// Jobs another sweep handled first, or that ended meanwhile.
    pub skipped: u32,
    /// Jobs a store or queue failure kept from being handled; the next sweep tries again.
    pub errors: u32,
    /// The callbacks retried from the outbox.
    pub callbacks: OutboxReport,
}

/// What happened to one stalled job.
enum Handled {
    Progressing,
    Resent,
    Failed,
    Skipped,
}

/// One sweep at `now`: every live job without progress for the deadline is looked at once, then
/// every pending callback that is due. Fails only when the stalled jobs or the due callbacks
/// cannot be read; a failure on one job is logged and counted,
/// and the others are still handled.
#[instrument(skip_all)]
pub async fn sweep(s: &Sweeper, now: DateTime<Utc>) -> Result<SweepReport, StoreError> {
    let now = now.trunc_subsecs(0);
    let stalled = s.jobs.stalled_jobs(now - s.config.progress_deadline, s.config.batch_size).await?;
    let mut report = SweepReport { stalled: u32::try_from(stalled.len()).unwrap_or(u32::MAX), ..Default::default() };
    for watch in &stalled {
        match sweep_job(s, watch, now).await {
            Ok(Handled::Progressing) => report.progressing += 1,
            Ok(Handled::Resent) => report.resent += 1,
            Ok(Handled::Failed) => report.failed += 1,
            Ok(Handled::Skipped) => report.skipped += 1,
            Err(e) => {
                report.errors += 1;
                tracing::error!(job_id = %watch.job_id, mandator_id = %watch.mandator_id, error = %e, "sweeping a job failed");
            }
        }
    }
    if let Some(outbox) = &s.callbacks.outbox {
        report.callbacks = retry_due(&s.callbacks, outbox.as_ref(), now).await?;
    }
    tracing::info!(?report, "sweep done");
    Ok(report)
}

#[instrument(skip_all, fields(mandator_id = %watch.mandator_id, job_id = %watch.job_id))]
async fn sweep_job(s: &Sweeper, watch: &ProgressWatch, now: DateTime<Utc>) -> Result<Handled, StoreError> {
    let Some(job) = s.jobs.get(&watch.mandator_id, watch.job_id).await? else {
        // Its record is gone (expired and removed; the marker goes the same way): look again
        // a deadline later instead of at every sweep until then.
        let later = ProgressWatch { progress_at: now, ..watch.clone() };
        s.jobs.replace_watch(watch, &later).await?;
        return Ok(Handled::Skipped);
    };
    if job.status.is_final() {
        // Made final after the index was read: its watch is gone with its marker.
        return Ok(Handled::Skipped);
    }
    if job.is_expired(now) {
        return fail(s, &job, "the job expired before it completed").await;
    }
    if job.shards_done > watch.shards_seen {
        let progressed =
            ProgressWatch { progress_at: now, shards_seen: job.shards_done, idle_sweeps: 0, ..watch.clone() };
        return Ok(if s.jobs.replace_watch(watch, &progressed).await? {
            Handled::Progressing
        } else {
            Handled::Skipped
        });
    }
    if watch.idle_sweeps >= s.config.max_resends {
        let idle_minutes = s.config.progress_deadline.num_minutes() * (i64::from(watch.idle_sweeps) + 1);
        let reason = format!(
            "no progress for {idle_minutes} minutes: {} of {} shards done after their work was sent again {} times",
            job.shards_done, job.shards_total, watch.idle_sweeps
        );
        return fail(s, &job, &reason).await;
    }
    // The watch first: a concurrent sweep that read the same watch finds it changed and leaves
    // the job alone, so the messages go out once per deadline.
    let resent = ProgressWatch { progress_at: now, idle_sweeps: watch.idle_sweeps + 1, ..watch.clone() };
    if !s.jobs.replace_watch(watch, &resent).await? {
        return Ok(Handled::Skipped);
    }
    let messages = job.unfinished_messages();
    tracing::warn!(
        shards_done = job.shards_done,
        shards_total = job.shards_total,
        resending = messages.len(),
        resend = resent.idle_sweeps,
        "job without progress; sending its unfinished shards again"
    );
    // Should this fail, the watch says "sent": the job is looked at again a deadline later and
    // sent again then.
    s.queue.enqueue_all(&messages).await?;
    Ok(Handled::Resent)
}

async fn fail(s: &Sweeper, job: &Job, reason: &str) -> Result<Handled, StoreError> {
    if !s.jobs.fail(&job.mandator_id, job.job_id, reason).await? {
        return Ok(Handled::Skipped);
    }
    tracing::error!(reason, "job failed");
    let named = JobRef { mandator_id: job.mandator_id.clone(), job_id: job.job_id };
    s.callbacks.report_failed(s.jobs.as_ref(), &named).await;
    Ok(Handled::Failed)
}
