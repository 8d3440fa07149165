//! The callback outbox in the Jobs table, beside the mandator's jobs: `pk = M#{mandatorId}`,
//! `sk = OUTBOX#{jobId}` (one final callback per job), with `url`, `body`, `retries`, `failedAt`
//! and `expiresAt` (TTL: a day after the first failure). The due time is `progressAt` in the
//! sweeper's index (`ProgressIndex`), under partitions `OUTBOX#0` … `OUTBOX#7`, so the sweeper
//! finds the due callbacks of all mandators with a Query per partition.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use tracing::instrument;

use super::items::{
    Item, JOBS_TTL_ATTRIBUTE, PARTITION_KEY, PROGRESS_AT, SORT_KEY, SWEEP_PARTITION, job_pk, n, outbox_partition,
    outbox_partition_name, s,
};
use super::progress_index::{PROGRESS, entries_up_to};
use segments_core::domain::{JobId, MandatorId, PendingCallback};
use segments_core::ports::{CallbackOutbox, StoreError};

const OUTBOX_SORT_PREFIX: &str = "OUTBOX#";
const URL: &str = "url";
const BODY: &str = "body";
const RETRIES: &str = "retries";
const FAILED_AT: &str = "failedAt";

/// The outbox over the Jobs table.
#[derive(Debug, Clone)]
pub struct DynamoOutbox {
    client: Client,
    table: String,
}

fn key(mandator: &MandatorId, job_id: JobId) -> Item {
    Item::from([
        (PARTITION_KEY.to_owned(), s(job_pk(mandator))),
        (SORT_KEY.to_owned(), s(format!("{OUTBOX_SORT_PREFIX}{job_id}"))),
    ])
}

impl DynamoOutbox {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoOutbox { client, table: table.into() }
    }

    async fn read(&self, item_key: Item) -> Result<Option<PendingCallback>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item_key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::unavailable("reading a pending callback", e.into_service_error()))?;
        out.item.as_ref().map(decode).transpose()
    }
}

fn decode(item: &Item) -> Result<PendingCallback, StoreError> {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) | Some(AttributeValue::N(v)) => Ok(v.as_str()),
        _ => Err(StoreError::Corrupt(format!("a pending callback lacks {name}"))),
    };
    let corrupt =
        |name: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("a pending callback's {name}: {e}"));
    let mandator = text(PARTITION_KEY)?.strip_prefix("M#").ok_or_else(|| corrupt(PARTITION_KEY, &"no mandator"))?;
    let job = text(SORT_KEY)?.strip_prefix(OUTBOX_SORT_PREFIX).ok_or_else(|| corrupt(SORT_KEY, &"no job"))?;
    let time = |name: &str| {
        let seconds: i64 = text(name)?.parse().map_err(|e| corrupt(name, &e))?;
        DateTime::from_timestamp(seconds, 0).ok_or_else(|| corrupt(name, &"out of range"))
    };
    Ok(PendingCallback {
        mandator_id: MandatorId::parse(mandator).map_err(|e| corrupt(PARTITION_KEY, &e))?,
        job_id: JobId::parse(job).map_err(|e| corrupt(SORT_KEY, &e))?,
        url: text(URL)?.to_owned(),
        body: text(BODY)?.to_owned(),
        retries: text(RETRIES)?.parse().map_err(|e| corrupt(RETRIES, &e))?,
        next_at: time(PROGRESS_AT)?,
        failed_at: time(FAILED_AT)?,
    })
}

#[async_trait]
impl CallbackOutbox for DynamoOutbox {
    #[instrument(skip_all, fields(mandator_id = %pending.mandator_id, job_id = %pending.job_id))]
    async fn put_callback(&self, pending: &PendingCallback) -> Result<(), StoreError> {
        let mut item = key(&pending.mandator_id, pending.job_id);
        item.insert(URL.to_owned(), s(&pending.url));
        item.insert(BODY.to_owned(), s(&pending.body));
        item.insert(RETRIES.to_owned(), n(pending.retries));
        item.insert(FAILED_AT.to_owned(), n(pending.failed_at.timestamp()));
        item.insert(JOBS_TTL_ATTRIBUTE.to_owned(), n(pending.expires_at().timestamp()));
        item.insert(SWEEP_PARTITION.to_owned(), s(outbox_partition(pending.job_id)));
        item.insert(PROGRESS_AT.to_owned(), n(pending.next_at.timestamp()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| StoreError::unavailable("keeping a pending callback", e.into_service_error()))?;
        Ok(())
    }

    #[instrument(skip_all, fields(now = %now, limit))]
    async fn due_callbacks(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<PendingCallback>, StoreError> {
        let entries = entries_up_to(
            &self.client,
            &self.table,
            PROGRESS,
            outbox_partition_name,
            now,
            limit,
            "reading due callbacks",
        )
        .await?;
        let mut due = Vec::with_capacity(entries.len());
        for entry in entries {
            // The index projects the keys; the entry itself is read whole, consistently (it may
            // have been delivered and removed since the index was written).
            let (Some(pk), Some(sk)) = (entry.get(PARTITION_KEY), entry.get(SORT_KEY)) else { continue };
            let item_key = Item::from([(PARTITION_KEY.to_owned(), pk.clone()), (SORT_KEY.to_owned(), sk.clone())]);
            if let Some(pending) = self.read(item_key).await? {
                due.push(pending);
            }
        }
        Ok(due)
    }

    #[instrument(skip_all, fields(mandator_id = %previous.mandator_id, job_id = %previous.job_id))]
    async fn replace_callback(&self, previous: &PendingCallback, next: &PendingCallback) -> Result<bool, StoreError> {
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&previous.mandator_id, previous.job_id)))
            .update_expression("SET #retries = :next_retries, #due = :next_due")
            .condition_expression("attribute_exists(#pk) AND #retries = :retries AND #due = :due")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#retries", RETRIES)
            .expression_attribute_names("#due", PROGRESS_AT)
            .expression_attribute_values(":retries", n(previous.retries))
            .expression_attribute_values(":due", n(previous.next_at.timestamp()))
            .expression_attribute_values(":next_retries", n(next.retries))
            .expression_attribute_values(":next_due", n(next.next_at.timestamp()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) => match e.into_service_error() {
                UpdateItemError::ConditionalCheckFailedException(_) => Ok(false),
                other => Err(StoreError::unavailable("moving a pending callback to its next retry", other)),
            },
        }
    }

    #[instrument(skip_all, fields(mandator_id = %pending.mandator_id, job_id = %pending.job_id))]
    async fn remove_callback(&self, pending: &PendingCallback) -> Result<bool, StoreError> {
        let sent = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(&pending.mandator_id, pending.job_id)))
            .condition_expression("#retries = :retries AND #due = :due")
            .expression_attribute_names("#retries", RETRIES)
            .expression_attribute_names("#due", PROGRESS_AT)
            .expression_attribute_values(":retries", n(pending.retries))
            .expression_attribute_values(":due", n(pending.next_at.timestamp()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) => match e.into_service_error() {
                DeleteItemError::ConditionalCheckFailedException(_) => Ok(false),
                other => Err(StoreError::unavailable("removing a pending callback", other)),
            },
        }
    }
}
