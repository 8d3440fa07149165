//! The benchmark's inputs: the segment parameters of `bench/params.json` and the users of a
//! generated data set, read from `accounts.ndjson` and `transactions.ndjson` one user at a time.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::NaiveDate;
use segments_core::domain::records::{AccountRecord, TransactionRecord};
use segments_core::domain::{AccountHistory, MandatorId, SegmentType, UserData, UserId};
use segments_core::rules::{SegmentRequest, SegmentSpec};
use serde_json::Value;

/// The five computations of a benchmark run, in the order of [`SegmentType::ALL`].
pub fn load_specs(path: &Path, today: NaiveDate) -> anyhow::Result<Vec<(SegmentType, SegmentSpec)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let as_of = file["asOf"].as_str().context("params: asOf must be a date string")?;
    let mut specs = Vec::new();
    for &segment_type in SegmentType::ALL {
        let mut body = file["segments"][segment_type.as_str()]
            .as_object()
            .cloned()
            .with_context(|| format!("params: segments.{segment_type} is missing"))?;
        body.insert("asOf".to_owned(), Value::String(as_of.to_owned()));
        // The same validation as `POST /segments/{segmentType}`.
        let bytes = serde_json::to_vec(&body)?;
        let request = SegmentRequest::parse(segment_type, &bytes, today)
            .with_context(|| format!("params: segments.{segment_type}"))?;
        specs.push((segment_type, SegmentSpec { as_of: request.as_of, params: request.params }));
    }
    Ok(specs)
}

/// What a reader has read so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub users: u64,
    pub accounts: u64,
    pub transactions: u64,
}

/// One NDJSON file read line by line into a reused buffer.
struct Lines {
    path: PathBuf,
    reader: BufReader<File>,
    buf: Vec<u8>,
    line: u64,
}

impl Lines {
    fn open(path: PathBuf) -> anyhow::Result<Lines> {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Lines { path, reader: BufReader::with_capacity(1 << 20, file), buf: Vec::with_capacity(1024), line: 0 })
    }

    /// The next non-blank line parsed as `T`.
    fn next<T: serde::de::DeserializeOwned>(&mut self) -> anyhow::Result<Option<T>> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .with_context(|| format!("reading {}", self.path.display()))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let record = serde_json::from_slice(&self.buf)
                .with_context(|| format!("{}:{}: not a valid record", self.path.display(), self.line))?;
            return Ok(Some(record));
        }
    }

    fn at(&self) -> String {
        format!("{}:{}", self.path.display(), self.line)
    }
}

/// The users of a data set in userId order, each with its accounts and their transactions, read
/// from both files at once: the generator writes both in userId order (docs/data.md files as
/// `segments generate` writes them), so one user is held at a time.
pub struct UserReader {
    accounts: Lines,
    transactions: Lines,
    next_account: Option<AccountRecord>,
    next_transaction: Option<TransactionRecord>,
    mandator: Option<MandatorId>,
    counts: Counts,
}

impl UserReader {
    pub fn open(dir: &Path) -> anyhow::Result<UserReader> {
        Ok(UserReader {
            accounts: Lines::open(dir.join("accounts.ndjson"))?,
            transactions: Lines::open(dir.join("transactions.ndjson"))?,
            next_account: None,
            next_transaction: None,
            mandator: None,
            counts: Counts::default(),
        })
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The mandator of the data, once a user has been read.
    pub fn mandator(&self) -> Option<&MandatorId> {
        self.mandator.as_ref()
    }

    fn account(&mut self) -> anyhow::Result<Option<AccountRecord>> {
        match self.next_account.take() {
            Some(a) => Ok(Some(a)),
            None => self.accounts.next(),
        }
    }

    fn transaction(&mut self) -> anyhow::Result<Option<TransactionRecord>> {
        match self.next_transaction.take() {
            Some(t) => Ok(Some(t)),
            None => self.transactions.next(),
        }
    }

    pub fn next_user(&mut self) -> anyhow::Result<Option<UserData>> {
        let Some(first) = self.account()? else {
            if let Some(t) = self.transaction()? {
                bail!("{}: transaction of user {} who has no account", self.transactions.at(), t.user_id);
            }
            return Ok(None);
        };
        let (mandator, account) = first.into_account();
        if self.mandator.get_or_insert_with(|| mandator.clone()) != &mandator {
            bail!("{}: a second mandator {mandator}", self.accounts.at());
        }
        let user_id = account.user_id.clone();
        let mut user = UserData { user_id, accounts: vec![AccountHistory { account, transactions: Vec::new() }] };
        while let Some(next) = self.account()? {
            if next.user_id != user.user_id {
                if next.user_id < user.user_id {
                    bail!("{}: accounts are not in userId order", self.accounts.at());
                }
                self.next_account = Some(next);
                break;
            }
            let (_, account) = next.into_account();
            user.accounts.push(AccountHistory { account, transactions: Vec::new() });
        }
        user.accounts.sort_by(|a, b| a.account.account_id.cmp(&b.account.account_id));
        self.counts.accounts += user.accounts.len() as u64;

        let mut at = 0;
        while let Some(t) = self.transaction()? {
            if t.user_id != user.user_id {
                if t.user_id < user.user_id {
                    bail!("{}: transaction of user {} who has no account", self.transactions.at(), t.user_id);
                }
                self.next_transaction = Some(t);
                break;
            }
            let (_, _, account_id, transaction) = t.into_parts();
            if user.accounts[at].account.account_id != account_id {
                at = match user.accounts.iter().position(|h| h.account.account_id == account_id) {
                    Some(i) => i,
                    None => bail!("{}: transaction of an unknown account {account_id}", self.transactions.at()),
                };
            }
            user.accounts[at].transactions.push(transaction);
            self.counts.transactions += 1;
        }
        self.counts.users += 1;
        Ok(Some(user))
    }
}

/// Checks that users come in strictly increasing userId order, as results list them.
#[derive(Default)]
pub struct Ordered(Option<UserId>);

impl Ordered {
    pub fn check(&mut self, user: &UserId) -> anyhow::Result<()> {
        if self.0.as_ref().is_some_and(|last| last >= user) {
            bail!("user {user} is out of userId order");
        }
        self.0 = Some(user.clone());
        Ok(())
    }
}
