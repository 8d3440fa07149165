//! The importer of account data (docs/data.md): `accounts.ndjson` and `transactions.ndjson`, one
//! JSON object per line in any order, written user by user through the one write of the account
//! data use case ([`AccountData::replace_in`]), the same as the data API's.
//!
//! [`Importer::run`] is the entry point of the command line and of the import worker alike. It
//! holds the mandator's import lock for the whole run, renewing its lease, and keeps the
//! [`ImportRecord`] current: VALIDATING, APPLYING (with counts now and then), then COMPLETED with
//! exact counts, or FAILED with the bad lines or the reason.
//!
//! A bad file applies nothing: both files are validated completely first, and every bad line is
//! reported as `file:line: reason`. AccountIds are unique per mandator: the segments API names
//! accounts by accountId alone. A second account line with an accountId another user already has
//! — earlier in the file, or in the mandator's stored data (read from the account directory after
//! the files are checked) — is a bad line, unless the import takes the account from that user
//! (the user is in the files too, or a `replaceMandator` import erases it); a transaction must name
//! its account's user.
//!
//! Files may be larger than memory, their lines in any order. Validation holds the keys of the
//! accounts (with currency and line number), a few numbers per user and one 64-bit hash per
//! transaction, to find duplicate transactionIds; hashes that occur twice are confirmed against
//! the actual ids in an extra pass over the transactions file, so a hash collision is never
//! reported as a duplicate. While validating, every valid line also goes to one of several
//! temporary bucket files, chosen by a hash of its userId, so each user's lines end up in one
//! bucket; the files' size sets the number of buckets, so that each holds a few tens of MB. Writing
//! then loads one bucket at a time, groups it by user and replaces each user's data as a unit, a
//! few users at once. Each write is atomic and keyed by the user, so running the same import
//! again is safe, also after a failure part-way.
//!
//! An account that moves between users is released by one user's write and claimed by the
//! other's. A write that finds the account still held waits for a later round, after the other
//! users (and after the erasures of a `replaceMandator` import). Users waiting for each other's
//! accounts in a cycle are resolved by first writing one of them without the accounts it waits for.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use futures::TryStreamExt;
use futures::future::join_all;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};

use crate::domain::records::{AccountRecord, DEFAULT_SHARD_COUNT, MAX_SHARD_COUNT, TransactionRecord};
use crate::domain::{
    AccountHistory, AccountId, AccountType, Currency, MandatorId, Money, TransactionId, UserData, UserId,
};
use crate::imports::{ImportCounts, ImportId, ImportMode, ImportRecord, ImportStatus, LOCK_LEASE, MAX_RECORDED_ERRORS};
use crate::ports::{ImportStore, SegmentStore, StoreError, UserStore, UserWriteError};
use crate::snapshot;
use crate::usecases::account_data::{AccountData, DataError};

/// Bad lines listed in [`ImportError::Invalid`] and on the record; the rest are counted.
pub const MAX_REPORTED_ERRORS: usize = MAX_RECORDED_ERRORS;
/// Longest line accepted. A record is a few hundred bytes; a longer line is not one.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// What one bucket of grouped lines should hold: a bucket is loaded whole to group it by user.
pub const BUCKET_BYTES: u64 = 32 << 20;
/// Most buckets, each an open file while validating. Files larger than this many buckets of
/// [`BUCKET_BYTES`] make larger buckets.
pub const MAX_BUCKETS: u64 = 256;
/// Users written at the same time.
pub const WRITE_CONCURRENCY: usize = 8;
/// Characters of a failure's reason kept on the record: a message, not a dump.
const MAX_FAILURE_CHARS: usize = 2000;
/// Characters of a bad line's reason that are kept.
const MAX_REASON_CHARS: usize = 400;
/// Accounts looked up in the account directory per call.
const DIRECTORY_BATCH: usize = 1000;
/// Lines between two progress reports while validating.
const PROGRESS_EVERY: u64 = 4096;
const READ_BUFFER_BYTES: usize = 1 << 20;
const BUCKET_BUFFER_BYTES: usize = 64 << 10;

/// How an import runs; the record says what it imports (mandator, mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// The shard count of the mandator's data (1 to [`MAX_SHARD_COUNT`]): recorded by its first
    /// import (default [`DEFAULT_SHARD_COUNT`]); for a mandator with data it must be absent or the
    /// recorded count.
    pub shard_count: Option<u32>,
    /// Where the grouped lines are kept while the import runs (about the size of the two files);
    /// default: the system's temporary directory.
    pub spill_dir: Option<PathBuf>,
    /// How bad lines name the accounts and the transactions file; default: the paths as given.
    pub file_names: Option<(String, String)>,
    /// How often the lease of the import lock is renewed: well within [`LOCK_LEASE`].
    pub renew_every: Duration,
    /// How often the record's counts are saved while writing.
    pub save_every: Duration,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            shard_count: None,
            spill_dir: None,
            file_names: None,
            renew_every: (LOCK_LEASE / 4).to_std().expect("the lease is positive"),
            save_every: Duration::from_secs(5),
        }
    }
}

/// A bad line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The file as it was given (or named by [`ImportOptions::file_names`]).
    pub file: String,
    /// 1-based, counting blank lines; 0 when the reason concerns the whole file.
    pub line: u64,
    pub reason: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.reason)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportPhase {
    /// Reading both files, checking every line and grouping the valid ones by user.
    Validating,
    /// Re-reading the transactions to confirm suspected duplicate transactionIds. Rare.
    CheckingDuplicates,
    /// Writing the users.
    Writing,
    /// Erasing the stored users a `replaceMandator` import does not contain.
    Erasing,
}

/// Where an import is, for a progress bar: `done` of `total` in the current phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportProgress {
    pub phase: ImportPhase,
    /// Bytes of the files (validating, checking duplicates), of the grouped lines (writing; a
    /// later round of waiting users starts again), or shards (erasing).
    pub done: u64,
    pub total: u64,
    /// Lines checked (validating).
    pub lines: u64,
    /// What was written so far.
    pub counts: ImportCounts,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("import {0} does not exist")]
    Unknown(ImportId),
    #[error("import {0} has finished already")]
    Finished(ImportId),
    /// The mandator's import lock is held by another import whose lease has not run out.
    #[error("another import of mandator {mandator} is running")]
    Busy { mandator: MandatorId, holder: Option<ImportId> },
    #[error("the shard count must be between 1 and {MAX_SHARD_COUNT}, not {0}")]
    ShardCount(u32),
    #[error("mandator {mandator} has {recorded} shards; an import cannot change that to {requested}")]
    ShardsRecorded { mandator: MandatorId, recorded: u32, requested: u32 },
    #[error("nothing to import: the files have no account or transaction lines")]
    Empty,
    #[error("{} invalid line(s), nothing was imported", .errors.len() + .more)]
    Invalid {
        /// The first [`MAX_REPORTED_ERRORS`] bad lines, in file and line order.
        errors: Vec<LineError>,
        /// Bad lines not listed.
        more: usize,
    },
    #[error("cannot read {path} ({})", written_text(.written))]
    Io {
        path: String,
        written: ImportCounts,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot keep the grouped lines in {path} ({})", written_text(.written))]
    Spill {
        path: String,
        written: ImportCounts,
        #[source]
        source: std::io::Error,
    },
    #[error("storing account data failed ({})", written_text(.written))]
    Store {
        written: ImportCounts,
        #[source]
        source: StoreError,
    },
    #[error("the data of userId {user} was not written: {reason} ({})", written_text(.written))]
    Rejected { user: UserId, reason: String, written: ImportCounts },
    #[error("the import lock of mandator {mandator} was taken by another import ({})", written_text(.written))]
    LockLost { mandator: MandatorId, written: ImportCounts },
    /// The import's record or lock could not be read or written.
    #[error("the import's record is unavailable")]
    Record(#[source] StoreError),
}

/// What an import had written when it stopped, for its error message.
fn written_text(written: &ImportCounts) -> String {
    if *written == ImportCounts::default() {
        return "nothing was written".to_owned();
    }
    let erased = match written.erased_users {
        0 => String::new(),
        n => format!(" and {n} erased"),
    };
    format!(
        "{} users with {} accounts and {} transactions were written{erased}; running the same import again is safe",
        written.users, written.accounts, written.transactions
    )
}

/// What an import takes: the account data it writes, the import records and locks, and the
/// segments whose membership loses the accounts an import takes away.
#[derive(Clone)]
pub struct Importer {
    pub users: Arc<dyn UserStore>,
    pub imports: Arc<dyn ImportStore>,
    pub segments: Arc<dyn SegmentStore>,
}

impl Importer {
    /// Runs the stored import `record` (created by [`ImportStore::create_import`], not final) over
    /// the two files: takes the mandator's import lock, validates both files completely, then
    /// writes every user of the files, and in a `replaceMandator` import erases every other stored
    /// user; the lock is released in every outcome. Returns the COMPLETED record.
    ///
    /// On an error the record is FAILED with the bad lines or the reason, except `Unknown`,
    /// `Finished`, `Busy` (the record is left as it was, so the import can start once the other
    /// one is done) and `Record`.
    pub async fn run(
        &self,
        record: ImportRecord,
        accounts: &Path,
        transactions: &Path,
        options: &ImportOptions,
        progress: impl FnMut(ImportProgress),
    ) -> Result<ImportRecord, ImportError> {
        let (mandator, id) = (record.mandator_id, record.import_id);
        let record = match self.imports.get_import(&mandator, id).await.map_err(ImportError::Record)? {
            None => return Err(ImportError::Unknown(id)),
            Some(r) if r.status.is_final() => return Err(ImportError::Finished(id)),
            Some(r) => r,
        };
        let now = Utc::now();
        match self.imports.lock_mandator(&mandator, id, now, now + LOCK_LEASE).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                let holder = self.imports.lock_holder(&mandator, now).await.ok().flatten();
                return Err(ImportError::Busy { mandator, holder });
            }
            Err(e) => return Err(ImportError::Record(e)),
        }
        tracing::info!(%mandator, import_id = %id, mode = record.mode.as_str(), "import started");
        let mut run = Run {
            imports: self.imports.as_ref(),
            record,
            options,
            progress,
            counts: ImportCounts::default(),
            renewed: Instant::now(),
            saved: Instant::now(),
        };
        let outcome = run.import(self, accounts, transactions).await;
        let finished = run.finish(outcome).await;
        if let Err(e) = self.imports.unlock_mandator(&mandator, id).await {
            tracing::warn!(%mandator, import_id = %id, error = %e, "the import lock stays until its lease runs out");
        }
        finished
    }
}

/// One run of an import: its record, its counts and the upkeep of its lock.
struct Run<'a, P> {
    imports: &'a dyn ImportStore,
    record: ImportRecord,
    options: &'a ImportOptions,
    progress: P,
    counts: ImportCounts,
    renewed: Instant,
    saved: Instant,
}

impl<P: FnMut(ImportProgress)> Run<'_, P> {
    async fn import(&mut self, importer: &Importer, accounts: &Path, transactions: &Path) -> Result<(), ImportError> {
        let options = self.options;
        if let Some(n) = options.shard_count
            && !(1..=MAX_SHARD_COUNT).contains(&n)
        {
            return Err(ImportError::ShardCount(n));
        }
        self.set_status(ImportStatus::Validating).await?;
        let mandator = self.record.mandator_id.clone();
        let recorded = importer.users.shard_count(&mandator).await.map_err(|e| self.store_error(e))?;
        if let (Some(recorded), Some(requested)) = (recorded, options.shard_count)
            && recorded != requested
        {
            return Err(ImportError::ShardsRecorded { mandator, recorded, requested });
        }

        let (accounts_name, transactions_name) = match &options.file_names {
            Some((a, t)) => (a.clone(), t.clone()),
            None => (accounts.display().to_string(), transactions.display().to_string()),
        };
        let files = Files {
            accounts: Source::new(accounts, accounts_name).await?,
            transactions: Source::new(transactions, transactions_name).await?,
        };
        let spill_dir = options.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
        let spill_error = |source| ImportError::Spill {
            path: spill_dir.display().to_string(),
            written: ImportCounts::default(),
            source,
        };
        let mut buckets = Buckets::create(&spill_dir, bucket_count(files.total())).map_err(spill_error)?;
        let mut checked = Checked::new(mandator.clone());
        checked.validate(&files, &mut buckets, self).await?;
        buckets.close().await.map_err(spill_error)?;
        if checked.is_clean() {
            let held = held_by_others(importer.users.as_ref(), &checked, self.record.mode, &files.accounts.name)
                .await
                .map_err(|e| self.store_error(e))?;
            checked.add_errors(held);
        }
        if checked.is_clean() {
            let oversized = oversized_users(&checked, &buckets, &files.accounts.name).await.map_err(spill_error)?;
            checked.add_errors(oversized);
        }
        if !checked.is_clean() {
            let mut errors = checked.errors;
            // Duplicates and findings about whole users come last; list everything in file order.
            errors.sort_by_key(|e| (e.file != files.accounts.name, e.line));
            return Err(ImportError::Invalid { errors, more: checked.more_errors });
        }
        if checked.account_lines + checked.transaction_lines == 0 {
            return Err(ImportError::Empty);
        }
        let file_users: HashSet<UserId> = checked.users.into_keys().collect();

        self.set_status(ImportStatus::Applying).await?;
        let shard_count = match recorded {
            Some(n) => n,
            None => self.record_shard_count(importer.users.as_ref(), &mandator).await?,
        };
        let mut apply = Apply {
            data: AccountData { users: importer.users.clone(), segments: importer.segments.clone() },
            mandator,
            shard_count,
            mode: self.record.mode,
            file_users,
            spill_dir: spill_dir.clone(),
            bucket_count: buckets.count(),
            done: 0,
            total: buckets.total(),
        };
        let mut waiting = Waiting::create(&apply, false).map_err(|e| self.spill_error(&apply, e))?;
        self.write_all(&mut apply, &mut buckets, &mut waiting).await?;
        drop(buckets);
        if apply.mode == ImportMode::ReplaceMandator {
            self.erase_others(&apply).await?;
        }
        self.write_waiting(&mut apply, waiting).await
    }

    /// Records the shard count of a mandator's first import, or takes the one recorded meanwhile.
    async fn record_shard_count(&mut self, users: &dyn UserStore, mandator: &MandatorId) -> Result<u32, ImportError> {
        let requested = self.options.shard_count;
        let count = requested.unwrap_or(DEFAULT_SHARD_COUNT);
        match users.ensure_shard_count(mandator, count).await {
            Ok(()) => Ok(count),
            Err(StoreError::Conflict(_)) => {
                let recorded = users.shard_count(mandator).await.map_err(|e| self.store_error(e))?.unwrap_or(count);
                match requested {
                    Some(requested) if requested != recorded => {
                        Err(ImportError::ShardsRecorded { mandator: mandator.clone(), recorded, requested })
                    }
                    _ => Ok(recorded),
                }
            }
            Err(e) => Err(self.store_error(e)),
        }
    }

    /// Writes every user of `source`, bucket by bucket; users that find an account still held by
    /// a user the import changes go to `waiting`.
    async fn write_all(
        &mut self,
        apply: &mut Apply,
        source: &mut Buckets,
        waiting: &mut Waiting,
    ) -> Result<(), ImportError> {
        for bucket in 0..source.count() {
            if source.size(bucket) == 0 {
                continue;
            }
            let bytes = source.read(bucket).await.map_err(|e| self.spill_error(apply, e))?;
            let grouped = group(&bytes).map_err(|e| self.spill_error(apply, e))?;
            let users: Vec<(&str, Vec<Spilled<'_>>)> = grouped.into_iter().collect();
            for chunk in users.chunks(WRITE_CONCURRENCY) {
                let mut built = Vec::with_capacity(chunk.len());
                for (user, lines) in chunk {
                    built.push(build_user(user, lines).map_err(|e| self.spill_error(apply, e))?);
                }
                let results =
                    join_all(built.iter().map(|data| apply.data.replace_in(&apply.mandator, apply.shard_count, data)))
                        .await;
                let mut failure = None;
                for (((user, lines), data), result) in chunk.iter().zip(&built).zip(results) {
                    match result {
                        Ok(summary) => {
                            self.counts.users += 1;
                            self.counts.accounts += summary.accounts as u64;
                            self.counts.transactions += summary.transactions as u64;
                        }
                        Err(UserWriteError::AccountHeld { account, holder }) if apply.takes_from(&holder) => {
                            waiting
                                .add(&data.user_id, user, lines, holder, account)
                                .await
                                .map_err(|e| self.spill_error(apply, e))?;
                        }
                        Err(e) => {
                            failure.get_or_insert((&data.user_id, e));
                        }
                    }
                    apply.done += lines.iter().map(|l| l.entry.len() as u64).sum::<u64>();
                }
                // After the whole group, so that the error counts every write that happened.
                if let Some((user, e)) = failure {
                    return Err(self.write_failure(user, e));
                }
                self.tick(ImportPhase::Writing, apply.done, apply.total, 0).await?;
            }
            drop(users);
            source.discard(bucket).await;
        }
        Ok(())
    }

    /// Erases every stored user of the mandator that the files do not contain, shard by shard.
    async fn erase_others(&mut self, apply: &Apply) -> Result<(), ImportError> {
        let shards = u64::from(apply.shard_count);
        for shard in 0..apply.shard_count {
            let others: Vec<UserId> = apply
                .data
                .users
                .user_ids(&apply.mandator, shard)
                .try_filter(|user| std::future::ready(!apply.file_users.contains(user)))
                .try_collect()
                .await
                .map_err(|e| self.store_error(e))?;
            for chunk in others.chunks(WRITE_CONCURRENCY) {
                let results =
                    join_all(chunk.iter().map(|user| apply.data.erase_in(&apply.mandator, apply.shard_count, user)))
                        .await;
                let mut failure = None;
                for (user, result) in chunk.iter().zip(results) {
                    match result {
                        Ok(true) => self.counts.erased_users += 1,
                        // Erased by someone else meanwhile.
                        Ok(false) => {}
                        Err(e) => {
                            failure.get_or_insert((user, e));
                        }
                    }
                }
                if let Some((user, e)) = failure {
                    return Err(self.erase_failure(user, e));
                }
                self.tick(ImportPhase::Erasing, u64::from(shard), shards, 0).await?;
            }
            self.tick(ImportPhase::Erasing, u64::from(shard) + 1, shards, 0).await?;
        }
        Ok(())
    }

    /// Writes the users that waited for accounts, round after round, until none is left.
    async fn write_waiting(&mut self, apply: &mut Apply, mut pending: Waiting) -> Result<(), ImportError> {
        while pending.users > 0 {
            pending.buckets.close().await.map_err(|e| self.spill_error(apply, e))?;
            let mut next = Waiting::create(apply, true).map_err(|e| self.spill_error(apply, e))?;
            let written = self.counts.users;
            apply.done = 0;
            apply.total = pending.buckets.total();
            self.write_all(apply, &mut pending.buckets, &mut next).await?;
            if self.counts.users == written {
                // Nobody could be written: every one waits for an account another user holds.
                next.buckets.close().await.map_err(|e| self.spill_error(apply, e))?;
                self.break_cycle(apply, &next).await?;
            }
            pending = next;
        }
        Ok(())
    }

    /// Finds users waiting for each other's accounts in a cycle and writes one of them without
    /// the accounts it waits for, which releases the accounts it no longer has; it is written in
    /// full in the next round. Without a cycle, the accounts are held by users the import does not
    /// change (written meanwhile): the import fails.
    async fn break_cycle(&mut self, apply: &Apply, waiting: &Waiting) -> Result<(), ImportError> {
        let waits = waiting.waits.as_ref().expect("later rounds track who waits for whom");
        for start in waits.keys() {
            let mut seen = HashSet::new();
            let mut at = start;
            while let Some((holder, _)) = waits.get(at) {
                if !seen.insert(at) {
                    // The first user met twice is on the cycle.
                    return self.write_without_held(apply, waiting, at).await;
                }
                at = holder;
            }
        }
        let (user, (holder, account)) = waits.iter().next().expect("a round without progress has waiting users");
        Err(ImportError::Rejected {
            user: user.clone(),
            reason: format!("accountId {account} is held by userId {holder}, which this import does not change"),
            written: self.counts,
        })
    }

    async fn write_without_held(&mut self, apply: &Apply, waiting: &Waiting, user: &UserId) -> Result<(), ImportError> {
        let bucket = waiting.buckets.bucket_of(user.as_str());
        let bytes = waiting.buckets.read(bucket).await.map_err(|e| self.spill_error(apply, e))?;
        let grouped = group(&bytes).map_err(|e| self.spill_error(apply, e))?;
        let lines = grouped.get(user.as_str()).map(Vec::as_slice).unwrap_or_default();
        let mut data = build_user(user.as_str(), lines).map_err(|e| self.spill_error(apply, e))?;
        loop {
            if data.accounts.is_empty() {
                return match apply.data.erase_in(&apply.mandator, apply.shard_count, user).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(self.erase_failure(user, e)),
                };
            }
            match apply.data.replace_in(&apply.mandator, apply.shard_count, &data).await {
                Ok(_) => return Ok(()),
                Err(UserWriteError::AccountHeld { account, holder }) => {
                    let before = data.accounts.len();
                    data.accounts.retain(|h| h.account.account_id != account);
                    if data.accounts.len() == before {
                        let e = UserWriteError::AccountHeld { account, holder };
                        return Err(self.write_failure(user, e));
                    }
                }
                Err(e) => return Err(self.write_failure(user, e)),
            }
        }
    }

    /// Reports progress, renews the lock's lease and saves the counts when it is time.
    async fn tick(&mut self, phase: ImportPhase, done: u64, total: u64, lines: u64) -> Result<(), ImportError> {
        (self.progress)(ImportProgress { phase, done, total, lines, counts: self.counts });
        if self.renewed.elapsed() >= self.options.renew_every {
            let now = Utc::now();
            let (mandator, id) = (&self.record.mandator_id, self.record.import_id);
            match self.imports.lock_mandator(mandator, id, now, now + LOCK_LEASE).await {
                Ok(()) => self.renewed = Instant::now(),
                Err(StoreError::Conflict(_)) => {
                    return Err(ImportError::LockLost { mandator: mandator.clone(), written: self.counts });
                }
                // Retried at the next tick, while the lease still has time left.
                Err(e) if self.renewed.elapsed() < self.options.renew_every * 2 => {
                    tracing::warn!(%mandator, import_id = %id, error = %e, "renewing the import lock failed");
                }
                Err(e) => return Err(ImportError::Record(e)),
            }
        }
        if self.record.status == ImportStatus::Applying && self.saved.elapsed() >= self.options.save_every {
            self.saved = Instant::now();
            self.record.counts = self.counts;
            self.record.updated_at = Utc::now();
            match self.imports.update_import(&self.record).await {
                Ok(true) => {}
                Ok(false) => return Err(ImportError::Finished(self.record.import_id)),
                // The counts are only news; the next save or the final one brings them.
                Err(e) => {
                    tracing::warn!(import_id = %self.record.import_id, error = %e, "saving the import's counts failed")
                }
            }
        }
        Ok(())
    }

    async fn set_status(&mut self, status: ImportStatus) -> Result<(), ImportError> {
        self.record.status = status;
        self.record.counts = self.counts;
        self.record.updated_at = Utc::now();
        match self.imports.update_import(&self.record).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ImportError::Finished(self.record.import_id)),
            Err(e) => Err(ImportError::Record(e)),
        }
    }

    /// Saves the outcome on the record: COMPLETED with the counts, or FAILED with the bad lines
    /// or the reason.
    async fn finish(mut self, outcome: Result<(), ImportError>) -> Result<ImportRecord, ImportError> {
        self.record.counts = self.counts;
        self.record.updated_at = Utc::now();
        match &outcome {
            Ok(()) => self.record.status = ImportStatus::Completed,
            Err(ImportError::Invalid { errors, more }) => {
                self.record.status = ImportStatus::Failed;
                self.record.errors = errors.iter().map(ToString::to_string).collect();
                self.record.more_errors = *more as u64;
            }
            Err(e) => {
                self.record.status = ImportStatus::Failed;
                self.record.failure = Some(e.to_string().chars().take(MAX_FAILURE_CHARS).collect());
            }
        }
        let id = self.record.import_id;
        let mandator = self.record.mandator_id.clone();
        match (outcome, self.imports.update_import(&self.record).await) {
            (Ok(()), Ok(saved)) => {
                if saved {
                    crate::telemetry::import_completed(mandator.as_str(), &id.to_string(), self.counts.users);
                } else {
                    tracing::warn!(import_id = %id, "the import completed, but its record was final already");
                }
                tracing::info!(import_id = %id, counts = ?self.counts, "import completed");
                Ok(self.record)
            }
            (Ok(()), Err(e)) => Err(ImportError::Record(e)),
            (Err(e), saved) => {
                crate::telemetry::import_failed(mandator.as_str(), &id.to_string(), self.counts.users);
                if let Err(save) = saved {
                    tracing::warn!(import_id = %id, error = %save, "the failed import's record could not be saved");
                }
                tracing::info!(import_id = %id, error = %e, "import failed");
                Err(e)
            }
        }
    }

    fn store_error(&self, source: StoreError) -> ImportError {
        ImportError::Store { written: self.counts, source }
    }

    fn spill_error(&self, apply: &Apply, source: std::io::Error) -> ImportError {
        ImportError::Spill { path: apply.spill_dir.display().to_string(), written: self.counts, source }
    }

    fn write_failure(&self, user: &UserId, e: UserWriteError) -> ImportError {
        let reason = match e {
            UserWriteError::Store(source) => return self.store_error(source),
            UserWriteError::VersionChanged => "its data kept changing during the write".to_owned(),
            UserWriteError::AccountHeld { account, holder } => format!(
                "accountId {account} is held by userId {holder}, which this import does not change (written since \
                 the import was validated)"
            ),
            UserWriteError::TooLarge(e) => e.to_string(),
        };
        ImportError::Rejected { user: user.clone(), reason, written: self.counts }
    }

    fn erase_failure(&self, user: &UserId, e: DataError) -> ImportError {
        match e {
            DataError::Store(source) => self.store_error(source),
            DataError::Contended => ImportError::Rejected {
                user: user.clone(),
                reason: "its data kept changing while it was erased".to_owned(),
                written: self.counts,
            },
            other => ImportError::Rejected { user: user.clone(), reason: other.to_string(), written: self.counts },
        }
    }
}

/// What writing needs beyond the run: where and how users are written.
struct Apply {
    data: AccountData,
    mandator: MandatorId,
    shard_count: u32,
    mode: ImportMode,
    /// Every user of the files.
    file_users: HashSet<UserId>,
    spill_dir: PathBuf,
    bucket_count: usize,
    /// Bytes of grouped lines handled, of `total`, in the current round.
    done: u64,
    total: u64,
}

impl Apply {
    /// Whether an account `holder` holds is released later in this import: the holder is written
    /// too (without the account, which the files give to another user), or erased.
    fn takes_from(&self, holder: &UserId) -> bool {
        self.file_users.contains(holder) || self.mode == ImportMode::ReplaceMandator
    }
}

/// Users whose write found an account still held, with their lines, for the next round.
struct Waiting {
    buckets: Buckets,
    users: u64,
    /// In rounds after the first: whom each user waits for, and for which account.
    waits: Option<BTreeMap<UserId, (UserId, AccountId)>>,
}

impl Waiting {
    fn create(apply: &Apply, track: bool) -> std::io::Result<Waiting> {
        Ok(Waiting {
            buckets: Buckets::create(&apply.spill_dir, apply.bucket_count)?,
            users: 0,
            waits: track.then(BTreeMap::new),
        })
    }

    async fn add(
        &mut self,
        user: &UserId,
        key: &str,
        lines: &[Spilled<'_>],
        holder: UserId,
        account: AccountId,
    ) -> std::io::Result<()> {
        for line in lines {
            self.buckets.push_entry(key, line.entry).await?;
        }
        self.users += 1;
        if let Some(waits) = &mut self.waits {
            waits.insert(user.clone(), (holder, account));
        }
        Ok(())
    }
}

/// One input file.
struct Source<'p> {
    path: &'p Path,
    name: String,
    size: u64,
}

struct Files<'p> {
    accounts: Source<'p>,
    transactions: Source<'p>,
}

impl<'p> Source<'p> {
    async fn new(path: &'p Path, name: String) -> Result<Source<'p>, ImportError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|source| ImportError::Io { path: name.clone(), written: ImportCounts::default(), source })?
            .len();
        Ok(Source { path, name, size })
    }

    async fn open(&self) -> Result<Lines, ImportError> {
        let file = tokio::fs::File::open(self.path).await.map_err(|source| ImportError::Io {
            path: self.name.clone(),
            written: ImportCounts::default(),
            source,
        })?;
        Ok(Lines {
            name: self.name.clone(),
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            buf: Vec::new(),
            number: 0,
            bytes: 0,
            too_long: false,
        })
    }
}

impl Files<'_> {
    fn total(&self) -> u64 {
        self.accounts.size + self.transactions.size
    }
}

/// Reads a file line by line, skipping blank lines, with a bound on the line length.
struct Lines {
    name: String,
    reader: BufReader<tokio::fs::File>,
    buf: Vec<u8>,
    number: u64,
    bytes: u64,
    too_long: bool,
}

impl Lines {
    /// Reads the next non-blank line into `buf` and returns its number; `None` at the end.
    async fn next(&mut self) -> Result<Option<u64>, ImportError> {
        loop {
            self.buf.clear();
            self.too_long = false;
            let mut read_any = false;
            loop {
                let available = self.reader.fill_buf().await.map_err(|source| ImportError::Io {
                    path: self.name.clone(),
                    written: ImportCounts::default(),
                    source,
                })?;
                if available.is_empty() {
                    break;
                }
                read_any = true;
                let newline = available.iter().position(|&b| b == b'\n');
                let content = &available[..newline.unwrap_or(available.len())];
                if self.buf.len() + content.len() > MAX_LINE_BYTES {
                    self.too_long = true;
                } else if !self.too_long {
                    self.buf.extend_from_slice(content);
                }
                let used = newline.map_or(available.len(), |i| i + 1);
                self.reader.consume(used);
                self.bytes += used as u64;
                if newline.is_some() {
                    break;
                }
            }
            if !read_any {
                return Ok(None);
            }
            self.number += 1;
            if self.number == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.buf.drain(..3);
            }
            if self.too_long || !self.buf.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(self.number));
            }
        }
    }

    fn parse<T: DeserializeOwned>(&self, fields: &[FieldCheck]) -> Result<T, String> {
        if self.too_long {
            return Err(format!("line is longer than {MAX_LINE_BYTES} bytes"));
        }
        parse_record(&self.buf, fields)
    }
}

/// A field of a record and a check of its value alone, to name the field at fault.
type FieldCheck = (&'static str, fn(&Value) -> Option<String>);

fn check<T: DeserializeOwned>(v: &Value) -> Option<String> {
    T::deserialize(v).err().map(|e| e.to_string())
}

const ACCOUNT_FIELDS: &[FieldCheck] = &[
    ("mandatorId", check::<MandatorId>),
    ("userId", check::<UserId>),
    ("accountId", check::<AccountId>),
    ("accountType", check::<AccountType>),
    ("currency", check::<Currency>),
    ("balance", check::<Money>),
    ("balanceDate", check::<NaiveDate>),
];

const TRANSACTION_FIELDS: &[FieldCheck] = &[
    ("mandatorId", check::<MandatorId>),
    ("userId", check::<UserId>),
    ("accountId", check::<AccountId>),
    ("transactionId", check::<TransactionId>),
    ("bookingDate", check::<NaiveDate>),
    ("amount", check::<Money>),
    ("currency", check::<Currency>),
    ("counterpartName", check::<String>),
    ("purpose", check::<String>),
    ("labels", check::<Vec<String>>),
];

fn parse_record<T: DeserializeOwned>(line: &[u8], fields: &[FieldCheck]) -> Result<T, String> {
    // serde's derived records would also take an array of the field values.
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
            Ok(_) => "expected a JSON object".to_owned(),
            Err(e) => format!("invalid JSON: {}", without_position(&e)),
        });
    }
    let e = match serde_json::from_slice::<T>(line) {
        Ok(record) => return Ok(record),
        Err(e) => e,
    };
    if !e.is_data() {
        return Err(format!("invalid JSON: {}", without_position(&e)));
    }
    // serde names missing and unknown fields, but not the field whose value is wrong.
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(line) {
        for (name, check) in fields {
            if let Some(reason) = map.get(*name).and_then(check) {
                return Err(format!("{name}: {reason}"));
            }
        }
    }
    Err(without_position(&e))
}

/// serde_json's message without "at line 1 column N": the line is ours to report.
fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(i) => format!("{} (column {})", &message[..i], e.column()),
        None => message,
    }
}

/// What the validation remembers of an account (keyed by its accountId).
struct SeenAccount {
    user: UserId,
    currency: Currency,
    line: u64,
}

/// What the validation remembers of a user.
struct SeenUser {
    accounts: usize,
    /// The line of the user's first account.
    first_line: u64,
    /// At most the size of the user's stored record before compression.
    raw_bound: u64,
}

/// The account lines whose accountId the stored data of the mandator gives to another user that
/// the import leaves as it is, in line order.
async fn held_by_others(
    users: &dyn UserStore,
    checked: &Checked,
    mode: ImportMode,
    file: &str,
) -> Result<Vec<LineError>, StoreError> {
    let mandator = &checked.mandator;
    let ids: Vec<AccountId> = checked.accounts.keys().cloned().collect();
    let mut errors = Vec::new();
    for chunk in ids.chunks(DIRECTORY_BATCH) {
        for (account, stored_user) in users.account_users(mandator, chunk).await? {
            let Some(seen) = checked.accounts.get(&account) else { continue };
            // A user of the files is replaced without the account, and `replaceMandator` erases
            // every other user: either way the account is free by the time it is claimed.
            let released = checked.users.contains_key(&stored_user) || mode == ImportMode::ReplaceMandator;
            if seen.user != stored_user && !released {
                let reason = format!(
                    "accountId {account} belongs to userId {stored_user} in the stored data of mandator \
                     {mandator}, not to userId {}; accountIds are unique per mandator",
                    seen.user
                );
                errors.push(LineError { file: file.to_owned(), line: seen.line, reason });
            }
        }
    }
    errors.sort_by_key(|e| e.line);
    Ok(errors)
}

/// The users whose data may not fit the store, checked by encoding them from their bucket:
/// a line error at each one's first account when it does not. Rare: only users with tens of
/// thousands of transactions come near the limit.
async fn oversized_users(checked: &Checked, buckets: &Buckets, file: &str) -> std::io::Result<Vec<LineError>> {
    let mut by_bucket: BTreeMap<usize, Vec<(&UserId, &SeenUser)>> = BTreeMap::new();
    for (user, seen) in &checked.users {
        if !snapshot::always_fits(seen.raw_bound) {
            by_bucket.entry(buckets.bucket_of(user.as_str())).or_default().push((user, seen));
        }
    }
    let mut errors = Vec::new();
    for (bucket, users) in by_bucket {
        let bytes = buckets.read(bucket).await?;
        let grouped = group(&bytes)?;
        for (user, seen) in users {
            let lines = grouped.get(user.as_str()).map(Vec::as_slice).unwrap_or_default();
            if let Err(e) = snapshot::encode(&build_user(user.as_str(), lines)?) {
                let reason = format!("userId {user}: {e}");
                errors.push(LineError { file: file.to_owned(), line: seen.first_line, reason });
            }
        }
    }
    Ok(errors)
}

/// A set of hashes, which need no hashing again.
type HashSet64 = HashSet<u64, BuildHasherDefault<PreHashed>>;

#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn transaction_hash(user: &UserId, account: &AccountId, transaction: &TransactionId) -> u64 {
    let mut h = DefaultHasher::new();
    // `str` hashes with a terminator, so the three ids cannot run into each other.
    (user.as_str(), account.as_str(), transaction.as_str()).hash(&mut h);
    h.finish()
}

/// The validation's state and findings.
struct Checked {
    /// The import's mandator: every line must be of it.
    mandator: MandatorId,
    accounts: HashMap<AccountId, SeenAccount>,
    users: HashMap<UserId, SeenUser>,
    transaction_hashes: HashSet64,
    /// Hashes seen more than once: duplicates, or (rarely) collisions.
    suspects: HashSet64,
    errors: Vec<LineError>,
    more_errors: usize,
    account_lines: u64,
    transaction_lines: u64,
}

impl Checked {
    fn new(mandator: MandatorId) -> Self {
        Checked {
            mandator,
            accounts: HashMap::new(),
            users: HashMap::new(),
            transaction_hashes: HashSet64::default(),
            suspects: HashSet64::default(),
            errors: Vec::new(),
            more_errors: 0,
            account_lines: 0,
            transaction_lines: 0,
        }
    }

    fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.more_errors == 0
    }

    fn error(&mut self, file: &str, line: u64, mut reason: String) {
        if self.errors.len() < MAX_REPORTED_ERRORS {
            // A reason may quote the bad value, which can be most of a long line.
            if let Some((cut, _)) = reason.char_indices().nth(MAX_REASON_CHARS) {
                reason.truncate(cut);
                reason.push('…');
            }
            self.errors.push(LineError { file: file.to_owned(), line, reason });
        } else {
            self.more_errors += 1;
        }
    }

    fn add_errors(&mut self, errors: Vec<LineError>) {
        for e in errors {
            self.error(&e.file, e.line, e.reason);
        }
    }

    fn check_mandator(&self, mandator: &MandatorId) -> Result<(), String> {
        if *mandator == self.mandator {
            Ok(())
        } else {
            Err(format!("mandatorId {mandator} is not {}, the mandator of this import", self.mandator))
        }
    }

    /// Checks every line of both files and puts each valid one into its user's bucket (until the
    /// first bad line: then nothing will be written anyway).
    async fn validate<P: FnMut(ImportProgress)>(
        &mut self,
        files: &Files<'_>,
        buckets: &mut Buckets,
        run: &mut Run<'_, P>,
    ) -> Result<(), ImportError> {
        let total = files.total();
        let dir = buckets.dir_name();
        let spill_error = |source| ImportError::Spill { path: dir.clone(), written: ImportCounts::default(), source };

        let mut lines = files.accounts.open().await?;
        while let Some(n) = lines.next().await? {
            self.account_lines += 1;
            match self.check_account(&lines, n) {
                Ok(user) if self.is_clean() => {
                    buckets.push(user.as_str(), Kind::Account, n, &lines.buf).await.map_err(spill_error)?;
                }
                Ok(_) => {}
                Err(reason) => self.error(&lines.name, n, reason),
            }
            if self.account_lines.is_multiple_of(PROGRESS_EVERY) {
                run.tick(ImportPhase::Validating, lines.bytes, total, self.account_lines).await?;
            }
        }
        let accounts_bytes = lines.bytes;

        let mut lines = files.transactions.open().await?;
        while let Some(n) = lines.next().await? {
            self.transaction_lines += 1;
            match self.check_transaction(&lines) {
                Ok(r) => {
                    let hash = transaction_hash(&r.user_id, &r.account_id, &r.transaction_id);
                    if !self.transaction_hashes.insert(hash) {
                        self.suspects.insert(hash);
                    }
                    if let Some(user) = self.users.get_mut(&r.user_id) {
                        user.raw_bound +=
                            snapshot::transaction_bound(&r.transaction_id, &r.counterpart_name, &r.labels);
                    }
                    if self.is_clean() {
                        buckets
                            .push(r.user_id.as_str(), Kind::Transaction, n, &lines.buf)
                            .await
                            .map_err(spill_error)?;
                    }
                }
                Err(reason) => self.error(&lines.name, n, reason),
            }
            if self.transaction_lines.is_multiple_of(PROGRESS_EVERY) {
                let checked = self.account_lines + self.transaction_lines;
                run.tick(ImportPhase::Validating, accounts_bytes + lines.bytes, total, checked).await?;
            }
        }
        run.tick(ImportPhase::Validating, total, total, self.account_lines + self.transaction_lines).await?;
        self.transaction_hashes = HashSet64::default();

        if !self.suspects.is_empty() {
            self.confirm_duplicates(&files.transactions, run).await?;
        }
        Ok(())
    }

    /// A valid account's user.
    fn check_account(&mut self, lines: &Lines, n: u64) -> Result<UserId, String> {
        let r: AccountRecord = lines.parse(ACCOUNT_FIELDS)?;
        self.check_mandator(&r.mandator_id)?;
        let bound = snapshot::account_bound(&r.account_id);
        match self.accounts.entry(r.account_id) {
            Entry::Occupied(first) if first.get().user == r.user_id => {
                return Err(format!(
                    "duplicate account: userId {}, accountId {} (first at line {})",
                    r.user_id,
                    first.key(),
                    first.get().line
                ));
            }
            Entry::Occupied(first) => {
                return Err(format!(
                    "accountId {} is already the account of userId {} (line {}); accountIds are unique per mandator",
                    first.key(),
                    first.get().user,
                    first.get().line
                ));
            }
            Entry::Vacant(slot) => {
                slot.insert(SeenAccount { user: r.user_id.clone(), currency: r.currency, line: n });
            }
        }
        let user = match self.users.get_mut(&r.user_id) {
            Some(user) => user,
            None => self.users.entry(r.user_id.clone()).or_insert(SeenUser {
                accounts: 0,
                first_line: n,
                raw_bound: snapshot::RECORD_BOUND,
            }),
        };
        user.accounts += 1;
        user.raw_bound += bound;
        if user.accounts > snapshot::MAX_ACCOUNTS {
            return Err(format!(
                "userId {} has more than {max} accounts; a user's data holds at most {max}",
                r.user_id,
                max = snapshot::MAX_ACCOUNTS
            ));
        }
        Ok(r.user_id)
    }

    /// A valid transaction.
    fn check_transaction(&self, lines: &Lines) -> Result<TransactionRecord, String> {
        let r: TransactionRecord = lines.parse(TRANSACTION_FIELDS)?;
        self.check_mandator(&r.mandator_id)?;
        r.check_free_text().map_err(|(field, reason)| format!("{field}: {reason}"))?;
        match self.accounts.get(&r.account_id) {
            None => Err(format!("no account line for userId {}, accountId {}", r.user_id, r.account_id)),
            Some(account) if account.user != r.user_id => Err(format!(
                "accountId {} is the account of userId {} (line {} of the accounts), not of userId {}",
                r.account_id, account.user, account.line, r.user_id
            )),
            Some(account) if account.currency != r.currency => Err(format!(
                "currency {} differs from {}, the currency of its account (line {} of the accounts)",
                r.currency, account.currency, account.line
            )),
            Some(_) => Ok(r),
        }
    }

    /// Finds the actual duplicates among the lines whose hash was seen twice.
    async fn confirm_duplicates<P: FnMut(ImportProgress)>(
        &mut self,
        source: &Source<'_>,
        run: &mut Run<'_, P>,
    ) -> Result<(), ImportError> {
        let mut first_lines: HashMap<(UserId, AccountId, TransactionId), u64> = HashMap::new();
        let mut lines = source.open().await?;
        let mut count: u64 = 0;
        while let Some(n) = lines.next().await? {
            count += 1;
            if count.is_multiple_of(PROGRESS_EVERY) {
                run.tick(ImportPhase::CheckingDuplicates, lines.bytes, source.size, count).await?;
            }
            // Lines that fail a check were reported by the first pass.
            let Ok(r) = self.check_transaction(&lines) else { continue };
            if !self.suspects.contains(&transaction_hash(&r.user_id, &r.account_id, &r.transaction_id)) {
                continue;
            }
            match first_lines.entry((r.user_id, r.account_id, r.transaction_id)) {
                Entry::Occupied(first) => {
                    let (user, account, id) = first.key();
                    let reason = format!(
                        "duplicate transactionId {id} in account userId {user}, accountId {account} (first at line {})",
                        first.get()
                    );
                    self.error(&lines.name, n, reason);
                }
                Entry::Vacant(slot) => {
                    slot.insert(n);
                }
            }
        }
        Ok(())
    }
}

/// Buckets for files of `bytes` together: enough that each holds about [`BUCKET_BYTES`].
fn bucket_count(bytes: u64) -> usize {
    bytes.div_ceil(BUCKET_BYTES).clamp(1, MAX_BUCKETS) as usize
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Account,
    Transaction,
}

/// Temporary files holding valid lines, each user's lines in the one bucket its userId hashes
/// to. An entry is the kind (1 byte), the line number (8 bytes, little-endian), the userId (its
/// length in 1 byte, then its bytes) and the line (its length in 4 bytes, little-endian, then its
/// bytes). The directory and everything in it is removed when dropped.
struct Buckets {
    dir: tempfile::TempDir,
    writers: Vec<Option<BufWriter<tokio::fs::File>>>,
    sizes: Vec<u64>,
}

impl Buckets {
    fn create(parent: &Path, count: usize) -> std::io::Result<Buckets> {
        let dir = tempfile::Builder::new().prefix("segments-import-").tempdir_in(parent)?;
        Ok(Buckets { dir, writers: (0..count).map(|_| None).collect(), sizes: vec![0; count] })
    }

    fn dir_name(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn count(&self) -> usize {
        self.sizes.len()
    }

    fn size(&self, bucket: usize) -> u64 {
        self.sizes[bucket]
    }

    fn total(&self) -> u64 {
        self.sizes.iter().sum()
    }

    fn path(&self, bucket: usize) -> PathBuf {
        self.dir.path().join(format!("{bucket:04}.lines"))
    }

    fn bucket_of(&self, user: &str) -> usize {
        let mut h = DefaultHasher::new();
        user.hash(&mut h);
        (h.finish() % self.sizes.len() as u64) as usize
    }

    async fn push(&mut self, user: &str, kind: Kind, line: u64, text: &[u8]) -> std::io::Result<()> {
        let too_long = |what| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what} too long"));
        let user_len = u8::try_from(user.len()).map_err(|_| too_long("userId"))?;
        let text_len = u32::try_from(text.len()).map_err(|_| too_long("line"))?;
        let mut entry = Vec::with_capacity(14 + user.len() + text.len());
        entry.push(match kind {
            Kind::Account => 0,
            Kind::Transaction => 1,
        });
        entry.extend_from_slice(&line.to_le_bytes());
        entry.push(user_len);
        entry.extend_from_slice(user.as_bytes());
        entry.extend_from_slice(&text_len.to_le_bytes());
        entry.extend_from_slice(text);
        self.push_entry(user, &entry).await
    }

    /// Appends a whole entry (as [`group`] yields it) to the bucket of `user`.
    async fn push_entry(&mut self, user: &str, entry: &[u8]) -> std::io::Result<()> {
        let bucket = self.bucket_of(user);
        let path = self.path(bucket);
        let writer = match &mut self.writers[bucket] {
            Some(writer) => writer,
            // Opened on first use: small imports leave most buckets empty.
            slot => slot.insert(BufWriter::with_capacity(BUCKET_BUFFER_BYTES, tokio::fs::File::create(path).await?)),
        };
        writer.write_all(entry).await?;
        self.sizes[bucket] += entry.len() as u64;
        Ok(())
    }

    /// Writes out and closes every bucket file.
    async fn close(&mut self) -> std::io::Result<()> {
        for slot in &mut self.writers {
            if let Some(mut writer) = slot.take() {
                writer.flush().await?;
            }
        }
        Ok(())
    }

    async fn read(&self, bucket: usize) -> std::io::Result<Vec<u8>> {
        if self.sizes[bucket] == 0 {
            return Ok(Vec::new());
        }
        tokio::fs::read(self.path(bucket)).await
    }

    /// Frees a bucket's disk space once it is written.
    async fn discard(&mut self, bucket: usize) {
        if self.sizes[bucket] > 0 {
            let _ = tokio::fs::remove_file(self.path(bucket)).await;
            self.sizes[bucket] = 0;
        }
    }
}

/// A line read back from a bucket.
struct Spilled<'b> {
    kind: Kind,
    line: u64,
    text: &'b [u8],
    /// The whole entry, to put it into another bucket unchanged.
    entry: &'b [u8],
}

/// A bucket's lines by userId, in userId order.
fn group(bytes: &[u8]) -> std::io::Result<BTreeMap<&str, Vec<Spilled<'_>>>> {
    let damaged = || std::io::Error::new(std::io::ErrorKind::InvalidData, "a bucket file is damaged");
    let mut users: BTreeMap<&str, Vec<Spilled<'_>>> = BTreeMap::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let mut take = |n: usize| -> std::io::Result<&[u8]> {
            let piece = bytes.get(at..at + n).ok_or_else(damaged)?;
            at += n;
            Ok(piece)
        };
        let kind = match take(1)?[0] {
            0 => Kind::Account,
            1 => Kind::Transaction,
            _ => return Err(damaged()),
        };
        let line = u64::from_le_bytes(take(8)?.try_into().map_err(|_| damaged())?);
        let user_len = usize::from(take(1)?[0]);
        let user = std::str::from_utf8(take(user_len)?).map_err(|_| damaged())?;
        let text_len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| damaged())?) as usize;
        let text = take(text_len)?;
        users.entry(user).or_default().push(Spilled { kind, line, text, entry: &bytes[start..at] });
    }
    Ok(users)
}

/// The user's data from its lines: accounts by accountId, each one's transactions by
/// (bookingDate, transactionId). The lines were validated: a transaction's currency is its
/// account's.
fn build_user(user: &str, lines: &[Spilled<'_>]) -> std::io::Result<UserData> {
    let damaged = |line: u64, reason: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a grouped line (line {line}) is damaged: {reason}"),
        )
    };
    let user_id = UserId::parse(user).map_err(|e| damaged(0, e.to_string()))?;
    let mut accounts: BTreeMap<AccountId, AccountHistory> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.kind == Kind::Account) {
        let record: AccountRecord = serde_json::from_slice(l.text).map_err(|e| damaged(l.line, e.to_string()))?;
        let (_, account) = record.into_account();
        accounts.insert(account.account_id.clone(), AccountHistory { account, transactions: Vec::new() });
    }
    for l in lines.iter().filter(|l| l.kind == Kind::Transaction) {
        let record: TransactionRecord = serde_json::from_slice(l.text).map_err(|e| damaged(l.line, e.to_string()))?;
        let (_, _, account_id, transaction) = record.into_parts();
        let history = accounts.get_mut(&account_id).ok_or_else(|| damaged(l.line, "no account".to_owned()))?;
        history.transactions.push(transaction);
    }
    for history in accounts.values_mut() {
        history
            .transactions
            .sort_by(|x, y| (x.booking_date, &x.transaction_id).cmp(&(y.booking_date, &y.transaction_id)));
    }
    Ok(UserData { user_id, accounts: accounts.into_values().collect() })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::DateTime;
    use futures::stream::{self, BoxStream, StreamExt};

    use super::*;
    use crate::domain::records::{MAX_COUNTERPART_CHARS, MAX_LABEL_CHARS, MAX_LABELS, shard_of};
    use crate::domain::segment::{AccountRef, Segment, SegmentId, SegmentQuery};
    use crate::ports::{AccountDirectory, AccountSource, StoredUser, next_version};

    /// The account data, import records and lock in memory, as the stores keep them; counts
    /// its calls and fails a chosen write.
    #[derive(Default)]
    struct Memory {
        state: Mutex<State>,
        /// The write (0-based) that fails as if the store went away.
        fail_on_put: Option<usize>,
    }

    #[derive(Default)]
    struct State {
        shard_counts: BTreeMap<MandatorId, u32>,
        users: BTreeMap<(MandatorId, UserId), StoredUser>,
        directory: BTreeMap<(MandatorId, AccountId), UserId>,
        puts: usize,
        lookups: Vec<usize>,
        imports: BTreeMap<ImportId, ImportRecord>,
        locks: BTreeMap<MandatorId, (ImportId, DateTime<Utc>)>,
        lock_calls: usize,
        left_segments: Vec<AccountId>,
    }

    impl Memory {
        fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap()
        }

        fn stored(&self, mandator: &str) -> BTreeMap<String, UserData> {
            let m = MandatorId::parse(mandator).unwrap();
            let state = self.state();
            state
                .users
                .iter()
                .filter(|((om, _), _)| *om == m)
                .map(|((_, u), s)| (u.to_string(), s.data.clone()))
                .collect()
        }

        fn directory(&self, mandator: &str) -> BTreeMap<String, String> {
            let m = MandatorId::parse(mandator).unwrap();
            let state = self.state();
            state
                .directory
                .iter()
                .filter(|((om, _), _)| *om == m)
                .map(|((_, a), u)| (a.to_string(), u.to_string()))
                .collect()
        }

        /// Stores a user as another writer would.
        fn put(&self, mandator: &str, shards: u32, data: UserData) {
            let m = MandatorId::parse(mandator).unwrap();
            let mut state = self.state();
            state.shard_counts.insert(m.clone(), shards);
            for a in &data.accounts {
                state.directory.insert((m.clone(), a.account.account_id.clone()), data.user_id.clone());
            }
            state.users.insert((m, data.user_id.clone()), StoredUser { data, version: 1 });
        }
    }

    #[async_trait]
    impl AccountSource for Memory {
        async fn shard_count(&self, mandator: &MandatorId) -> Result<Option<u32>, StoreError> {
            Ok(self.state().shard_counts.get(mandator).copied())
        }

        fn users<'a>(&'a self, mandator: &'a MandatorId, shard: u32) -> BoxStream<'a, Result<UserData, StoreError>> {
            let state = self.state();
            let shards = state.shard_counts.get(mandator).copied().unwrap_or(1);
            let users: Vec<_> = state
                .users
                .iter()
                .filter(|((m, u), _)| m == mandator && shard_of(u, shards) == shard)
                .map(|(_, s)| Ok(s.data.clone()))
                .collect();
            stream::iter(users).boxed()
        }
    }

    #[async_trait]
    impl AccountDirectory for Memory {
        async fn account_users(
            &self,
            mandator: &MandatorId,
            accounts: &[AccountId],
        ) -> Result<BTreeMap<AccountId, UserId>, StoreError> {
            let mut state = self.state();
            state.lookups.push(accounts.len());
            Ok(accounts
                .iter()
                .filter_map(|a| Some((a.clone(), state.directory.get(&(mandator.clone(), a.clone()))?.clone())))
                .collect())
        }
    }

    #[async_trait]
    impl UserStore for Memory {
        async fn ensure_shard_count(&self, mandator: &MandatorId, shard_count: u32) -> Result<(), StoreError> {
            match *self.state().shard_counts.entry(mandator.clone()).or_insert(shard_count) {
                n if n == shard_count => Ok(()),
                n => Err(StoreError::Conflict(format!("{n} shards recorded"))),
            }
        }

        async fn get_user(
            &self,
            mandator: &MandatorId,
            _shard_count: u32,
            user: &UserId,
        ) -> Result<Option<StoredUser>, StoreError> {
            Ok(self.state().users.get(&(mandator.clone(), user.clone())).cloned())
        }

        async fn put_user(
            &self,
            mandator: &MandatorId,
            _shard_count: u32,
            data: &UserData,
            expected: Option<u64>,
        ) -> Result<u64, UserWriteError> {
            snapshot::encode(data)?;
            let mut state = self.state();
            state.puts += 1;
            if self.fail_on_put == Some(state.puts - 1) {
                return Err(StoreError::unavailable("writing", "the store went away").into());
            }
            let key = (mandator.clone(), data.user_id.clone());
            let previous = state.users.get(&key).cloned();
            if previous.as_ref().map(|p| p.version) != expected {
                return Err(UserWriteError::VersionChanged);
            }
            for a in &data.accounts {
                if let Some(holder) = state.directory.get(&(mandator.clone(), a.account.account_id.clone()))
                    && *holder != data.user_id
                {
                    return Err(UserWriteError::AccountHeld {
                        account: a.account.account_id.clone(),
                        holder: holder.clone(),
                    });
                }
            }
            for a in previous.iter().flat_map(|p| &p.data.accounts) {
                state.directory.remove(&(mandator.clone(), a.account.account_id.clone()));
            }
            for a in &data.accounts {
                state.directory.insert((mandator.clone(), a.account.account_id.clone()), data.user_id.clone());
            }
            let version = next_version(expected);
            state.users.insert(key, StoredUser { data: data.clone(), version });
            Ok(version)
        }

        async fn delete_user(
            &self,
            mandator: &MandatorId,
            _shard_count: u32,
            user: &UserId,
            expected: u64,
        ) -> Result<(), UserWriteError> {
            let mut state = self.state();
            let key = (mandator.clone(), user.clone());
            let Some(previous) = state.users.get(&key).cloned() else { return Err(UserWriteError::VersionChanged) };
            if previous.version != expected {
                return Err(UserWriteError::VersionChanged);
            }
            for a in &previous.data.accounts {
                state.directory.remove(&(mandator.clone(), a.account.account_id.clone()));
            }
            state.users.remove(&key);
            Ok(())
        }

        fn user_ids<'a>(&'a self, mandator: &'a MandatorId, shard: u32) -> BoxStream<'a, Result<UserId, StoreError>> {
            let state = self.state();
            let shards = state.shard_counts.get(mandator).copied().unwrap_or(1);
            let ids: Vec<_> = state
                .users
                .keys()
                .filter(|(m, u)| m == mandator && shard_of(u, shards) == shard)
                .map(|(_, u)| Ok(u.clone()))
                .collect();
            stream::iter(ids).boxed()
        }
    }

    #[async_trait]
    impl ImportStore for Memory {
        async fn create_import(&self, record: &ImportRecord) -> Result<(), StoreError> {
            self.state().imports.insert(record.import_id, record.clone());
            Ok(())
        }

        async fn get_import(&self, mandator: &MandatorId, id: ImportId) -> Result<Option<ImportRecord>, StoreError> {
            Ok(self.state().imports.get(&id).filter(|r| r.mandator_id == *mandator).cloned())
        }

        async fn lock_mandator(
            &self,
            mandator: &MandatorId,
            id: ImportId,
            now: DateTime<Utc>,
            until: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            let mut state = self.state();
            state.lock_calls += 1;
            match state.locks.get(mandator) {
                Some((holder, lease)) if *holder != id && *lease > now => Err(StoreError::Conflict("held".into())),
                _ => {
                    state.locks.insert(mandator.clone(), (id, until));
                    Ok(())
                }
            }
        }

        async fn lock_holder(&self, mandator: &MandatorId, now: DateTime<Utc>) -> Result<Option<ImportId>, StoreError> {
            Ok(self.state().locks.get(mandator).filter(|(_, until)| *until > now).map(|(id, _)| *id))
        }

        async fn unlock_mandator(&self, mandator: &MandatorId, id: ImportId) -> Result<(), StoreError> {
            let mut state = self.state();
            if state.locks.get(mandator).is_some_and(|(holder, _)| *holder == id) {
                state.locks.remove(mandator);
            }
            Ok(())
        }

        async fn update_import(&self, record: &ImportRecord) -> Result<bool, StoreError> {
            let mut state = self.state();
            match state.imports.get(&record.import_id) {
                Some(stored) if !stored.status.is_final() => {
                    state.imports.insert(record.import_id, record.clone());
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
    }

    /// Only what writing account data asks of the segments: no account is a member of any.
    #[async_trait]
    impl SegmentStore for Memory {
        async fn create_segment(&self, _: &Segment) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn get_segment(&self, _: &MandatorId, _: SegmentId) -> Result<Option<Segment>, StoreError> {
            unimplemented!()
        }
        async fn list_segments(&self, _: &MandatorId, _: &SegmentQuery) -> Result<Vec<Segment>, StoreError> {
            unimplemented!()
        }
        async fn replace_segment(&self, _: &Segment, _: &Segment) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn change_members(
            &self,
            _: &MandatorId,
            _: SegmentId,
            _: &[AccountRef],
            _: &[AccountId],
        ) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn members(&self, _: &MandatorId, _: SegmentId) -> Result<Vec<AccountRef>, StoreError> {
            unimplemented!()
        }
        async fn member_count(&self, _: &MandatorId, _: SegmentId) -> Result<u64, StoreError> {
            unimplemented!()
        }
        async fn segments_of_account(
            &self,
            _: &MandatorId,
            account: &AccountId,
        ) -> Result<Vec<(SegmentId, UserId)>, StoreError> {
            self.state().left_segments.push(account.clone());
            Ok(Vec::new())
        }
    }

    fn m1() -> MandatorId {
        MandatorId::parse("m1").unwrap()
    }

    fn account(m: &str, u: &str, a: &str, currency: &str, balance: &str) -> String {
        format!(
            r#"{{"mandatorId":"{m}","userId":"{u}","accountId":"{a}","accountType":"checking","currency":"{currency}","balance":{balance},"balanceDate":"2024-05-31"}}"#
        )
    }

    fn transaction(m: &str, u: &str, a: &str, t: &str, currency: &str, amount: &str) -> String {
        dated(m, u, a, t, currency, amount, "2024-05-02")
    }

    fn dated(m: &str, u: &str, a: &str, t: &str, currency: &str, amount: &str, date: &str) -> String {
        format!(
            r#"{{"mandatorId":"{m}","userId":"{u}","accountId":"{a}","transactionId":"{t}","bookingDate":"{date}","amount":{amount},"currency":"{currency}","counterpartName":"ACME","purpose":"rent","labels":["RENT"]}}"#
        )
    }

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(accounts: &str, transactions: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("accounts.ndjson"), accounts).unwrap();
            std::fs::write(dir.path().join("transactions.ndjson"), transactions).unwrap();
            Fixture { dir }
        }

        fn lines(accounts: &[String], transactions: &[String]) -> Self {
            Self::new(&(accounts.join("\n") + "\n"), &(transactions.join("\n") + "\n"))
        }

        fn accounts(&self) -> PathBuf {
            self.dir.path().join("accounts.ndjson")
        }

        fn transactions(&self) -> PathBuf {
            self.dir.path().join("transactions.ndjson")
        }

        /// Creates an import of m1 in `store` and runs it over the files.
        async fn run(
            &self,
            store: &Arc<Memory>,
            mode: ImportMode,
            options: &ImportOptions,
            progress: impl FnMut(ImportProgress),
        ) -> Result<ImportRecord, ImportError> {
            let record = ImportRecord::new(m1(), mode, Utc::now());
            store.create_import(&record).await.unwrap();
            importer(store).run(record, &self.accounts(), &self.transactions(), options, progress).await
        }

        async fn import(&self, store: &Arc<Memory>) -> Result<ImportRecord, ImportError> {
            self.run(store, ImportMode::UpsertUsers, &ImportOptions::default(), |_| {}).await
        }

        /// Imports, expects it to be refused with nothing written and the record FAILED with the
        /// same lines, and returns the reasons.
        async fn invalid(&self) -> Vec<String> {
            let store = Arc::new(Memory::default());
            let err = self.import(&store).await.unwrap_err();
            assert_eq!(store.state().puts, 0, "a bad file must import nothing");
            let ImportError::Invalid { errors, more: 0 } = err else { panic!("expected Invalid, got {err:?}") };
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let record = only_record(&store);
            assert_eq!((record.status, &record.errors, record.more_errors), (ImportStatus::Failed, &errors, 0));
            assert!(store.state().locks.is_empty(), "the lock is released");
            errors
        }
    }

    fn importer(store: &Arc<Memory>) -> Importer {
        Importer { users: store.clone(), imports: store.clone(), segments: store.clone() }
    }

    fn only_record(store: &Memory) -> ImportRecord {
        let state = store.state();
        assert_eq!(state.imports.len(), 1);
        state.imports.values().next().unwrap().clone()
    }

    fn good() -> Fixture {
        Fixture::lines(
            &[account("m1", "u1", "a1", "EUR", "100.10"), account("m1", "u2", "a2", "USD", "-0.1")],
            &[transaction("m1", "u1", "a1", "t1", "EUR", "-12.34"), transaction("m1", "u2", "a2", "t1", "USD", "0.01")],
        )
    }

    #[tokio::test]
    async fn given_good_files_when_imported_then_every_user_is_written_exactly_and_the_record_completed() {
        let f = good();
        let store = Arc::new(Memory::default());
        let mut seen = Vec::new();
        let options = ImportOptions { shard_count: Some(4), ..ImportOptions::default() };
        let record = f.run(&store, ImportMode::UpsertUsers, &options, |p| seen.push(p)).await.unwrap();

        let counts = ImportCounts { users: 2, accounts: 2, transactions: 2, erased_users: 0 };
        assert_eq!((record.status, record.counts), (ImportStatus::Completed, counts));
        assert_eq!(only_record(&store), record);
        assert!(store.state().locks.is_empty(), "the lock is released");
        assert_eq!(store.state().shard_counts[&m1()], 4);
        let users = store.stored("m1");
        assert_eq!(users.keys().collect::<Vec<_>>(), ["u1", "u2"]);
        let u2 = &users["u2"].accounts[0];
        assert_eq!(u2.account.balance.to_string(), "-0.10");
        let t = &users["u1"].accounts[0].transactions[0];
        assert_eq!(
            (t.amount.to_string(), t.labels.clone(), t.counterpart_name.as_str()),
            ("-12.34".into(), vec!["RENT".to_owned()], "ACME")
        );
        assert_eq!(store.directory("m1"), BTreeMap::from([("a1".into(), "u1".into()), ("a2".into(), "u2".into())]));

        let last = seen.last().unwrap();
        assert_eq!((last.phase, last.done, last.counts), (ImportPhase::Writing, last.total, counts));
        assert!(seen.iter().any(|p| p.phase == ImportPhase::Validating));
    }

    #[tokio::test]
    async fn lines_in_any_order_make_each_user_whole_with_transactions_in_order() {
        let accounts = [
            account("m1", "u2", "b1", "EUR", "1"),
            account("m1", "u1", "a2", "EUR", "2"),
            account("m1", "u1", "a1", "EUR", "3"),
        ];
        let transactions = [
            dated("m1", "u1", "a1", "t3", "EUR", "1", "2024-05-03"),
            dated("m1", "u2", "b1", "t1", "EUR", "1", "2024-05-01"),
            dated("m1", "u1", "a1", "t2", "EUR", "1", "2024-05-01"),
            dated("m1", "u1", "a2", "t9", "EUR", "1", "2024-05-02"),
            dated("m1", "u1", "a1", "t1", "EUR", "1", "2024-05-03"),
        ];
        let store = Arc::new(Memory::default());
        Fixture::lines(&accounts, &transactions).import(&store).await.unwrap();
        let users = store.stored("m1");
        let shape = |u: &UserData| -> Vec<(String, Vec<String>)> {
            u.accounts
                .iter()
                .map(|h| {
                    let ids = h.transactions.iter().map(|t| t.transaction_id.to_string()).collect();
                    (h.account.account_id.to_string(), ids)
                })
                .collect()
        };
        assert_eq!(
            shape(&users["u1"]),
            [
                ("a1".to_owned(), vec!["t2".to_owned(), "t1".to_owned(), "t3".to_owned()]),
                ("a2".to_owned(), vec!["t9".to_owned()])
            ]
        );
        assert_eq!(shape(&users["u2"]), [("b1".to_owned(), vec!["t1".to_owned()])]);
    }

    #[tokio::test]
    async fn blank_lines_crlf_a_bom_and_a_missing_final_newline_are_fine() {
        let accounts = format!(
            "\u{feff}{}\r\n\n   \n{}",
            account("m1", "u1", "a1", "EUR", "1"),
            account("m1", "u1", "a2", "EUR", "2")
        );
        let f = Fixture::new(&accounts, &format!("\n{}", transaction("m1", "u1", "a2", "t", "EUR", "3")));
        let record = f.import(&Arc::new(Memory::default())).await.unwrap();
        assert_eq!((record.counts.users, record.counts.accounts, record.counts.transactions), (1, 2, 1));
    }

    #[tokio::test]
    async fn bad_json_and_bad_fields_are_reported_with_file_and_line() {
        let f = Fixture::lines(
            &[
                account("m1", "u1", "a1", "EUR", "1"),
                "{not json".into(),
                account("m1", "u2", "a1", "EUR", "1.005"),
                account("m1", "u3", "a1", "EUR", "1").replace("\"balanceDate\"", "\"extra\":1,\"balanceDate\""),
                account("m1", "u4", "a#1", "EUR", "1"),
                account("m1", "u5", "a1", "EUR", "\"7\""),
                r#"["m1","u6","a1","checking","EUR",1,"2024-05-31"]"#.into(),
            ],
            &[],
        );
        let errors = f.invalid().await;
        let file = f.accounts().display().to_string();
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(errors[0].starts_with(&format!("{file}:2: invalid JSON")), "{}", errors[0]);
        assert_eq!(errors[1], format!("{file}:3: balance: has more than 2 decimals"));
        assert!(errors[2].starts_with(&format!("{file}:4: unknown field `extra`")), "{}", errors[2]);
        assert!(errors[3].starts_with(&format!("{file}:5: accountId: may contain only")), "{}", errors[3]);
        assert!(errors[4].starts_with(&format!("{file}:6: balance: invalid type: string")), "{}", errors[4]);
        assert_eq!(errors[5], format!("{file}:7: expected a JSON object"));
    }

    #[tokio::test]
    async fn lines_of_another_mandator_are_errors() {
        let f = Fixture::lines(
            &[account("m1", "u1", "a1", "EUR", "1"), account("m2", "u2", "a1", "EUR", "1")],
            &[transaction("m2", "u2", "a1", "t", "EUR", "1")],
        );
        let errors = f.invalid().await;
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].ends_with(":2: mandatorId m2 is not m1, the mandator of this import"), "{}", errors[0]);
        assert!(errors[1].contains("transactions.ndjson:1: mandatorId m2 is not m1"), "{}", errors[1]);
    }

    #[tokio::test]
    async fn the_files_can_be_named_for_the_report() {
        let f = Fixture::lines(&["{".into()], &[]);
        let store = Arc::new(Memory::default());
        let options = ImportOptions {
            file_names: Some(("accounts.ndjson".into(), "transactions.ndjson".into())),
            ..ImportOptions::default()
        };
        let err = f.run(&store, ImportMode::UpsertUsers, &options, |_| {}).await.unwrap_err();
        let ImportError::Invalid { errors, .. } = err else { panic!("{err:?}") };
        assert_eq!(errors[0].to_string(), "accounts.ndjson:1: invalid JSON: EOF while parsing an object (column 1)");
    }

    #[tokio::test]
    async fn duplicate_accounts_are_errors() {
        let f = Fixture::lines(
            &[
                account("m1", "u1", "a1", "EUR", "1"),
                account("m1", "u1", "a2", "EUR", "1"),
                account("m1", "u1", "a1", "USD", "2"),
            ],
            &[],
        );
        let errors = f.invalid().await;
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].ends_with(":3: duplicate account: userId u1, accountId a1 (first at line 1)"),
            "{}",
            errors[0]
        );
    }

    #[tokio::test]
    async fn an_account_id_of_two_users_is_an_error_in_the_file() {
        let f = Fixture::lines(
            &[
                account("m1", "u1", "a1", "EUR", "1"),
                account("m1", "u2", "a2", "EUR", "1"),
                account("m1", "u2", "a1", "EUR", "2"),
            ],
            &[],
        );
        let errors = f.invalid().await;
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].ends_with(
                ":3: accountId a1 is already the account of userId u1 (line 1); accountIds are unique per mandator"
            ),
            "{}",
            errors[0]
        );
    }

    fn stored_user(user: &str, accounts: &[&str]) -> UserData {
        let user_id = UserId::parse(user).unwrap();
        UserData {
            user_id: user_id.clone(),
            accounts: accounts
                .iter()
                .map(|a| AccountHistory {
                    account: crate::domain::Account {
                        user_id: user_id.clone(),
                        account_id: AccountId::parse(a).unwrap(),
                        account_type: AccountType::Checking,
                        currency: Currency::parse("EUR").unwrap(),
                        balance: Money::from_cents(1),
                        balance_date: "2024-05-31".parse().unwrap(),
                    },
                    transactions: Vec::new(),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn an_account_id_another_user_holds_in_the_stored_data_is_an_error_and_nothing_is_written() {
        // a1 is stored for u1 already (a re-import of it is fine); a2 is stored for another user.
        let store = Arc::new(Memory::default());
        store.put("m1", 16, stored_user("u1", &["a1"]));
        store.put("m1", 16, stored_user("u9", &["a2"]));
        let err = good().import(&store).await.unwrap_err();
        let ImportError::Invalid { errors, more: 0 } = err else { panic!("{err:?}") };
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!((errors[0].line, errors[0].file.ends_with("accounts.ndjson")), (2, true));
        assert_eq!(
            errors[0].reason,
            "accountId a2 belongs to userId u9 in the stored data of mandator m1, not to userId u2; \
             accountIds are unique per mandator"
        );
        assert_eq!(store.state().puts, 0);

        // Looked up in batches; the same files against a directory that agrees import.
        let accounts: Vec<String> =
            (0..2500).map(|i| account("m1", &format!("u{i}"), &format!("a{i}"), "EUR", "1")).collect();
        let store = Arc::new(Memory::default());
        store.put("m1", 16, stored_user("u7", &["a7"]));
        Fixture::lines(&accounts, &[]).import(&store).await.unwrap();
        assert_eq!(store.state().lookups, [1000, 1000, 500]);
        assert_eq!(store.stored("m1").len(), 2500);
    }

    #[tokio::test]
    async fn an_account_moves_between_users_of_the_files_also_in_a_cycle() {
        let store = Arc::new(Memory::default());
        store.put("m1", 16, stored_user("u1", &["a1", "k1"]));
        store.put("m1", 16, stored_user("u2", &["a2", "k2"]));
        store.put("m1", 16, stored_user("u3", &["a3"]));
        // u1 and u2 swap a1 and a2; a3 moves from u3 to u4.
        let f = Fixture::lines(
            &[
                account("m1", "u1", "a2", "EUR", "1"),
                account("m1", "u1", "k1", "EUR", "1"),
                account("m1", "u2", "a1", "EUR", "1"),
                account("m1", "u2", "k2", "EUR", "1"),
                account("m1", "u4", "a3", "EUR", "1"),
                account("m1", "u3", "b3", "EUR", "1"),
            ],
            &[transaction("m1", "u1", "a2", "t", "EUR", "1")],
        );
        let record = f.import(&store).await.unwrap();
        assert_eq!((record.counts.users, record.counts.accounts), (4, 6));
        let directory = store.directory("m1");
        let expected = [("a1", "u2"), ("a2", "u1"), ("a3", "u4"), ("b3", "u3"), ("k1", "u1"), ("k2", "u2")];
        assert_eq!(directory, expected.iter().map(|(a, u)| ((*a).to_owned(), (*u).to_owned())).collect());
        let users = store.stored("m1");
        assert_eq!(users["u1"].accounts[0].transactions.len(), 1);
        assert_eq!(users.len(), 4);
    }

    #[tokio::test]
    async fn replace_mandator_erases_every_user_the_files_do_not_contain_and_frees_their_accounts() {
        let store = Arc::new(Memory::default());
        for i in 0..40 {
            store.put("m1", 4, stored_user(&format!("old{i}"), &[&format!("o{i}")]));
        }
        store.put("m1", 4, stored_user("u1", &["x1"]));
        // o3 moves from an erased user to a new one.
        let f = Fixture::lines(
            &[account("m1", "u1", "a1", "EUR", "1"), account("m1", "u2", "o3", "EUR", "1")],
            &[transaction("m1", "u1", "a1", "t1", "EUR", "1")],
        );
        let record = f.run(&store, ImportMode::ReplaceMandator, &ImportOptions::default(), |_| {}).await.unwrap();
        assert_eq!(record.counts, ImportCounts { users: 2, accounts: 2, transactions: 1, erased_users: 40 });
        assert_eq!(store.stored("m1").keys().collect::<Vec<_>>(), ["u1", "u2"]);
        assert_eq!(store.directory("m1").len(), 2);
        let left = store.state().left_segments.clone();
        assert!(left.contains(&AccountId::parse("x1").unwrap()) && left.len() == 41, "{left:?}");

        // upsertUsers with the same files leaves the other users.
        store.put("m1", 4, stored_user("other", &["z"]));
        f.import(&store).await.unwrap();
        assert_eq!(store.stored("m1").len(), 3);
    }

    #[tokio::test]
    async fn a_user_with_too_many_accounts_is_an_error() {
        let accounts: Vec<String> =
            (0..=snapshot::MAX_ACCOUNTS).map(|i| account("m1", "u1", &format!("a{i}"), "EUR", "1")).collect();
        let errors = Fixture::lines(&accounts, &[]).invalid().await;
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].ends_with(":41: userId u1 has more than 40 accounts; a user's data holds at most 40"),
            "{}",
            errors[0]
        );
    }

    #[tokio::test]
    async fn a_user_too_large_for_the_store_is_an_error_at_its_first_account() {
        use rand::Rng;
        let mut rng = rand::rng();
        // Printable, without quote and backslash, random: it hardly compresses. Each transaction
        // carries as much text as the bounds allow, so a few thousand exceed the store's limit.
        let noise = |rng: &mut rand::rngs::ThreadRng, n: usize| -> String {
            (0..n).map(|_| char::from(rng.random_range(b'0'..=b'~'))).map(|c| if c == '\\' { '_' } else { c }).collect()
        };
        let transactions: Vec<String> = (0..2_500)
            .map(|i| {
                let labels: Vec<String> =
                    (0..MAX_LABELS).map(|_| format!("\"{}\"", noise(&mut rng, MAX_LABEL_CHARS))).collect();
                transaction("m1", "big", "a1", &format!("t{i}"), "EUR", "1")
                    .replace("\"ACME\"", &format!("\"{}\"", noise(&mut rng, MAX_COUNTERPART_CHARS)))
                    .replace("[\"RENT\"]", &format!("[{}]", labels.join(",")))
            })
            .collect();
        let f = Fixture::lines(
            &[account("m1", "small", "a0", "EUR", "1"), account("m1", "big", "a1", "EUR", "1")],
            &transactions,
        );
        let errors = f.invalid().await;
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains("accounts.ndjson:2: userId big: the user's data is"), "{}", errors[0]);
    }

    #[tokio::test]
    async fn free_text_is_bounded_as_in_the_data_api() {
        let long = "x".repeat(MAX_COUNTERPART_CHARS + 1);
        let f = Fixture::lines(
            &[account("m1", "u1", "a1", "EUR", "1")],
            &[
                transaction("m1", "u1", "a1", "t1", "EUR", "1").replace("\"ACME\"", &format!("\"{long}\"")),
                transaction("m1", "u1", "a1", "t2", "EUR", "1").replace("[\"RENT\"]", "[\"\"]"),
                transaction("m1", "u1", "a1", "t3", "EUR", "1"),
            ],
        );
        let errors = f.invalid().await;
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].ends_with("transactions.ndjson:1: counterpartName: must be at most 256 characters"));
        assert!(errors[1].contains("transactions.ndjson:2: labels: must be labels of 1 to 64 characters"));
    }

    #[tokio::test]
    async fn transactions_need_their_account_and_its_currency() {
        let f = Fixture::lines(
            &[account("m1", "u1", "a1", "EUR", "1")],
            &[
                transaction("m1", "u1", "a2", "t1", "EUR", "1"),
                transaction("m1", "u2", "a1", "t1", "EUR", "1"),
                transaction("m1", "u1", "a1", "t1", "USD", "1"),
                transaction("m1", "u1", "a1", "t2", "EUR", "1"),
            ],
        );
        let errors = f.invalid().await;
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].ends_with(":1: no account line for userId u1, accountId a2"), "{}", errors[0]);
        assert!(
            errors[1]
                .ends_with(":2: accountId a1 is the account of userId u1 (line 1 of the accounts), not of userId u2"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2]
                .ends_with(":3: currency USD differs from EUR, the currency of its account (line 1 of the accounts)"),
            "{}",
            errors[2]
        );
    }

    #[tokio::test]
    async fn duplicate_transaction_ids_within_an_account_are_errors() {
        let f = Fixture::lines(
            &[account("m1", "u1", "a1", "EUR", "1"), account("m1", "u1", "a2", "EUR", "1")],
            &[
                transaction("m1", "u1", "a1", "t1", "EUR", "1"),
                transaction("m1", "u1", "a2", "t1", "EUR", "1"),
                "{".into(),
                transaction("m1", "u1", "a1", "t1", "EUR", "2"),
                transaction("m1", "u1", "a1", "t1", "EUR", "3"),
            ],
        );
        let errors = f.invalid().await;
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].ends_with(":3: invalid JSON: EOF while parsing an object (column 1)"), "{}", errors[0]);
        let duplicate = "duplicate transactionId t1 in account userId u1, accountId a1 (first at line 1)";
        assert!(errors[1].ends_with(&format!(":4: {duplicate}")), "{}", errors[1]);
        assert!(errors[2].ends_with(&format!(":5: {duplicate}")), "{}", errors[2]);
    }

    #[tokio::test]
    async fn at_most_a_hundred_errors_are_listed_and_the_rest_counted() {
        let accounts: Vec<String> = (0..150).map(|i| format!("bad line {i}")).collect();
        let store = Arc::new(Memory::default());
        let Err(ImportError::Invalid { errors, more }) = Fixture::lines(&accounts, &[]).import(&store).await else {
            panic!()
        };
        assert_eq!((errors.len(), more), (MAX_REPORTED_ERRORS, 50));
        assert_eq!(errors[99].line, 100);
        let record = only_record(&store);
        assert_eq!((record.errors.len(), record.more_errors, record.failure), (100, 50, None));
    }

    #[tokio::test]
    async fn a_reason_quoting_a_long_value_is_cut() {
        let f = Fixture::lines(&[account("m1", "u1", "a1", "EUR", &format!("\"{}\"", "7".repeat(5000)))], &[]);
        let errors = f.invalid().await;
        assert!(errors[0].contains(":1: balance: invalid type: string \"777"), "{}", errors[0]);
        assert!(errors[0].ends_with('…') && errors[0].chars().count() < MAX_REASON_CHARS + 100, "{}", errors[0]);
    }

    #[tokio::test]
    async fn an_overlong_line_is_an_error_not_a_memory_problem() {
        let long = format!("{{\"purpose\":\"{}\"}}", "x".repeat(MAX_LINE_BYTES + 10));
        let f = Fixture::lines(
            &[account("m1", "u1", "a1", "EUR", "1")],
            &[long, transaction("m1", "u1", "a1", "t", "EUR", "1")],
        );
        let errors = f.invalid().await;
        assert_eq!(errors.len(), 1);
        assert!(errors[0].ends_with(&format!(":1: line is longer than {MAX_LINE_BYTES} bytes")), "{}", errors[0]);
    }

    #[tokio::test]
    async fn empty_files_and_bad_shard_counts_are_refused_and_recorded() {
        let store = Arc::new(Memory::default());
        assert!(matches!(Fixture::new("\n", "").import(&store).await, Err(ImportError::Empty)));
        let record = only_record(&store);
        assert_eq!(record.status, ImportStatus::Failed);
        assert_eq!(
            record.failure.as_deref(),
            Some("nothing to import: the files have no account or transaction lines")
        );
        for n in [0, MAX_SHARD_COUNT + 1] {
            let options = ImportOptions { shard_count: Some(n), ..ImportOptions::default() };
            let result = good().run(&store, ImportMode::UpsertUsers, &options, |_| {}).await;
            assert!(matches!(result, Err(ImportError::ShardCount(c)) if c == n));
        }
        assert_eq!(store.state().puts, 0);
    }

    #[tokio::test]
    async fn a_missing_file_is_an_io_error_naming_it() {
        let f = good();
        let store = Arc::new(Memory::default());
        let record = ImportRecord::new(m1(), ImportMode::UpsertUsers, Utc::now());
        store.create_import(&record).await.unwrap();
        let missing = f.dir.path().join("nope.ndjson");
        let err =
            importer(&store).run(record, &f.accounts(), &missing, &ImportOptions::default(), |_| {}).await.unwrap_err();
        assert!(matches!(err, ImportError::Io { .. }));
        assert!(err.to_string().contains("nope.ndjson"), "{err}");
    }

    #[tokio::test]
    async fn a_recorded_different_shard_count_stops_before_anything_is_read() {
        let store = Arc::new(Memory::default());
        store.put("m1", 8, stored_user("u0", &["a0"]));
        let options = ImportOptions { shard_count: Some(4), ..ImportOptions::default() };
        let err = good().run(&store, ImportMode::UpsertUsers, &options, |_| {}).await.unwrap_err();
        assert!(matches!(err, ImportError::ShardsRecorded { recorded: 8, requested: 4, .. }), "{err:?}");
        assert_eq!(err.to_string(), "mandator m1 has 8 shards; an import cannot change that to 4");
        assert_eq!(store.state().puts, 0);

        // Without a count, or with the recorded one, the recorded one is used.
        for shard_count in [None, Some(8)] {
            let options = ImportOptions { shard_count, ..ImportOptions::default() };
            good().run(&store, ImportMode::UpsertUsers, &options, |_| {}).await.unwrap();
        }
        assert_eq!(store.state().shard_counts[&m1()], 8);
    }

    #[tokio::test]
    async fn a_failure_part_way_says_how_many_users_were_written() {
        let accounts: Vec<String> =
            (0..30).map(|i| account("m1", &format!("u{i}"), &format!("a{i}"), "EUR", "1")).collect();
        let store = Arc::new(Memory { fail_on_put: Some(20), ..Memory::default() });
        let err = Fixture::lines(&accounts, &[]).import(&store).await.unwrap_err();
        let ImportError::Store { written, .. } = &err else { panic!("{err:?}") };
        // Writes go in groups: the group of the failing one is written but for it.
        assert_eq!((written.users, written.accounts), (23, 23));
        assert_eq!(store.stored("m1").len(), 23);
        assert!(err.to_string().contains("23 users with 23 accounts and 0 transactions were written"), "{err}");
        let record = only_record(&store);
        assert_eq!((record.status, record.counts.users), (ImportStatus::Failed, 23));
        assert_eq!(record.failure, Some(err.to_string()));
    }

    #[tokio::test]
    async fn a_held_lock_makes_the_import_busy_and_leaves_its_record() {
        let store = Arc::new(Memory::default());
        let other = ImportId::new();
        let now = Utc::now();
        store.lock_mandator(&m1(), other, now, now + LOCK_LEASE).await.unwrap();
        let err = good().import(&store).await.unwrap_err();
        assert!(matches!(&err, ImportError::Busy { holder: Some(h), .. } if *h == other), "{err:?}");
        assert_eq!(err.to_string(), "another import of mandator m1 is running");
        assert_eq!(only_record(&store).status, ImportStatus::AwaitingUpload);
        assert_eq!(store.state().locks[&m1()].0, other);
        assert_eq!(store.state().puts, 0);
    }

    #[tokio::test]
    async fn the_lease_is_renewed_and_counts_saved_while_the_import_runs() {
        let accounts: Vec<String> =
            (0..40).map(|i| account("m1", &format!("u{i}"), &format!("a{i}"), "EUR", "1")).collect();
        let store = Arc::new(Memory::default());
        let options =
            ImportOptions { renew_every: Duration::ZERO, save_every: Duration::ZERO, ..ImportOptions::default() };
        Fixture::lines(&accounts, &[]).run(&store, ImportMode::UpsertUsers, &options, |_| {}).await.unwrap();
        // Taken once, then renewed at every report: at the end of validating and after each group.
        assert!(store.state().lock_calls >= 1 + 1 + 40 / WRITE_CONCURRENCY, "{}", store.state().lock_calls);

        // An import whose lock another one took (its lease ran out) stops.
        let store = Arc::new(Memory::default());
        let record = ImportRecord::new(m1(), ImportMode::UpsertUsers, Utc::now());
        store.create_import(&record).await.unwrap();
        let f = Fixture::lines(&accounts, &[]);
        let thief = store.clone();
        let mut stolen = false;
        let err = importer(&store)
            .run(record, &f.accounts(), &f.transactions(), &options, |p| {
                if p.phase == ImportPhase::Writing && !stolen {
                    stolen = true;
                    thief.state().locks.insert(m1(), (ImportId::new(), Utc::now() + LOCK_LEASE));
                }
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ImportError::LockLost { written: ImportCounts { users: 8, .. }, .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_finished_or_unknown_import_does_not_run_again() {
        let store = Arc::new(Memory::default());
        let f = good();
        let record = f.import(&store).await.unwrap();
        let (accounts, transactions, options) = (f.accounts(), f.transactions(), ImportOptions::default());
        let importer = importer(&store);
        let again = importer.run(record.clone(), &accounts, &transactions, &options, |_| {}).await;
        assert!(matches!(again, Err(ImportError::Finished(id)) if id == record.import_id));
        let unknown = ImportRecord::new(m1(), ImportMode::UpsertUsers, Utc::now());
        let never = importer.run(unknown.clone(), &accounts, &transactions, &options, |_| {}).await;
        assert!(matches!(never, Err(ImportError::Unknown(id)) if id == unknown.import_id));
    }

    #[test]
    fn an_import_can_run_on_any_thread() {
        fn send<T: Send>(_: T) {}
        let store = Arc::new(Memory::default());
        let record = ImportRecord::new(m1(), ImportMode::UpsertUsers, Utc::now());
        let (a, t) = (PathBuf::from("a"), PathBuf::from("t"));
        send(importer(&store).run(record, &a, &t, &ImportOptions::default(), |_| {}));
    }

    #[test]
    fn buckets_grow_with_the_files_up_to_a_bound() {
        assert_eq!(bucket_count(0), 1);
        assert_eq!(bucket_count(BUCKET_BYTES), 1);
        assert_eq!(bucket_count(BUCKET_BYTES + 1), 2);
        assert_eq!(bucket_count(u64::MAX / 2), MAX_BUCKETS as usize);
    }

    #[test]
    fn line_errors_display_as_file_line_reason() {
        let e = LineError { file: "accounts.ndjson".into(), line: 7, reason: "bad".into() };
        assert_eq!(e.to_string(), "accounts.ndjson:7: bad");
    }
}
