//! Job records in DynamoDB. Every state change is one conditional write: a redelivered message
//! or a re-run finalize finds the condition false and changes nothing (docs/jobs.md).
//!
//! Beside the jobs, in the same table and partition (`pk = M#{mandatorId}`):
//! - idempotency keys, `sk = IDEM#{key}`: `jobId`, `requestHash`, `expiresAt` (the job's, so TTL
//!   removes both together), written in one transaction with the job they name;
//! - usage records, `sk = USAGE#{YYYY-MM}#{segmentType}#{jobId}`, one per completed job, put (if
//!   absent) in the transaction that completes the job; no job's completion writes an item another
//!   job's completion writes, so completions never conflict. The counters written before,
//!   `sk = USAGE#{YYYY-MM}#{segmentType}`, `jobs` (N), are still read and added;
//! - live markers, `sk = LIVE#{jobId}`, `expiresAt` (the job's), put with the job and deleted in
//!   the write that makes it final, so the live jobs of a mandator are a Query of `LIVE#` that
//!   stops at the limit. A marker also holds the job's progress watch (`sweepPartition`,
//!   `progressAt`, `shardsSeen`, `idleSweeps`), which the sparse index `ProgressIndex` orders by
//!   `progressAt` across mandators: the sweeper's Query of stalled jobs reads live jobs only.
//!   Markers written before watches existed have none and are not swept.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, ReturnValue, Select, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use tracing::instrument;

use super::items::{
    DONE_SHARDS, ERROR, IDLE_SWEEPS, Item, PARTITION_KEY, PROGRESS_AT, PROGRESS_INDEX, SHARDS_DONE, SHARDS_SEEN,
    SORT_KEY, STATUS, SWEEP_PARTITION, decode_job, job_item, job_key, job_pk, n, result_attributes, s, sweep_partition,
    sweep_partition_name,
};
use super::progress_index::{PROGRESS, entries_up_to};
use segments_core::domain::{JobId, MandatorId, Month, SegmentType};
use segments_core::jobs::{
    IdempotencyKey, Job, JobStatus, LIVE_SORT_PREFIX, ProgressWatch, ResultSummary, USAGE_JOBS_ATTRIBUTE,
    idempotency_sort_key, live_sort_key, usage_job_prefix, usage_job_sort_key, usage_sort_key,
};
use segments_core::ports::{JobStore, KeyClaim, StoreError};

// Attributes of an idempotency key item.
const KEY_JOB_ID: &str = "jobId";
const KEY_REQUEST_HASH: &str = "requestHash";
const KEY_EXPIRES_AT: &str = super::items::JOBS_TTL_ATTRIBUTE;

/// How often a key claim is retried when the key it lost to has disappeared meanwhile (expired
/// and removed between the claim and the read).
const CLAIM_ATTEMPTS: usize = 3;

/// A failure reason is kept to this many characters: it is shown to the caller, not a log.
const MAX_REASON_CHARS: usize = 2000;

/// The Jobs table (layout in the `items` module, docs/storage.md).
#[derive(Debug, Clone)]
pub struct DynamoJobs {
    client: Client,
    table: String,
}

impl DynamoJobs {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoJobs { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// An update of the job's item, with `#status` bound and `:queued`/`:running` defined: the
    /// non-final states every transition's condition names.
    fn update(&self, mandator: &MandatorId, job_id: JobId) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(job_key(mandator, job_id)))
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_values(":queued", s(JobStatus::Queued.as_str()))
            .expression_attribute_values(":running", s(JobStatus::Running.as_str()))
    }

    fn key_of(mandator: &MandatorId, sort_key: String) -> Item {
        HashMap::from([(PARTITION_KEY.to_owned(), s(job_pk(mandator))), (SORT_KEY.to_owned(), s(sort_key))])
    }

    /// The idempotency key's record, if any (expired or not).
    async fn read_key(
        &self,
        mandator: &MandatorId,
        key: &IdempotencyKey,
    ) -> Result<Option<(KeyClaim, i64)>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key_of(mandator, idempotency_sort_key(key))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::unavailable("reading an idempotency key", e.into_service_error()))?;
        let Some(item) = out.item else { return Ok(None) };
        let text = |name: &str| match item.get(name) {
            Some(AttributeValue::S(v)) | Some(AttributeValue::N(v)) => Ok(v.clone()),
            _ => Err(StoreError::Corrupt(format!("idempotency key {key:?}: attribute {name} is missing"))),
        };
        let job_id = JobId::parse(&text(KEY_JOB_ID)?)
            .map_err(|e| StoreError::Corrupt(format!("idempotency key {key:?}: {e}")))?;
        let expires_at: i64 = text(KEY_EXPIRES_AT)?
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("idempotency key {key:?}: {KEY_EXPIRES_AT}: {e}")))?;
        Ok(Some((KeyClaim::Existing { job_id, request_hash: text(KEY_REQUEST_HASH)? }, expires_at)))
    }

    /// The put of a new job's item, conditional on its absence.
    fn put_job(&self, job: &Job) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(job_item(job)?))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .build()
            .map_err(|e| StoreError::Corrupt(format!("creating job {}: {e}", job.job_id)))
    }

    /// The put of a new job's live marker; it expires with the job, so TTL removes a marker whose
    /// job was never made final together with the job.
    fn put_live_marker(&self, job: &Job) -> Result<Put, StoreError> {
        let mut marker = Self::key_of(&job.mandator_id, live_sort_key(job.job_id));
        marker.insert(KEY_EXPIRES_AT.to_owned(), n(job.expires_at.timestamp()));
        let watch = ProgressWatch::of_new_job(job);
        marker.insert(SWEEP_PARTITION.to_owned(), s(sweep_partition(job.job_id)));
        marker.insert(PROGRESS_AT.to_owned(), n(watch.progress_at.timestamp()));
        marker.insert(SHARDS_SEEN.to_owned(), n(watch.shards_seen));
        marker.insert(IDLE_SWEEPS.to_owned(), n(watch.idle_sweeps));
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(marker))
            .build()
            .map_err(|e| StoreError::Corrupt(format!("marking job {} live: {e}", job.job_id)))
    }

    /// The delete of a job's live marker (unconditional: a job created before markers existed
    /// has none).
    fn delete_live_marker(&self, mandator: &MandatorId, job_id: JobId) -> Result<Delete, StoreError> {
        Delete::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key_of(mandator, live_sort_key(job_id))))
            .build()
            .map_err(|e| StoreError::Corrupt(format!("unmarking job {job_id}: {e}")))
    }

    /// Counts the items of the mandator's partition whose sort key starts with `prefix`, reading
    /// no more than `at_most` of them when given (`Select = COUNT`: only the count comes back).
    async fn count_prefix(
        &self,
        mandator: &MandatorId,
        prefix: &str,
        at_most: Option<u32>,
        what: &str,
    ) -> Result<u64, StoreError> {
        let mut count: u64 = 0;
        let mut start: Option<Item> = None;
        loop {
            let remaining = at_most.map(|m| u64::from(m).saturating_sub(count));
            if remaining == Some(0) {
                return Ok(count);
            }
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .select(Select::Count)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#sk", SORT_KEY)
                .expression_attribute_values(":pk", s(job_pk(mandator)))
                .expression_attribute_values(":prefix", s(prefix))
                .set_limit(remaining.map(|r| i32::try_from(r).unwrap_or(i32::MAX)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::unavailable(what.to_owned(), e.into_service_error()))?;
            count += u64::try_from(out.count).unwrap_or(0);
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(count),
            }
        }
    }

    /// Sends a conditional update: `Ok(true)` when it applied, `Ok(false)` when its condition was
    /// false (the job is missing or not in the expected state).
    async fn apply(&self, update: UpdateItemFluentBuilder, what: &str, job_id: JobId) -> Result<bool, StoreError> {
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e) => match e.into_service_error() {
                UpdateItemError::ConditionalCheckFailedException(_) => Ok(false),
                other => Err(StoreError::unavailable(format!("{what} of job {job_id}"), other)),
            },
        }
    }
}

#[async_trait]
impl JobStore for DynamoJobs {
    #[instrument(skip_all, fields(mandator_id = %job.mandator_id, job_id = %job.job_id, segment_type = %job.segment_type))]
    async fn create(&self, job: &Job) -> Result<(), StoreError> {
        let sent = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(self.put_job(job)?).build())
            .transact_items(TransactWriteItem::builder().put(self.put_live_marker(job)?).build())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                TransactWriteItemsError::TransactionCanceledException(c) if first_condition_failed(&c) => {
                    Err(StoreError::Conflict(format!("job {} exists already", job.job_id)))
                }
                other => Err(StoreError::unavailable(format!("creating job {}", job.job_id), other)),
            },
        }
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, job_id = %job_id))]
    async fn get(&self, mandator: &MandatorId, job_id: JobId) -> Result<Option<Job>, StoreError> {
        // Strongly consistent: a poller must see the state the last writer left.
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(job_key(mandator, job_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::unavailable(format!("reading job {job_id}"), e.into_service_error()))?;
        out.item.map(decode_job).transpose()
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, job_id = %job_id))]
    async fn mark_running(&self, mandator: &MandatorId, job_id: JobId) -> Result<(), StoreError> {
        let update = self
            .update(mandator, job_id)
            .update_expression("SET #status = :running")
            .condition_expression("#status = :queued");
        self.apply(update, "marking running", job_id).await.map(drop)
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, job_id = %job_id, shard = shard))]
    async fn record_shard(&self, mandator: &MandatorId, job_id: JobId, shard: u32) -> Result<Option<Job>, StoreError> {
        let update = self
            .update(mandator, job_id)
            .update_expression("ADD #shards :shard SET #status = :running")
            .condition_expression("#status IN (:queued, :running)")
            .expression_attribute_names("#shards", DONE_SHARDS)
            .expression_attribute_values(":shard", AttributeValue::Ns(vec![shard.to_string()]))
            .return_values(ReturnValue::AllNew);
        let item = match update.send().await {
            Ok(out) => out.attributes,
            Err(e) => match e.into_service_error() {
                // Final or missing: nothing to record; the caller acts on what is there.
                UpdateItemError::ConditionalCheckFailedException(_) => return self.get(mandator, job_id).await,
                other => {
                    return Err(StoreError::unavailable(format!("recording shard {shard} of job {job_id}"), other));
                }
            },
        };
        let Some(item) = item else {
            return Err(StoreError::Corrupt(format!("recording shard {shard} of job {job_id} returned no item")));
        };
        let stored_count = match item.get(SHARDS_DONE) {
            Some(AttributeValue::N(c)) => c.parse::<u32>().unwrap_or(0),
            _ => 0,
        };
        let job = decode_job(item)?;
        if stored_count < job.shards_done {
            // The count beside the set, for readers of the raw item; it only ever rises.
            let update = self
                .update(mandator, job_id)
                .update_expression("SET #done = :done")
                .condition_expression("#done < :done AND #status IN (:queued, :running)")
                .expression_attribute_names("#done", SHARDS_DONE)
                .expression_attribute_values(":done", n(job.shards_done));
            self.apply(update, "recording progress", job_id).await?;
        }
        Ok(Some(job))
    }

    #[instrument(skip_all, fields(mandator_id = %job.mandator_id, job_id = %job.job_id, segment_type = %job.segment_type))]
    async fn complete(&self, job: &Job, result: ResultSummary) -> Result<bool, StoreError> {
        let job_id = job.job_id;
        let [total, size, count] = result_attributes(&result);
        let complete = Update::builder()
            .table_name(&self.table)
            .set_key(Some(job_key(&job.mandator_id, job_id)))
            .update_expression("SET #status = :completed, #total = :total, #size = :size, #count = :count")
            .condition_expression("#status IN (:queued, :running)")
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_values(":queued", s(JobStatus::Queued.as_str()))
            .expression_attribute_values(":running", s(JobStatus::Running.as_str()))
            .expression_attribute_values(":completed", s(JobStatus::Completed.as_str()))
            .expression_attribute_names("#total", total.0)
            .expression_attribute_values(":total", total.1)
            .expression_attribute_names("#size", size.0)
            .expression_attribute_values(":size", size.1)
            .expression_attribute_names("#count", count.0)
            .expression_attribute_values(":count", count.1)
            .build()
            .map_err(|e| StoreError::Corrupt(format!("completing job {job_id}: {e}")))?;
        // This job's own usage record, not a counter shared by the mandator's jobs: two jobs
        // completing together would conflict on a shared item, and the loser would redo its whole
        // merge. A per-job record conflicts with nothing; `usage` sums them with a Query. (Counters
        // split over N items by job id hash would still collide whenever more than N jobs
        // complete together.) Conditional on its absence, so it is written once per job.
        let mut record =
            Self::key_of(&job.mandator_id, usage_job_sort_key(job.usage_month(), job.segment_type, job_id));
        record.insert(USAGE_JOBS_ATTRIBUTE.to_owned(), n(1));
        let meter = Put::builder()
            .table_name(&self.table)
            .set_item(Some(record))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .build()
            .map_err(|e| StoreError::Corrupt(format!("metering job {job_id}: {e}")))?;
        let sent = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(complete).build())
            .transact_items(TransactWriteItem::builder().put(meter).build())
            .transact_items(
                TransactWriteItem::builder().delete(self.delete_live_marker(&job.mandator_id, job_id)?).build(),
            )
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) => match e.into_service_error() {
                TransactWriteItemsError::TransactionCanceledException(c) if first_condition_failed(&c) => Ok(false),
                TransactWriteItemsError::TransactionCanceledException(c) if condition_failed(&c, 1) => {
                    Err(StoreError::Corrupt(format!("job {job_id} is not final but its usage is recorded")))
                }
                other => Err(StoreError::unavailable(format!("completing job {job_id}"), other)),
            },
        }
    }

    #[instrument(skip_all, fields(mandator_id = %job.mandator_id, job_id = %job.job_id, segment_type = %job.segment_type))]
    async fn create_with_key(
        &self,
        job: &Job,
        key: &IdempotencyKey,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<KeyClaim, StoreError> {
        let mut claim_item = Self::key_of(&job.mandator_id, idempotency_sort_key(key));
        claim_item.insert(KEY_JOB_ID.to_owned(), s(job.job_id.to_string()));
        claim_item.insert(KEY_REQUEST_HASH.to_owned(), s(request_hash));
        claim_item.insert(KEY_EXPIRES_AT.to_owned(), n(job.expires_at.timestamp()));
        for _ in 0..CLAIM_ATTEMPTS {
            // The key is free when absent or expired (TTL deletes late; readers must not wait).
            let claim = Put::builder()
                .table_name(&self.table)
                .set_item(Some(claim_item.clone()))
                .condition_expression("attribute_not_exists(#pk) OR #expires <= :now")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#expires", KEY_EXPIRES_AT)
                .expression_attribute_values(":now", n(now.timestamp()))
                .build()
                .map_err(|e| StoreError::Corrupt(format!("claiming an idempotency key: {e}")))?;
            let sent = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(claim).build())
                .transact_items(TransactWriteItem::builder().put(self.put_job(job)?).build())
                .transact_items(TransactWriteItem::builder().put(self.put_live_marker(job)?).build())
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(KeyClaim::Created),
                Err(e) => match e.into_service_error() {
                    TransactWriteItemsError::TransactionCanceledException(c) if first_condition_failed(&c) => {
                        match self.read_key(&job.mandator_id, key).await? {
                            Some((existing, expires_at)) if expires_at > now.timestamp() => return Ok(existing),
                            // Expired or removed since: claim again.
                            _ => continue,
                        }
                    }
                    TransactWriteItemsError::TransactionCanceledException(_) => {
                        return Err(StoreError::Conflict(format!("job {} exists already", job.job_id)));
                    }
                    other => {
                        return Err(StoreError::unavailable(format!("creating job {}", job.job_id), other));
                    }
                },
            }
        }
        Err(StoreError::unavailable(
            format!("claiming idempotency key for job {}", job.job_id),
            "the key changed hands repeatedly",
        ))
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, segment_type = %segment_type))]
    async fn usage(&self, mandator: &MandatorId, month: Month, segment_type: SegmentType) -> Result<u64, StoreError> {
        // One record per completed job: the Query reads them all, in pages of up to 1 MB (about
        // 10,000 of these small items, some 250 read units each). Thousands of jobs a month are a
        // page or two; `GET /usage` is a billing read, called rarely, and its cost grows with the
        // jobs it counts, which each cost far more to run.
        let per_job =
            self.count_prefix(mandator, &usage_job_prefix(month, segment_type), None, "reading usage").await?;
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key_of(mandator, usage_sort_key(month, segment_type))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::unavailable("reading usage", e.into_service_error()))?;
        // The counter completions raised before per-job records; absent in a table that never had it.
        let legacy: u64 = match out.item.as_ref().and_then(|i| i.get(USAGE_JOBS_ATTRIBUTE)) {
            None => 0,
            Some(AttributeValue::N(count)) => {
                count.parse().map_err(|e| StoreError::Corrupt(format!("usage counter {month}/{segment_type}: {e}")))?
            }
            Some(_) => {
                return Err(StoreError::Corrupt(format!("usage counter {month}/{segment_type} is not a number")));
            }
        };
        Ok(per_job + legacy)
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, at_most))]
    async fn live_jobs(&self, mandator: &MandatorId, at_most: u32) -> Result<u32, StoreError> {
        let count = self.count_prefix(mandator, LIVE_SORT_PREFIX, Some(at_most), "counting live jobs").await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    #[instrument(skip_all, fields(before = %before, limit))]
    async fn stalled_jobs(&self, before: DateTime<Utc>, limit: u32) -> Result<Vec<ProgressWatch>, StoreError> {
        // The index holds only live markers in these partitions (the attributes exist on nothing
        // else), so this reads stalled live jobs and no other item.
        let entries = entries_up_to(
            &self.client,
            &self.table,
            PROGRESS,
            sweep_partition_name,
            before,
            limit,
            "reading stalled jobs",
        )
        .await?;
        entries.iter().map(decode_watch).collect()
    }

    #[instrument(skip_all, fields(mandator_id = %previous.mandator_id, job_id = %previous.job_id))]
    async fn replace_watch(&self, previous: &ProgressWatch, next: &ProgressWatch) -> Result<bool, StoreError> {
        let job_id = previous.job_id;
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key_of(&previous.mandator_id, live_sort_key(job_id))))
            .update_expression("SET #progress = :next_progress, #seen = :next_seen, #idle = :next_idle")
            // The marker exists only while the job is live; the watch is the one the caller read.
            .condition_expression("attribute_exists(#pk) AND #progress = :progress AND #seen = :seen AND #idle = :idle")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#progress", PROGRESS_AT)
            .expression_attribute_names("#seen", SHARDS_SEEN)
            .expression_attribute_names("#idle", IDLE_SWEEPS)
            .expression_attribute_values(":progress", n(previous.progress_at.timestamp()))
            .expression_attribute_values(":seen", n(previous.shards_seen))
            .expression_attribute_values(":idle", n(previous.idle_sweeps))
            .expression_attribute_values(":next_progress", n(next.progress_at.timestamp()))
            .expression_attribute_values(":next_seen", n(next.shards_seen))
            .expression_attribute_values(":next_idle", n(next.idle_sweeps));
        self.apply(update, "updating the progress watch", job_id).await
    }

    #[instrument(skip_all, fields(mandator_id = %mandator))]
    async fn key_claim(
        &self,
        mandator: &MandatorId,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Option<KeyClaim>, StoreError> {
        Ok(self
            .read_key(mandator, key)
            .await?
            .filter(|(_, expires_at)| *expires_at > now.timestamp())
            .map(|(claim, _)| claim))
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, job_id = %job_id))]
    async fn fail(&self, mandator: &MandatorId, job_id: JobId, reason: &str) -> Result<bool, StoreError> {
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        let fail = Update::builder()
            .table_name(&self.table)
            .set_key(Some(job_key(mandator, job_id)))
            .update_expression("SET #status = :failed, #error = :error")
            .condition_expression("#status IN (:queued, :running)")
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_values(":queued", s(JobStatus::Queued.as_str()))
            .expression_attribute_values(":running", s(JobStatus::Running.as_str()))
            .expression_attribute_values(":failed", s(JobStatus::Failed.as_str()))
            .expression_attribute_names("#error", ERROR)
            .expression_attribute_values(":error", s(reason))
            .build()
            .map_err(|e| StoreError::Corrupt(format!("failing job {job_id}: {e}")))?;
        let sent = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(fail).build())
            .transact_items(TransactWriteItem::builder().delete(self.delete_live_marker(mandator, job_id)?).build())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) => match e.into_service_error() {
                TransactWriteItemsError::TransactionCanceledException(c) if first_condition_failed(&c) => Ok(false),
                other => Err(StoreError::unavailable(format!("failing job {job_id}"), other)),
            },
        }
    }
}

/// The watch of a live marker as the index projects it (the table's keys, `progressAt`,
/// `shardsSeen`, `idleSweeps`).
fn decode_watch(item: &Item) -> Result<ProgressWatch, StoreError> {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) | Some(AttributeValue::N(v)) => Ok(v.as_str()),
        _ => Err(StoreError::Corrupt(format!("a live marker in {PROGRESS_INDEX} lacks {name}"))),
    };
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("a live marker's {what}: {e}"));
    let mandator =
        text(PARTITION_KEY)?.strip_prefix("M#").ok_or_else(|| corrupt(PARTITION_KEY, &"not a mandator partition"))?;
    let mandator_id = MandatorId::parse(mandator).map_err(|e| corrupt(PARTITION_KEY, &e))?;
    let job = text(SORT_KEY)?.strip_prefix(LIVE_SORT_PREFIX).ok_or_else(|| corrupt(SORT_KEY, &"not a live marker"))?;
    let job_id = JobId::parse(job).map_err(|e| corrupt(SORT_KEY, &e))?;
    let number = |name: &str| text(name)?.parse::<i64>().map_err(|e| corrupt(name, &e));
    let progress_at =
        DateTime::from_timestamp(number(PROGRESS_AT)?, 0).ok_or_else(|| corrupt(PROGRESS_AT, &"out of range"))?;
    let count = |name: &str| u32::try_from(number(name)?).map_err(|e| corrupt(name, &e));
    Ok(ProgressWatch {
        mandator_id,
        job_id,
        progress_at,
        shards_seen: count(SHARDS_SEEN)?,
        idle_sweeps: count(IDLE_SWEEPS)?,
    })
}

/// Whether a cancelled transaction failed on the condition of its first item (the job or the
/// key the caller tests), rather than on another item or a conflict with another transaction.
fn first_condition_failed(e: &aws_sdk_dynamodb::types::error::TransactionCanceledException) -> bool {
    condition_failed(e, 0)
}

/// Whether a cancelled transaction failed on the condition of its item at `index`.
fn condition_failed(e: &aws_sdk_dynamodb::types::error::TransactionCanceledException, index: usize) -> bool {
    e.cancellation_reasons().get(index).and_then(|r| r.code()) == Some("ConditionalCheckFailed")
}
