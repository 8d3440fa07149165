//! A work message that kept failing reaches a dead-letter queue; its job is marked FAILED with
//! the reason, so a poller gets 422 instead of waiting forever (docs/jobs.md).

use super::callbacks::Callbacks;
use super::run_shard::Disposition;
use crate::jobs::JobRef;
use crate::ports::JobStore;

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
                callbacks.report_failed(jobs, &job).await;
            }
            Disposition::Ack
        }
        Err(e) => {
            tracing::warn!(job_id = %job.job_id, error = %e, "cannot mark the job FAILED; will retry");
            Disposition::Retry
        }
    }
}
