//! Job records in DynamoDB. Every state change is one conditional write: a redelivered message
//! or a re-run finalize finds the condition false and changes nothing (DESIGN §7).

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use tracing::instrument;

use super::items::{ERROR, PARTITION_KEY, SHARDS_DONE, STATUS, decode_job, job_item, job_key, n, result_attributes, s};
use crate::domain::{JobId, MandatorId};
use crate::jobs::{Job, JobStatus, ResultSummary};
use crate::ports::{JobStore, StoreError};

/// A failure reason is kept to this many characters: it is shown to the caller, not a log.
const MAX_REASON_CHARS: usize = 2000;

/// The Jobs table (layout in the `items` module, DESIGN §6).
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

    #[instrument(skip_all, fields(mandator_id = %mandator, job_id = %job_id, shards_done = shards_done))]
    async fn record_progress(&self, mandator: &MandatorId, job_id: JobId, shards_done: u32) -> Result<(), StoreError> {
        let update = self
            .update(mandator, job_id)
            .update_expression("SET #done = :done")
            .condition_expression("#done < :done AND #status IN (:queued, :running)")
            .expression_attribute_names("#done", SHARDS_DONE)
            .expression_attribute_values(":done", n(shards_done));
        self.apply(update, "recording progress", job_id).await.map(drop)
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, job_id = %job_id))]
    async fn complete(&self, mandator: &MandatorId, job_id: JobId, result: ResultSummary) -> Result<bool, StoreError> {
        let [total, size, count] = result_attributes(&result);
        let update = self
            .update(mandator, job_id)
            .update_expression("SET #status = :completed, #total = :total, #size = :size, #count = :count")
            .condition_expression("#status IN (:queued, :running)")
            .expression_attribute_values(":completed", s(JobStatus::Completed.as_str()))
            .expression_attribute_names("#total", total.0)
            .expression_attribute_values(":total", total.1)
            .expression_attribute_names("#size", size.0)
            .expression_attribute_values(":size", size.1)
            .expression_attribute_names("#count", count.0)
            .expression_attribute_values(":count", count.1);
        self.apply(update, "completing", job_id).await
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
