//! Listing a mandator's jobs from the `jobs` table: a reverse range scan of the mandator's keys
//! (`M#{mandator}#JOB#…`; job ids are UUIDv7, so the newest comes first), in batches of keys, each
//! job read through [`JobStore::get`] so the record format has one decoder.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::ReadableDatabase;

use super::{EmbeddedStore, JOBS, OrUnavailable, keys};
use segments_core::domain::{JobId, MandatorId, SegmentType};
use segments_core::ports::{JobCatalog, JobPage, JobStore, StoreError};

/// Keys read per read transaction.
const KEY_BATCH: usize = 200;

/// Up to `KEY_BATCH` job ids of the mandator below `end` (a key), newest first.
fn job_ids_before(db: &redb::Database, prefix: String, end: String) -> Result<Vec<JobId>, StoreError> {
    const WHAT: &str = "listing jobs";
    let read = db.begin_read().or_unavailable(WHAT)?;
    let table = read.open_table(JOBS).or_unavailable(WHAT)?;
    let mut ids = Vec::new();
    for entry in table.range(prefix.as_str()..end.as_str()).or_unavailable(WHAT)?.rev() {
        let (key, _) = entry.or_unavailable(WHAT)?;
        let key = key.value();
        let id = key
            .strip_prefix(prefix.as_str())
            .and_then(|id| JobId::parse(id).ok())
            .ok_or_else(|| StoreError::Corrupt(format!("job key {key:?}")))?;
        ids.push(id);
        if ids.len() == KEY_BATCH {
            break;
        }
    }
    Ok(ids)
}

#[async_trait]
impl JobCatalog for EmbeddedStore {
    async fn list_jobs(
        &self,
        mandator: &MandatorId,
        segment_type: SegmentType,
        before: Option<JobId>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<JobPage, StoreError> {
        let wanted = limit as usize + 1;
        let prefix = format!("{}#JOB#", keys::mandator_key(mandator));
        let mut end = match before {
            Some(id) => keys::job_key(mandator, id),
            None => keys::prefix_end(&prefix),
        };
        let mut jobs = Vec::with_capacity(wanted);
        'batches: loop {
            let (p, e) = (prefix.clone(), end.clone());
            let ids = self.blocking("listing jobs", move |db| job_ids_before(db, p, e)).await?;
            let Some(last) = ids.last() else { break };
            end = keys::job_key(mandator, *last);
            let exhausted = ids.len() < KEY_BATCH;
            for id in ids {
                // Deleted meanwhile: not listed.
                let Some(job) = JobStore::get(self, mandator, id).await? else { continue };
                if job.segment_type != segment_type || job.is_expired(now) {
                    continue;
                }
                jobs.push(job);
                if jobs.len() == wanted {
                    break 'batches;
                }
            }
            if exhausted {
                break;
            }
        }
        let more = jobs.len() > limit as usize;
        jobs.truncate(limit as usize);
        Ok(JobPage { jobs, more })
    }
}
