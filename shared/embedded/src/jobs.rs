//! Job records. Every transition is a read-check-write inside one write transaction; redb runs
//! one write transaction at a time, so the check and the write are atomic like DynamoDB's
//! conditional updates.
//!
//! Beside the jobs, as on DynamoDB (docs/storage.md): one usage record per completed job, and one
//! live marker per QUEUED or RUNNING job, so live jobs are counted without reading every job.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

use super::{EmbeddedStore, IDEMPOTENCY, JOBS, OrUnavailable, USAGE, corrupt, keys};
use segments_core::domain::{JobId, MandatorId, Month, SegmentType};
use segments_core::jobs::{
    IdempotencyKey, Job, JobMessage, JobStatus, ProgressWatch, ResultSummary, usage_embedded_key,
    usage_job_embedded_key,
};
use segments_core::ports::{JobStore, KeyClaim, StoreError};
use segments_core::rules::SegmentParams;

/// The live-job markers: key [`keys::live_key`] → the job's `expiresAt` (epoch seconds). Written
/// with the job and removed in the write that makes it final.
const LIVE_JOBS: TableDefinition<&str, i64> = TableDefinition::new("live_jobs");

/// The progress watch of each live job ([`ProgressWatch`]): key [`keys::live_key`] → the watch
/// (JSON). Written and removed with the live marker.
const JOB_WATCHES: TableDefinition<&str, &[u8]> = TableDefinition::new("job_watches");

/// The live jobs ordered by when they last progressed: key [`watch_index_key`] → the job's
/// [`keys::live_key`]. What [`JobStore::stalled_jobs`] reads, instead of every job.
const WATCH_INDEX: TableDefinition<&str, &str> = TableDefinition::new("job_watch_index");

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredWatch {
    mandator_id: MandatorId,
    job_id: JobId,
    progress_at: DateTime<Utc>,
    shards_seen: u32,
    idle_sweeps: u32,
}

impl StoredWatch {
    fn of(watch: &ProgressWatch) -> StoredWatch {
        StoredWatch {
            mandator_id: watch.mandator_id.clone(),
            job_id: watch.job_id,
            progress_at: watch.progress_at,
            shards_seen: watch.shards_seen,
            idle_sweeps: watch.idle_sweeps,
        }
    }

    fn watch(self) -> ProgressWatch {
        ProgressWatch {
            mandator_id: self.mandator_id,
            job_id: self.job_id,
            progress_at: self.progress_at,
            shards_seen: self.shards_seen,
            idle_sweeps: self.idle_sweeps,
        }
    }
}

/// The index key of a watch: its progress time, then the live key ([`keys::due_key`]), so key
/// order is progress order.
fn watch_index_key(progress_at: DateTime<Utc>, live_key: &str) -> String {
    keys::due_key(progress_at, live_key)
}

/// Marks a new job live with its first progress watch, inside the caller's write.
fn mark_live(write: &redb::WriteTransaction, job: &Job) -> Result<(), StoreError> {
    const WHAT: &str = "marking a job live";
    let live_key = keys::live_key(&job.mandator_id, job.job_id);
    let mut live = write.open_table(LIVE_JOBS).or_unavailable(WHAT)?;
    live.insert(live_key.as_str(), job.expires_at.timestamp()).or_unavailable(WHAT)?;
    put_watch(write, &live_key, &ProgressWatch::of_new_job(job))
}

fn put_watch(write: &redb::WriteTransaction, live_key: &str, watch: &ProgressWatch) -> Result<(), StoreError> {
    const WHAT: &str = "writing a progress watch";
    let value =
        serde_json::to_vec(&StoredWatch::of(watch)).map_err(|e| StoreError::unavailable("encoding a watch", e))?;
    write.open_table(JOB_WATCHES).or_unavailable(WHAT)?.insert(live_key, value.as_slice()).or_unavailable(WHAT)?;
    let index_key = watch_index_key(watch.progress_at, live_key);
    write.open_table(WATCH_INDEX).or_unavailable(WHAT)?.insert(index_key.as_str(), live_key).or_unavailable(WHAT)?;
    Ok(())
}

/// The job's stored watch, if it has one.
fn read_watch(write: &redb::WriteTransaction, live_key: &str) -> Result<Option<ProgressWatch>, StoreError> {
    const WHAT: &str = "reading a progress watch";
    let watches = write.open_table(JOB_WATCHES).or_unavailable(WHAT)?;
    let Some(stored) = watches.get(live_key).or_unavailable(WHAT)? else { return Ok(None) };
    let stored: StoredWatch = serde_json::from_slice(stored.value()).map_err(|e| corrupt("watch", live_key, e))?;
    Ok(Some(stored.watch()))
}

fn remove_watch(write: &redb::WriteTransaction, live_key: &str) -> Result<(), StoreError> {
    const WHAT: &str = "removing a progress watch";
    if let Some(watch) = read_watch(write, live_key)? {
        let index_key = watch_index_key(watch.progress_at, live_key);
        write.open_table(WATCH_INDEX).or_unavailable(WHAT)?.remove(index_key.as_str()).or_unavailable(WHAT)?;
        write.open_table(JOB_WATCHES).or_unavailable(WHAT)?.remove(live_key).or_unavailable(WHAT)?;
    }
    Ok(())
}

/// Inside the caller's write: applies `finish` (which sets a final status) to the job under `key`
/// and removes its live marker and watch, unless the job is missing or final already
/// (`Ok(false)`: nothing is written).
fn make_final(
    write: &redb::WriteTransaction,
    key: &str,
    mandator: &MandatorId,
    job_id: JobId,
    finish: impl FnOnce(&mut Job),
) -> Result<bool, StoreError> {
    const WHAT: &str = "making a job final";
    {
        let mut jobs = write.open_table(JOBS).or_unavailable(WHAT)?;
        let Some(mut job) = jobs.get(key).or_unavailable(WHAT)?.map(|v| decode(key, v.value())).transpose()? else {
            return Ok(false);
        };
        if job.status.is_final() {
            return Ok(false);
        }
        finish(&mut job);
        jobs.insert(key, encode(&job)?.as_slice()).or_unavailable(WHAT)?;
    }
    unmark_live(write, mandator, job_id)?;
    Ok(true)
}

/// Removes a job's live marker and its watch, inside the caller's write that makes it final.
fn unmark_live(write: &redb::WriteTransaction, mandator: &MandatorId, job_id: JobId) -> Result<(), StoreError> {
    const WHAT: &str = "unmarking a live job";
    let live_key = keys::live_key(mandator, job_id);
    write.open_table(LIVE_JOBS).or_unavailable(WHAT)?.remove(live_key.as_str()).or_unavailable(WHAT)?;
    remove_watch(write, &live_key)
}

/// A failure reason is kept to this many characters, as on DynamoDB: a message, not a dump.
const MAX_REASON_CHARS: usize = 2000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredJob {
    mandator_id: MandatorId,
    job_id: JobId,
    segment_type: SegmentType,
    status: JobStatus,
    as_of: NaiveDate,
    // Decoded by the segment type: the parameter shapes of the types overlap.
    params: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback_url: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    shards_total: u32,
    #[serde(default)]
    done_shards: BTreeSet<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<ResultSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn encode(job: &Job) -> Result<Vec<u8>, StoreError> {
    let params = serde_json::to_value(&job.params).map_err(|e| StoreError::unavailable("encoding a job", e))?;
    let stored = StoredJob {
        mandator_id: job.mandator_id.clone(),
        job_id: job.job_id,
        segment_type: job.segment_type,
        status: job.status,
        as_of: job.as_of,
        params,
        callback_url: job.callback_url.clone(),
        created_at: job.created_at,
        expires_at: job.expires_at,
        shards_total: job.shards_total,
        done_shards: job.done_shards.clone(),
        result: job.result,
        error: job.error.clone(),
    };
    serde_json::to_vec(&stored).map_err(|e| StoreError::unavailable("encoding a job", e))
}

fn decode(key: &str, bytes: &[u8]) -> Result<Job, StoreError> {
    let s: StoredJob = serde_json::from_slice(bytes).map_err(|e| corrupt("job", key, e))?;
    let params = SegmentParams::from_stored(s.segment_type, s.params).map_err(|e| corrupt("job parameters", key, e))?;
    Ok(Job {
        mandator_id: s.mandator_id,
        job_id: s.job_id,
        segment_type: s.segment_type,
        status: s.status,
        as_of: s.as_of,
        params,
        callback_url: s.callback_url,
        created_at: s.created_at,
        expires_at: s.expires_at,
        shards_total: s.shards_total,
        shards_done: s.done_shards.len() as u32,
        done_shards: s.done_shards,
        result: s.result,
        error: s.error,
    })
}

/// Applies `change` to the job in one write transaction and commits when it reports a change.
/// `None` when there is no such job.
fn update(db: &Database, key: &str, change: impl FnOnce(&mut Job) -> bool) -> Result<Option<bool>, StoreError> {
    const WHAT: &str = "updating a job";
    let write = db.begin_write().or_unavailable(WHAT)?;
    let changed = {
        let mut table = write.open_table(JOBS).or_unavailable(WHAT)?;
        let Some(mut job) = table.get(key).or_unavailable(WHAT)?.map(|v| decode(key, v.value())).transpose()? else {
            return Ok(None);
        };
        if !change(&mut job) {
            return Ok(Some(false));
        }
        table.insert(key, encode(&job)?.as_slice()).or_unavailable(WHAT)?;
        true
    };
    write.commit().or_unavailable(WHAT)?;
    Ok(Some(changed))
}

/// The messages that finish every QUEUED or RUNNING job, of every mandator: one per shard not
/// done, or, when all are done, one (of any shard) whose delivery finalizes the job.
pub(super) fn unfinished(db: &Database) -> Result<Vec<JobMessage>, StoreError> {
    const WHAT: &str = "listing unfinished jobs";
    let read = db.begin_read().or_unavailable(WHAT)?;
    let table = read.open_table(JOBS).or_unavailable(WHAT)?;
    let mut out = Vec::new();
    for entry in table.iter().or_unavailable(WHAT)? {
        let (key, value) = entry.or_unavailable(WHAT)?;
        let job = decode(key.value(), value.value())?;
        if job.status.is_final() {
            continue;
        }
        out.extend(job.unfinished_messages());
    }
    Ok(out)
}

/// The record of a claimed idempotency key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredKey {
    job_id: JobId,
    request_hash: String,
    expires_at: DateTime<Utc>,
}

#[async_trait]
impl JobStore for EmbeddedStore {
    async fn create(&self, job: &Job) -> Result<(), StoreError> {
        let key = keys::job_key(&job.mandator_id, job.job_id);
        let value = encode(job)?;
        let job = job.clone();
        self.blocking("creating a job", move |db| {
            const WHAT: &str = "creating a job";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut table = write.open_table(JOBS).or_unavailable(WHAT)?;
                if table.get(key.as_str()).or_unavailable(WHAT)?.is_some() {
                    return Err(StoreError::Conflict(format!("job {key} exists already")));
                }
                table.insert(key.as_str(), value.as_slice()).or_unavailable(WHAT)?;
            }
            mark_live(&write, &job)?;
            write.commit().or_unavailable(WHAT)
        })
        .await
    }

    async fn get(&self, mandator: &MandatorId, job_id: JobId) -> Result<Option<Job>, StoreError> {
        let key = keys::job_key(mandator, job_id);
        self.blocking("reading a job", move |db| {
            const WHAT: &str = "reading a job";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let table = read.open_table(JOBS).or_unavailable(WHAT)?;
            table.get(key.as_str()).or_unavailable(WHAT)?.map(|v| decode(&key, v.value())).transpose()
        })
        .await
    }

    async fn mark_running(&self, mandator: &MandatorId, job_id: JobId) -> Result<(), StoreError> {
        let key = keys::job_key(mandator, job_id);
        self.blocking("updating a job", move |db| {
            update(db, &key, |job| {
                let queued = job.status == JobStatus::Queued;
                if queued {
                    job.status = JobStatus::Running;
                }
                queued
            })
            .map(drop)
        })
        .await
    }

    async fn record_shard(&self, mandator: &MandatorId, job_id: JobId, shard: u32) -> Result<Option<Job>, StoreError> {
        let key = keys::job_key(mandator, job_id);
        self.blocking("updating a job", move |db| {
            const WHAT: &str = "updating a job";
            let write = db.begin_write().or_unavailable(WHAT)?;
            let job = {
                let mut table = write.open_table(JOBS).or_unavailable(WHAT)?;
                let Some(mut job) =
                    table.get(key.as_str()).or_unavailable(WHAT)?.map(|v| decode(&key, v.value())).transpose()?
                else {
                    return Ok(None);
                };
                if !job.status.is_final() && (job.done_shards.insert(shard) || job.status == JobStatus::Queued) {
                    job.shards_done = job.done_shards.len() as u32;
                    job.status = JobStatus::Running;
                    table.insert(key.as_str(), encode(&job)?.as_slice()).or_unavailable(WHAT)?;
                }
                job
            };
            write.commit().or_unavailable(WHAT)?;
            Ok(Some(job))
        })
        .await
    }

    async fn complete(&self, job: &Job, result: ResultSummary) -> Result<bool, StoreError> {
        let key = keys::job_key(&job.mandator_id, job.job_id);
        let usage_key = usage_job_embedded_key(&job.mandator_id, job.usage_month(), job.segment_type, job.job_id);
        let (mandator, job_id) = (job.mandator_id.clone(), job.job_id);
        self.blocking("completing a job", move |db| {
            const WHAT: &str = "completing a job";
            // One write transaction: the job becomes COMPLETED, its own usage record is written
            // and its live marker removed together, or none of it happens. A record per job, as on
            // DynamoDB, where a counter shared by the mandator's jobs made completions conflict.
            let write = db.begin_write().or_unavailable(WHAT)?;
            let completed = make_final(&write, &key, &mandator, job_id, |job| {
                job.status = JobStatus::Completed;
                job.result = Some(result);
            })?;
            if !completed {
                return Ok(false);
            }
            {
                let mut usage = write.open_table(USAGE).or_unavailable(WHAT)?;
                if usage.get(usage_key.as_str()).or_unavailable(WHAT)?.is_some() {
                    return Err(StoreError::Corrupt(format!("job {key} is not final but its usage is recorded")));
                }
                usage.insert(usage_key.as_str(), 1).or_unavailable(WHAT)?;
            }
            write.commit().or_unavailable(WHAT)?;
            Ok(true)
        })
        .await
    }

    async fn fail(&self, mandator: &MandatorId, job_id: JobId, reason: &str) -> Result<bool, StoreError> {
        let key = keys::job_key(mandator, job_id);
        let mandator = mandator.clone();
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        self.blocking("updating a job", move |db| {
            const WHAT: &str = "failing a job";
            let write = db.begin_write().or_unavailable(WHAT)?;
            let failed = make_final(&write, &key, &mandator, job_id, |job| {
                job.status = JobStatus::Failed;
                job.error = Some(reason);
            })?;
            if failed {
                write.commit().or_unavailable(WHAT)?;
            }
            Ok(failed)
        })
        .await
    }

    async fn create_with_key(
        &self,
        job: &Job,
        key: &IdempotencyKey,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<KeyClaim, StoreError> {
        let job_key = keys::job_key(&job.mandator_id, job.job_id);
        let idem_key = keys::idempotency_key(&job.mandator_id, key);
        let value = encode(job)?;
        let claim = StoredKey { job_id: job.job_id, request_hash: request_hash.to_owned(), expires_at: job.expires_at };
        let claim =
            serde_json::to_vec(&claim).map_err(|e| StoreError::unavailable("encoding an idempotency key", e))?;
        let job = job.clone();
        self.blocking("creating a job", move |db| {
            const WHAT: &str = "creating a job";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut keys_table = write.open_table(IDEMPOTENCY).or_unavailable(WHAT)?;
                if let Some(existing) = keys_table.get(idem_key.as_str()).or_unavailable(WHAT)? {
                    let existing: StoredKey = serde_json::from_slice(existing.value())
                        .map_err(|e| corrupt("idempotency key", &idem_key, e))?;
                    // An expired key is free again, as on DynamoDB before TTL deletes it.
                    if existing.expires_at > now {
                        return Ok(KeyClaim::Existing { job_id: existing.job_id, request_hash: existing.request_hash });
                    }
                }
                let mut jobs = write.open_table(JOBS).or_unavailable(WHAT)?;
                if jobs.get(job_key.as_str()).or_unavailable(WHAT)?.is_some() {
                    return Err(StoreError::Conflict(format!("job {job_key} exists already")));
                }
                jobs.insert(job_key.as_str(), value.as_slice()).or_unavailable(WHAT)?;
                keys_table.insert(idem_key.as_str(), claim.as_slice()).or_unavailable(WHAT)?;
            }
            mark_live(&write, &job)?;
            write.commit().or_unavailable(WHAT)?;
            Ok(KeyClaim::Created)
        })
        .await
    }

    async fn usage(&self, mandator: &MandatorId, month: Month, segment_type: SegmentType) -> Result<u64, StoreError> {
        // The counter completions raised before per-job records, then the records: its key is
        // their prefix without the separator.
        let legacy_key = usage_embedded_key(mandator, month, segment_type);
        self.blocking("reading usage", move |db| {
            const WHAT: &str = "reading usage";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let table = read.open_table(USAGE).or_unavailable(WHAT)?;
            let legacy = table.get(legacy_key.as_str()).or_unavailable(WHAT)?.map(|v| v.value()).unwrap_or(0);
            let prefix = format!("{legacy_key}#");
            let end = keys::prefix_end(&prefix);
            let mut per_job: u64 = 0;
            for entry in table.range(prefix.as_str()..end.as_str()).or_unavailable(WHAT)? {
                per_job += entry.or_unavailable(WHAT)?.1.value();
            }
            Ok(legacy + per_job)
        })
        .await
    }

    async fn live_jobs(&self, mandator: &MandatorId, at_most: u32) -> Result<u32, StoreError> {
        let prefix = keys::live_prefix(mandator);
        self.blocking("counting live jobs", move |db| {
            const WHAT: &str = "counting live jobs";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let table = match read.open_table(LIVE_JOBS) {
                Ok(table) => table,
                // No job has been created since the store was made.
                Err(TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(e).or_unavailable(WHAT),
            };
            let end = keys::prefix_end(&prefix);
            let mut count = 0;
            for entry in table.range(prefix.as_str()..end.as_str()).or_unavailable(WHAT)?.take(at_most as usize) {
                entry.or_unavailable(WHAT)?;
                count += 1;
            }
            Ok(count)
        })
        .await
    }

    async fn stalled_jobs(&self, before: DateTime<Utc>, limit: u32) -> Result<Vec<ProgressWatch>, StoreError> {
        // Every index key up to the last second `before` names sorts before this bound.
        let bound = keys::due_bound(before);
        self.blocking("reading stalled jobs", move |db| {
            const WHAT: &str = "reading stalled jobs";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let (index, watches) = match (read.open_table(WATCH_INDEX), read.open_table(JOB_WATCHES)) {
                (Ok(index), Ok(watches)) => (index, watches),
                // No job was ever created here.
                (Err(TableError::TableDoesNotExist(_)), _) | (_, Err(TableError::TableDoesNotExist(_))) => {
                    return Ok(Vec::new());
                }
                (Err(e), _) | (_, Err(e)) => return Err(StoreError::unavailable(WHAT, e)),
            };
            let mut found = Vec::new();
            for entry in index.range::<&str>(..bound.as_str()).or_unavailable(WHAT)? {
                if found.len() >= limit as usize {
                    break;
                }
                let (_, live_key) = entry.or_unavailable(WHAT)?;
                let live_key = live_key.value();
                let Some(stored) = watches.get(live_key).or_unavailable(WHAT)? else {
                    return Err(StoreError::Corrupt(format!("the watch index names {live_key}, which has no watch")));
                };
                let stored: StoredWatch =
                    serde_json::from_slice(stored.value()).map_err(|e| corrupt("watch", live_key, e))?;
                found.push(stored.watch());
            }
            Ok(found)
        })
        .await
    }

    async fn replace_watch(&self, previous: &ProgressWatch, next: &ProgressWatch) -> Result<bool, StoreError> {
        let live_key = keys::live_key(&previous.mandator_id, previous.job_id);
        let (previous, next) = (previous.clone(), next.clone());
        self.blocking("updating a progress watch", move |db| {
            const WHAT: &str = "updating a progress watch";
            let write = db.begin_write().or_unavailable(WHAT)?;
            // The watch exists only while the job is live.
            if read_watch(&write, &live_key)?.as_ref() != Some(&previous) {
                return Ok(false);
            }
            remove_watch(&write, &live_key)?;
            put_watch(&write, &live_key, &next)?;
            write.commit().or_unavailable(WHAT)?;
            Ok(true)
        })
        .await
    }

    async fn key_claim(
        &self,
        mandator: &MandatorId,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Option<KeyClaim>, StoreError> {
        let idem_key = keys::idempotency_key(mandator, key);
        self.blocking("reading an idempotency key", move |db| {
            const WHAT: &str = "reading an idempotency key";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let table = read.open_table(IDEMPOTENCY).or_unavailable(WHAT)?;
            let Some(stored) = table.get(idem_key.as_str()).or_unavailable(WHAT)? else { return Ok(None) };
            let stored: StoredKey =
                serde_json::from_slice(stored.value()).map_err(|e| corrupt("idempotency key", &idem_key, e))?;
            // An expired key is free again.
            Ok((stored.expires_at > now)
                .then_some(KeyClaim::Existing { job_id: stored.job_id, request_hash: stored.request_hash }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segments_core::rules::SegmentRequest;

    /// A counter that completions raised before per-job usage records still counts, beside the
    /// records of the jobs completed since.
    #[tokio::test]
    async fn usage_adds_a_counter_written_before_per_job_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mandator = MandatorId::parse("bank-1").unwrap();
        let segment_type = SegmentType::HighBalance;
        let body = br#"{"accountType":"checking","threshold":5000,"currency":"EUR"}"#;
        let request = SegmentRequest::parse(segment_type, body, Utc::now().date_naive()).unwrap();
        let job = Job::new(mandator.clone(), request.as_of, request.params, None, 1, Utc::now());
        let month = job.usage_month();
        let legacy = usage_embedded_key(&mandator, month, segment_type);
        store
            .blocking("writing an old counter", move |db| {
                let write = db.begin_write().or_unavailable("writing")?;
                write
                    .open_table(USAGE)
                    .or_unavailable("writing")?
                    .insert(legacy.as_str(), 7)
                    .or_unavailable("writing")?;
                write.commit().or_unavailable("writing")
            })
            .await
            .unwrap();
        assert_eq!(store.usage(&mandator, month, segment_type).await.unwrap(), 7);
        store.create(&job).await.unwrap();
        let summary = ResultSummary { total_elements: 0, chunk_size: 1000, chunk_count: 0 };
        assert!(store.complete(&job, summary).await.unwrap());
        assert_eq!(store.usage(&mandator, month, segment_type).await.unwrap(), 8);
        assert_eq!(store.usage(&mandator, month, SegmentType::LowBalance).await.unwrap(), 0);
        let other = MandatorId::parse("bank-1x").unwrap();
        assert_eq!(
            store.usage(&other, month, segment_type).await.unwrap(),
            0,
            "a longer mandator id is another mandator"
        );
    }
}
