//! The embedded adapter: every storage port over one redb database file in a data directory, and
//! an in-process queue. The local runner uses it when it runs on one machine without AWS; the
//! same contract tests run against it and against DynamoDB and S3.
//!
//! Tables (the embedded counterpart of docs/storage.md):
//! - `users`: `M#{mandator}#S#{shard}#U#{userId}` → the user's version and record (the compressed
//!   form of `segments_core::snapshot`, as in DynamoDB), so one range scan per shard yields users
//!   in order.
//! - `shard_counts`: `M#{mandator}` → the mandator's shard count.
//! - `account_users`: `M#{mandator}#A#{accountId}` → the userId holding the account (the account
//!   directory; accountIds are unique per mandator).
//! - `jobs`: `M#{mandator}#JOB#{jobId}` → the job record.
//! - `idempotency`: `M#{mandator}#IDEM#{key}` → the job the key names, the request's hash and
//!   the expiry (the job's).
//! - `usage`: `{mandator}#{YYYY-MM}#{segmentType}` → completed jobs (see [`segments_core::jobs::usage_embedded_key`]),
//!   raised in the write transaction that completes the job.
//! - `results`: object key → bytes. The uploaded files of imports (`imports/…`) are files in the
//!   data directory instead (`objects/{key}`), streamed in and out.
//! - `imports`: `M#{mandator}#IMPORT#{importId}` → the import record.
//! - `import_locks`: `M#{mandator}` → the import holding the mandator's import lock, and until when.
//! - the segments, their members, refreshes and change feeds, and the indexes of due refreshes and
//!   due schedules: see the `segments` module.
//!
//! An index of due times (the sweeper's progress watches and pending callbacks, the scheduler's
//! refreshes and schedules) is a table of `{due time, epoch seconds, 20 digits}#{record key}` →
//! the record key, written and removed in the write transaction that writes the record; a reader
//! of what is due reads the index up to now, never every record.
//!
//! Other values are JSON of small private records: compact enough, readable when debugging, and amounts
//! stay exact decimal numbers. redb is synchronous, so every call runs on the blocking pool.
//! Nothing expires here: unlike DynamoDB's TTL and S3's lifecycle rule, expired jobs and results
//! stay in the file (readers still treat expired jobs as unknown).

mod accounts;
mod callback_secrets;
mod catalog;
mod events;
mod files;
mod imports;
mod jobs;
mod keys;
mod links;
mod outbox;
mod queue;
mod refresh_queue;
mod results;
mod segments;
pub mod wiring;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, DatabaseError, TableDefinition};

use segments_core::jobs::JobMessage;
use segments_core::ports::StoreError;

pub use events::{EVENTS_FILE, EventFile};
pub use links::{LINK_PATH, LinkError, LocalLinks, MAX_LINK_TTL, MAX_UPLOAD_LINK_TTL, UPLOAD_PATH};
pub use queue::{EmbeddedDeliveries, EmbeddedDelivery, EmbeddedImportQueue, EmbeddedQueue, EmbeddedReceiver};
pub use refresh_queue::{LocalRefreshQueue, LocalRefreshReceiver, refresh_channel};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "segments.redb";

const SHARD_COUNTS: TableDefinition<&str, u32> = TableDefinition::new("shard_counts");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const RESULTS: TableDefinition<&str, &[u8]> = TableDefinition::new("results");
const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// Usage counters; the name and key layout are fixed by [`segments_core::jobs::USAGE_TABLE`].
const USAGE: TableDefinition<&str, u64> = TableDefinition::new(segments_core::jobs::USAGE_TABLE);

/// Page cache of the database. redb's default (1 GiB) is sized for a server; a local run shares
/// the machine with everything else.
const CACHE_BYTES: usize = 128 * 1024 * 1024;

/// A redb database in a data directory, implementing [`AccountSource`](segments_core::ports::AccountSource),
/// [`UserStore`](segments_core::ports::UserStore), [`JobStore`](segments_core::ports::JobStore),
/// [`ResultStore`](segments_core::ports::ResultStore), [`SegmentStore`](segments_core::ports::SegmentStore),
/// [`RefreshStore`](segments_core::ports::RefreshStore) and the other storage ports. Clones share the
/// open database; it closes when the last clone (and the last shard stream reading from it) is dropped.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: Arc<PathBuf>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store in `dir`, creating the directory and the database file when missing. One
    /// process at a time may have a data directory open.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::unavailable(format!("cannot create data directory {}", dir.display()), e))?;
        let path = dir.join(DATABASE_FILE);
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(&path).map_err(|e| {
            let context = match e {
                DatabaseError::DatabaseAlreadyOpen => {
                    format!("{} is already open in another process or store", path.display())
                }
                _ => format!("cannot open {}", path.display()),
            };
            StoreError::unavailable(context, redb::Error::from(e))
        })?;
        // Create every table once, so readers never meet a missing table.
        let write = db.begin_write().or_unavailable("creating tables")?;
        {
            write.open_table(accounts::USERS).or_unavailable("creating tables")?;
            write.open_table(SHARD_COUNTS).or_unavailable("creating tables")?;
            write.open_table(accounts::ACCOUNT_USERS).or_unavailable("creating tables")?;
            write.open_table(JOBS).or_unavailable("creating tables")?;
            write.open_table(RESULTS).or_unavailable("creating tables")?;
            write.open_table(IDEMPOTENCY).or_unavailable("creating tables")?;
            write.open_table(USAGE).or_unavailable("creating tables")?;
            write.open_table(imports::IMPORTS).or_unavailable("creating tables")?;
            write.open_table(imports::IMPORT_LOCKS).or_unavailable("creating tables")?;
            segments::create_tables(&write)?;
        }
        write.commit().or_unavailable("creating tables")?;
        refuse_earlier_layout(&db, &path)?;
        Ok(EmbeddedStore { db: Arc::new(db), path: Arc::new(path) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The messages of every job of every mandator that is still QUEUED or RUNNING, so a
    /// restarted local runner can put them back on its queue (they lived only in memory): one
    /// per shard not done yet, or one to finalize a job whose shards are all done.
    pub async fn unfinished_jobs(&self) -> Result<Vec<JobMessage>, StoreError> {
        self.blocking("listing unfinished jobs", jobs::unfinished).await
    }

    /// The message of every import of every mandator that is VALIDATING or APPLYING, so a
    /// restarted local runner can hand them to its import task again: their message lived only in
    /// memory, and running an import again is safe.
    pub async fn running_imports(&self) -> Result<Vec<segments_core::imports::ImportMessage>, StoreError> {
        self.blocking("listing running imports", |db| {
            use redb::{ReadableDatabase, ReadableTable};
            const WHAT: &str = "listing running imports";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let table = read.open_table(imports::IMPORTS).or_unavailable(WHAT)?;
            let mut running = Vec::new();
            for entry in table.iter().or_unavailable(WHAT)? {
                let (key, value) = entry.or_unavailable(WHAT)?;
                let record: segments_core::imports::ImportRecord =
                    serde_json::from_slice(value.value()).map_err(|e| corrupt("import record", key.value(), e))?;
                if record.status.holds_lock() {
                    running.push(segments_core::imports::ImportMessage {
                        mandator_id: record.mandator_id,
                        import_id: record.import_id,
                    });
                }
            }
            Ok(running)
        })
        .await
    }

    /// Runs `work` on the blocking pool: redb's calls block on disk I/O.
    async fn blocking<T, F>(&self, what: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db)).await.map_err(|e| StoreError::unavailable(what, e))?
    }
}

/// Refuses a database whose account data is still in the layout before per-user records (one
/// entry per account and per transaction): reading it as empty would silently drop every user.
fn refuse_earlier_layout(db: &Database, path: &Path) -> Result<(), StoreError> {
    use redb::{ReadableDatabase, ReadableTableMetadata, TableError};
    const WHAT: &str = "checking the account data layout";
    let read = db.begin_read().or_unavailable(WHAT)?;
    let entries = match read.open_table(accounts::EARLIER_LAYOUT) {
        Ok(table) => table.len().or_unavailable(WHAT)?,
        Err(TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(StoreError::unavailable(WHAT, redb::Error::from(e))),
    };
    if entries > 0 {
        return Err(StoreError::Corrupt(format!(
            "{} holds account data in the earlier layout (one entry per account and transaction); \
             import the data again with `segments import` into a new data directory",
            path.display()
        )));
    }
    Ok(())
}

/// Translates redb's errors: a corrupted file is `Corrupt` (retrying will not help), anything
/// else is `Unavailable`.
trait OrUnavailable<T> {
    fn or_unavailable(self, context: &str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> OrUnavailable<T> for Result<T, E> {
    fn or_unavailable(self, context: &str) -> Result<T, StoreError> {
        self.map_err(|e| match e.into() {
            redb::Error::Corrupted(detail) => StoreError::Corrupt(format!("{context}: {detail}")),
            other => StoreError::unavailable(context, other),
        })
    }
}

fn corrupt(what: &str, key: &str, e: impl fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what} {key:?}: {e}"))
}

/// Indexes of due times (module docs): what a scheduler or sweeper reads instead of every record.
mod due {
    use chrono::{DateTime, Utc};
    use redb::{Database, ReadableDatabase, TableDefinition, TableError, WriteTransaction};

    use super::{OrUnavailable, keys};
    use segments_core::ports::StoreError;

    /// An index of due times: key [`keys::due_key`] → the key of the record it names.
    pub(super) type DueIndex = TableDefinition<'static, &'static str, &'static str>;

    /// Files `record_key` under `at`, inside the caller's write.
    pub(super) fn add(
        write: &WriteTransaction,
        index: DueIndex,
        at: DateTime<Utc>,
        record_key: &str,
    ) -> Result<(), StoreError> {
        const WHAT: &str = "writing an index of due times";
        let entry = keys::due_key(at, record_key);
        write.open_table(index).or_unavailable(WHAT)?.insert(entry.as_str(), record_key).or_unavailable(WHAT)?;
        Ok(())
    }

    /// Removes the entry [`add`] made for `record_key` at `at`, inside the caller's write.
    pub(super) fn remove(
        write: &WriteTransaction,
        index: DueIndex,
        at: DateTime<Utc>,
        record_key: &str,
    ) -> Result<(), StoreError> {
        const WHAT: &str = "writing an index of due times";
        let entry = keys::due_key(at, record_key);
        write.open_table(index).or_unavailable(WHAT)?.remove(entry.as_str()).or_unavailable(WHAT)?;
        Ok(())
    }

    /// Up to `limit` records of `records` that `index` files at times up to `now` (its second
    /// included), earliest first, each decoded by `decode` from its key and stored bytes. Reads
    /// the index up to `now` and one record per entry, nothing else.
    pub(super) fn read<T>(
        db: &Database,
        index: DueIndex,
        records: TableDefinition<'static, &'static str, &'static [u8]>,
        now: DateTime<Utc>,
        limit: u32,
        what: &str,
        decode: impl Fn(&str, &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let bound = keys::due_bound(now);
        let read = db.begin_read().or_unavailable(what)?;
        let (index, records) = match (read.open_table(index), read.open_table(records)) {
            (Ok(index), Ok(records)) => (index, records),
            // Nothing was ever filed here.
            (Err(TableError::TableDoesNotExist(_)), _) | (_, Err(TableError::TableDoesNotExist(_))) => {
                return Ok(Vec::new());
            }
            (Err(e), _) | (_, Err(e)) => return Err(e).or_unavailable(what),
        };
        let mut found = Vec::new();
        for entry in index.range::<&str>(..bound.as_str()).or_unavailable(what)?.take(limit as usize) {
            let (_, record_key) = entry.or_unavailable(what)?;
            let record_key = record_key.value();
            let Some(stored) = records.get(record_key).or_unavailable(what)? else {
                return Err(StoreError::Corrupt(format!("an index of due times names {record_key}, which is missing")));
            };
            found.push(decode(record_key, stored.value())?);
        }
        Ok(found)
    }
}
