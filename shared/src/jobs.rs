//! The job record, its lifecycle (DESIGN §7) and where its results live (DESIGN §6).

use chrono::{DateTime, Duration, NaiveDate, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{JobId, MandatorId, SegmentType};
use crate::segments::{SegmentParams, SegmentSpec};

/// Results and job records live this long (DESIGN §1).
pub const RESULT_RETENTION_DAYS: i64 = 14;

/// Number of users per result chunk. At least the largest `perPage` (500), so any page spans at
/// most two chunks and is served with at most two GETs.
pub const DEFAULT_CHUNK_SIZE: u32 = 1000;
pub const MAX_PER_PAGE: u32 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "QUEUED",
            JobStatus::Running => "RUNNING",
            JobStatus::Completed => "COMPLETED",
            JobStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "QUEUED" => Some(JobStatus::Queued),
            "RUNNING" => Some(JobStatus::Running),
            "COMPLETED" => Some(JobStatus::Completed),
            "FAILED" => Some(JobStatus::Failed),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }
}

/// Where a completed job's result is: `totalElements` users in `chunk_count` chunks of
/// `chunk_size` users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultSummary {
    pub total_elements: u64,
    pub chunk_size: u32,
    pub chunk_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub mandator_id: MandatorId,
    pub job_id: JobId,
    pub segment_type: SegmentType,
    pub status: JobStatus,
    pub as_of: NaiveDate,
    pub params: SegmentParams,
    pub callback_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub shards_total: u32,
    pub shards_done: u32,
    pub result: Option<ResultSummary>,
    pub error: Option<String>,
}

impl Job {
    pub fn new(
        mandator_id: MandatorId,
        as_of: NaiveDate,
        params: SegmentParams,
        callback_url: Option<String>,
        shards_total: u32,
        now: DateTime<Utc>,
    ) -> Job {
        // Whole seconds: the expiry is also the store's TTL attribute (epoch seconds), and a
        // record must read back equal to what was written, whatever the store.
        let now = now.trunc_subsecs(0);
        Job {
            mandator_id,
            job_id: JobId::new(),
            segment_type: params.segment_type(),
            status: JobStatus::Queued,
            as_of,
            params,
            callback_url,
            created_at: now,
            expires_at: now + Duration::days(RESULT_RETENTION_DAYS),
            shards_total,
            shards_done: 0,
            result: None,
            error: None,
        }
    }

    /// Expired jobs are unknown to readers even before the store's TTL deletes them.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    pub fn spec(&self) -> SegmentSpec {
        SegmentSpec { as_of: self.as_of, params: self.params.clone() }
    }

    pub fn layout(&self) -> ResultLayout {
        ResultLayout::new(&self.mandator_id, self.segment_type, self.job_id)
    }
}

/// The message a worker receives: which job (and, with fan-out, which shard) to work on. It
/// carries no parameters: the job record is the single source of truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobMessage {
    pub mandator_id: MandatorId,
    pub job_id: JobId,
    pub segment_type: SegmentType,
}

/// Object keys of a job's results: `results/{mandatorId}/{segmentType}/{jobId}/…`. The mandator
/// prefix keeps tenants apart; the `results/` prefix is what the bucket's 14-day lifecycle covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultLayout {
    prefix: String,
}

impl ResultLayout {
    pub fn new(mandator: &MandatorId, segment_type: SegmentType, job_id: JobId) -> Self {
        ResultLayout { prefix: format!("results/{mandator}/{segment_type}/{job_id}/") }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn chunk(&self, index: u32) -> String {
        format!("{}chunks/{index:06}.ndjson", self.prefix)
    }

    pub fn manifest(&self) -> String {
        format!("{}manifest.json", self.prefix)
    }
}

/// The chunks (and the user range within each) that hold users `start..end` of a result, in
/// order. With `chunk_size ≥ perPage` that is at most two chunks.
pub fn chunks_for_range(start: u64, end: u64, chunk_size: u32) -> Vec<(u32, std::ops::Range<usize>)> {
    let size = u64::from(chunk_size.max(1));
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let chunk = at / size;
        let chunk_end = ((chunk + 1) * size).min(end);
        out.push((chunk as u32, ((at - chunk * size) as usize)..((chunk_end - chunk * size) as usize)));
        at = chunk_end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_within_one_chunk_reads_one_chunk() {
        assert_eq!(chunks_for_range(0, 20, 1000), vec![(0, 0..20)]);
        assert_eq!(chunks_for_range(1000, 1500, 1000), vec![(1, 0..500)]);
    }

    #[test]
    fn a_page_across_a_chunk_boundary_reads_two() {
        assert_eq!(chunks_for_range(900, 1400, 1000), vec![(0, 900..1000), (1, 0..400)]);
    }

    #[test]
    fn any_page_of_at_most_chunk_size_users_reads_at_most_two_chunks() {
        for start in (0..5000).step_by(37) {
            for per_page in [1, 7, 499, 500] {
                assert!(chunks_for_range(start, start + per_page, DEFAULT_CHUNK_SIZE).len() <= 2);
            }
        }
    }

    #[test]
    fn keys_are_prefixed_by_mandator() {
        let id = JobId::new();
        let l = ResultLayout::new(&MandatorId::parse("bank-1").unwrap(), SegmentType::HighBalance, id);
        assert_eq!(l.chunk(3), format!("results/bank-1/highBalance/{id}/chunks/000003.ndjson"));
    }
}
