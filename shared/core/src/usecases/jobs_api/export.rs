//! `GET /segments/{segmentType}/{jobId}/export`: a redirect to a short-lived link of the whole
//! result as NDJSON (one user per line, userId order), written by the job's finalize step.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::instrument;

use super::JobsApiServices;
use crate::domain::{JobId, SegmentType};
use crate::jobs::JobStatus;
use crate::ports::StoreError;
use crate::usecases::Caller;
use crate::usecases::{AppError, Progress};

/// How long an export link is valid: long enough to start the download, short enough that a
/// leaked link is soon worthless.
pub const EXPORT_LINK_TTL: Duration = Duration::from_secs(5 * 60);

/// The link to the export of a completed job. The same answers as reading a page otherwise: 400
/// for an unknown, expired, other mandator's or other type's job, 404 with progress while it runs,
/// 422 when it failed.
#[instrument(skip_all, fields(mandator_id = %caller.mandator, segment_type = %segment_type))]
pub async fn export_link(
    s: &JobsApiServices,
    caller: &Caller,
    segment_type: SegmentType,
    job_id: &str,
    now: DateTime<Utc>,
) -> Result<String, AppError> {
    let job_id = JobId::parse(job_id).map_err(|_| AppError::UnknownJob)?;
    let job = s.jobs.get(&caller.mandator, job_id).await?.ok_or(AppError::UnknownJob)?;
    if job.segment_type != segment_type || job.is_expired(now) {
        return Err(AppError::UnknownJob);
    }
    match job.status {
        JobStatus::Queued | JobStatus::Running => Err(AppError::NotReady {
            status: job.status,
            progress: Progress { shards_done: job.shards_done, shards_total: job.shards_total },
        }),
        JobStatus::Failed => Err(AppError::JobFailed(job.error.clone().unwrap_or_else(|| "unknown reason".into()))),
        JobStatus::Completed => {
            let key = job.layout().export_key();
            // A completed job always has its export: finalize writes it before completing.
            s.links.link(&key, EXPORT_LINK_TTL).await?.ok_or_else(|| {
                AppError::Unavailable(StoreError::Corrupt(format!("the export of completed job {job_id} is missing")))
            })
        }
    }
}
