//! Callbacks (docs/api.md, docs/security.md): when a job that was created with a `callbackURL` reaches COMPLETED
//! or FAILED, the service POSTs `{jobId, segmentType, status, totalElements}` to that URL, signed
//! with the mandator's secret.
//!
//! - [`policy`]: which URLs may be called (at job creation and again before every attempt).
//! - [`signing`]: the signature headers, and their verification as a receiver does it.
//! - [`delivery`]: the HTTP [`Notifier`]: timeouts, retries with backoff, no redirects, pinned
//!   addresses.
//! - [`notify_job_final`]: what the finalize and fail steps call.
//! - [`outbox`]: callbacks whose delivery gave up, retried by the sweeper for a day.

pub mod delivery;
pub mod outbox;
pub mod policy;
pub mod signing;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::domain::{JobId, SegmentType};
use crate::jobs::{Job, JobRef};
use crate::ports::{CallbackOutbox, CallbackSecrets, JobStore, StoreError};
use crate::rules::body::FieldError;
use crate::usecases::AppError;

pub use crate::domain::CallbackSecret;
pub use delivery::{DeliverySettings, HttpNotifier, install_tls_provider};
pub use policy::{CallbackPolicy, CallbackUrlError};

/// Why a callback was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("the callback URL is refused: {0}")]
    Refused(#[source] CallbackUrlError),
    #[error("the receiver answered {0}")]
    Rejected(u16),
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error("the callback secret is unavailable")]
    Secret(#[source] StoreError),
    #[error("cannot encode the callback body: {0}")]
    Encoding(String),
}

/// Sends a signed callback body to a URL.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Delivers `body` (JSON) to `url`, signed with `secret`; the number of attempts it took.
    async fn deliver(&self, url: &str, secret: &CallbackSecret, body: &[u8]) -> Result<u32, NotifyError>;
}

/// The body of a callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackBody {
    pub job_id: JobId,
    pub segment_type: SegmentType,
    pub status: &'static str,
    /// Users in the result; `null` for a failed job.
    pub total_elements: Option<u64>,
}

impl CallbackBody {
    pub fn of(job: &Job) -> Self {
        CallbackBody {
            job_id: job.job_id,
            segment_type: job.segment_type,
            status: job.status.as_str(),
            total_elements: job.result.map(|r| r.total_elements),
        }
    }
}

/// Calls the job's callback URL, if it has one and has reached a final state. `Ok(false)` when
/// there was nothing to call. The finalize and fail steps call this after their state change is
/// durable, so a job is reported only in the state readers will find.
#[tracing::instrument(skip_all, fields(mandator_id = %job.mandator_id, job_id = %job.job_id))]
pub async fn notify_job_final(
    secrets: &dyn CallbackSecrets,
    notifier: &dyn Notifier,
    job: &Job,
) -> Result<bool, NotifyError> {
    let Some(url) = job.callback_url.as_deref() else { return Ok(false) };
    if !job.status.is_final() {
        return Ok(false);
    }
    let body = serde_json::to_vec(&CallbackBody::of(job)).map_err(|e| NotifyError::Encoding(e.to_string()))?;
    let secret = match secrets.secret(&job.mandator_id).await {
        Ok(secret) => secret,
        Err(e) => {
            // Never tried, so the delivery step did not count it: it is a failed callback all the same.
            crate::telemetry::callback_failed(Some(&job.job_id.to_string()));
            return Err(NotifyError::Secret(e));
        }
    };
    match notifier.deliver(url, &secret, &body).await {
        Ok(attempts) => {
            tracing::info!(attempts, status = job.status.as_str(), "callback delivered");
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(error = %e, "callback not delivered");
            Err(e)
        }
    }
}

/// What the finalize and fail steps need to call back: the mandators' secrets and a notifier.
#[derive(Clone)]
pub struct Callbacks {
    pub secrets: Arc<dyn CallbackSecrets>,
    pub notifier: Arc<dyn Notifier>,
    /// The policy the notifier applies, for checking a `callbackURL` at job creation.
    pub policy: CallbackPolicy,
    /// Where a callback whose delivery gave up is kept for the sweeper to retry; without one, it
    /// is logged and dropped.
    pub outbox: Option<Arc<dyn CallbackOutbox>>,
}

impl Callbacks {
    /// Callbacks over HTTP under `policy` (production: [`CallbackPolicy::strict`]).
    pub fn http(secrets: Arc<dyn CallbackSecrets>, policy: CallbackPolicy) -> Self {
        Callbacks {
            secrets,
            notifier: Arc::new(HttpNotifier::new(policy, DeliverySettings::default())),
            policy,
            outbox: None,
        }
    }

    /// These callbacks, keeping the ones that could not be delivered in `outbox`.
    pub fn with_outbox(self, outbox: Arc<dyn CallbackOutbox>) -> Self {
        Callbacks { outbox: Some(outbox), ..self }
    }

    /// See [`notify_job_final`].
    pub async fn job_final(&self, job: &Job) -> Result<bool, NotifyError> {
        notify_job_final(self.secrets.as_ref(), self.notifier.as_ref(), job).await
    }

    /// Calls the job's callback URL, if it has one, once the job's final state is durable. Only
    /// the run whose write made the job final calls, so a redelivered message does not call
    /// again. A callback whose attempts all failed for reasons that may pass (the receiver down,
    /// unreachable, answering 5xx) goes to the outbox, which the sweeper retries for a day; one
    /// the receiver refuses for good is logged. The result stays readable by polling, and the
    /// message's work is done either way.
    pub async fn call_back(&self, job: &Job) {
        // Nothing happens without a URL; failures are logged by `job_final`.
        let Err(NotifyError::GaveUp { .. }) = self.job_final(job).await else { return };
        let (Some(outbox), Some(url)) = (&self.outbox, &job.callback_url) else { return };
        let body = match serde_json::to_string(&CallbackBody::of(job)) {
            Ok(body) => body,
            Err(e) => return tracing::error!(job_id = %job.job_id, error = %e, "cannot encode the callback body"),
        };
        let pending = crate::domain::PendingCallback::new(
            job.mandator_id.clone(),
            job.job_id,
            url.clone(),
            body,
            chrono::Utc::now(),
        );
        match outbox.put_callback(&pending).await {
            Ok(()) => {
                tracing::warn!(job_id = %job.job_id, next_at = %pending.next_at, "callback kept in the outbox for retries")
            }
            Err(e) => tracing::error!(job_id = %job.job_id, error = %e, "callback not delivered and not kept"),
        }
    }

    /// After a job known by its id only was made FAILED (by the write of the caller): reads it
    /// once, for the segment type its metric is counted under and for its callback. A job that
    /// cannot be read is logged: its callback and its count are lost, its FAILED state is not.
    pub async fn report_failed(&self, jobs: &dyn JobStore, job: &JobRef) {
        match jobs.get(&job.mandator_id, job.job_id).await {
            Ok(Some(failed)) => {
                crate::telemetry::job_failed(crate::telemetry::JobContext::of(&failed));
                self.call_back(&failed).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job_id = %job.job_id, error = %e, "cannot read the failed job to count it and call back")
            }
        }
    }

    /// See [`validate_callback_url`].
    pub async fn validate(&self, url: &str) -> Result<(), AppError> {
        validate_callback_url(&self.policy, url).await
    }
}

/// The check of a `callbackURL` at job creation: 400 naming the field when the policy refuses it.
pub async fn validate_callback_url(policy: &CallbackPolicy, url: &str) -> Result<(), AppError> {
    policy.check(url).await.map(drop).map_err(|e| AppError::InvalidField(FieldError::new("callbackURL", e.to_string())))
}
