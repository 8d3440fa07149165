use crate::domain::SegmentType;
use crate::jobs::JobStatus;
use crate::ports::StoreError;
use crate::rules::body::{BodyError, FieldError};
use crate::usecases::account_data::DataError;

/// Progress of a job that is not ready yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub shards_done: u32,
    pub shards_total: u32,
}

/// Every way an API call can fail, in the application's terms. The HTTP edge (`http::problem`) maps each
/// to an HTTP status and an RFC 9457 problem, in one place.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("missing or invalid credentials")]
    Unauthenticated,
    #[error("the token lacks the scope {0}")]
    MissingScope(String),
    #[error("unknown segment type {0:?}; valid: {valid}", valid = SegmentType::names())]
    UnknownSegmentType(String),
    #[error("segment type {0} cannot be computed by this deployment yet")]
    SegmentTypeNotAvailable(SegmentType),
    #[error("{0}")]
    MalformedBody(String),
    #[error("request body exceeds {0} bytes")]
    BodyTooLarge(usize),
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error(transparent)]
    InvalidField(FieldError),
    /// A query or header parameter, named like a field.
    #[error("{0}")]
    InvalidParameter(FieldError),
    /// Unknown, expired, another mandator's or another type's job: indistinguishable on purpose.
    #[error("no such job")]
    UnknownJob,
    #[error("the job is {status:?}")]
    NotReady { status: JobStatus, progress: Progress },
    #[error("the job failed: {0}")]
    JobFailed(String),
    /// The `Idempotency-Key` names an earlier request with another body.
    #[error("the Idempotency-Key was used for a different request; use a new key for a new request")]
    IdempotencyKeyReused,
    #[error("no route for this method and path")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("a store or queue is unavailable")]
    Unavailable(#[source] StoreError),
    /// An unknown or deleted segment, or another organization's: indistinguishable on purpose.
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("a segment named {0:?} exists in this scope already")]
    SegmentNameTaken(String),
    #[error("the segment was changed concurrently; read it again and retry")]
    SegmentConflict,
    /// A refresh's difference is not recorded yet (its state): its feed has nothing to show, and
    /// the members hold still while it is recorded.
    #[error("the refresh's difference is not recorded yet (status {0}); retry after it is APPLYING or APPLIED")]
    RefreshNotRecorded(&'static str),
    /// Accounts that do not belong to the caller's organization, as `userId/accountId`.
    #[error("accounts not found in this organization: {}", .0.join(", "))]
    UnknownAccounts(Vec<String>),
    #[error("accounts cannot be tagged with a segment whose status is {0}")]
    SegmentNotTaggable(String),
    #[error("the segment has no rule to refresh from")]
    NoRule,
    /// The import cannot start: it is not awaiting its upload, or another import of the mandator
    /// is running.
    #[error("{0}")]
    ImportConflict(String),
    /// An import's file (`accounts.ndjson`, `transactions.ndjson`) has not been uploaded.
    #[error("{0} has not been uploaded; PUT it to its upload URL first")]
    UploadMissing(&'static str),
    /// An accountId of the request (`field`, a JSON pointer) that another user of the mandator
    /// holds: accountIds are unique per mandator.
    #[error("account {account} belongs to another user; accountIds are unique per mandator")]
    AccountHeld { account: String, field: String },
    /// Writes to one user kept overtaking this one.
    #[error("the user's data kept changing during the write; retry")]
    DataConflict,
    /// The mandator has `limit` live jobs already; a new one may be created once one ends.
    #[error(
        "this organization has {limit} jobs queued or running, the most allowed; retry after {retry_after_seconds} seconds"
    )]
    TooManyJobs { limit: u32, retry_after_seconds: u32 },
}

impl From<BodyError> for AppError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Malformed(m) => AppError::MalformedBody(m.0),
            BodyError::Field(f) => AppError::InvalidField(f),
        }
    }
}

impl From<DataError> for AppError {
    fn from(e: DataError) -> Self {
        match e {
            DataError::NotFound => AppError::NotFound("user"),
            DataError::Invalid { pointer, message } => AppError::InvalidField(FieldError::new(pointer, message)),
            DataError::AccountHeld { account, pointer } => {
                AppError::AccountHeld { account: account.to_string(), field: pointer }
            }
            DataError::Contended => AppError::DataConflict,
            DataError::Store(e) => AppError::Unavailable(e),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        AppError::Unavailable(e)
    }
}
