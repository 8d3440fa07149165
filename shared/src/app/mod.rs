//! The use cases, over the ports: create a job, read a result page, run a job. Transport-free:
//! the Lambda handlers and the local runner call these with an authenticated [`Caller`].

mod error;
pub mod jobs_api;
mod results;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::instrument;

pub use error::{AppError, Progress};
pub use results::{ResultPage, read_page, timestamp, write_result};

use crate::config::ServiceConfig;
use crate::domain::{JobId, SegmentType};
use crate::http::Caller;
use crate::jobs::{Job, JobMessage, JobStatus};
use crate::ports::{AccountSource, JobQueue, JobStore, ResultStore};
use crate::records::DEFAULT_SHARD_COUNT;
use crate::segments::body::FieldError;
use crate::segments::{SegmentRequest, SegmentSpec};

/// The adapters and settings every use case runs with. Built once per cold start.
#[derive(Clone)]
pub struct Services {
    pub accounts: Arc<dyn AccountSource>,
    pub jobs: Arc<dyn JobStore>,
    pub results: Arc<dyn ResultStore>,
    pub queue: Arc<dyn JobQueue>,
    pub config: ServiceConfig,
}

/// Parses a path's segment type and checks the caller may use it.
pub fn authorize_segment_type(caller: &Caller, segment_type: &str) -> Result<SegmentType, AppError> {
    let t: SegmentType = segment_type.parse().map_err(|_| AppError::UnknownSegmentType(segment_type.to_owned()))?;
    caller.require_scope(&t.scope())?;
    Ok(t)
}

/// `POST /segments/{segmentType}`: validate, store the job QUEUED, enqueue it.
#[instrument(skip_all, fields(mandator_id = %caller.mandator, segment_type = %segment_type))]
pub async fn create_job(
    s: &Services,
    caller: &Caller,
    segment_type: SegmentType,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Job, AppError> {
    let request = SegmentRequest::parse(segment_type, body, now.date_naive())?;
    if !SegmentSpec::is_available(segment_type) {
        return Err(AppError::SegmentTypeNotAvailable(segment_type));
    }
    if request.callback_url.is_some() {
        // Refused rather than accepted and never called: a client must not wait for a callback
        // this deployment does not send.
        return Err(AppError::InvalidField(FieldError::new(
            "callbackURL",
            "is not supported by this deployment yet; poll GET /segments/{segmentType}/{jobId}",
        )));
    }
    let shards = s.accounts.shard_count(&caller.mandator).await?.unwrap_or(DEFAULT_SHARD_COUNT);
    let job = Job::new(caller.mandator.clone(), request.as_of, request.params, request.callback_url, shards, now);
    s.jobs.create(&job).await?;
    let message = JobMessage { mandator_id: job.mandator_id.clone(), job_id: job.job_id, segment_type };
    if let Err(e) = s.queue.enqueue(&message).await {
        // The job must not stay QUEUED forever with no message behind it.
        if let Err(fail) = s.jobs.fail(&job.mandator_id, job.job_id, "could not be enqueued").await {
            tracing::error!(job_id = %job.job_id, error = %fail, "marking an unqueued job FAILED failed too");
        }
        return Err(e.into());
    }
    tracing::info!(job_id = %job.job_id, shards, "job queued");
    Ok(job)
}

/// What `GET /segments/{segmentType}/{jobId}` finds.
#[instrument(skip_all, fields(mandator_id = %caller.mandator, segment_type = %segment_type))]
pub async fn get_result(
    s: &Services,
    caller: &Caller,
    segment_type: SegmentType,
    job_id: &str,
    page: u32,
    per_page: u32,
    now: DateTime<Utc>,
) -> Result<ResultPage, AppError> {
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
        JobStatus::Completed => Ok(read_page(s.results.as_ref(), &job, page, per_page).await?),
    }
}
