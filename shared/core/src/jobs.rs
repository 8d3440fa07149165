//! The job record, its lifecycle (docs/jobs.md), where its results live (docs/storage.md), and the keys of
//! the records kept beside the jobs: idempotency keys and usage counters.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDate, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{JobId, MandatorId, Month, SegmentType};
use crate::rules::{SegmentParams, SegmentSpec};

/// Results and job records live this long (docs/architecture.md).
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
    /// How many shards are done: always `done_shards.len()`.
    pub shards_done: u32,
    /// The shards whose part is written and recorded. A set, so a redelivered message that
    /// records its shard again does not count twice.
    pub done_shards: BTreeSet<u32>,
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
            done_shards: BTreeSet::new(),
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

    /// Whether every shard's part is recorded: the result can be finalized.
    pub fn all_shards_done(&self) -> bool {
        (0..self.shards_total).all(|shard| self.done_shards.contains(&shard))
    }

    /// The month a job is metered in: its creation month, UTC.
    pub fn usage_month(&self) -> Month {
        Month::of(self.created_at.date_naive())
    }

    /// One message per shard: what `create_job` enqueues.
    pub fn messages(&self) -> Vec<JobMessage> {
        (0..self.shards_total)
            .map(|shard| JobMessage {
                mandator_id: self.mandator_id.clone(),
                job_id: self.job_id,
                segment_type: self.segment_type,
                shard,
            })
            .collect()
    }
}

/// What the sweeper knows of a live job (docs/jobs.md, "No job hangs"), kept on the job's live
/// marker: when the job was last seen making progress, how many shards were done then, and how
/// many sweeps since found it idle and sent its unfinished shards again. The stores index it by
/// [`ProgressWatch::progress_at`], over live jobs only, so a sweep reads the jobs that have
/// stalled and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressWatch {
    pub mandator_id: MandatorId,
    pub job_id: JobId,
    /// When the job was created or last seen with more shards done than the sweep before saw;
    /// whole seconds, like every time the stores index.
    pub progress_at: DateTime<Utc>,
    /// How many shards were done at `progress_at`.
    pub shards_seen: u32,
    /// Sweeps since `progress_at` that found no progress and re-sent the unfinished shards.
    pub idle_sweeps: u32,
}

impl ProgressWatch {
    /// The watch a job starts with: created now, nothing done, never swept.
    pub fn of_new_job(job: &Job) -> ProgressWatch {
        ProgressWatch {
            mandator_id: job.mandator_id.clone(),
            job_id: job.job_id,
            progress_at: job.created_at.trunc_subsecs(0),
            shards_seen: 0,
            idle_sweeps: 0,
        }
    }
}

impl Job {
    /// The messages that finish the job from where it stands: one per shard not yet recorded, or,
    /// when every shard is, one (of shard 0) whose delivery finalizes it. Sending them again is
    /// harmless: a shard is recorded once, and parts and results have fixed keys.
    pub fn unfinished_messages(&self) -> Vec<JobMessage> {
        let mut messages = self.messages();
        if self.all_shards_done() {
            messages.truncate(1);
        } else {
            messages.retain(|m| !self.done_shards.contains(&m.shard));
        }
        messages
    }
}

/// The message a worker receives: which shard of which job to work on. It carries no parameters:
/// the job record is the single source of truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobMessage {
    pub mandator_id: MandatorId,
    pub job_id: JobId,
    pub segment_type: SegmentType,
    pub shard: u32,
}

/// The job a message body names, read leniently: enough to mark the job FAILED when the rest of
/// the message cannot be decoded or its work kept failing (the dead-letter path).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRef {
    pub mandator_id: MandatorId,
    pub job_id: JobId,
}

impl JobRef {
    /// The job of a message body, if the body names one.
    pub fn from_body(body: &str) -> Option<JobRef> {
        serde_json::from_str(body).ok()
    }
}

/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// The `Idempotency-Key` of a `POST /segments/{segmentType}`: 1 to 255 visible ASCII characters.
/// Keys are per mandator: the same key of two mandators names two requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if s.len() > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(format!("must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must consist of visible ASCII characters".to_owned());
        }
        Ok(IdempotencyKey(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The jobs-table sort key of an idempotency key record (partition `M#{mandatorId}`).
pub fn idempotency_sort_key(key: &IdempotencyKey) -> String {
    format!("IDEM#{key}")
}

/// Usage (docs/api.md `GET /usage`): the number of completed jobs per mandator, month (the job's
/// creation month, UTC) and segment type.
///
/// Each completed job writes its own usage record, in the same atomic write that completes it and
/// only if that record does not exist yet, so every job counts exactly once and two jobs
/// completing together never write the same item (a shared counter made them conflict, and the
/// loser redid its whole merge). `GET /usage` sums the records of the month and type. Records are
/// kept (no expiry): they are what the mandator is billed for.
///
/// Before per-job records, completions raised one counter per (mandator, month, type); a deployed
/// store still holds such counters, and `GET /usage` adds them.
///
/// DynamoDB: items of the Jobs table, `pk = M#{mandatorId}`, `sk =`[`usage_job_sort_key`] (one per
/// job) and the legacy counter `sk =`[`usage_sort_key`] with the count in the Number attribute
/// [`USAGE_JOBS_ATTRIBUTE`]. Embedded: the redb table [`USAGE_TABLE`], key
/// [`usage_job_embedded_key`] → 1 per job, and the legacy counter [`usage_embedded_key`] → count.
pub fn usage_sort_key(month: Month, segment_type: SegmentType) -> String {
    format!("USAGE#{month}#{segment_type}")
}

/// The common prefix of the per-job usage records of a month and type, ending in the separator,
/// so the legacy counter (the prefix without it) and other types are outside it.
pub fn usage_job_prefix(month: Month, segment_type: SegmentType) -> String {
    format!("{}#", usage_sort_key(month, segment_type))
}

/// The jobs-table sort key of one completed job's usage record: `USAGE#{YYYY-MM}#{segmentType}#{jobId}`.
pub fn usage_job_sort_key(month: Month, segment_type: SegmentType, job_id: JobId) -> String {
    format!("{}{job_id}", usage_job_prefix(month, segment_type))
}

/// The attribute of a usage item holding the count of completed jobs.
pub const USAGE_JOBS_ATTRIBUTE: &str = "jobs";

/// The embedded store's usage table.
pub const USAGE_TABLE: &str = "usage";

/// The key of a legacy usage counter in the embedded store's [`USAGE_TABLE`]: `{mandator}#{YYYY-MM}#{segmentType}`.
pub fn usage_embedded_key(mandator: &MandatorId, month: Month, segment_type: SegmentType) -> String {
    format!("{mandator}#{month}#{segment_type}")
}

/// The key of one completed job's usage record in the embedded store's [`USAGE_TABLE`]:
/// `{mandator}#{YYYY-MM}#{segmentType}#{jobId}`.
pub fn usage_job_embedded_key(mandator: &MandatorId, month: Month, segment_type: SegmentType, job_id: JobId) -> String {
    format!("{}#{job_id}", usage_embedded_key(mandator, month, segment_type))
}

/// The jobs-table sort key of a live-job marker: `LIVE#{jobId}`, in the mandator's partition.
/// Stored with the job when it is created and deleted in the write that makes the job final, so
/// the mandator's live (QUEUED or RUNNING) jobs are read by a Query of this prefix that stops
/// after the limit, instead of reading every job the mandator has. One item per job: no item is
/// shared by two jobs, so no two writes conflict on it.
pub fn live_sort_key(job_id: JobId) -> String {
    format!("{LIVE_SORT_PREFIX}{job_id}")
}

/// The prefix of every live-job marker's sort key.
pub const LIVE_SORT_PREFIX: &str = "LIVE#";

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

    /// The sorted entries of one shard (NDJSON), written by the shard's worker.
    pub fn part(&self, shard: u32) -> String {
        format!("{}parts/{shard:04}.ndjson", self.prefix)
    }

    /// The whole result, one user per line in userId order: what the export endpoint presigns.
    pub fn export_key(&self) -> String {
        format!("{}export.ndjson", self.prefix)
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
        assert_eq!(l.part(7), format!("results/bank-1/highBalance/{id}/parts/0007.ndjson"));
        assert_eq!(l.export_key(), format!("results/bank-1/highBalance/{id}/export.ndjson"));
    }

    #[test]
    fn usage_keys_name_mandator_month_and_type() {
        let month = Month::new(2026, 3).unwrap();
        assert_eq!(usage_sort_key(month, SegmentType::LowBalance), "USAGE#2026-03#lowBalance");
        let m = MandatorId::parse("bank-1").unwrap();
        assert_eq!(usage_embedded_key(&m, month, SegmentType::HighBalance), "bank-1#2026-03#highBalance");
        let id = JobId::new();
        assert_eq!(usage_job_sort_key(month, SegmentType::LowBalance, id), format!("USAGE#2026-03#lowBalance#{id}"));
        assert!(
            usage_job_sort_key(month, SegmentType::LowBalance, id)
                .starts_with(&usage_job_prefix(month, SegmentType::LowBalance))
        );
        assert!(
            !usage_sort_key(month, SegmentType::LowBalance)
                .starts_with(&usage_job_prefix(month, SegmentType::LowBalance))
        );
        assert_eq!(
            usage_job_embedded_key(&m, month, SegmentType::HighBalance, id),
            format!("bank-1#2026-03#highBalance#{id}")
        );
        assert_eq!(live_sort_key(id), format!("LIVE#{id}"));
    }

    #[test]
    fn idempotency_keys_are_1_to_255_visible_ascii_characters() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("a b").is_err());
        assert!(IdempotencyKey::parse("ä").is_err());
        assert_eq!(idempotency_sort_key(&IdempotencyKey::parse("k-1").unwrap()), "IDEM#k-1");
    }

    #[test]
    fn a_job_has_one_message_per_shard_and_is_done_when_every_shard_is() {
        let request = crate::rules::SegmentRequest::parse(
            SegmentType::InsuranceSpending,
            b"{}",
            NaiveDate::from_ymd_opt(2026, 1, 15).unwrap(),
        )
        .unwrap();
        let mut job = Job::new(MandatorId::parse("m").unwrap(), request.as_of, request.params, None, 3, Utc::now());
        let shards: Vec<u32> = job.messages().iter().map(|m| m.shard).collect();
        assert_eq!(shards, [0, 1, 2]);
        job.done_shards = BTreeSet::from([0, 2]);
        assert!(!job.all_shards_done());
        assert_eq!(job.unfinished_messages().iter().map(|m| m.shard).collect::<Vec<_>>(), [1]);
        job.done_shards.insert(1);
        assert!(job.all_shards_done());
        // Every shard recorded: one message, whose delivery finalizes.
        assert_eq!(job.unfinished_messages().len(), 1);
    }

    #[test]
    fn a_message_names_its_shard_and_its_job_reads_leniently() {
        let body = r#"{"mandatorId":"m","jobId":"01937a2b-1c3d-7e4f-8a5b-6c7d8e9f0a1b","segmentType":"highBalance","shard":3}"#;
        let m: JobMessage = serde_json::from_str(body).unwrap();
        assert_eq!(m.shard, 3);
        let broken = r#"{"mandatorId":"m","jobId":"01937a2b-1c3d-7e4f-8a5b-6c7d8e9f0a1b","shard":"x"}"#;
        assert!(serde_json::from_str::<JobMessage>(broken).is_err());
        assert_eq!(JobRef::from_body(broken).map(|r| r.job_id), Some(m.job_id));
        assert_eq!(JobRef::from_body("not json"), None);
    }
}
