//! The record of a bulk import of account data (`POST /data/imports`, `segments import`): its mode,
//! where its files are uploaded, its status and what it found and wrote. The import itself is
//! `usecases::import`; the records are kept by an [`ImportStore`](crate::ports::ImportStore).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{JobId, MandatorId};

/// How long an import's records and uploaded files are kept (the uploads prefix has the same
/// lifecycle as the results).
pub const IMPORT_RETENTION_DAYS: i64 = crate::jobs::RESULT_RETENTION_DAYS;
/// How long the upload links of a new import are valid.
pub const UPLOAD_LINK_TTL: Duration = Duration::hours(1);
/// How long an import holds its mandator's import lock without renewing it. A worker that died
/// mid-import frees the mandator for the next import after this; a live one renews well before.
pub const LOCK_LEASE: Duration = Duration::minutes(20);
/// Bad lines kept on the record; the rest are counted.
pub const MAX_RECORDED_ERRORS: usize = 100;

/// An import's id: a UUIDv7 like a job's, so a mandator's imports sort by creation.
pub type ImportId = JobId;

/// What an import does with the users of the mandator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ImportMode {
    /// Each user in the files replaces that user's stored data as a unit; other users stay.
    UpsertUsers,
    /// As `upsertUsers`, and every stored user the files do not contain is erased.
    ReplaceMandator,
}

impl ImportMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportMode::UpsertUsers => "upsertUsers",
            ImportMode::ReplaceMandator => "replaceMandator",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "upsertUsers" => Some(ImportMode::UpsertUsers),
            "replaceMandator" => Some(ImportMode::ReplaceMandator),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImportStatus {
    AwaitingUpload,
    Validating,
    Applying,
    Completed,
    Failed,
}

impl ImportStatus {
    pub fn is_final(self) -> bool {
        matches!(self, ImportStatus::Completed | ImportStatus::Failed)
    }

    /// Whether an import in this status holds its mandator's import lock.
    pub fn holds_lock(self) -> bool {
        matches!(self, ImportStatus::Validating | ImportStatus::Applying)
    }
}

/// What an import found and wrote so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportCounts {
    /// Users written (replaced as a unit).
    pub users: u64,
    pub accounts: u64,
    pub transactions: u64,
    /// Users erased because the files of a `replaceMandator` import do not contain them.
    pub erased_users: u64,
}

/// One import of a mandator's account data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportRecord {
    pub mandator_id: MandatorId,
    pub import_id: ImportId,
    pub mode: ImportMode,
    pub status: ImportStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the record (and the uploaded files) are dropped.
    pub expires_at: DateTime<Utc>,
    pub counts: ImportCounts,
    /// The first bad lines as `file:line: reason`, in file and line order.
    pub errors: Vec<String>,
    /// Bad lines beyond those listed.
    pub more_errors: u64,
    /// Why a FAILED import failed, when not (only) because of bad lines.
    pub failure: Option<String>,
}

impl ImportRecord {
    pub fn new(mandator_id: MandatorId, mode: ImportMode, now: DateTime<Utc>) -> Self {
        ImportRecord {
            mandator_id,
            import_id: ImportId::new(),
            mode,
            status: ImportStatus::AwaitingUpload,
            created_at: now,
            updated_at: now,
            expires_at: now + Duration::days(IMPORT_RETENTION_DAYS),
            counts: ImportCounts::default(),
            errors: Vec::new(),
            more_errors: 0,
            failure: None,
        }
    }

    /// Where the accounts file of this import is uploaded: under the mandator's own prefix.
    pub fn accounts_key(&self) -> String {
        format!("{}accounts.ndjson", self.prefix())
    }

    /// Where the transactions file of this import is uploaded.
    pub fn transactions_key(&self) -> String {
        format!("{}transactions.ndjson", self.prefix())
    }

    fn prefix(&self) -> String {
        format!("{IMPORTS_PREFIX}{}/{}/", self.mandator_id, self.import_id)
    }
}

/// The object key prefix of every uploaded import file (its own lifecycle rule).
pub const IMPORTS_PREFIX: &str = "imports/";

/// The message that hands a started import to the import worker. It carries no settings: the
/// import record is the single source of truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportMessage {
    pub mandator_id: MandatorId,
    pub import_id: ImportId,
}
