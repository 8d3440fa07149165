//! Deterministic synthetic account data for demos, benchmarks and tests, in the NDJSON import
//! format of docs/data.md.
//!
//! A user's data depends only on the seed and the user's index: each user draws from its own
//! ChaCha8 stream (the seed is the key, the index the stream number), so the same configuration
//! yields byte-identical files on every platform, users can be generated in any order or in
//! parallel, and memory does not grow with the number of users. Amounts are whole cents, never
//! floats.
//!
//! The data is shaped to exercise every segment type:
//! - account types `checking` (nearly every user, a few with two), `savings`, `creditCard`,
//!   `loan`, `security`, `pocket`, `membership`, `bausparen`; mostly EUR, some in CHF and USD;
//!   a few accounts without any transaction;
//! - balance profiles: steady users above a floor, affluent users above several thousand,
//!   low-balance users below a low mark in every month, overdraft-prone users pushed below zero by
//!   a large expense and made good within three weeks;
//! - salaries around the same day each month (moved to the Friday before a weekend, sometimes
//!   into the previous month), users paid only in some months (a job started, ended, a gap,
//!   freelance), users paid never (pension, benefits, family support or nothing);
//! - rent, utilities, subscriptions, a fee on the last day of the month, card spending with
//!   same-day purchases, refunds, rare zero-amount card checks, credit-card settlements;
//! - insurance payments with every type label, plain `INSURANCE`, several type labels at once,
//!   monthly/quarterly/half-yearly/yearly/irregular/one-off schedules, refunds and zero-amount
//!   notices, and provider names that vary in case and whitespace between payments;
//! - label combinations for financialBreakdown (`GROCERIES`+`RESTAURANT`, `TRAVEL`+`REFUND`,
//!   `RENT`+`UTILITIES`, no labels, a repeated label, …);
//! - a few card payments dated after the balance date, which the balance does not include.
//!
//! Every account's `balance` at `balanceDate` (the configured end date) is its starting balance
//! plus all its transactions up to that date.

mod catalog;
mod timeline;
mod user;

#[cfg(test)]
mod tests;

use std::io::{self, Write};

use chrono::{Datelike, NaiveDate};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use self::timeline::{Draw, Timeline};
use self::user::Draft;
use segments_core::domain::records::{AccountRecord, TransactionRecord};
use segments_core::domain::{AccountId, Currency, MandatorId, Money, TransactionId, UserId};

/// Seed used when none is given.
pub const DEFAULT_SEED: u64 = 42;
/// History length used when none is given: two years of complete months before the end date's
/// month, one more before them, and the end date's own month.
pub const DEFAULT_MONTHS: u32 = 26;
/// Mandator the data belongs to when none is given.
pub const DEFAULT_MANDATOR: &str = "demo";

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateConfig {
    pub users: u64,
    pub seed: u64,
    pub mandator: MandatorId,
    /// The last booking date of the history and the `balanceDate` of every account.
    pub end_date: NaiveDate,
    /// Calendar months of history, the end date's month included (at least 1).
    pub months: u32,
}

impl GenerateConfig {
    /// `users` users of the demo mandator with history up to `end_date`, default seed and length.
    /// The end date has no default because the output must not depend on the day it is made.
    pub fn new(users: u64, end_date: NaiveDate) -> Self {
        GenerateConfig {
            users,
            seed: DEFAULT_SEED,
            mandator: MandatorId::parse(DEFAULT_MANDATOR).expect("the default mandator is a valid id"),
            end_date,
            months: DEFAULT_MONTHS,
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenerateSummary {
    pub users: u64,
    pub accounts: u64,
    pub transactions: u64,
}

/// One user's records: accounts ordered by accountId, transactions by (accountId, bookingDate,
/// transactionId) — the order of the NDJSON files and of a shard's Query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedUser {
    pub accounts: Vec<AccountRecord>,
    pub transactions: Vec<TransactionRecord>,
}

/// Generates users by index. Cheap to share between threads; [`Generator::user`] of the same
/// index always returns the same data.
#[derive(Debug)]
pub struct Generator {
    mandator: MandatorId,
    key: [u8; 32],
    timeline: Timeline,
    id_width: usize,
}

/// An account of a generated user with everything its records need.
struct Generated {
    id: AccountId,
    draft: Draft,
    /// Balance before the first day of the history, in cents.
    start: i64,
}

impl Generator {
    pub fn new(config: &GenerateConfig) -> Self {
        Generator {
            mandator: config.mandator.clone(),
            key: ChaCha8Rng::seed_from_u64(config.seed).get_seed(),
            timeline: Timeline::new(config.end_date, config.months),
            // Zero-padded so that byte order is numeric order; wider only past ten million users.
            id_width: digits(config.users).max(7),
        }
    }

    /// The id of the user with `index` (0-based): `user-0000001` for index 0.
    pub fn user_id(&self, index: u64) -> UserId {
        UserId::try_from(format!("user-{:0w$}", index + 1, w = self.id_width))
            .expect("generated ids use the id alphabet")
    }

    /// The data of the user with `index` (0-based).
    pub fn user(&self, index: u64) -> GeneratedUser {
        let (user_id, accounts) = self.accounts(index);
        self.records(&user_id, accounts)
    }

    fn records(&self, user_id: &UserId, accounts: Vec<Generated>) -> GeneratedUser {
        let mut records = GeneratedUser {
            accounts: Vec::with_capacity(accounts.len()),
            transactions: Vec::with_capacity(accounts.iter().map(|a| a.draft.txs.len()).sum()),
        };
        let mut tx_id = String::new();
        for account in accounts {
            records.accounts.push(self.account_record(user_id, &account));
            let (count, currency) = (account.draft.txs.len(), account.draft.currency);
            for (j, tx) in account.draft.txs.into_iter().enumerate() {
                transaction_id(&mut tx_id, j, count);
                records.transactions.push(TransactionRecord {
                    mandator_id: self.mandator.clone(),
                    user_id: user_id.clone(),
                    account_id: account.id.clone(),
                    transaction_id: TransactionId::try_from(tx_id.clone()).expect("generated ids use the id alphabet"),
                    booking_date: tx.date,
                    amount: Money::from_cents(tx.cents),
                    currency,
                    counterpart_name: tx.counterpart.into_owned(),
                    purpose: tx.purpose.into_owned(),
                    labels: tx.labels.iter().map(|l| (*l).to_owned()).collect(),
                });
            }
        }
        records
    }

    /// Appends the NDJSON lines of the user with `index` to the two buffers, serializing straight
    /// from the generator's own data: the same bytes as serializing [`Generator::user`]'s records,
    /// without copying every string into them first. Returns the numbers of accounts and
    /// transactions.
    fn write_user(
        &self,
        index: u64,
        accounts: &mut Vec<u8>,
        transactions: &mut Vec<u8>,
    ) -> serde_json::Result<(u64, u64)> {
        let (user_id, generated) = self.accounts(index);
        let mut tx_id = String::new();
        let mut count = 0;
        for account in &generated {
            serde_json::to_writer(&mut *accounts, &self.account_record(&user_id, account))?;
            accounts.push(b'\n');
            for (j, tx) in account.draft.txs.iter().enumerate() {
                transaction_id(&mut tx_id, j, account.draft.txs.len());
                let line = TransactionLine {
                    mandator_id: &self.mandator,
                    user_id: &user_id,
                    account_id: &account.id,
                    transaction_id: &tx_id,
                    booking_date: Day(tx.date),
                    amount: Cents(tx.cents),
                    currency: account.draft.currency,
                    counterpart_name: &tx.counterpart,
                    purpose: &tx.purpose,
                    labels: tx.labels,
                };
                serde_json::to_writer(&mut *transactions, &line)?;
                transactions.push(b'\n');
            }
            count += account.draft.txs.len() as u64;
        }
        Ok((generated.len() as u64, count))
    }

    /// The user's accounts in accountId order, their transactions in booking order.
    fn accounts(&self, index: u64) -> (UserId, Vec<Generated>) {
        let mut rng = ChaCha8Rng::from_seed(self.key);
        rng.set_stream(index);
        let user_id = self.user_id(index);
        let number = &user_id.as_str()["user-".len()..];
        let accounts = user::generate(&self.timeline, &mut Draw(rng))
            .into_iter()
            .enumerate()
            .map(|(i, mut draft)| Generated {
                id: AccountId::try_from(format!("acc-{number}-{:02}", i + 1))
                    .expect("generated ids use the id alphabet"),
                start: draft.start(&self.timeline),
                draft,
            })
            .collect();
        (user_id, accounts)
    }

    fn account_record(&self, user_id: &UserId, account: &Generated) -> AccountRecord {
        let end = self.timeline.end;
        let booked: i64 = account.draft.txs.iter().filter(|t| t.date <= end).map(|t| t.cents).sum();
        AccountRecord {
            mandator_id: self.mandator.clone(),
            user_id: user_id.clone(),
            account_id: account.id.clone(),
            account_type: account.draft.account_type,
            currency: account.draft.currency,
            balance: Money::from_cents(account.start + booked),
            balance_date: end,
        }
    }
}

/// `tx-00001` for the first of an account's transactions: ids ascend with booking order.
fn transaction_id(buf: &mut String, index: usize, count: usize) {
    use std::fmt::Write as _;
    buf.clear();
    let width = digits(count as u64).max(5);
    let _ = write!(buf, "tx-{:0width$}", index + 1);
}

/// A line of `transactions.ndjson` borrowed from the generator's data. Its fields are those of
/// [`TransactionRecord`], in the same order, and serialize to the same bytes (a test holds them
/// to it) without the allocations of the records' own serialization.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TransactionLine<'a> {
    mandator_id: &'a MandatorId,
    user_id: &'a UserId,
    account_id: &'a AccountId,
    transaction_id: &'a str,
    booking_date: Day,
    amount: Cents,
    currency: Currency,
    counterpart_name: &'a str,
    purpose: &'a str,
    labels: &'a [&'static str],
}

/// A date serialized as `NaiveDate` does, formatted on the stack.
struct Day(NaiveDate);

impl Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (y, m, d) = (self.0.year(), self.0.month(), self.0.day());
        if !(0..=9999).contains(&y) {
            return self.0.serialize(serializer);
        }
        let mut text = *b"0000-00-00";
        for (i, digit) in [y / 1000, y / 100 % 10, y / 10 % 10, y % 10].into_iter().enumerate() {
            text[i] = b'0' + digit as u8;
        }
        text[5..7].copy_from_slice(&[b'0' + (m / 10) as u8, b'0' + (m % 10) as u8]);
        text[8..10].copy_from_slice(&[b'0' + (d / 10) as u8, b'0' + (d % 10) as u8]);
        serializer.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

/// An amount in cents serialized as `Money` does (a JSON number with two decimals), formatted on
/// the stack.
struct Cents(i64);

impl Serialize for Cents {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use std::io::Write as _;
        let mut buf = [0u8; 32];
        let mut cursor = io::Cursor::new(&mut buf[..]);
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(cursor, "{sign}{}.{:02}", abs / 100, abs % 100).map_err(serde::ser::Error::custom)?;
        let len = cursor.position() as usize;
        let text = std::str::from_utf8(&buf[..len]).map_err(serde::ser::Error::custom)?;
        let raw: &serde_json::value::RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// The data of the user with `index` (0-based) of `config`; the same whatever `config.users` is
/// (below ten million users).
pub fn user(config: &GenerateConfig, index: u64) -> GeneratedUser {
    Generator::new(config).user(index)
}

/// All users of `config`, in userId order, generated one at a time.
pub fn users(config: &GenerateConfig) -> impl Iterator<Item = GeneratedUser> + use<> {
    let generator = Generator::new(config);
    (0..config.users).map(move |index| generator.user(index))
}

/// Users a worker thread of [`write_ndjson`] generates at a time: small enough that the buffers in
/// flight stay at a few megabytes per thread.
const BATCH: u64 = 64;

/// A batch of users as NDJSON.
#[derive(Default)]
struct Batch {
    accounts: Vec<u8>,
    transactions: Vec<u8>,
    summary: GenerateSummary,
}

/// Writes the content of `accounts.ndjson` and `transactions.ndjson` for `config`, one JSON object
/// per line, users in userId order; the bytes do not depend on the machine or the number of
/// threads. Users are generated in batches on all available cores and written in order, so memory
/// stays bounded whatever the number of users. `progress` receives the number of users written
/// after each round of batches (a few hundred users apart). Both writers are flushed; buffering
/// them is the caller's choice.
pub fn write_ndjson(
    config: &GenerateConfig,
    mut accounts: impl Write,
    mut transactions: impl Write,
    mut progress: impl FnMut(u64),
) -> io::Result<GenerateSummary> {
    let generator = Generator::new(config);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    // One buffer pair per worker, reused from round to round.
    let mut batches: Vec<Batch> = (0..workers).map(|_| Batch::default()).collect();
    let mut summary = GenerateSummary::default();
    while summary.users < config.users {
        let next = summary.users;
        std::thread::scope(|scope| {
            let generator = &generator;
            let handles: Vec<_> = batches
                .iter_mut()
                .enumerate()
                .map(|(w, batch)| (next + w as u64 * BATCH, batch))
                .filter(|(from, _)| *from < config.users)
                .map(|(from, batch)| {
                    let until = (from + BATCH).min(config.users);
                    scope.spawn(move || batch.fill(generator, from, until))
                })
                .collect();
            handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        })?;
        for batch in &mut batches {
            accounts.write_all(&batch.accounts)?;
            transactions.write_all(&batch.transactions)?;
            summary.users += batch.summary.users;
            summary.accounts += batch.summary.accounts;
            summary.transactions += batch.summary.transactions;
            batch.clear();
        }
        progress(summary.users);
    }
    accounts.flush()?;
    transactions.flush()?;
    Ok(summary)
}

impl Batch {
    /// Replaces the batch's content with the users `from..until`.
    fn fill(&mut self, generator: &Generator, from: u64, until: u64) -> serde_json::Result<()> {
        self.clear();
        for index in from..until {
            let (accounts, transactions) = generator.write_user(index, &mut self.accounts, &mut self.transactions)?;
            self.summary.users += 1;
            self.summary.accounts += accounts;
            self.summary.transactions += transactions;
        }
        Ok(())
    }

    fn clear(&mut self) {
        self.accounts.clear();
        self.transactions.clear();
        self.summary = GenerateSummary::default();
    }
}
