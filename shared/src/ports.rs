//! The ports of the application: small traits, one purpose each. The AWS adapters and the
//! embedded adapter implement every one of them, and the same tests run against both.
//!
//! They are object-safe (`async_trait`) because the local runner picks the adapters at run time
//! (`--aws` or the embedded store) and hands them to the same handler code.

use std::error::Error as StdError;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::domain::{JobId, MandatorId, UserData};
use crate::jobs::{Job, JobMessage, ResultSummary};
use crate::records::AccountItem;

pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Failures of a store or queue, in the terms the application acts on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost: the item exists already, or is not in the expected state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Stored data that cannot be decoded. Retrying will not help.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The backing service failed or could not be reached. Retrying may help.
    #[error("storage unavailable: {context}")]
    Unavailable {
        context: String,
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    pub fn unavailable(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::Unavailable { context: context.into(), source: source.into() }
    }

    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// Reads a mandator's account data, one shard at a time.
#[async_trait]
pub trait AccountSource: Send + Sync {
    /// The mandator's shard count, or `None` when it has no account data at all.
    async fn shard_count(&self, mandator: &MandatorId) -> Result<Option<u32>, StoreError>;

    /// The users of one shard, each with all its accounts (ordered by accountId) and their
    /// transactions (ordered by bookingDate, transactionId), in userId byte order. Streams: at
    /// most one user is assembled in memory at a time.
    fn users<'a>(&'a self, mandator: &'a MandatorId, shard: u32) -> BoxStream<'a, Result<UserData, StoreError>>;
}

/// Writes account data (the importer).
#[async_trait]
pub trait AccountSink: Send + Sync {
    /// Records the mandator's shard count, or confirms it when already recorded. A different
    /// recorded count is a `Conflict`: data already placed must not move silently.
    async fn ensure_shard_count(&self, mandator: &MandatorId, shard_count: u32) -> Result<(), StoreError>;

    /// Writes items (upsert by key). The adapter places each on `shard_of(userId, shard_count)`.
    async fn put_items(&self, mandator: &MandatorId, shard_count: u32, items: &[AccountItem])
    -> Result<(), StoreError>;
}

/// The job records.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores a new job; `Conflict` if its id exists already.
    async fn create(&self, job: &Job) -> Result<(), StoreError>;

    /// The job, if it exists for this mandator. Keys include the mandator: another mandator's
    /// job is simply not found.
    async fn get(&self, mandator: &MandatorId, job_id: JobId) -> Result<Option<Job>, StoreError>;

    /// QUEUED → RUNNING. A no-op in any other state.
    async fn mark_running(&self, mandator: &MandatorId, job_id: JobId) -> Result<(), StoreError>;

    /// Records how many shards are done (only ever raises the count, only while not final).
    async fn record_progress(&self, mandator: &MandatorId, job_id: JobId, shards_done: u32) -> Result<(), StoreError>;

    /// → COMPLETED with the result summary, in one conditional write. `Ok(false)` when the job
    /// was already final (a redelivered message): nothing changes.
    async fn complete(&self, mandator: &MandatorId, job_id: JobId, result: ResultSummary) -> Result<bool, StoreError>;

    /// → FAILED with a reason, unless already final. `Ok(false)` when it was.
    async fn fail(&self, mandator: &MandatorId, job_id: JobId, reason: &str) -> Result<bool, StoreError>;
}

/// Result objects (chunks and manifests) by key.
#[async_trait]
pub trait ResultStore: Send + Sync {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError>;
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
}

/// The work queue of the workers (one queue per segment type on AWS).
#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn enqueue(&self, message: &JobMessage) -> Result<(), StoreError>;
}
