//! Account data: the shard count per mandator, the items of every shard, and the account
//! directory (`account_users`: `M#{mandator}#A#{accountId}` → the userId holding the account).
//! `put_items` writes an account's directory entry in the same write transaction as the account
//! (the last write of an accountId names its user). AccountIds are unique per mandator: the
//! importer refuses a file that breaks that before writing anything.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::NaiveDate;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::keys::{self, SortKey};
use super::{ACCOUNT_DATA, EmbeddedStore, OrUnavailable, SHARD_COUNTS, corrupt};
use segments_core::domain::assembly::{AssemblyError, UserAssembler};
use segments_core::domain::records::{AccountItem, shard_of};
use segments_core::domain::{
    Account, AccountId, AccountType, Currency, MandatorId, Money, Transaction, TransactionId, UserData, UserId,
};
use segments_core::ports::{AccountDirectory, AccountSink, AccountSource, StoreError};

/// Users assembled ahead of the consumer of a shard stream: enough to keep the reader busy while
/// the consumer computes, few enough that memory stays bounded by a handful of users.
const USERS_AHEAD: usize = 8;

/// The account directory: `M#{mandator}#A#{accountId}` → userId.
pub(super) const ACCOUNT_USERS: TableDefinition<&str, &str> = TableDefinition::new("account_users");

fn directory_key(mandator: &MandatorId, account: &AccountId) -> String {
    format!("M#{mandator}#A#{account}")
}

/// An account without the ids its key carries.
#[derive(Debug, Serialize, Deserialize)]
struct StoredAccount {
    #[serde(rename = "type")]
    account_type: AccountType,
    #[serde(rename = "cur")]
    currency: Currency,
    #[serde(rename = "bal")]
    balance: Money,
    #[serde(rename = "date")]
    balance_date: NaiveDate,
}

/// A transaction without the ids and the booking date its key carries.
#[derive(Debug, Serialize, Deserialize)]
struct StoredTransaction {
    #[serde(rename = "amt")]
    amount: Money,
    #[serde(rename = "cur")]
    currency: Currency,
    #[serde(rename = "cp", default, skip_serializing_if = "String::is_empty")]
    counterpart_name: String,
    #[serde(rename = "p", default, skip_serializing_if = "String::is_empty")]
    purpose: String,
    #[serde(rename = "l", default, skip_serializing_if = "Vec::is_empty")]
    labels: Vec<String>,
}

fn encode_item(mandator: &MandatorId, shard_count: u32, item: &AccountItem) -> Result<(String, Vec<u8>), StoreError> {
    let shard = shard_of(item.user_id(), shard_count);
    let (key, value) = match item {
        AccountItem::Account(a) => (
            keys::account_key(mandator, shard, &a.user_id, &a.account_id),
            serde_json::to_vec(&StoredAccount {
                account_type: a.account_type,
                currency: a.currency,
                balance: a.balance,
                balance_date: a.balance_date,
            }),
        ),
        AccountItem::Transaction { user_id, account_id, transaction: t } => (
            keys::transaction_key(mandator, shard, user_id, account_id, t.booking_date, &t.transaction_id),
            serde_json::to_vec(&StoredTransaction {
                amount: t.amount,
                currency: t.currency,
                counterpart_name: t.counterpart_name.clone(),
                purpose: t.purpose.clone(),
                labels: t.labels.clone(),
            }),
        ),
    };
    let value = value.map_err(|e| StoreError::unavailable("encoding account data", e))?;
    Ok((key, value))
}

#[async_trait]
impl AccountSource for EmbeddedStore {
    async fn shard_count(&self, mandator: &MandatorId) -> Result<Option<u32>, StoreError> {
        let key = keys::mandator_key(mandator);
        self.blocking("reading the shard count", move |db| {
            const WHAT: &str = "reading the shard count";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let table = read.open_table(SHARD_COUNTS).or_unavailable(WHAT)?;
            Ok(table.get(key.as_str()).or_unavailable(WHAT)?.map(|v| v.value()))
        })
        .await
    }

    fn users<'a>(&'a self, mandator: &'a MandatorId, shard: u32) -> BoxStream<'a, Result<UserData, StoreError>> {
        let (tx, rx) = mpsc::channel(USERS_AHEAD);
        let db = std::sync::Arc::clone(&self.db);
        let prefix = keys::shard_prefix(mandator, shard);
        let walker = tokio::task::spawn_blocking(move || {
            if let Err(e) = walk_shard(&db, &prefix, &tx) {
                // The consumer may be gone already; then nobody needs the error either.
                let _ = tx.blocking_send(Err(e));
            }
        });
        stream::unfold((rx, Some(walker)), |(mut rx, walker)| async move {
            if let Some(item) = rx.recv().await {
                return Some((item, (rx, walker)));
            }
            // The channel closes when the walker ends. If it panicked, say so rather than end
            // the stream as if the shard were complete.
            match walker?.await {
                Ok(()) => None,
                Err(e) => Some((Err(StoreError::unavailable("reading a shard", e)), (rx, None))),
            }
        })
        .boxed()
    }
}

/// Walks one shard in key order, hands its items to the [`UserAssembler`] and sends each user
/// once all its items are read. Returns early, without error, when the consumer has dropped the
/// stream.
fn walk_shard(db: &Database, prefix: &str, tx: &mpsc::Sender<Result<UserData, StoreError>>) -> Result<(), StoreError> {
    const WHAT: &str = "reading a shard";
    let read = db.begin_read().or_unavailable(WHAT)?;
    let table = read.open_table(ACCOUNT_DATA).or_unavailable(WHAT)?;
    let end = keys::prefix_end(prefix);
    let mut assembler = UserAssembler::new();
    // A transaction written without its account (the importer never does that) would silently
    // change the user's balances if left out, so the shard is unreadable.
    let corrupt_shard = |e: AssemblyError| StoreError::Corrupt(format!("{e} (shard {prefix:?})"));
    for entry in table.range(prefix..end.as_str()).or_unavailable(WHAT)? {
        let (key, value) = entry.or_unavailable(WHAT)?;
        let key = key.value();
        let sort_key = key
            .strip_prefix(prefix)
            .and_then(SortKey::parse)
            .ok_or_else(|| StoreError::Corrupt(format!("unexpected account data key {key:?}")))?;
        let item = match sort_key {
            SortKey::Account { user, account } => {
                let stored: StoredAccount =
                    serde_json::from_slice(value.value()).map_err(|e| corrupt("account", key, e))?;
                AccountItem::Account(Account {
                    account_id: parse_id::<AccountId>(account, key)?,
                    user_id: parse_id::<UserId>(user, key)?,
                    account_type: stored.account_type,
                    currency: stored.currency,
                    balance: stored.balance,
                    balance_date: stored.balance_date,
                })
            }
            SortKey::Transaction { user, account, booking_date, transaction } => {
                let stored: StoredTransaction =
                    serde_json::from_slice(value.value()).map_err(|e| corrupt("transaction", key, e))?;
                AccountItem::Transaction {
                    user_id: parse_id::<UserId>(user, key)?,
                    account_id: parse_id::<AccountId>(account, key)?,
                    transaction: Transaction {
                        transaction_id: parse_id::<TransactionId>(transaction, key)?,
                        booking_date: booking_date.parse().map_err(|e| corrupt("booking date in key", key, e))?,
                        amount: stored.amount,
                        currency: stored.currency,
                        counterpart_name: stored.counterpart_name,
                        purpose: stored.purpose,
                        labels: stored.labels,
                    },
                }
            }
        };
        match assembler.push(item) {
            Ok(Some(done)) => {
                if tx.blocking_send(Ok(done)).is_err() {
                    return Ok(());
                }
            }
            Ok(None) => {}
            Err(e) => return Err(corrupt_shard(e)),
        }
    }
    if let Some(done) = assembler.finish().map_err(corrupt_shard)? {
        // An error here only means the consumer stopped listening.
        let _ = tx.blocking_send(Ok(done));
    }
    Ok(())
}

fn parse_id<T: std::str::FromStr<Err: std::fmt::Display>>(s: &str, key: &str) -> Result<T, StoreError> {
    s.parse().map_err(|e| corrupt("id in key", key, e))
}

#[async_trait]
impl AccountSink for EmbeddedStore {
    async fn ensure_shard_count(&self, mandator: &MandatorId, shard_count: u32) -> Result<(), StoreError> {
        let key = keys::mandator_key(mandator);
        let mandator = mandator.clone();
        self.blocking("recording the shard count", move |db| {
            const WHAT: &str = "recording the shard count";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut table = write.open_table(SHARD_COUNTS).or_unavailable(WHAT)?;
                let recorded = table.get(key.as_str()).or_unavailable(WHAT)?.map(|v| v.value());
                match recorded {
                    Some(n) if n == shard_count => return Ok(()),
                    Some(n) => {
                        return Err(StoreError::Conflict(format!(
                            "mandator {mandator} has {n} shards recorded, not {shard_count}"
                        )));
                    }
                    None => {
                        table.insert(key.as_str(), shard_count).or_unavailable(WHAT)?;
                    }
                }
            }
            write.commit().or_unavailable(WHAT)
        })
        .await
    }

    async fn put_items(
        &self,
        mandator: &MandatorId,
        shard_count: u32,
        items: &[AccountItem],
    ) -> Result<(), StoreError> {
        let encoded =
            items.iter().map(|item| encode_item(mandator, shard_count, item)).collect::<Result<Vec<_>, _>>()?;
        let owners: Vec<(String, String)> = items
            .iter()
            .filter_map(|item| match item {
                AccountItem::Account(a) => Some((directory_key(mandator, &a.account_id), a.user_id.to_string())),
                AccountItem::Transaction { .. } => None,
            })
            .collect();
        self.blocking("writing account data", move |db| {
            const WHAT: &str = "writing account data";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut directory = write.open_table(ACCOUNT_USERS).or_unavailable(WHAT)?;
                for (key, user) in &owners {
                    directory.insert(key.as_str(), user.as_str()).or_unavailable(WHAT)?;
                }
                let mut table = write.open_table(ACCOUNT_DATA).or_unavailable(WHAT)?;
                for (key, value) in &encoded {
                    table.insert(key.as_str(), value.as_slice()).or_unavailable(WHAT)?;
                }
            }
            write.commit().or_unavailable(WHAT)
        })
        .await
    }
}

#[async_trait]
impl AccountDirectory for EmbeddedStore {
    async fn account_users(
        &self,
        mandator: &MandatorId,
        accounts: &[AccountId],
    ) -> Result<BTreeMap<AccountId, UserId>, StoreError> {
        let keys: Vec<(String, AccountId)> = accounts.iter().map(|a| (directory_key(mandator, a), a.clone())).collect();
        self.blocking("reading the account directory", move |db| {
            const WHAT: &str = "reading the account directory";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let directory = read.open_table(ACCOUNT_USERS).or_unavailable(WHAT)?;
            let mut out = BTreeMap::new();
            for (key, account) in keys {
                if let Some(user) = directory.get(key.as_str()).or_unavailable(WHAT)? {
                    out.insert(account, parse_id::<UserId>(user.value(), &key)?);
                }
            }
            Ok(out)
        })
        .await
    }
}
