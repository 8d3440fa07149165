//! Listing a mandator's jobs from the Jobs table: one Query of the mandator's partition, newest
//! first (`ScanIndexForward = false`; job ids are UUIDv7), on the `JOB#` sort keys only, so the
//! usage counters and other records beside the jobs are never read.
//!
//! The type and expiry are a filter: DynamoDB applies it after `Limit`, so a page of the Query may
//! hold fewer matches than asked for, or none, while more follow. The adapter keeps querying from
//! `LastEvaluatedKey` until it has one match more than the page (to know whether another page
//! exists) or the partition ends.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use tracing::instrument;

use super::items::{EXPIRES_AT, Item, PARTITION_KEY, SEGMENT_TYPE, SORT_KEY, decode_job, n, s};
use segments_core::domain::{JobId, MandatorId, SegmentType};
use segments_core::ports::{JobCatalog, JobPage, StoreError};

/// Items a Query evaluates per request.
const QUERY_PAGE: i32 = 200;
const JOB_SORT_PREFIX: &str = "JOB#";

/// The job list over the Jobs table.
#[derive(Debug, Clone)]
pub struct DynamoCatalog {
    client: Client,
    table: String,
    query_page: i32,
}

impl DynamoCatalog {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoCatalog { client, table: table.into(), query_page: QUERY_PAGE }
    }

    /// Evaluates at most `items` items per Query request (at least 1): small pages let tests show
    /// that a list is filled across requests.
    pub fn with_query_page(mut self, items: i32) -> Self {
        self.query_page = items.max(1);
        self
    }
}

#[async_trait]
impl JobCatalog for DynamoCatalog {
    #[instrument(skip_all, fields(mandator_id = %mandator, segment_type = %segment_type, limit))]
    async fn list_jobs(
        &self,
        mandator: &MandatorId,
        segment_type: SegmentType,
        before: Option<JobId>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<JobPage, StoreError> {
        let wanted = limit as usize + 1;
        let mut jobs = Vec::with_capacity(wanted);
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .scan_index_forward(false)
                .limit(self.query_page)
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#sk", SORT_KEY)
                .expression_attribute_names("#type", SEGMENT_TYPE)
                .expression_attribute_names("#expires", EXPIRES_AT)
                .expression_attribute_values(":pk", s(format!("M#{mandator}")))
                .expression_attribute_values(":jobs", s(JOB_SORT_PREFIX))
                .expression_attribute_values(":type", s(segment_type.as_str()))
                .expression_attribute_values(":now", n(now.timestamp()))
                .filter_expression("#type = :type AND #expires > :now")
                .set_exclusive_start_key(start.take());
            query = match before {
                None => query.key_condition_expression("#pk = :pk AND begins_with(#sk, :jobs)"),
                // Inclusive: the cursor's own job comes back and is skipped below.
                Some(id) => query
                    .key_condition_expression("#pk = :pk AND #sk BETWEEN :jobs AND :before")
                    .expression_attribute_values(":before", s(format!("{JOB_SORT_PREFIX}{id}"))),
            };
            let out =
                query.send().await.map_err(|e| StoreError::unavailable("listing jobs", e.into_service_error()))?;
            for item in out.items.unwrap_or_default() {
                let job = decode_job(item)?;
                if Some(job.job_id) == before || job.segment_type != segment_type || job.is_expired(now) {
                    continue;
                }
                jobs.push(job);
                if jobs.len() == wanted {
                    break;
                }
            }
            match out.last_evaluated_key {
                Some(key) if jobs.len() < wanted && !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        let more = jobs.len() > limit as usize;
        jobs.truncate(limit as usize);
        Ok(JobPage { jobs, more })
    }
}
