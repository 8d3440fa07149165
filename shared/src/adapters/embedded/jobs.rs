//! Job records. Every transition is a read-check-write inside one write transaction; redb runs
//! one write transaction at a time, so the check and the write are atomic like DynamoDB's
//! conditional updates.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{EmbeddedStore, JOBS, OrUnavailable, corrupt, keys};
use crate::domain::{JobId, MandatorId, SegmentType};
use crate::jobs::{Job, JobMessage, JobStatus, ResultSummary};
use crate::ports::{JobStore, StoreError};
use crate::segments::SegmentParams;

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
    shards_done: u32,
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
        shards_done: job.shards_done,
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
        shards_done: s.shards_done,
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

/// Every QUEUED or RUNNING job, of every mandator.
pub(super) fn unfinished(db: &Database) -> Result<Vec<JobMessage>, StoreError> {
    const WHAT: &str = "listing unfinished jobs";
    let read = db.begin_read().or_unavailable(WHAT)?;
    let table = read.open_table(JOBS).or_unavailable(WHAT)?;
    let mut out = Vec::new();
    for entry in table.iter().or_unavailable(WHAT)? {
        let (key, value) = entry.or_unavailable(WHAT)?;
        let job = decode(key.value(), value.value())?;
        if !job.status.is_final() {
            out.push(JobMessage { mandator_id: job.mandator_id, job_id: job.job_id, segment_type: job.segment_type });
        }
    }
    Ok(out)
}

#[async_trait]
impl JobStore for EmbeddedStore {
    async fn create(&self, job: &Job) -> Result<(), StoreError> {
        let key = keys::job_key(&job.mandator_id, job.job_id);
        let value = encode(job)?;
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

    async fn record_progress(&self, mandator: &MandatorId, job_id: JobId, shards_done: u32) -> Result<(), StoreError> {
        let key = keys::job_key(mandator, job_id);
        self.blocking("updating a job", move |db| {
            update(db, &key, |job| {
                let raises = !job.status.is_final() && shards_done > job.shards_done;
                if raises {
                    job.shards_done = shards_done;
                }
                raises
            })
            .map(drop)
        })
        .await
    }

    async fn complete(&self, mandator: &MandatorId, job_id: JobId, result: ResultSummary) -> Result<bool, StoreError> {
        let key = keys::job_key(mandator, job_id);
        self.blocking("updating a job", move |db| {
            let changed = update(db, &key, |job| {
                let open = !job.status.is_final();
                if open {
                    job.status = JobStatus::Completed;
                    job.result = Some(result);
                }
                open
            })?;
            Ok(changed.unwrap_or(false))
        })
        .await
    }

    async fn fail(&self, mandator: &MandatorId, job_id: JobId, reason: &str) -> Result<bool, StoreError> {
        let key = keys::job_key(mandator, job_id);
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        self.blocking("updating a job", move |db| {
            let changed = update(db, &key, |job| {
                let open = !job.status.is_final();
                if open {
                    job.status = JobStatus::Failed;
                    job.error = Some(reason);
                }
                open
            })?;
            Ok(changed.unwrap_or(false))
        })
        .await
    }
}
