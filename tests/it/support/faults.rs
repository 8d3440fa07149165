//! Crash injection for the tests of recovery. The job store and the result store are wrapped so
//! that a worker's run fails as if its process had died at one point — right after the shard's
//! part is written, right after the shard is recorded, or in the middle of finalize (chunks and
//! export written, manifest not) — leaving exactly the state written so far. The redelivered
//! message must then finish the job with the same result. The segment and refresh stores are
//! wrapped likewise for the refresh applier ([`DieAtWrite`]): it dies in the middle of applying a
//! membership, or of recording a change feed.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use segments_core::domain::refresh::{ChangeKind, RefreshId, RefreshRecord};
use segments_core::domain::segment::{AccountRef, Segment, SegmentId, SegmentQuery};
use segments_core::domain::{AccountId, JobId, MandatorId, Month, SegmentType, UserId};
use segments_core::jobs::{IdempotencyKey, Job, ProgressWatch, ResultSummary};
use segments_core::ports::{
    ByteStream, JobStore, KeyClaim, ObjectWriter, RefreshStore, ResultStore, SegmentStore, StoreError,
};
use segments_core::usecases::Services;

/// Where a run can be made to crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// The shard's part is in the result store; the shard is not recorded on the job.
    AfterPartWrite,
    /// The shard is recorded; a finalize it would start has not begun.
    AfterShardRecord,
    /// Finalize has written the chunks and the export but not the manifest, and has not completed
    /// the job.
    MidFinalize,
    /// The shard is recorded, but what the store answers cannot be decoded: a fault no retry
    /// mends.
    CorruptShardRecord,
}

/// The crashes armed for the coming runs. Clones share the plan.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    armed: Arc<Mutex<Vec<CrashPoint>>>,
}

impl FaultPlan {
    /// Arms one crash at `point`: the next run that reaches it fails there.
    pub fn crash_once(&self, point: CrashPoint) {
        self.armed.lock().unwrap_or_else(PoisonError::into_inner).push(point);
    }

    /// Whether every armed crash has happened.
    pub fn all_fired(&self) -> bool {
        self.armed.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    /// Consumes a crash armed at `point`, if any: the error the dying process leaves behind.
    fn fire(&self, point: CrashPoint) -> Result<(), StoreError> {
        let mut armed = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        match armed.iter().position(|p| *p == point) {
            Some(i) => {
                armed.remove(i);
                Err(match point {
                    CrashPoint::CorruptShardRecord => {
                        StoreError::Corrupt(format!("injected fault {point:?}: the job record cannot be decoded"))
                    }
                    _ => StoreError::unavailable(format!("injected crash {point:?}"), "the process died"),
                })
            }
            None => Ok(()),
        }
    }
}

/// `services` with its job and result stores wrapped to crash where `plan` says.
pub fn with_faults(services: Services, plan: &FaultPlan) -> Services {
    Services {
        jobs: Arc::new(CrashingJobs { inner: services.jobs.clone(), plan: plan.clone() }),
        results: Arc::new(CrashingResults { inner: services.results.clone(), plan: plan.clone() }),
        ..services
    }
}

/// A job store that crashes right after recording a shard.
struct CrashingJobs {
    inner: Arc<dyn JobStore>,
    plan: FaultPlan,
}

#[async_trait]
impl JobStore for CrashingJobs {
    async fn create(&self, job: &Job) -> Result<(), StoreError> {
        self.inner.create(job).await
    }

    async fn create_with_key(
        &self,
        job: &Job,
        key: &IdempotencyKey,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<KeyClaim, StoreError> {
        self.inner.create_with_key(job, key, request_hash, now).await
    }

    async fn get(&self, mandator: &MandatorId, job_id: JobId) -> Result<Option<Job>, StoreError> {
        self.inner.get(mandator, job_id).await
    }

    async fn mark_running(&self, mandator: &MandatorId, job_id: JobId) -> Result<(), StoreError> {
        self.inner.mark_running(mandator, job_id).await
    }

    async fn record_shard(&self, mandator: &MandatorId, job_id: JobId, shard: u32) -> Result<Option<Job>, StoreError> {
        let job = self.inner.record_shard(mandator, job_id, shard).await?;
        self.plan.fire(CrashPoint::AfterShardRecord)?;
        self.plan.fire(CrashPoint::CorruptShardRecord)?;
        Ok(job)
    }

    async fn complete(&self, job: &Job, result: ResultSummary) -> Result<bool, StoreError> {
        self.inner.complete(job, result).await
    }

    async fn fail(&self, mandator: &MandatorId, job_id: JobId, reason: &str) -> Result<bool, StoreError> {
        self.inner.fail(mandator, job_id, reason).await
    }

    async fn usage(&self, mandator: &MandatorId, month: Month, segment_type: SegmentType) -> Result<u64, StoreError> {
        self.inner.usage(mandator, month, segment_type).await
    }

    async fn live_jobs(&self, mandator: &MandatorId, at_most: u32) -> Result<u32, StoreError> {
        self.inner.live_jobs(mandator, at_most).await
    }

    async fn stalled_jobs(&self, before: DateTime<Utc>, limit: u32) -> Result<Vec<ProgressWatch>, StoreError> {
        self.inner.stalled_jobs(before, limit).await
    }

    async fn replace_watch(&self, previous: &ProgressWatch, next: &ProgressWatch) -> Result<bool, StoreError> {
        self.inner.replace_watch(previous, next).await
    }

    async fn key_claim(
        &self,
        mandator: &MandatorId,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Option<KeyClaim>, StoreError> {
        self.inner.key_claim(mandator, key, now).await
    }
}

/// A result store that crashes right after a shard's part is written, and before a manifest is.
struct CrashingResults {
    inner: Arc<dyn ResultStore>,
    plan: FaultPlan,
}

fn is_part(key: &str) -> bool {
    key.contains("/parts/")
}

fn is_manifest(key: &str) -> bool {
    key.ends_with("/manifest.json")
}

#[async_trait]
impl ResultStore for CrashingResults {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        if is_manifest(key) {
            self.plan.fire(CrashPoint::MidFinalize)?;
        }
        self.inner.put(key, body).await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.inner.get(key).await
    }

    async fn get_stream(&self, key: &str) -> Result<Option<ByteStream>, StoreError> {
        self.inner.get_stream(key).await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.inner.size(key).await
    }

    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let inner = self.inner.writer(key).await?;
        if is_part(key) { Ok(Box::new(CrashingPartWriter { inner, plan: self.plan.clone() })) } else { Ok(inner) }
    }
}

/// A part's writer whose `finish` makes the part durable, then crashes.
struct CrashingPartWriter {
    inner: Box<dyn ObjectWriter>,
    plan: FaultPlan,
}

#[async_trait]
impl ObjectWriter for CrashingPartWriter {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        self.inner.write(bytes).await
    }

    async fn finish(self: Box<Self>) -> Result<(), StoreError> {
        self.inner.finish().await?;
        self.plan.fire(CrashPoint::AfterPartWrite)
    }
}

/// A store that dies at its `n`-th write of one kind: that write lands, its answer is lost (the
/// process died right after), and every later write of the kind fails without landing. What was
/// written before stays, as a dead run of the refresh applier leaves it.
#[derive(Debug, Clone)]
pub struct DieAtWrite {
    calls: Arc<Mutex<u32>>,
    n: u32,
}

impl DieAtWrite {
    pub fn new(n: u32) -> Self {
        assert!(n >= 1, "the store dies at a write, the first at the earliest");
        DieAtWrite { calls: Arc::new(Mutex::new(0)), n }
    }

    /// How many writes were asked for, the one it died at and later ones included.
    pub fn calls(&self) -> u32 {
        *self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `write` if it comes before the fatal one or is it, then answers as the dying process.
    async fn write<F>(&self, what: &str, write: F) -> Result<(), StoreError>
    where
        F: std::future::Future<Output = Result<(), StoreError>>,
    {
        let call = {
            let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
            *calls += 1;
            *calls
        };
        if call > self.n {
            return Err(StoreError::unavailable(format!("injected crash: {what} after the process died"), "gone"));
        }
        write.await?;
        if call == self.n {
            return Err(StoreError::unavailable(format!("injected crash at {what} #{call}"), "the process died"));
        }
        Ok(())
    }
}

/// `segments` dying at its `n`-th `change_members` (the applier's writes of a membership page).
pub fn segments_dying_at(segments: Arc<dyn SegmentStore>, die: &DieAtWrite) -> Arc<dyn SegmentStore> {
    Arc::new(DyingSegments { inner: segments, die: die.clone() })
}

/// `refreshes` dying at its `n`-th `put_changes` (the applier's writes of a page of the change feed).
pub fn refreshes_dying_at(refreshes: Arc<dyn RefreshStore>, die: &DieAtWrite) -> Arc<dyn RefreshStore> {
    Arc::new(DyingRefreshes { inner: refreshes, die: die.clone() })
}

struct DyingSegments {
    inner: Arc<dyn SegmentStore>,
    die: DieAtWrite,
}

#[async_trait]
impl SegmentStore for DyingSegments {
    async fn create_segment(&self, segment: &Segment) -> Result<(), StoreError> {
        self.inner.create_segment(segment).await
    }

    async fn get_segment(&self, mandator: &MandatorId, id: SegmentId) -> Result<Option<Segment>, StoreError> {
        self.inner.get_segment(mandator, id).await
    }

    async fn list_segments(&self, mandator: &MandatorId, query: &SegmentQuery) -> Result<Vec<Segment>, StoreError> {
        self.inner.list_segments(mandator, query).await
    }

    async fn replace_segment(&self, previous: &Segment, next: &Segment) -> Result<(), StoreError> {
        self.inner.replace_segment(previous, next).await
    }

    async fn change_members(
        &self,
        mandator: &MandatorId,
        id: SegmentId,
        add: &[AccountRef],
        remove: &[AccountId],
    ) -> Result<(), StoreError> {
        self.die.write("change_members", self.inner.change_members(mandator, id, add, remove)).await
    }

    async fn members(&self, mandator: &MandatorId, id: SegmentId) -> Result<Vec<AccountRef>, StoreError> {
        self.inner.members(mandator, id).await
    }

    async fn member_count(&self, mandator: &MandatorId, id: SegmentId) -> Result<u64, StoreError> {
        self.inner.member_count(mandator, id).await
    }

    async fn segments_of_account(
        &self,
        mandator: &MandatorId,
        account: &AccountId,
    ) -> Result<Vec<(SegmentId, UserId)>, StoreError> {
        self.inner.segments_of_account(mandator, account).await
    }
}

struct DyingRefreshes {
    inner: Arc<dyn RefreshStore>,
    die: DieAtWrite,
}

#[async_trait]
impl RefreshStore for DyingRefreshes {
    async fn create_refresh(&self, refresh: &RefreshRecord) -> Result<(), StoreError> {
        self.inner.create_refresh(refresh).await
    }

    async fn get_refresh(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        id: RefreshId,
    ) -> Result<Option<RefreshRecord>, StoreError> {
        self.inner.get_refresh(mandator, segment, id).await
    }

    async fn replace_refresh(&self, previous: &RefreshRecord, next: &RefreshRecord) -> Result<bool, StoreError> {
        self.inner.replace_refresh(previous, next).await
    }

    async fn list_refreshes(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        before: Option<RefreshId>,
        limit: u32,
    ) -> Result<Vec<RefreshRecord>, StoreError> {
        self.inner.list_refreshes(mandator, segment, before, limit).await
    }

    async fn put_changes(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        refresh: RefreshId,
        kind: ChangeKind,
        accounts: &[AccountRef],
    ) -> Result<(), StoreError> {
        self.die.write("put_changes", self.inner.put_changes(mandator, segment, refresh, kind, accounts)).await
    }

    async fn changes(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        refresh: RefreshId,
        kind: ChangeKind,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountRef>, StoreError> {
        self.inner.changes(mandator, segment, refresh, kind, after, limit).await
    }

    async fn clear_changes(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        refresh: RefreshId,
    ) -> Result<(), StoreError> {
        self.inner.clear_changes(mandator, segment, refresh).await
    }

    async fn due_refreshes(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<RefreshRecord>, StoreError> {
        self.inner.due_refreshes(now, limit).await
    }

    async fn due_schedules(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Segment>, StoreError> {
        self.inner.due_schedules(now, limit).await
    }
}
