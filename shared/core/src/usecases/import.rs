//! The importer of account data (docs/data.md): `accounts.ndjson` and `transactions.ndjson`, one JSON
//! object per line, loaded through an [`AccountSink`].
//!
//! A bad file imports nothing: both files are validated completely first, and every bad line is
//! reported as `file:line: reason`. Only then is the shard count recorded and the data written, in
//! batches. Writes are upserts, so importing the same files again is safe, also after a failure
//! part-way through writing (the error says how much was written).
//!
//! AccountIds are unique per mandator: the segments API names accounts by accountId alone. A
//! second account line with an accountId another user already has — earlier in the file, or in
//! the mandator's stored data (read from the sink's account directory after the files are
//! checked) — is a bad line, and a transaction must name its account's user. The check against
//! stored data and the writes are separate steps, so imports of one mandator must not run at the
//! same time.
//!
//! Files may be larger than memory. What is held: the keys of the accounts (with currency and line
//! number, keyed by accountId) and one 64-bit hash per transaction, to find duplicate transactionIds. Transactions
//! themselves are streamed, twice: once to validate, once to write. Hashes that occur twice are
//! confirmed against the actual ids in an extra pass over the transactions file, so a hash
//! collision is never reported as a duplicate.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::path::Path;

use chrono::NaiveDate;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::domain::records::{AccountItem, AccountRecord, DEFAULT_SHARD_COUNT, MAX_SHARD_COUNT, TransactionRecord};
use crate::domain::{AccountId, AccountType, Currency, MandatorId, Money, TransactionId, UserId};
use crate::ports::{AccountSink, StoreError};

/// Items per [`AccountSink::put_items`] call.
pub const BATCH_SIZE: usize = 500;
/// Bad lines listed in [`ImportError::Invalid`]; the rest are counted.
pub const MAX_REPORTED_ERRORS: usize = 100;
/// Longest line accepted. A record is a few hundred bytes; a longer line is not one.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Accounts looked up in the account directory per call.
const DIRECTORY_BATCH: usize = 1000;
/// Lines between two progress reports while validating.
const PROGRESS_EVERY: u64 = 4096;
const READ_BUFFER_BYTES: usize = 1 << 20;

/// What to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// The mandator the files are for. Without it, the mandator of the first valid line; either
    /// way, a line of another mandator is an error.
    pub mandator: Option<MandatorId>,
    /// The shard count to place the data with (1 to [`MAX_SHARD_COUNT`]). Must equal the count
    /// already recorded for the mandator, if any.
    pub shard_count: u32,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { mandator: None, shard_count: DEFAULT_SHARD_COUNT }
    }
}

/// A bad line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The file as it was given.
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
    /// Reading both files and checking every line.
    Validating,
    /// Re-reading the transactions to confirm suspected duplicate transactionIds. Rare.
    CheckingDuplicates,
    /// Writing the accounts, then the transactions.
    Writing,
}

/// Where an import is, for a progress bar: `bytes_done` of `bytes_total` in the current phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportProgress {
    pub phase: ImportPhase,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Account lines checked (validating) or accounts written (writing).
    pub accounts: u64,
    /// Transaction lines checked or transactions written.
    pub transactions: u64,
}

/// What an import wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub mandator: MandatorId,
    pub shard_count: u32,
    pub users: u64,
    pub accounts: u64,
    pub transactions: u64,
}

/// How much was written when an import stopped part-way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub accounts: u64,
    pub transactions: u64,
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Written::default() {
            f.write_str("nothing was written")
        } else {
            write!(
                f,
                "{} accounts and {} transactions were written; importing the same files again is safe",
                self.accounts, self.transactions
            )
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the shard count must be between 1 and {MAX_SHARD_COUNT}, not {0}")]
    ShardCount(u32),
    #[error("nothing to import: the files have no account or transaction lines")]
    Empty,
    #[error("{} invalid line(s), nothing was imported", .errors.len() + .more)]
    Invalid {
        /// The first [`MAX_REPORTED_ERRORS`] bad lines, in file and line order.
        errors: Vec<LineError>,
        /// Bad lines not listed.
        more: usize,
    },
    #[error("cannot read {path} ({written})")]
    Io {
        path: String,
        written: Written,
        #[source]
        source: std::io::Error,
    },
    #[error("{error} — the file changed after it was validated ({written})")]
    Changed { error: LineError, written: Written },
    #[error("storing account data failed ({written})")]
    Store {
        written: Written,
        #[source]
        source: StoreError,
    },
}

/// Validates `accounts` and `transactions` completely, then writes them through `sink`. Nothing
/// is written when any line is bad.
pub async fn import_files(
    sink: &dyn AccountSink,
    accounts: &Path,
    transactions: &Path,
    options: ImportOptions,
    mut progress: impl FnMut(ImportProgress),
) -> Result<ImportReport, ImportError> {
    if !(1..=MAX_SHARD_COUNT).contains(&options.shard_count) {
        return Err(ImportError::ShardCount(options.shard_count));
    }
    let files = Files { accounts: Source::new(accounts).await?, transactions: Source::new(transactions).await? };
    let mut checked = Checked::new(options.mandator);
    checked.validate(&files, &mut progress).await?;
    if !checked.errors.is_empty() || checked.more_errors > 0 {
        let accounts_name = files.accounts.name.clone();
        let mut errors = checked.errors;
        // Duplicates found in the confirming pass come last; list everything in file order.
        errors.sort_by_key(|e| (e.file != accounts_name, e.line));
        return Err(ImportError::Invalid { errors, more: checked.more_errors });
    }
    let mandator = match checked.mandator {
        Some((mandator, _)) if checked.account_lines + checked.transaction_lines > 0 => mandator,
        _ => return Err(ImportError::Empty),
    };
    let held = held_by_others(sink, &mandator, &checked.accounts, &files.accounts.name).await?;
    if !held.is_empty() {
        let more = held.len().saturating_sub(MAX_REPORTED_ERRORS);
        let errors = held.into_iter().take(MAX_REPORTED_ERRORS).collect();
        return Err(ImportError::Invalid { errors, more });
    }
    files.check_unchanged().await?;

    let mut writer =
        Writer { sink, mandator: &mandator, shard_count: options.shard_count, written: Written::default() };
    sink.ensure_shard_count(&mandator, options.shard_count)
        .await
        .map_err(|source| ImportError::Store { written: Written::default(), source })?;
    writer.write(&files, &checked.accounts, &mut progress).await?;
    let written = writer.written;

    let users = checked.accounts.values().map(|a| &a.user).collect::<HashSet<_>>().len() as u64;
    Ok(ImportReport {
        mandator,
        shard_count: options.shard_count,
        users,
        accounts: written.accounts,
        transactions: written.transactions,
    })
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
    async fn new(path: &'p Path) -> Result<Source<'p>, ImportError> {
        let name = path.display().to_string();
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|source| ImportError::Io { path: name.clone(), written: Written::default(), source })?
            .len();
        Ok(Source { path, name, size })
    }

    async fn open(&self, written: Written) -> Result<Lines, ImportError> {
        let file = tokio::fs::File::open(self.path).await.map_err(|source| ImportError::Io {
            path: self.name.clone(),
            written,
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

    /// A file that grew or shrank since it was validated is not the file that was validated.
    async fn check_unchanged(&self) -> Result<(), ImportError> {
        for source in [&self.accounts, &self.transactions] {
            let now = Source::new(source.path).await?;
            if now.size != source.size {
                let reason = format!("its size changed from {} to {} bytes", source.size, now.size);
                let error = LineError { file: source.name.clone(), line: 0, reason };
                return Err(ImportError::Changed { error, written: Written::default() });
            }
        }
        Ok(())
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
    async fn next(&mut self, written: Written) -> Result<Option<u64>, ImportError> {
        loop {
            self.buf.clear();
            self.too_long = false;
            let mut read_any = false;
            loop {
                let available = self.reader.fill_buf().await.map_err(|source| ImportError::Io {
                    path: self.name.clone(),
                    written,
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

/// The account lines whose accountId the stored data of the mandator gives to another user, in
/// line order.
async fn held_by_others(
    sink: &dyn AccountSink,
    mandator: &MandatorId,
    accounts: &HashMap<AccountId, SeenAccount>,
    file: &str,
) -> Result<Vec<LineError>, ImportError> {
    let ids: Vec<AccountId> = accounts.keys().cloned().collect();
    let mut errors = Vec::new();
    for chunk in ids.chunks(DIRECTORY_BATCH) {
        let stored = sink
            .account_users(mandator, chunk)
            .await
            .map_err(|source| ImportError::Store { written: Written::default(), source })?;
        for (account, stored_user) in stored {
            if let Some(seen) = accounts.get(&account)
                && seen.user != stored_user
            {
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

type AccountKey = (UserId, AccountId);

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
    /// The import's mandator and where it came from.
    mandator: Option<(MandatorId, String)>,
    accounts: HashMap<AccountId, SeenAccount>,
    transaction_hashes: HashSet64,
    /// Hashes seen more than once: duplicates, or (rarely) collisions.
    suspects: HashSet64,
    errors: Vec<LineError>,
    more_errors: usize,
    account_lines: u64,
    transaction_lines: u64,
}

impl Checked {
    fn new(mandator: Option<MandatorId>) -> Self {
        Checked {
            mandator: mandator.map(|m| (m, "the import options".to_owned())),
            accounts: HashMap::new(),
            transaction_hashes: HashSet64::default(),
            suspects: HashSet64::default(),
            errors: Vec::new(),
            more_errors: 0,
            account_lines: 0,
            transaction_lines: 0,
        }
    }

    fn error(&mut self, lines: &Lines, line: u64, reason: String) {
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(LineError { file: lines.name.clone(), line, reason });
        } else {
            self.more_errors += 1;
        }
    }

    fn check_mandator(&mut self, mandator: &MandatorId, lines: &Lines, line: u64) -> Result<(), String> {
        match &self.mandator {
            None => {
                self.mandator = Some((mandator.clone(), format!("{}:{line}", lines.name)));
                Ok(())
            }
            Some((expected, _)) if expected == mandator => Ok(()),
            Some((expected, origin)) => {
                Err(format!("mandatorId {mandator} is not {expected}, the mandator of this import (from {origin})"))
            }
        }
    }

    async fn validate(
        &mut self,
        files: &Files<'_>,
        progress: &mut impl FnMut(ImportProgress),
    ) -> Result<(), ImportError> {
        let nothing = Written::default();
        let mut report = |phase, bytes_done, accounts, transactions| {
            progress(ImportProgress { phase, bytes_done, bytes_total: files.total(), accounts, transactions });
        };

        let mut lines = files.accounts.open(nothing).await?;
        while let Some(n) = lines.next(nothing).await? {
            self.account_lines += 1;
            if let Err(reason) = self.check_account(&lines, n) {
                self.error(&lines, n, reason);
            }
            if self.account_lines.is_multiple_of(PROGRESS_EVERY) {
                report(ImportPhase::Validating, lines.bytes, self.account_lines, 0);
            }
        }
        let accounts_bytes = lines.bytes;

        let mut lines = files.transactions.open(nothing).await?;
        while let Some(n) = lines.next(nothing).await? {
            self.transaction_lines += 1;
            match self.check_transaction(&lines, n) {
                Ok((key, id)) => {
                    let hash = transaction_hash(&key.0, &key.1, &id);
                    if !self.transaction_hashes.insert(hash) {
                        self.suspects.insert(hash);
                    }
                }
                Err(reason) => self.error(&lines, n, reason),
            }
            if self.transaction_lines.is_multiple_of(PROGRESS_EVERY) {
                report(
                    ImportPhase::Validating,
                    accounts_bytes + lines.bytes,
                    self.account_lines,
                    self.transaction_lines,
                );
            }
        }
        report(ImportPhase::Validating, files.total(), self.account_lines, self.transaction_lines);
        self.transaction_hashes = HashSet64::default();

        if !self.suspects.is_empty() {
            self.confirm_duplicates(&files.transactions, progress).await?;
        }
        Ok(())
    }

    fn check_account(&mut self, lines: &Lines, n: u64) -> Result<(), String> {
        let r: AccountRecord = lines.parse(ACCOUNT_FIELDS)?;
        self.check_mandator(&r.mandator_id, lines, n)?;
        match self.accounts.entry(r.account_id) {
            Entry::Occupied(first) if first.get().user == r.user_id => Err(format!(
                "duplicate account: userId {}, accountId {} (first at line {})",
                r.user_id,
                first.key(),
                first.get().line
            )),
            Entry::Occupied(first) => Err(format!(
                "accountId {} is already the account of userId {} (line {}); accountIds are unique per mandator",
                first.key(),
                first.get().user,
                first.get().line
            )),
            Entry::Vacant(slot) => {
                slot.insert(SeenAccount { user: r.user_id, currency: r.currency, line: n });
                Ok(())
            }
        }
    }

    /// A valid transaction's account and id.
    fn check_transaction(&mut self, lines: &Lines, n: u64) -> Result<(AccountKey, TransactionId), String> {
        let r: TransactionRecord = lines.parse(TRANSACTION_FIELDS)?;
        self.check_mandator(&r.mandator_id, lines, n)?;
        let key = (r.user_id, r.account_id);
        match self.accounts.get(&key.1) {
            None => Err(format!("no account line for userId {}, accountId {}", key.0, key.1)),
            Some(account) if account.user != key.0 => Err(format!(
                "accountId {} is the account of userId {} (line {} of the accounts), not of userId {}",
                key.1, account.user, account.line, key.0
            )),
            Some(account) if account.currency != r.currency => Err(format!(
                "currency {} differs from {}, the currency of its account (line {} of the accounts)",
                r.currency, account.currency, account.line
            )),
            Some(_) => Ok((key, r.transaction_id)),
        }
    }

    /// Finds the actual duplicates among the lines whose hash was seen twice.
    async fn confirm_duplicates(
        &mut self,
        source: &Source<'_>,
        progress: &mut impl FnMut(ImportProgress),
    ) -> Result<(), ImportError> {
        let nothing = Written::default();
        let mut first_lines: HashMap<(AccountKey, TransactionId), u64> = HashMap::new();
        let mut lines = source.open(nothing).await?;
        let mut count: u64 = 0;
        while let Some(n) = lines.next(nothing).await? {
            count += 1;
            if count.is_multiple_of(PROGRESS_EVERY) {
                progress(ImportProgress {
                    phase: ImportPhase::CheckingDuplicates,
                    bytes_done: lines.bytes,
                    bytes_total: source.size,
                    accounts: self.account_lines,
                    transactions: count,
                });
            }
            // Lines that fail a check were reported by the first pass.
            let Ok((key, id)) = self.check_transaction(&lines, n) else { continue };
            if !self.suspects.contains(&transaction_hash(&key.0, &key.1, &id)) {
                continue;
            }
            match first_lines.entry((key, id)) {
                Entry::Occupied(first) => {
                    let ((user, account), id) = first.key();
                    let reason = format!(
                        "duplicate transactionId {id} in account userId {user}, accountId {account} (first at line {})",
                        first.get()
                    );
                    self.error(&lines, n, reason);
                }
                Entry::Vacant(slot) => {
                    slot.insert(n);
                }
            }
        }
        Ok(())
    }
}

struct Writer<'a> {
    sink: &'a dyn AccountSink,
    mandator: &'a MandatorId,
    shard_count: u32,
    written: Written,
}

impl Writer<'_> {
    async fn write(
        &mut self,
        files: &Files<'_>,
        accounts: &HashMap<AccountId, SeenAccount>,
        progress: &mut impl FnMut(ImportProgress),
    ) -> Result<(), ImportError> {
        let mut batch = Vec::with_capacity(BATCH_SIZE);

        let mut lines = files.accounts.open(self.written).await?;
        while let Some(n) = lines.next(self.written).await? {
            let record: AccountRecord =
                lines.parse(ACCOUNT_FIELDS).map_err(|reason| self.changed(&lines, n, reason))?;
            let (mandator, account) = record.into_account();
            if &mandator != self.mandator {
                return Err(self.changed(&lines, n, format!("mandatorId {mandator}")));
            }
            batch.push(AccountItem::Account(account));
            if batch.len() == BATCH_SIZE {
                self.flush(&mut batch, true).await?;
                progress(self.progress(lines.bytes, files.total()));
            }
        }
        self.flush(&mut batch, true).await?;
        let accounts_bytes = lines.bytes;
        progress(self.progress(accounts_bytes, files.total()));

        let mut lines = files.transactions.open(self.written).await?;
        while let Some(n) = lines.next(self.written).await? {
            let record: TransactionRecord =
                lines.parse(TRANSACTION_FIELDS).map_err(|reason| self.changed(&lines, n, reason))?;
            let known = accounts
                .get(&record.account_id)
                .is_some_and(|a| a.user == record.user_id && a.currency == record.currency);
            if &record.mandator_id != self.mandator || !known {
                let reason = format!("transaction {} does not match the validated data", record.transaction_id);
                return Err(self.changed(&lines, n, reason));
            }
            batch.push(record.into_item().1);
            if batch.len() == BATCH_SIZE {
                self.flush(&mut batch, false).await?;
                progress(self.progress(accounts_bytes + lines.bytes, files.total()));
            }
        }
        self.flush(&mut batch, false).await?;
        progress(self.progress(files.total(), files.total()));
        Ok(())
    }

    async fn flush(&mut self, batch: &mut Vec<AccountItem>, accounts: bool) -> Result<(), ImportError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.sink
            .put_items(self.mandator, self.shard_count, batch)
            .await
            .map_err(|source| ImportError::Store { written: self.written, source })?;
        let n = batch.len() as u64;
        if accounts {
            self.written.accounts += n;
        } else {
            self.written.transactions += n;
        }
        batch.clear();
        Ok(())
    }

    fn changed(&self, lines: &Lines, line: u64, reason: String) -> ImportError {
        ImportError::Changed { error: LineError { file: lines.name.clone(), line, reason }, written: self.written }
    }

    fn progress(&self, bytes_done: u64, bytes_total: u64) -> ImportProgress {
        ImportProgress {
            phase: ImportPhase::Writing,
            bytes_done,
            bytes_total,
            accounts: self.written.accounts,
            transactions: self.written.transactions,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;

    /// Records every call; optionally refuses a shard count. Its account directory is `stored`.
    #[derive(Default)]
    struct RecordingSink {
        shard_counts: Mutex<Vec<(MandatorId, u32)>>,
        batches: Mutex<Vec<(MandatorId, u32, Vec<AccountItem>)>>,
        recorded_shard_count: Option<u32>,
        fail_on_batch: Option<usize>,
        stored: std::collections::BTreeMap<AccountId, UserId>,
        lookups: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl crate::ports::AccountDirectory for RecordingSink {
        async fn account_users(
            &self,
            _mandator: &MandatorId,
            accounts: &[AccountId],
        ) -> Result<std::collections::BTreeMap<AccountId, UserId>, StoreError> {
            self.lookups.lock().unwrap().push(accounts.len());
            Ok(accounts.iter().filter_map(|a| Some((a.clone(), self.stored.get(a)?.clone()))).collect())
        }
    }

    impl RecordingSink {
        fn items(&self) -> Vec<AccountItem> {
            self.batches.lock().unwrap().iter().flat_map(|(_, _, items)| items.clone()).collect()
        }

        fn nothing_written(&self) -> bool {
            self.shard_counts.lock().unwrap().is_empty() && self.batches.lock().unwrap().is_empty()
        }
    }

    #[async_trait]
    impl AccountSink for RecordingSink {
        async fn ensure_shard_count(&self, mandator: &MandatorId, shard_count: u32) -> Result<(), StoreError> {
            if self.recorded_shard_count.is_some_and(|n| n != shard_count) {
                return Err(StoreError::Conflict("another shard count is recorded".into()));
            }
            self.shard_counts.lock().unwrap().push((mandator.clone(), shard_count));
            Ok(())
        }

        async fn put_items(
            &self,
            mandator: &MandatorId,
            shard_count: u32,
            items: &[AccountItem],
        ) -> Result<(), StoreError> {
            let mut batches = self.batches.lock().unwrap();
            if self.fail_on_batch == Some(batches.len()) {
                return Err(StoreError::unavailable("writing", "the store went away"));
            }
            batches.push((mandator.clone(), shard_count, items.to_vec()));
            Ok(())
        }
    }

    fn account(m: &str, u: &str, a: &str, currency: &str, balance: &str) -> String {
        format!(
            r#"{{"mandatorId":"{m}","userId":"{u}","accountId":"{a}","accountType":"checking","currency":"{currency}","balance":{balance},"balanceDate":"2024-05-31"}}"#
        )
    }

    fn transaction(m: &str, u: &str, a: &str, t: &str, currency: &str, amount: &str) -> String {
        format!(
            r#"{{"mandatorId":"{m}","userId":"{u}","accountId":"{a}","transactionId":"{t}","bookingDate":"2024-05-02","amount":{amount},"currency":"{currency}","counterpartName":"ACME","purpose":"rent","labels":["RENT"]}}"#
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

        fn accounts(&self) -> std::path::PathBuf {
            self.dir.path().join("accounts.ndjson")
        }

        fn transactions(&self) -> std::path::PathBuf {
            self.dir.path().join("transactions.ndjson")
        }

        async fn import(&self, sink: &RecordingSink, options: ImportOptions) -> Result<ImportReport, ImportError> {
            import_files(sink, &self.accounts(), &self.transactions(), options, |_| {}).await
        }

        /// Imports with default options, expects it to be refused, and returns the reasons.
        async fn invalid(&self) -> Vec<String> {
            let sink = RecordingSink::default();
            let err = self.import(&sink, ImportOptions::default()).await.unwrap_err();
            assert!(sink.nothing_written(), "a bad file must import nothing");
            match err {
                ImportError::Invalid { errors, more: 0 } => errors.iter().map(ToString::to_string).collect(),
                other => panic!("expected Invalid, got {other:?}"),
            }
        }
    }

    fn good() -> Fixture {
        Fixture::lines(
            &[account("m1", "u1", "a1", "EUR", "100.10"), account("m1", "u2", "a2", "USD", "-0.1")],
            &[transaction("m1", "u1", "a1", "t1", "EUR", "-12.34"), transaction("m1", "u2", "a2", "t1", "USD", "0.01")],
        )
    }

    #[tokio::test]
    async fn given_good_files_when_imported_then_everything_is_written_exactly() {
        let f = good();
        let sink = RecordingSink::default();
        let mut seen = Vec::new();
        let report = import_files(
            &sink,
            &f.accounts(),
            &f.transactions(),
            ImportOptions { mandator: None, shard_count: 4 },
            |p| seen.push(p),
        )
        .await
        .unwrap();

        let m1 = MandatorId::parse("m1").unwrap();
        assert_eq!(
            report,
            ImportReport { mandator: m1.clone(), shard_count: 4, users: 2, accounts: 2, transactions: 2 }
        );
        assert_eq!(*sink.shard_counts.lock().unwrap(), [(m1, 4)]);
        let items = sink.items();
        assert_eq!(items.len(), 4);
        let AccountItem::Account(a) = &items[1] else { panic!("accounts come first: {items:?}") };
        assert_eq!(a.balance.to_string(), "-0.10");
        let AccountItem::Transaction { transaction: t, .. } = &items[2] else { panic!("{items:?}") };
        assert_eq!(t.amount.to_string(), "-12.34");
        assert_eq!(t.labels, ["RENT"]);

        let last = seen.last().unwrap();
        assert_eq!(
            (last.phase, last.bytes_done, last.accounts, last.transactions),
            (ImportPhase::Writing, last.bytes_total, 2, 2)
        );
        assert!(seen.iter().any(|p| p.phase == ImportPhase::Validating));
    }

    #[tokio::test]
    async fn blank_lines_crlf_a_bom_and_a_missing_final_newline_are_fine() {
        let accounts = format!(
            "\u{feff}{}\r\n\n   \n{}",
            account("m1", "u1", "a1", "EUR", "1"),
            account("m1", "u1", "a2", "EUR", "2")
        );
        let f = Fixture::new(&accounts, &format!("\n{}", transaction("m1", "u1", "a2", "t", "EUR", "3")));
        let report = f.import(&RecordingSink::default(), ImportOptions::default()).await.unwrap();
        assert_eq!((report.accounts, report.transactions), (2, 1));
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
        assert!(errors[0].ends_with(&format!(
            ":2: mandatorId m2 is not m1, the mandator of this import (from {}:1)",
            f.accounts().display()
        )));
        assert!(errors[1].contains("transactions.ndjson:1: mandatorId m2 is not m1"), "{}", errors[1]);
    }

    #[tokio::test]
    async fn an_explicit_mandator_is_the_only_one_accepted() {
        let f = good();
        let sink = RecordingSink::default();
        let options = ImportOptions { mandator: Some(MandatorId::parse("m2").unwrap()), shard_count: 4 };
        let Err(ImportError::Invalid { errors, more: 0 }) = f.import(&sink, options).await else { panic!() };
        assert_eq!(errors.len(), 4);
        assert!(errors[0].reason.contains("the mandator of this import (from the import options)"));
        assert!(sink.nothing_written());
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

    #[tokio::test]
    async fn an_account_id_another_user_holds_in_the_stored_data_is_an_error_and_nothing_is_written() {
        let user = |u: &str| UserId::parse(u).unwrap();
        let id = |a: &str| AccountId::parse(a).unwrap();
        // a1 is stored for u1 already (a re-import of it is fine); a2 is stored for another user.
        let stored = [(id("a1"), user("u1")), (id("a2"), user("u9"))].into_iter().collect();
        let sink = RecordingSink { stored, ..RecordingSink::default() };
        let err = good().import(&sink, ImportOptions::default()).await.unwrap_err();
        let ImportError::Invalid { errors, more: 0 } = err else { panic!("{err:?}") };
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!((errors[0].line, errors[0].file.ends_with("accounts.ndjson")), (2, true));
        assert_eq!(
            errors[0].reason,
            "accountId a2 belongs to userId u9 in the stored data of mandator m1, not to userId u2; \
             accountIds are unique per mandator"
        );
        assert!(sink.nothing_written());

        // Looked up in batches; the same files against a directory that agrees import.
        let accounts: Vec<String> =
            (0..2500).map(|i| account("m1", &format!("u{i}"), &format!("a{i}"), "EUR", "1")).collect();
        let sink = RecordingSink { stored: [(id("a7"), user("u7"))].into_iter().collect(), ..Default::default() };
        Fixture::lines(&accounts, &[]).import(&sink, ImportOptions::default()).await.unwrap();
        assert_eq!(*sink.lookups.lock().unwrap(), [1000, 1000, 500]);
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
        let f = Fixture::lines(&accounts, &[]);
        let Err(ImportError::Invalid { errors, more }) =
            f.import(&RecordingSink::default(), ImportOptions::default()).await
        else {
            panic!()
        };
        assert_eq!((errors.len(), more), (MAX_REPORTED_ERRORS, 50));
        assert_eq!(errors[99].line, 100);
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
    async fn empty_files_and_bad_shard_counts_are_refused() {
        let f = Fixture::new("\n", "");
        assert!(matches!(f.import(&RecordingSink::default(), ImportOptions::default()).await, Err(ImportError::Empty)));
        let options = ImportOptions { mandator: None, shard_count: 0 };
        assert!(matches!(good().import(&RecordingSink::default(), options).await, Err(ImportError::ShardCount(0))));
        let options = ImportOptions { mandator: None, shard_count: MAX_SHARD_COUNT + 1 };
        assert!(matches!(good().import(&RecordingSink::default(), options).await, Err(ImportError::ShardCount(_))));
    }

    #[tokio::test]
    async fn a_missing_file_is_an_io_error_naming_it() {
        let f = good();
        let missing = f.dir.path().join("nope.ndjson");
        let err = import_files(&RecordingSink::default(), &f.accounts(), &missing, ImportOptions::default(), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, ImportError::Io { .. }));
        assert!(err.to_string().contains("nope.ndjson"), "{err}");
    }

    #[tokio::test]
    async fn a_recorded_different_shard_count_stops_before_writing() {
        let sink = RecordingSink { recorded_shard_count: Some(8), ..RecordingSink::default() };
        let err = good().import(&sink, ImportOptions { mandator: None, shard_count: 4 }).await.unwrap_err();
        assert!(matches!(
            err,
            ImportError::Store { written: Written { accounts: 0, transactions: 0 }, source: StoreError::Conflict(_) }
        ));
        assert!(sink.batches.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn writes_go_in_batches_and_a_failure_says_how_much_was_written() {
        let accounts: Vec<String> =
            (0..1200).map(|i| account("m1", &format!("u{i}"), &format!("a{i}"), "EUR", "1")).collect();
        let f = Fixture::lines(&accounts, &[]);
        let sink = RecordingSink::default();
        f.import(&sink, ImportOptions::default()).await.unwrap();
        let sizes: Vec<usize> = sink.batches.lock().unwrap().iter().map(|(_, _, items)| items.len()).collect();
        assert_eq!(sizes, [500, 500, 200]);

        let failing = RecordingSink { fail_on_batch: Some(1), ..RecordingSink::default() };
        let err = f.import(&failing, ImportOptions::default()).await.unwrap_err();
        let ImportError::Store { written, .. } = &err else { panic!("{err:?}") };
        assert_eq!(*written, Written { accounts: 500, transactions: 0 });
        assert!(err.to_string().contains("500 accounts and 0 transactions were written"), "{err}");
    }

    #[test]
    fn line_errors_display_as_file_line_reason() {
        let e = LineError { file: "accounts.ndjson".into(), line: 7, reason: "bad".into() };
        assert_eq!(e.to_string(), "accounts.ndjson:7: bad");
    }
}
