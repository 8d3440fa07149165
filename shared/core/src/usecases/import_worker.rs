//! The import worker (docs/data.md): takes a started import off the import queue, downloads its
//! two uploaded files to local storage, runs the import ([`Importer::run`]) and deletes the local
//! copies. The import function on AWS and the local runner's import task both run it.
//!
//! Every delivery is safe: a message for a final (or unknown) import changes nothing, and an
//! import interrupted by a crash is left VALIDATING or APPLYING with its lock, whose lease runs
//! out; the next delivery of the message runs it again (writes are per user and keyed, so a re-run
//! ends in the same data). A delivery that cannot run the import for a reason that may pass (a
//! store unavailable, another import holding the mandator's lock) is retried; on the last allowed
//! delivery the import is marked FAILED with the reason, so it never stays running while its
//! message sits in the dead-letter queue.
//!
//! A delivery has a time budget (a Lambda function's is its timeout). An import that does not
//! finish within it fails at once with that reason rather than being cut off: running it again
//! would do the same work again and end the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tracing::instrument;

use crate::imports::{ImportMessage, ImportRecord, ImportStatus};
use crate::ports::{ImportStore, ResultStore, StoreError};
use crate::telemetry;
use crate::usecases::import::{ImportError, ImportOptions, Importer};
use crate::usecases::imports_api::{ACCOUNTS_FILE, TRANSACTIONS_FILE};
use crate::usecases::run_shard::Disposition;

/// What a delivery keeps of its budget to mark a cut-off import FAILED and empty the scratch
/// folder.
pub const WRAP_UP: Duration = Duration::from_secs(20);

/// What the import worker takes.
#[derive(Clone)]
pub struct ImportWorker {
    pub importer: Importer,
    /// Where the uploaded files are.
    pub files: Arc<dyn ResultStore>,
    /// The local folder the files are downloaded to and the import spills into (a Lambda
    /// function's ephemeral storage). Its contents belong to the worker: it empties it before and
    /// after every import, so one worker at a time may use it.
    pub scratch: PathBuf,
    /// The delivery after which a failing import is marked FAILED (the queue's
    /// `maxReceiveCount`).
    pub max_receive_count: u32,
}

/// Why a delivery could not run its import.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    /// May pass: deliver again.
    #[error("{0}")]
    Transient(String),
    /// Will not pass: the import fails now.
    #[error("{0}")]
    Permanent(String),
}

impl From<StoreError> for DeliveryError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() { DeliveryError::Transient(e.to_string()) } else { DeliveryError::Permanent(e.to_string()) }
    }
}

impl ImportWorker {
    /// Handles one delivery of a message body; `receive_count` is how often it has been delivered
    /// (SQS's ApproximateReceiveCount); `budget` how long it may take, when it is limited. A body
    /// that is not an import message is never acknowledged: it ends in the dead-letter queue,
    /// whose alarm calls an operator.
    #[instrument(skip_all, fields(receive_count = receive_count, mandator_id, import_id))]
    pub async fn process(&self, body: &str, receive_count: u32, budget: Option<Duration>) -> Disposition {
        let message: ImportMessage = match serde_json::from_str(body) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "an import message that cannot be decoded");
                return Disposition::Retry;
            }
        };
        // Every log line of the delivery names the import.
        let span = tracing::Span::current();
        span.record("mandator_id", message.mandator_id.as_str());
        span.record("import_id", tracing::field::display(message.import_id));
        let last = receive_count >= self.max_receive_count;
        let outcome = match budget {
            None => self.deliver(&message).await,
            Some(budget) => {
                // Time to record the failure and clean up once the budget is spent.
                let working = budget.saturating_sub(WRAP_UP);
                tokio::time::timeout(working, self.deliver(&message)).await.unwrap_or_else(|_| {
                    Err(DeliveryError::Permanent(format!(
                        "the import did not finish within the {} s a worker has for it; import the data as several \
                         smaller imports (upsertUsers)",
                        budget.as_secs()
                    )))
                })
            }
        };
        self.clean_scratch().await;
        match outcome {
            Ok(()) => Disposition::Ack,
            Err(DeliveryError::Transient(reason)) if !last => {
                tracing::warn!(mandator_id = %message.mandator_id, import_id = %message.import_id, %reason, "the import will be retried");
                Disposition::Retry
            }
            Err(DeliveryError::Transient(reason) | DeliveryError::Permanent(reason)) => {
                match self.fail(&message, &reason).await {
                    Ok(()) => Disposition::Ack,
                    Err(e) => {
                        tracing::error!(import_id = %message.import_id, error = %e, "the failed import could not be marked FAILED");
                        Disposition::Retry
                    }
                }
            }
        }
    }

    async fn deliver(&self, message: &ImportMessage) -> Result<(), DeliveryError> {
        let imports = self.importer.imports.as_ref();
        let Some(record) = imports.get_import(&message.mandator_id, message.import_id).await? else {
            tracing::warn!(mandator_id = %message.mandator_id, import_id = %message.import_id, "a message for an unknown import");
            return Ok(());
        };
        if record.status.is_final() || record.status == ImportStatus::AwaitingUpload {
            // A redelivery after the import finished, or a start that was taken back.
            return Ok(());
        }
        self.clean_scratch().await;
        let dir = self.scratch.join(record.import_id.to_string());
        let accounts = dir.join(ACCOUNTS_FILE);
        let transactions = dir.join(TRANSACTIONS_FILE);
        self.download(&record.accounts_key(), ACCOUNTS_FILE, &accounts).await?;
        self.download(&record.transactions_key(), TRANSACTIONS_FILE, &transactions).await?;
        let options = ImportOptions {
            spill_dir: Some(dir.join("spill")),
            file_names: Some((ACCOUNTS_FILE.to_owned(), TRANSACTIONS_FILE.to_owned())),
            ..ImportOptions::default()
        };
        tokio::fs::create_dir_all(dir.join("spill")).await.map_err(|e| local_error(&dir, e))?;
        match self.importer.run(record, &accounts, &transactions, &options, |_| {}).await {
            Ok(record) => {
                tracing::info!(import_id = %record.import_id, counts = ?record.counts, "import completed");
                Ok(())
            }
            // The run recorded the outcome (FAILED with the bad lines or the reason), or another
            // delivery finished it first.
            Err(
                e @ (ImportError::Unknown(_)
                | ImportError::Finished(_)
                | ImportError::ShardCount(_)
                | ImportError::ShardsRecorded { .. }
                | ImportError::Empty
                | ImportError::Invalid { .. }
                | ImportError::Io { .. }
                | ImportError::Spill { .. }
                | ImportError::Store { .. }
                | ImportError::Rejected { .. }
                | ImportError::LockLost { .. }),
            ) => {
                tracing::info!(import_id = %message.import_id, outcome = %e, "import ended");
                Ok(())
            }
            // The lease of this import ran out before this delivery and another import took the
            // lock: this one runs once that one is done.
            Err(e @ ImportError::Busy { .. }) => Err(DeliveryError::Transient(e.to_string())),
            Err(ImportError::Record(e)) => Err(e.into()),
        }
    }

    /// Copies an uploaded file to `to`, piece by piece.
    async fn download(&self, key: &str, name: &str, to: &Path) -> Result<(), DeliveryError> {
        let Some(mut pieces) = self.files.get_stream(key).await? else {
            return Err(DeliveryError::Permanent(format!("{name} is no longer stored (uploads are kept for 14 days)")));
        };
        if let Some(dir) = to.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| local_error(dir, e))?;
        }
        let file = tokio::fs::File::create(to).await.map_err(|e| local_error(to, e))?;
        let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
        while let Some(piece) = pieces.next().await {
            file.write_all(&piece?).await.map_err(|e| local_error(to, e))?;
        }
        file.flush().await.map_err(|e| local_error(to, e))?;
        Ok(())
    }

    /// Marks the import FAILED with `reason` and frees the mandator's lock, unless it is final.
    async fn fail(&self, message: &ImportMessage, reason: &str) -> Result<(), StoreError> {
        let imports: &dyn ImportStore = self.importer.imports.as_ref();
        let Some(record) = imports.get_import(&message.mandator_id, message.import_id).await? else {
            return Ok(());
        };
        if !record.status.is_final() {
            let failed = ImportRecord {
                status: ImportStatus::Failed,
                updated_at: Utc::now(),
                failure: Some(reason.to_owned()),
                ..record
            };
            if imports.update_import(&failed).await? {
                tracing::error!(import_id = %message.import_id, %reason, "import failed");
                let written = failed.counts.users;
                telemetry::import_failed(message.mandator_id.as_str(), &message.import_id.to_string(), written);
            }
        }
        imports.unlock_mandator(&message.mandator_id, message.import_id).await
    }

    /// Removes whatever an earlier import (finished or killed) left in the scratch folder.
    async fn clean_scratch(&self) {
        match tokio::fs::remove_dir_all(&self.scratch).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, scratch = %self.scratch.display(), "the scratch folder could not be emptied")
            }
        }
    }
}

/// Local storage failing (full, most likely): another delivery, maybe on another instance, may
/// have room.
fn local_error(path: &Path, e: std::io::Error) -> DeliveryError {
    DeliveryError::Transient(format!("local storage at {}: {e}", path.display()))
}
