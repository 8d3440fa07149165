//! Job records in DynamoDB. Every state change is one conditional write: a redelivered message
//! or a re-run finalize finds the condition false and changes nothing (docs/jobs.md).
//!
//! Beside the jobs, in the same table and partition (`pk = M#{mandatorId}`):
//! - idempotency keys, `sk = IDEM#{key}`: `jobId`, `requestHash`, `expiresAt` (the job's, so TTL
//!   removes both together), written in one transaction with the job they name;
//! - usage counters, `sk = USAGE#{YYYY-MM}#{segmentType}`, `jobs` (N), raised in the transaction
//!   that completes a job.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use tracing::instrument;

use super::items::{
    DONE_SHARDS, ERROR, Item, PARTITION_KEY, SHARDS_DONE, SORT_KEY, STATUS, decode_job, job_item, job_key, job_pk, n,
    result_attributes, s,
};
use segments_core::domain::{JobId, MandatorId, Month, SegmentType};
use segments_core::jobs::{
    IdempotencyKey, Job, JobStatus, ResultSummary, USAGE_JOBS_ATTRIBUTE, idempotency_sort_key, usage_sort_key,
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
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(job_item(job)?))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                PutItemError::ConditionalCheckFailedException(_) => {
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
        let meter = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key_of(&job.mandator_id, usage_sort_key(job.usage_month(), job.segment_type))))
            .update_expression("ADD #jobs :one")
            .expression_attribute_names("#jobs", USAGE_JOBS_ATTRIBUTE)
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(|e| StoreError::Corrupt(format!("metering job {job_id}: {e}")))?;
        let sent = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(complete).build())
            .transact_items(TransactWriteItem::builder().update(meter).build())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) => match e.into_service_error() {
                TransactWriteItemsError::TransactionCanceledException(c) if first_condition_failed(&c) => Ok(false),
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
            let create = Put::builder()
                .table_name(&self.table)
                .set_item(Some(job_item(job)?))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .build()
                .map_err(|e| StoreError::Corrupt(format!("creating job {}: {e}", job.job_id)))?;
            let sent = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(claim).build())
                .transact_items(TransactWriteItem::builder().put(create).build())
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
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key_of(mandator, usage_sort_key(month, segment_type))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::unavailable("reading usage", e.into_service_error()))?;
        match out.item.as_ref().and_then(|i| i.get(USAGE_JOBS_ATTRIBUTE)) {
            None => Ok(0),
            Some(AttributeValue::N(count)) => {
                count.parse().map_err(|e| StoreError::Corrupt(format!("usage counter {month}/{segment_type}: {e}")))
            }
            Some(_) => Err(StoreError::Corrupt(format!("usage counter {month}/{segment_type} is not a number"))),
        }
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, job_id = %job_id))]
    async fn fail(&self, mandator: &MandatorId, job_id: JobId, reason: &str) -> Result<bool, StoreError> {
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        let update = self
            .update(mandator, job_id)
            .update_expression("SET #status = :failed, #error = :error")
            .condition_expression("#status IN (:queued, :running)")
            .expression_attribute_values(":failed", s(JobStatus::Failed.as_str()))
            .expression_attribute_names("#error", ERROR)
            .expression_attribute_values(":error", s(reason));
        self.apply(update, "failing", job_id).await
    }
}

/// Whether a cancelled transaction failed on the condition of its first item (the job or the
/// key the caller tests), rather than on another item or a conflict with another transaction.
fn first_condition_failed(e: &aws_sdk_dynamodb::types::error::TransactionCanceledException) -> bool {
    e.cancellation_reasons().first().and_then(|r| r.code()) == Some("ConditionalCheckFailed")
}
