//! `POST /segments/{segmentType}`: validate the request, store the job QUEUED and enqueue one
//! message per shard; idempotent under an `Idempotency-Key`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::instrument;

use super::callbacks::Callbacks;
use super::{AppError, Caller};
use crate::config::ServiceConfig;
use crate::domain::SegmentType;
use crate::jobs::{IdempotencyKey, Job};
use crate::ports::{AccountSource, JobQueue, JobStore, KeyClaim};
use crate::rules::body::FieldError;
use crate::rules::{SegmentRequest, SegmentSpec};
use crate::telemetry::{self, JobContext};

/// What creating a job needs: the shard count from the account data, the job store, the work
/// queue and the callback policy and secrets.
#[derive(Clone)]
pub struct JobIntake {
    pub accounts: Arc<dyn AccountSource>,
    pub jobs: Arc<dyn JobStore>,
    pub queue: Arc<dyn JobQueue>,
    /// The callback URL policy and the mandators' signing secrets (docs/security.md).
    pub callbacks: Callbacks,
    pub config: ServiceConfig,
}

/// The `Retry-After` (seconds) of a create refused by the live-job limit. A slot frees when any of
/// the mandator's live jobs ends; with the default 20 jobs running side by side for minutes each,
/// one ends every few seconds to tens of seconds, so half a minute usually finds a slot while a
/// waiting client retries at most twice a minute (each retry costs a read of the store).
pub const TOO_MANY_JOBS_RETRY_AFTER_SECONDS: u32 = 30;

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
///
/// A mandator with [`ServiceConfig::max_live_jobs_per_mandator`] live jobs (all types together:
/// they share the workers and the account data reads, and a client creating many jobs of
/// several types would otherwise get the limit several times over) is refused with
/// [`AppError::TooManyJobs`], except for a replay of an existing job under its key, which creates
/// nothing. The count is read before the write, not in it: concurrent creates may pass the limit
/// by as many as race, which a fairness limit tolerates; a count in the write would be one item
/// every create and completion of the mandator writes.
#[instrument(skip_all, fields(mandator_id = %caller.mandator, segment_type = %segment_type))]
pub async fn create_job(
    s: &JobIntake,
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
    s: &JobIntake,
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
        // https, and every address the host resolves to public (docs/security.md); checked again before
        // every delivery attempt.
        s.callbacks.validate(url).await?;
        // The signing secret exists before the job does, so the workers only ever read it.
        s.callbacks.secrets.secret(&caller.mandator).await?;
    }
    let hash = request_hash(&request);
    let limit = s.config.max_live_jobs_per_mandator;
    if s.jobs.live_jobs(&caller.mandator, limit).await? >= limit {
        let replay = match idempotency_key {
            Some(key) => s.jobs.key_claim(&caller.mandator, key, now).await?,
            None => None,
        };
        return match replay {
            Some(KeyClaim::Existing { job_id, request_hash }) => {
                replayed(s, caller, job_id, &request_hash, &hash, now).await
            }
            _ => Err(AppError::TooManyJobs { limit, retry_after_seconds: TOO_MANY_JOBS_RETRY_AFTER_SECONDS }),
        };
    }
    let shards = s.accounts.shard_count(&caller.mandator).await?.unwrap_or(1);
    let job = Job::new(caller.mandator.clone(), request.as_of, request.params, request.callback_url, shards, now);
    match idempotency_key {
        None => s.jobs.create(&job).await?,
        Some(key) => match s.jobs.create_with_key(&job, key, &hash, now).await? {
            KeyClaim::Created => {}
            KeyClaim::Existing { job_id, request_hash } => {
                return replayed(s, caller, job_id, &request_hash, &hash, now).await;
            }
        },
    }
    if let Err(e) = s.queue.enqueue_all(&job.messages()).await {
        // The job must not stay QUEUED forever with shards no message will ever compute.
        match s.jobs.fail(&job.mandator_id, job.job_id, "could not be enqueued").await {
            Ok(true) => telemetry::job_failed(JobContext::of(&job)),
            Ok(false) => {}
            Err(fail) => {
                tracing::error!(job_id = %job.job_id, error = %fail, "marking an unqueued job FAILED failed too")
            }
        }
        return Err(e.into());
    }
    tracing::info!(job_id = %job.job_id, shards, "job queued");
    telemetry::job_created(JobContext::of(&job));
    Ok(job)
}

/// The answer to a request whose idempotency key names `job_id`, claimed by a request of hash
/// `claimed_hash`: that job when this request (`hash`) is the same, a 409 otherwise.
async fn replayed(
    s: &JobIntake,
    caller: &Caller,
    job_id: crate::domain::JobId,
    claimed_hash: &str,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<Job, AppError> {
    if claimed_hash != hash {
        return Err(AppError::IdempotencyKeyReused);
    }
    let existing = s.jobs.get(&caller.mandator, job_id).await?;
    // The key expires with its job: a live key names a live job.
    let existing = existing.filter(|j| !j.is_expired(now)).ok_or_else(|| {
        AppError::Unavailable(crate::ports::StoreError::Corrupt(format!(
            "idempotency key names job {job_id}, which does not exist"
        )))
    })?;
    // A replay sends nothing, whatever the job's state: a job whose request died before its
    // messages were all sent is found by the sweeper within its progress deadline
    // (`usecases::sweep`), which sends them once per deadline however often the client replays.
    Ok(existing)
}
