//! The use cases, over the ports: create a job, read a result page, run a job. Transport-free:
//! the Lambda handlers and the local runner call these with an authenticated [`Caller`].

mod error;
pub mod jobs_api;
mod results;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::instrument;

pub use error::{AppError, Progress};
pub use results::{ResultPage, ResultWriter, read_page, timestamp, write_result};

use crate::config::ServiceConfig;
use crate::domain::{JobId, SegmentType};
use crate::http::Caller;
use crate::jobs::{IdempotencyKey, Job, JobStatus};
use crate::ports::{AccountSource, JobQueue, JobStore, KeyClaim, ResultStore};
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
    /// Crashes armed by tests at the worker's recovery points; empty otherwise.
    pub faults: crate::adapters::faults::FaultPlan,
    /// The callback URL policy, the mandators' signing secrets and the notifier (DESIGN §8).
    pub callbacks: crate::callbacks::Callbacks,
}

/// Parses a path's segment type and checks the caller may use it.
pub fn authorize_segment_type(caller: &Caller, segment_type: &str) -> Result<SegmentType, AppError> {
    let t: SegmentType = segment_type.parse().map_err(|_| AppError::UnknownSegmentType(segment_type.to_owned()))?;
    caller.require_scope(&t.scope())?;
    Ok(t)
}

/// How long after its creation a job that no worker has started counts as possibly never
/// enqueued, so an Idempotency-Key replay enqueues it again: well past the create-job function's
/// timeout (10 s), and past the time SQS and the workers need to start a queued shard.
pub const REQUEUE_AFTER: chrono::Duration = chrono::Duration::minutes(5);

/// The name of the header that makes a `POST /segments/{segmentType}` idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// Parses an `Idempotency-Key` header value (400 naming the header when invalid).
pub fn parse_idempotency_key(value: &str) -> Result<IdempotencyKey, AppError> {
    IdempotencyKey::parse(value)
        .map_err(|reason| AppError::InvalidParameter(FieldError::new(IDEMPOTENCY_KEY_HEADER, reason)))
}

/// The SHA-256 (hex) of a request in canonical form — segment type, `asOf`, the parsed parameters
/// and the callback URL — so two bodies that mean the same (`5000` and `5000.00`, fields in any
/// order) match under one idempotency key.
pub fn request_hash(request: &SegmentRequest) -> String {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::json!({
        "segmentType": request.params.segment_type(),
        "asOf": request.as_of,
        "parameters": request.params,
        "callbackURL": request.callback_url,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST /segments/{segmentType}`: validate, store the job QUEUED, enqueue one message per shard.
///
/// With an idempotency key, the job and the key's claim are stored in one atomic write: a repeat
/// of the same request (same hash) answers the job the key names, without enqueueing anything;
/// another request under the key is a 409. A mandator without account data gets a job of one
/// (empty) shard, which completes with no users like any other.
#[instrument(skip_all, fields(mandator_id = %caller.mandator, segment_type = %segment_type))]
pub async fn create_job(
    s: &Services,
    caller: &Caller,
    segment_type: SegmentType,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Job, AppError> {
    create_job_with_key(s, caller, segment_type, body, None, now).await
}

/// [`create_job`] under an optional idempotency key.
#[instrument(skip_all, fields(mandator_id = %caller.mandator, segment_type = %segment_type))]
pub async fn create_job_with_key(
    s: &Services,
    caller: &Caller,
    segment_type: SegmentType,
    body: &[u8],
    idempotency_key: Option<&IdempotencyKey>,
    now: DateTime<Utc>,
) -> Result<Job, AppError> {
    let request = SegmentRequest::parse(segment_type, body, now.date_naive())?;
    if !SegmentSpec::is_available(segment_type) {
        return Err(AppError::SegmentTypeNotAvailable(segment_type));
    }
    if let Some(url) = &request.callback_url {
        // https, and every address the host resolves to public (DESIGN §8); checked again before
        // every delivery attempt.
        s.callbacks.validate(url).await?;
        // The signing secret exists before the job does, so the workers only ever read it.
        s.callbacks.secrets.secret(&caller.mandator).await?;
    }
    let hash = request_hash(&request);
    let shards = s.accounts.shard_count(&caller.mandator).await?.unwrap_or(1);
    let job = Job::new(caller.mandator.clone(), request.as_of, request.params, request.callback_url, shards, now);
    match idempotency_key {
        None => s.jobs.create(&job).await?,
        Some(key) => match s.jobs.create_with_key(&job, key, &hash, now).await? {
            KeyClaim::Created => {}
            KeyClaim::Existing { job_id, request_hash } => {
                if request_hash != hash {
                    return Err(AppError::IdempotencyKeyReused);
                }
                let existing = s.jobs.get(&caller.mandator, job_id).await?;
                // The key expires with its job: a live key names a live job.
                let existing = existing.filter(|j| !j.is_expired(now)).ok_or_else(|| {
                    AppError::Unavailable(crate::ports::StoreError::Corrupt(format!(
                        "idempotency key names job {job_id}, which does not exist"
                    )))
                })?;
                if existing.status == JobStatus::Queued && now - existing.created_at >= REQUEUE_AFTER {
                    // No worker has started it long after its request must have ended: that
                    // request may have died between storing the job and enqueueing it. Its
                    // messages again are harmless (a shard is recorded once, parts and results
                    // have fixed keys); a job that never runs is not.
                    tracing::warn!(job_id = %existing.job_id, "replayed job still queued; enqueueing its shards again");
                    s.queue.enqueue_all(&existing.messages()).await?;
                }
                return Ok(existing);
            }
        },
    }
    if let Err(e) = s.queue.enqueue_all(&job.messages()).await {
        // The job must not stay QUEUED forever with shards no message will ever compute.
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
