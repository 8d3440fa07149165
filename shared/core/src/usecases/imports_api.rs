//! The bulk import API (docs/api.md, docs/data.md): `POST /data/imports` creates an import and
//! hands out one upload link per file, `POST /data/imports/{importId}/start` hands the uploaded
//! files to the import worker, `GET /data/imports/{importId}` reports the import.
//!
//! Starting is an explicit request rather than a reaction to the uploads: one request pairs the
//! two files, answers a conflict at once, and behaves the same on every store. The import worker
//! (`usecases::import_worker`) then validates and applies the files.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::instrument;

use crate::domain::MandatorId;
use crate::domain::date::timestamp;
use crate::imports::{
    ImportCounts, ImportId, ImportMessage, ImportMode, ImportRecord, ImportStatus, LOCK_LEASE, UPLOAD_LINK_TTL,
};
use crate::ports::{ImportQueue, ImportStore, ResultStore, StoreError, UploadLinks};
use crate::rules::body::{FieldError, Fields};
use crate::usecases::AppError;

/// The names the two files of an import are uploaded and reported under.
pub const ACCOUNTS_FILE: &str = "accounts.ndjson";
pub const TRANSACTIONS_FILE: &str = "transactions.ndjson";

/// What the import endpoints need: the import records, upload links, a look at the uploaded files
/// and the queue of the import worker. The mandator comes from the caller's verified token; the
/// function has checked the route's scope.
#[derive(Clone)]
pub struct ImportsApi {
    pub imports: Arc<dyn ImportStore>,
    pub uploads: Arc<dyn UploadLinks>,
    /// The store the upload links write into.
    pub files: Arc<dyn ResultStore>,
    pub queue: Arc<dyn ImportQueue>,
}

/// The answer to creating an import: where to upload its files, until when.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedImport {
    pub import_id: ImportId,
    pub status: ImportStatus,
    pub accounts_upload_url: String,
    pub transactions_upload_url: String,
    /// When the upload links stop working.
    pub expires_at: String,
}

/// An import as `GET /data/imports/{importId}` and the start answer show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportView {
    pub import_id: ImportId,
    pub mode: ImportMode,
    pub status: ImportStatus,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: String,
    pub counts: ImportCounts,
    /// The first bad lines as `file:line: reason`.
    pub errors: Vec<String>,
    /// Bad lines beyond those listed.
    pub more_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl ImportView {
    pub fn of(record: &ImportRecord) -> Self {
        ImportView {
            import_id: record.import_id,
            mode: record.mode,
            status: record.status,
            created_at: timestamp(record.created_at),
            updated_at: timestamp(record.updated_at),
            expires_at: timestamp(record.expires_at),
            counts: record.counts,
            errors: record.errors.clone(),
            more_errors: record.more_errors,
            failure: record.failure.clone(),
        }
    }
}

/// The body of `POST /data/imports`: `{"mode": "upsertUsers" | "replaceMandator"}`.
pub fn parse_create(body: &[u8]) -> Result<ImportMode, AppError> {
    let mut fields = Fields::parse(body).map_err(|e| AppError::MalformedBody(e.0))?;
    let mode = fields
        .parsed("mode", |s| ImportMode::parse(s).ok_or("must be upsertUsers or replaceMandator"))
        .map_err(AppError::InvalidField)?
        .ok_or_else(|| AppError::InvalidField(FieldError::new("mode", "is required")))?;
    fields.finish().map_err(AppError::InvalidField)?;
    Ok(mode)
}

impl ImportsApi {
    /// Stores a new import AWAITING_UPLOAD and signs an upload link for each of its files, both
    /// under the mandator's own prefix.
    #[instrument(skip_all, fields(mandator_id = %mandator))]
    pub async fn create(
        &self,
        mandator: &MandatorId,
        mode: ImportMode,
        now: DateTime<Utc>,
    ) -> Result<CreatedImport, AppError> {
        let record = ImportRecord::new(mandator.clone(), mode, now);
        self.imports.create_import(&record).await?;
        let ttl = UPLOAD_LINK_TTL.to_std().map_err(|e| StoreError::Corrupt(format!("the upload link TTL: {e}")))?;
        let accounts_upload_url = self.uploads.upload_link(&record.accounts_key(), ttl).await?;
        let transactions_upload_url = self.uploads.upload_link(&record.transactions_key(), ttl).await?;
        tracing::info!(import_id = %record.import_id, mode = mode.as_str(), "import created");
        Ok(CreatedImport {
            import_id: record.import_id,
            status: record.status,
            accounts_upload_url,
            transactions_upload_url,
            expires_at: timestamp(now + UPLOAD_LINK_TTL),
        })
    }

    /// The mandator's import, unexpired; any other is not found.
    pub async fn status(
        &self,
        mandator: &MandatorId,
        import_id: &str,
        now: DateTime<Utc>,
    ) -> Result<ImportView, AppError> {
        Ok(ImportView::of(&self.find(mandator, import_id, now).await?))
    }

    /// Hands an uploaded import to the worker: takes the mandator's import lock for it, marks it
    /// VALIDATING and queues it. 409 when it is not awaiting its upload or another import of the
    /// mandator holds the lock; 400 naming the file that has not been uploaded.
    #[instrument(skip_all, fields(mandator_id = %mandator, import_id = %import_id))]
    pub async fn start(
        &self,
        mandator: &MandatorId,
        import_id: &str,
        now: DateTime<Utc>,
    ) -> Result<ImportView, AppError> {
        let record = self.find(mandator, import_id, now).await?;
        if record.status != ImportStatus::AwaitingUpload {
            return Err(AppError::ImportConflict(format!(
                "the import is {}, not awaiting its upload: it can start once only",
                status_name(record.status)
            )));
        }
        match self.imports.lock_holder(&record.mandator_id, now).await? {
            // Another start of this import holds the lock already.
            Some(holder) if holder == record.import_id => {
                return Err(AppError::ImportConflict("the import is starting already".into()));
            }
            Some(holder) => return Err(running_elsewhere(holder)),
            None => {}
        }
        for (key, file) in [(record.accounts_key(), ACCOUNTS_FILE), (record.transactions_key(), TRANSACTIONS_FILE)] {
            if self.files.size(&key).await?.is_none() {
                return Err(AppError::UploadMissing(file));
            }
        }
        match self.imports.lock_mandator(&record.mandator_id, record.import_id, now, now + LOCK_LEASE).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                let holder = self.imports.lock_holder(&record.mandator_id, now).await?;
                return Err(holder
                    .map_or_else(|| AppError::ImportConflict("another import is starting".into()), running_elsewhere));
            }
            Err(e) => return Err(e.into()),
        }
        let mut started = record.clone();
        started.status = ImportStatus::Validating;
        started.updated_at = now;
        if !self.imports.update_import(&started).await? {
            self.imports.unlock_mandator(&record.mandator_id, record.import_id).await?;
            return Err(AppError::ImportConflict("the import has finished already".into()));
        }
        let message = ImportMessage { mandator_id: record.mandator_id.clone(), import_id: record.import_id };
        if let Err(e) = self.queue.enqueue_import(&message).await {
            // Nothing will run it: put it back as it was, so the client can start it again.
            self.revert(&record).await;
            return Err(e.into());
        }
        tracing::info!("import started");
        Ok(ImportView::of(&started))
    }

    async fn find(&self, mandator: &MandatorId, import_id: &str, now: DateTime<Utc>) -> Result<ImportRecord, AppError> {
        let not_found = || AppError::NotFound("import");
        let id = ImportId::parse(import_id).map_err(|_| not_found())?;
        let record = self.imports.get_import(mandator, id).await?.ok_or_else(not_found)?;
        if record.expires_at <= now {
            return Err(not_found());
        }
        Ok(record)
    }

    async fn revert(&self, record: &ImportRecord) {
        if let Err(e) = self.imports.update_import(record).await {
            tracing::error!(error = %e, "an import that could not be queued stays VALIDATING");
        }
        if let Err(e) = self.imports.unlock_mandator(&record.mandator_id, record.import_id).await {
            tracing::error!(error = %e, "the lock of an import that could not be queued stays until its lease ends");
        }
    }
}

fn running_elsewhere(holder: ImportId) -> AppError {
    AppError::ImportConflict(format!(
        "import {holder} of this mandator is running; start this one when it has finished"
    ))
}

/// The status as the API spells it.
pub fn status_name(status: ImportStatus) -> &'static str {
    match status {
        ImportStatus::AwaitingUpload => "AWAITING_UPLOAD",
        ImportStatus::Validating => "VALIDATING",
        ImportStatus::Applying => "APPLYING",
        ImportStatus::Completed => "COMPLETED",
        ImportStatus::Failed => "FAILED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_body_names_its_mode_and_nothing_else() {
        assert_eq!(parse_create(br#"{"mode":"upsertUsers"}"#).unwrap(), ImportMode::UpsertUsers);
        assert_eq!(parse_create(br#"{"mode":"replaceMandator"}"#).unwrap(), ImportMode::ReplaceMandator);
        let field = |body: &[u8]| match parse_create(body) {
            Err(AppError::InvalidField(f)) => f.field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(b"{}"), "mode");
        assert_eq!(field(br#"{"mode":"merge"}"#), "mode");
        assert_eq!(field(br#"{"mode":1}"#), "mode");
        assert_eq!(field(br#"{"mode":"upsertUsers","shards":4}"#), "shards");
        assert!(matches!(parse_create(b"[]"), Err(AppError::MalformedBody(_))));
    }

    #[test]
    fn statuses_are_spelt_as_serialized() {
        for status in [
            ImportStatus::AwaitingUpload,
            ImportStatus::Validating,
            ImportStatus::Applying,
            ImportStatus::Completed,
            ImportStatus::Failed,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status_name(status));
        }
    }
}
