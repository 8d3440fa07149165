//! The ports of the application: small traits, one purpose each. The AWS adapters and the
//! embedded adapter implement every one of them, and the same tests run against both.
//!
//! They are object-safe (`async_trait`) because the local runner picks the adapters at run time
//! (`--aws` or the embedded store) and hands them to the same handler code.

use std::error::Error as StdError;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::domain::{JobId, MandatorId, Month, SegmentType, UserData, UserId};
use crate::jobs::{IdempotencyKey, Job, JobMessage, ProgressWatch, ResultSummary};

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

/// A user's account data as stored, with the version that orders the writes to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    pub data: UserData,
    pub version: u64,
}

/// Why a write of one user's data did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UserWriteError {
    /// The user's stored version is not the expected one (another write came first, or the user
    /// was erased or created meanwhile). Nothing was written: read again and redo the change.
    #[error("the user's data changed meanwhile")]
    VersionChanged,
    /// Another user of the mandator holds this accountId. Nothing was written.
    #[error("account {account} belongs to another user")]
    AccountHeld { account: crate::domain::AccountId, holder: UserId },
    /// The user's data does not fit the store (too many accounts, or too large compressed).
    #[error(transparent)]
    TooLarge(#[from] crate::snapshot::EncodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The account data, written one user at a time (docs/storage.md). Every write replaces or
/// erases one user's data and the account directory entries of its accounts in one atomic step,
/// conditional on the user's version, so writes to one user are ordered and a reader of a shard
/// ([`AccountSource::users`]) sees each user wholly before or wholly after a write.
#[async_trait]
pub trait UserStore: AccountSource + AccountDirectory {
    /// Records the mandator's shard count, or confirms it when already recorded. A different
    /// recorded count is a `Conflict`: data already placed must not move silently.
    async fn ensure_shard_count(&self, mandator: &MandatorId, shard_count: u32) -> Result<(), StoreError>;

    /// The user's stored data and version (strongly consistent), `None` when nothing is stored.
    async fn get_user(
        &self,
        mandator: &MandatorId,
        shard_count: u32,
        user: &UserId,
    ) -> Result<Option<StoredUser>, StoreError>;

    /// Replaces everything stored for `data.user_id` by `data` (at least one account), if the
    /// stored version is `expected` (`None`: nothing is stored). Claims each accountId of `data`
    /// in the account directory and releases the ones the user no longer has. Returns the new
    /// version, which is greater than `expected` and than any version the user had before.
    async fn put_user(
        &self,
        mandator: &MandatorId,
        shard_count: u32,
        data: &UserData,
        expected: Option<u64>,
    ) -> Result<u64, UserWriteError>;

    /// Erases the user's data and its account directory entries, if the stored version is
    /// `expected`.
    async fn delete_user(
        &self,
        mandator: &MandatorId,
        shard_count: u32,
        user: &UserId,
        expected: u64,
    ) -> Result<(), UserWriteError>;

    /// The ids of the users stored on one shard, in userId byte order, without their data.
    fn user_ids<'a>(&'a self, mandator: &'a MandatorId, shard: u32) -> BoxStream<'a, Result<UserId, StoreError>>;
}

/// The version a write gives a user whose stored version is `expected`: greater than it, and
/// taken from the clock, so a user erased and written again never gets back a version an earlier
/// reader holds (which would let that reader's conditional write through).
pub fn next_version(expected: Option<u64>) -> u64 {
    let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
    now.max(expected.map_or(1, |v| v + 1))
}

/// The records of bulk imports, and the one import lock of each mandator.
#[async_trait]
pub trait ImportStore: Send + Sync {
    /// Stores a new import record; `Conflict` if its id exists already.
    async fn create_import(&self, record: &crate::imports::ImportRecord) -> Result<(), StoreError>;

    /// The import, if it exists for this mandator (another mandator's is simply not found).
    async fn get_import(
        &self,
        mandator: &MandatorId,
        id: crate::imports::ImportId,
    ) -> Result<Option<crate::imports::ImportRecord>, StoreError>;

    /// Takes the mandator's import lock for `id` until `until`, in one atomic write: `Conflict`
    /// when another import holds it and its lease has not run out at `now`. Taking it again for
    /// the same import renews the lease.
    async fn lock_mandator(
        &self,
        mandator: &MandatorId,
        id: crate::imports::ImportId,
        now: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError>;

    /// The import holding the mandator's import lock at `now` (its lease not run out), if any.
    async fn lock_holder(
        &self,
        mandator: &MandatorId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<crate::imports::ImportId>, StoreError>;

    /// Releases the mandator's import lock if `id` holds it; otherwise changes nothing.
    async fn unlock_mandator(&self, mandator: &MandatorId, id: crate::imports::ImportId) -> Result<(), StoreError>;

    /// Replaces the stored record (status, counts, errors) unless the stored one is final:
    /// `Ok(false)` then, and nothing changes.
    async fn update_import(&self, record: &crate::imports::ImportRecord) -> Result<bool, StoreError>;
}

/// What storing a job under an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key was free (or had expired): the job is stored and the key names it.
    Created,
    /// The key names an earlier, unexpired job; nothing was stored.
    Existing { job_id: JobId, request_hash: String },
}

/// The job records, and the records kept beside them: idempotency keys, usage records and the
/// markers of live jobs (docs/storage.md).
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores a new job and marks it live ([`JobStore::live_jobs`]) with its first progress watch
    /// ([`JobStore::stalled_jobs`]), in one atomic write; `Conflict` if its id exists already.
    async fn create(&self, job: &Job) -> Result<(), StoreError>;

    /// Stores a new job, marks it live and claims `key` for it (with `request_hash`, expiring
    /// with the job), in one atomic write: of two concurrent calls with one key exactly one
    /// creates its job. A key whose record has expired (`expiresAt ≤ now`) is free again.
    async fn create_with_key(
        &self,
        job: &Job,
        key: &IdempotencyKey,
        request_hash: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<KeyClaim, StoreError>;

    /// The job, if it exists for this mandator. Keys include the mandator: another mandator's
    /// job is simply not found.
    async fn get(&self, mandator: &MandatorId, job_id: JobId) -> Result<Option<Job>, StoreError>;

    /// QUEUED → RUNNING. A no-op in any other state.
    async fn mark_running(&self, mandator: &MandatorId, job_id: JobId) -> Result<(), StoreError>;

    /// Records that `shard`'s part is written: adds it to the job's set of done shards (a
    /// redelivered message adds nothing) and moves QUEUED → RUNNING, in one conditional write,
    /// only while the job is not final. Returns the job as it is after the call (a final job
    /// unchanged), `None` when there is no such job.
    async fn record_shard(&self, mandator: &MandatorId, job_id: JobId, shard: u32) -> Result<Option<Job>, StoreError>;

    /// → COMPLETED with the result summary, the job's own usage record (mandator, month of
    /// `job.created_at`, segment type, job id) written if absent, and its live marker removed, in
    /// one atomic conditional write. No item of this write is written by another job's
    /// completion, so completions of one mandator never conflict with each other. `Ok(false)`
    /// when the job was already final (a re-run finalize): nothing changes, the usage is not
    /// counted again.
    async fn complete(&self, job: &Job, result: ResultSummary) -> Result<bool, StoreError>;

    /// → FAILED with a reason and its live marker removed, unless already final. `Ok(false)` when
    /// it was.
    async fn fail(&self, mandator: &MandatorId, job_id: JobId, reason: &str) -> Result<bool, StoreError>;

    /// The usage: completed jobs of the mandator created in `month`, of `segment_type` — the
    /// per-job usage records plus the count of a counter written before per-job records existed.
    async fn usage(&self, mandator: &MandatorId, month: Month, segment_type: SegmentType) -> Result<u64, StoreError>;

    /// How many live (QUEUED or RUNNING) jobs the mandator has, all types together, counting no
    /// further than `at_most`: reads at most `at_most` live markers, never the final jobs.
    /// Strongly consistent with the writes of [`JobStore::create`] and the final transitions.
    async fn live_jobs(&self, mandator: &MandatorId, at_most: u32) -> Result<u32, StoreError>;

    /// The watches of live jobs of every mandator that have seen no progress since `before`
    /// (`progress_at ≤ before`), at most `limit`, read through an index that holds live jobs
    /// only ([`ProgressWatch`]): a sweep reads the stalled jobs, never every job. Every job
    /// created gets its watch ([`ProgressWatch::of_new_job`]) in the write that creates it, and
    /// loses it in the write that makes it final. The index may lag the writes by a moment
    /// (DynamoDB's global indexes are eventually consistent): a caller acts through
    /// [`JobStore::replace_watch`], which checks the stored watch.
    async fn stalled_jobs(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<ProgressWatch>, StoreError>;

    /// Replaces the job's watch `previous` by `next` (same job) if the stored watch is still
    /// `previous` and the job is live, in one conditional write. `Ok(false)` when it is not (the
    /// job ended, or another sweep came first): nothing changes.
    async fn replace_watch(&self, previous: &ProgressWatch, next: &ProgressWatch) -> Result<bool, StoreError>;

    /// The job an unexpired idempotency key of the mandator names, with the request hash it was
    /// claimed with; `None` when the key is free (absent or expired at `now`).
    async fn key_claim(
        &self,
        mandator: &MandatorId,
        key: &IdempotencyKey,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<KeyClaim>, StoreError>;
}

/// The bytes of an object, piece by piece.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// An object being written piece by piece. Nothing is visible under its key before `finish`; a
/// writer dropped unfinished leaves the key as it was.
#[async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError>;
    async fn finish(self: Box<Self>) -> Result<(), StoreError>;
}

/// Result objects (parts, chunks, manifests, exports) by key.
#[async_trait]
pub trait ResultStore: Send + Sync {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError>;
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;

    /// The object's bytes as a stream, so a reader holds a piece at a time; `None` when missing.
    async fn get_stream(&self, key: &str) -> Result<Option<ByteStream>, StoreError>;

    /// Writes an object of any size piece by piece.
    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError>;

    /// The object's size in bytes, `None` when missing. Reads none of its bytes.
    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError>;
}

/// The work queue of the workers (one queue per segment type on AWS).
#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn enqueue(&self, message: &JobMessage) -> Result<(), StoreError>;

    /// Enqueues every message (SQS: batches of 10). `Err` when any could not be enqueued; some
    /// may have been.
    async fn enqueue_all(&self, messages: &[JobMessage]) -> Result<(), StoreError> {
        for message in messages {
            self.enqueue(message).await?;
        }
        Ok(())
    }
}

/// A work queue's hold on the messages it has delivered: a received message stays invisible to
/// other receivers for its visibility timeout, which its receiver may change while it holds it.
/// A worker uses it to come back after a backoff when a run failed, and to keep a long run's
/// message from being delivered a second time while the first run still works on it.
#[async_trait]
pub trait MessageVisibility: Send + Sync {
    /// Makes the delivered message `receipt_handle` receivable again only `timeout` from now
    /// (SQS ChangeMessageVisibility; the count starts at this call). Zero makes it receivable
    /// at once.
    async fn change_visibility(&self, receipt_handle: &str, timeout: std::time::Duration) -> Result<(), StoreError>;
}

/// The segments of the management API and their membership (docs/architecture.md, docs/storage.md).
#[async_trait]
pub trait SegmentStore: Send + Sync {
    /// Stores a new segment and claims its name in its scope, in one atomic write: `Conflict`
    /// when a segment of the scope that is not deleted holds the name (exact comparison), so of
    /// two concurrent creates with one name exactly one wins.
    async fn create_segment(&self, segment: &crate::domain::segment::Segment) -> Result<(), StoreError>;

    /// The segment, deleted or not, if it exists for this mandator.
    async fn get_segment(
        &self,
        mandator: &MandatorId,
        id: crate::domain::segment::SegmentId,
    ) -> Result<Option<crate::domain::segment::Segment>, StoreError>;

    /// The live segments of the mandator that `query` selects (one scope, optionally a creation
    /// period), in its order. Reads only that scope (and period), not every segment.
    async fn list_segments(
        &self,
        mandator: &MandatorId,
        query: &crate::domain::segment::SegmentQuery,
    ) -> Result<Vec<crate::domain::segment::Segment>, StoreError>;

    /// Replaces `previous` by `next` (same id, `next.version = previous.version + 1`) if the
    /// stored version is still `previous.version`, in one atomic write that also moves the name
    /// claim when the name changes and releases it when `next` is deleted. `Conflict` when the
    /// segment changed meanwhile or the new name is held.
    async fn replace_segment(
        &self,
        previous: &crate::domain::segment::Segment,
        next: &crate::domain::segment::Segment,
    ) -> Result<(), StoreError>;

    /// Tags accounts with the segment and untags others. Idempotent: adding a member or removing
    /// a non-member changes nothing.
    async fn change_members(
        &self,
        mandator: &MandatorId,
        id: crate::domain::segment::SegmentId,
        add: &[crate::domain::segment::AccountRef],
        remove: &[crate::domain::AccountId],
    ) -> Result<(), StoreError>;

    /// The segment's members, ordered by accountId.
    async fn members(
        &self,
        mandator: &MandatorId,
        id: crate::domain::segment::SegmentId,
    ) -> Result<Vec<crate::domain::segment::AccountRef>, StoreError>;

    /// How many members the segment has.
    async fn member_count(
        &self,
        mandator: &MandatorId,
        id: crate::domain::segment::SegmentId,
    ) -> Result<u64, StoreError>;

    /// The segments (deleted ones included) having the account as a member, each with the
    /// account's user as it was recorded when the account was tagged.
    async fn segments_of_account(
        &self,
        mandator: &MandatorId,
        account: &crate::domain::AccountId,
    ) -> Result<Vec<(crate::domain::segment::SegmentId, crate::domain::UserId)>, StoreError>;
}

/// The refreshes of dynamic segments and their change feeds, beside the segments
/// (docs/segments.md, docs/storage.md).
#[async_trait]
pub trait RefreshStore: Send + Sync {
    /// Stores a new refresh. `Conflict` when one with its id exists.
    async fn create_refresh(&self, refresh: &crate::domain::refresh::RefreshRecord) -> Result<(), StoreError>;

    /// The refresh, if it exists for this mandator and segment.
    async fn get_refresh(
        &self,
        mandator: &MandatorId,
        segment: crate::domain::segment::SegmentId,
        id: crate::domain::refresh::RefreshId,
    ) -> Result<Option<crate::domain::refresh::RefreshRecord>, StoreError>;

    /// Replaces `previous` by `next` (same ids, `next.version = previous.version + 1`) if the
    /// stored version is still `previous.version`; keeps the index of `check_at` in step (a
    /// refresh without `check_at` leaves it). `Ok(false)` when it changed meanwhile.
    async fn replace_refresh(
        &self,
        previous: &crate::domain::refresh::RefreshRecord,
        next: &crate::domain::refresh::RefreshRecord,
    ) -> Result<bool, StoreError>;

    /// Up to `limit` refreshes of the segment, newest first, starting after `before` when given.
    async fn list_refreshes(
        &self,
        mandator: &MandatorId,
        segment: crate::domain::segment::SegmentId,
        before: Option<crate::domain::refresh::RefreshId>,
        limit: u32,
    ) -> Result<Vec<crate::domain::refresh::RefreshRecord>, StoreError>;

    /// Records accounts as changes of one kind of a refresh. Idempotent: recording a change again
    /// changes nothing.
    async fn put_changes(
        &self,
        mandator: &MandatorId,
        segment: crate::domain::segment::SegmentId,
        refresh: crate::domain::refresh::RefreshId,
        kind: crate::domain::refresh::ChangeKind,
        accounts: &[crate::domain::segment::AccountRef],
    ) -> Result<(), StoreError>;

    /// Up to `limit` changes of one kind of a refresh, by accountId, starting after `after`.
    async fn changes(
        &self,
        mandator: &MandatorId,
        segment: crate::domain::segment::SegmentId,
        refresh: crate::domain::refresh::RefreshId,
        kind: crate::domain::refresh::ChangeKind,
        after: Option<&crate::domain::AccountId>,
        limit: u32,
    ) -> Result<Vec<crate::domain::segment::AccountRef>, StoreError>;

    /// Removes every change recorded for a refresh (a difference recorded again starts clean).
    async fn clear_changes(
        &self,
        mandator: &MandatorId,
        segment: crate::domain::segment::SegmentId,
        refresh: crate::domain::refresh::RefreshId,
    ) -> Result<(), StoreError>;

    /// The unfinished refreshes of every mandator with `check_at <= now`, at most `limit`, read
    /// through the index of `check_at` (never every refresh). The index may lag a moment: act
    /// through [`RefreshStore::replace_refresh`].
    async fn due_refreshes(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<crate::domain::refresh::RefreshRecord>, StoreError>;

    /// The live segments of every mandator whose `next_refresh_at <= now`, at most `limit`, read
    /// through the index of `next_refresh_at` (only live, scheduled segments carry it; the
    /// segment store's writes keep it). The index may lag a moment: act through
    /// [`SegmentStore::replace_segment`].
    async fn due_schedules(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<crate::domain::segment::Segment>, StoreError>;
}

/// Where the segment events go: the stack's EventBridge bus, or the local runner's event file.
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes the events, in order. An error means some may not have been published.
    async fn publish(&self, events: &[crate::domain::events::SegmentEvent]) -> Result<(), StoreError>;
}

/// The queue of refresh steps, consumed by the refresh applier.
#[async_trait]
pub trait RefreshQueue: Send + Sync {
    async fn enqueue_refresh(&self, message: &crate::domain::refresh::RefreshMessage) -> Result<(), StoreError>;
}

/// Which accounts exist in a mandator's account data, and whose they are. AccountIds are unique
/// per mandator (the importer refuses a second user for one), so a bare accountId names an account.
#[async_trait]
pub trait AccountDirectory: Send + Sync {
    /// The user of each account of `accounts` that exists for the mandator; unknown ones are
    /// absent from the answer.
    async fn account_users(
        &self,
        mandator: &MandatorId,
        accounts: &[crate::domain::AccountId],
    ) -> Result<std::collections::BTreeMap<crate::domain::AccountId, crate::domain::UserId>, StoreError>;
}

/// A page of a mandator's jobs of one type, newest first (`GET /segments/{segmentType}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPage {
    /// At most the requested number of live jobs, newest first.
    pub jobs: Vec<Job>,
    /// Whether live jobs of the type older than the last one exist.
    pub more: bool,
}

/// Lists a mandator's jobs (the job records of [`JobStore`], read in key order).
#[async_trait]
pub trait JobCatalog: Send + Sync {
    /// Up to `limit` jobs of `segment_type` of the mandator that have not expired at `now`,
    /// newest first (job ids are UUIDv7, so key order is creation order), starting after the job
    /// `before` when given. Only the mandator's own partition is read: `before` is a position in
    /// it, never a key of another mandator.
    async fn list_jobs(
        &self,
        mandator: &MandatorId,
        segment_type: crate::domain::SegmentType,
        before: Option<JobId>,
        limit: u32,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<JobPage, StoreError>;
}

/// Short-lived links to result objects, for clients to download them directly.
#[async_trait]
pub trait ResultLinks: Send + Sync {
    /// A URL that lets anyone holding it GET the object `key` for `ttl`, or `None` when there is
    /// no such object.
    async fn link(&self, key: &str, ttl: std::time::Duration) -> Result<Option<String>, StoreError>;
}

/// Short-lived links that let a client upload one object straight into the store.
#[async_trait]
pub trait UploadLinks: Send + Sync {
    /// A URL that lets anyone holding it PUT the object `key` (replacing it) for `ttl`.
    async fn upload_link(&self, key: &str, ttl: std::time::Duration) -> Result<String, StoreError>;
}

/// The queue of started imports, consumed by the import worker.
#[async_trait]
pub trait ImportQueue: Send + Sync {
    async fn enqueue_import(&self, message: &crate::imports::ImportMessage) -> Result<(), StoreError>;
}

/// The per-mandator secrets that sign callbacks (docs/security.md).
#[async_trait]
pub trait CallbackSecrets: Send + Sync {
    /// The mandator's secret, created (32 bytes from a CSPRNG) on first use. Concurrent first
    /// uses agree on one secret.
    async fn secret(&self, mandator: &MandatorId) -> Result<crate::domain::CallbackSecret, StoreError>;
}

/// The callbacks whose delivery gave up, kept for the sweeper to retry (per mandator, expiring a
/// day after the first failure; `usecases::callbacks::outbox`).
#[async_trait]
pub trait CallbackOutbox: Send + Sync {
    /// Keeps `pending`, replacing what is kept for its job.
    async fn put_callback(&self, pending: &crate::domain::PendingCallback) -> Result<(), StoreError>;

    /// The pending callbacks of every mandator due at `now` (`next_at ≤ now`), at most `limit`,
    /// read through an index of the due times (never all entries). The index may lag the writes
    /// a moment: act through [`CallbackOutbox::replace_callback`].
    async fn due_callbacks(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<crate::domain::PendingCallback>, StoreError>;

    /// Replaces `previous` by `next` (same job) if what is kept is still `previous` (same retries
    /// and due time). `Ok(false)` otherwise: nothing changes.
    async fn replace_callback(
        &self,
        previous: &crate::domain::PendingCallback,
        next: &crate::domain::PendingCallback,
    ) -> Result<bool, StoreError>;

    /// Removes `pending` if what is kept is still it. `Ok(false)` otherwise.
    async fn remove_callback(&self, pending: &crate::domain::PendingCallback) -> Result<bool, StoreError>;
}
