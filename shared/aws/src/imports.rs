//! Import records and the import lock of each mandator, in the Jobs table beside the mandator's
//! jobs (`pk = M#{mandatorId}`):
//! - an import, `sk = IMPORT#{importId}`: `mode`, `status`, `createdAt`, `updatedAt`, `expiresAt`
//!   (N, epoch seconds, the TTL attribute), the counts `users`, `accounts`, `transactions`,
//!   `erasedUsers` (N), `errors` (L of S, the first bad lines; absent when none), `moreErrors` (N)
//!   and `failure` (S, when failed for another reason). A record stays far below the 400 KB item
//!   limit: at most 100 errors of at most 1000 characters each, a failure of at most 2000.
//! - the lock, `sk = IMPORTLOCK`: `importId` (S) and `until` (N, epoch milliseconds), the end of
//!   the holder's lease.
//!
//! Every change is one conditional write: the lock is taken only when free, expired or the
//! caller's own, and a final record is never changed again.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use tracing::instrument;

use super::items::{Item, JOBS_TTL_ATTRIBUTE, PARTITION_KEY, SORT_KEY, n, s};
use segments_core::domain::MandatorId;
use segments_core::imports::{ImportCounts, ImportId, ImportMode, ImportRecord, ImportStatus, MAX_RECORDED_ERRORS};
use segments_core::ports::{ImportStore, StoreError};

pub const IMPORT_LOCK_SORT_KEY: &str = "IMPORTLOCK";
const IMPORT_PREFIX: &str = "IMPORT#";

const MODE: &str = "mode";
const STATUS: &str = "status";
const CREATED_AT: &str = "createdAt";
const UPDATED_AT: &str = "updatedAt";
const EXPIRES_AT: &str = JOBS_TTL_ATTRIBUTE;
const USERS: &str = "users";
const ACCOUNTS: &str = "accounts";
const TRANSACTIONS: &str = "transactions";
const ERASED_USERS: &str = "erasedUsers";
const ERRORS: &str = "errors";
const MORE_ERRORS: &str = "moreErrors";
const FAILURE: &str = "failure";
const LOCK_IMPORT_ID: &str = "importId";
const LOCK_UNTIL: &str = "until";

/// Characters kept of one listed bad line, and of a failure reason.
const MAX_ERROR_CHARS: usize = 1000;
const MAX_FAILURE_CHARS: usize = 2000;

/// The import records and locks over the Jobs table.
#[derive(Debug, Clone)]
pub struct DynamoImports {
    client: Client,
    table: String,
}

fn key(mandator: &MandatorId, sort_key: String) -> Item {
    HashMap::from([(PARTITION_KEY.to_owned(), s(format!("M#{mandator}"))), (SORT_KEY.to_owned(), s(sort_key))])
}

fn import_key(mandator: &MandatorId, id: ImportId) -> Item {
    key(mandator, format!("{IMPORT_PREFIX}{id}"))
}

fn lock_key(mandator: &MandatorId) -> Item {
    key(mandator, IMPORT_LOCK_SORT_KEY.to_owned())
}

fn status_text(status: ImportStatus) -> &'static str {
    match status {
        ImportStatus::AwaitingUpload => "AWAITING_UPLOAD",
        ImportStatus::Validating => "VALIDATING",
        ImportStatus::Applying => "APPLYING",
        ImportStatus::Completed => "COMPLETED",
        ImportStatus::Failed => "FAILED",
    }
}

fn parse_status(text: &str) -> Option<ImportStatus> {
    [
        ImportStatus::AwaitingUpload,
        ImportStatus::Validating,
        ImportStatus::Applying,
        ImportStatus::Completed,
        ImportStatus::Failed,
    ]
    .into_iter()
    .find(|s| status_text(*s) == text)
}

/// Full precision, so a record reads back as it was written.
fn timestamp_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn truncated(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn import_item(record: &ImportRecord) -> Item {
    let mut item = import_key(&record.mandator_id, record.import_id);
    let counts = &record.counts;
    item.extend([
        (MODE.to_owned(), s(record.mode.as_str())),
        (STATUS.to_owned(), s(status_text(record.status))),
        (CREATED_AT.to_owned(), s(timestamp_text(record.created_at))),
        (UPDATED_AT.to_owned(), s(timestamp_text(record.updated_at))),
        (EXPIRES_AT.to_owned(), n(record.expires_at.timestamp())),
        (USERS.to_owned(), n(counts.users)),
        (ACCOUNTS.to_owned(), n(counts.accounts)),
        (TRANSACTIONS.to_owned(), n(counts.transactions)),
        (ERASED_USERS.to_owned(), n(counts.erased_users)),
        (MORE_ERRORS.to_owned(), n(record.more_errors)),
    ]);
    if !record.errors.is_empty() {
        let errors = record.errors.iter().take(MAX_RECORDED_ERRORS).map(|e| s(truncated(e, MAX_ERROR_CHARS)));
        item.insert(ERRORS.to_owned(), AttributeValue::L(errors.collect()));
    }
    if let Some(failure) = &record.failure {
        item.insert(FAILURE.to_owned(), s(truncated(failure, MAX_FAILURE_CHARS)));
    }
    item
}

fn text<'i>(item: &'i Item, name: &str) -> Result<&'i str, String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(_) => Err(format!("attribute {name} is not a string")),
        None => Err(format!("attribute {name} is missing")),
    }
}

fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, String> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| format!("attribute {name} is not a valid number")),
        Some(_) => Err(format!("attribute {name} is not a number")),
        None => Err(format!("attribute {name} is missing")),
    }
}

fn timestamp(item: &Item, name: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text(item, name)?)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("attribute {name}: {e}"))
}

fn decode_import(mandator: &MandatorId, id: ImportId, item: &Item) -> Result<ImportRecord, StoreError> {
    let decoded = (|| -> Result<ImportRecord, String> {
        let mode = text(item, MODE)?;
        let status = text(item, STATUS)?;
        let expires_at = number::<i64>(item, EXPIRES_AT)?;
        let errors = match item.get(ERRORS) {
            None => Vec::new(),
            Some(AttributeValue::L(list)) => list
                .iter()
                .map(|v| v.as_s().cloned().map_err(|_| format!("attribute {ERRORS} holds a non-string")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("attribute {ERRORS} is not a list")),
        };
        let failure = match item.get(FAILURE) {
            None => None,
            Some(_) => Some(text(item, FAILURE)?.to_owned()),
        };
        Ok(ImportRecord {
            mandator_id: mandator.clone(),
            import_id: id,
            mode: ImportMode::parse(mode).ok_or_else(|| format!("attribute {MODE} is {mode:?}"))?,
            status: parse_status(status).ok_or_else(|| format!("attribute {STATUS} is {status:?}"))?,
            created_at: timestamp(item, CREATED_AT)?,
            updated_at: timestamp(item, UPDATED_AT)?,
            expires_at: DateTime::from_timestamp(expires_at, 0)
                .ok_or_else(|| format!("attribute {EXPIRES_AT} is out of range"))?,
            counts: ImportCounts {
                users: number(item, USERS)?,
                accounts: number(item, ACCOUNTS)?,
                transactions: number(item, TRANSACTIONS)?,
                erased_users: number(item, ERASED_USERS)?,
            },
            errors,
            more_errors: number(item, MORE_ERRORS)?,
            failure,
        })
    })();
    decoded.map_err(|e| StoreError::Corrupt(format!("import {id} of {mandator}: {e}")))
}

impl DynamoImports {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoImports { client, table: table.into() }
    }

    /// A put of the record's item, with `#pk` bound for its condition.
    fn put(&self, record: &ImportRecord) -> PutItemFluentBuilder {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(import_item(record)))
            .expression_attribute_names("#pk", PARTITION_KEY)
    }
}

/// Sends a conditional put: `Ok(false)` when its condition does not hold.
async fn put_if(put: PutItemFluentBuilder, what: &'static str) -> Result<bool, StoreError> {
    match put.send().await {
        Ok(_) => Ok(true),
        Err(e) => match e.into_service_error() {
            PutItemError::ConditionalCheckFailedException(_) => Ok(false),
            other => Err(StoreError::unavailable(what, other)),
        },
    }
}

#[async_trait]
impl ImportStore for DynamoImports {
    #[instrument(skip_all, fields(mandator_id = %record.mandator_id, import_id = %record.import_id))]
    async fn create_import(&self, record: &ImportRecord) -> Result<(), StoreError> {
        let put = self.put(record).condition_expression("attribute_not_exists(#pk)");
        if put_if(put, "creating an import").await? {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!("import {} exists already", record.import_id)))
        }
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, import_id = %id))]
    async fn get_import(&self, mandator: &MandatorId, id: ImportId) -> Result<Option<ImportRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(import_key(mandator, id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::unavailable("reading an import", e.into_service_error()))?;
        out.item.map(|item| decode_import(mandator, id, &item)).transpose()
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, import_id = %id))]
    async fn lock_mandator(
        &self,
        mandator: &MandatorId,
        id: ImportId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut item = lock_key(mandator);
        item.insert(LOCK_IMPORT_ID.to_owned(), s(id.to_string()));
        item.insert(LOCK_UNTIL.to_owned(), n(until.timestamp_millis()));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #holder = :id OR #until <= :now")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#holder", LOCK_IMPORT_ID)
            .expression_attribute_names("#until", LOCK_UNTIL)
            .expression_attribute_values(":id", s(id.to_string()))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                PutItemError::ConditionalCheckFailedException(_) => {
                    Err(StoreError::Conflict(format!("another import holds the import lock of {mandator}")))
                }
                other => Err(StoreError::unavailable("taking the import lock", other)),
            },
        }
    }

    #[instrument(skip_all, fields(mandator_id = %mandator))]
    async fn lock_holder(&self, mandator: &MandatorId, now: DateTime<Utc>) -> Result<Option<ImportId>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(lock_key(mandator)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::unavailable("reading the import lock", e.into_service_error()))?;
        let Some(item) = out.item else { return Ok(None) };
        let corrupt = |e: String| StoreError::Corrupt(format!("import lock of {mandator}: {e}"));
        let until = number::<i64>(&item, LOCK_UNTIL).map_err(corrupt)?;
        if until <= now.timestamp_millis() {
            return Ok(None);
        }
        let holder = text(&item, LOCK_IMPORT_ID).map_err(corrupt)?;
        ImportId::parse(holder).map(Some).map_err(|e| corrupt(format!("attribute {LOCK_IMPORT_ID}: {e}")))
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, import_id = %id))]
    async fn unlock_mandator(&self, mandator: &MandatorId, id: ImportId) -> Result<(), StoreError> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(lock_key(mandator)))
            .condition_expression("#holder = :id")
            .expression_attribute_names("#holder", LOCK_IMPORT_ID)
            .expression_attribute_values(":id", s(id.to_string()))
            .send()
            .await;
        match delete {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                // Free already, or another import's since this one's lease ran out.
                DeleteItemError::ConditionalCheckFailedException(_) => Ok(()),
                other => Err(StoreError::unavailable("releasing the import lock", other)),
            },
        }
    }

    #[instrument(skip_all, fields(mandator_id = %record.mandator_id, import_id = %record.import_id))]
    async fn update_import(&self, record: &ImportRecord) -> Result<bool, StoreError> {
        // A record that is gone (expired) is not brought back.
        let put = self
            .put(record)
            .condition_expression("attribute_exists(#pk) AND NOT (#status IN (:completed, :failed))")
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_values(":completed", s(status_text(ImportStatus::Completed)))
            .expression_attribute_values(":failed", s(status_text(ImportStatus::Failed)));
        put_if(put, "updating an import").await
    }
}
