//! Account data: the shard count per mandator, one record per user (the compressed form of
//! `segments_core::snapshot`, behind its 8-byte version), and the account directory
//! (`M#{mandator}#A#{accountId}` → the userId holding the account).
//!
//! A write of a user is one redb write transaction: the version check, the record, and the
//! directory entries it claims and releases. Readers run on redb snapshots, so a shard's reader
//! sees every user wholly before or wholly after any write. Unlike DynamoDB, a record is never cut
//! into blocks: redb has no item size limit; the limits of `snapshot` still apply, so a user that
//! fits here fits there.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;

use super::keys;
use super::{EmbeddedStore, OrUnavailable, SHARD_COUNTS, corrupt};
use segments_core::domain::records::shard_of;
use segments_core::domain::{AccountId, MandatorId, UserData, UserId};
use segments_core::ports::{
    AccountDirectory, AccountSource, StoreError, StoredUser, UserStore, UserWriteError, next_version,
};
use segments_core::snapshot;
use segments_core::telemetry::ReadMeter;

/// Users decoded ahead of the consumer of a shard stream: enough to keep the reader busy while
/// the consumer computes, few enough that memory stays bounded by a handful of users.
const USERS_AHEAD: usize = 8;

/// The users' records: `M#{mandator}#S#{shard}#U#{userId}` → version (u64, big-endian) + record.
pub(super) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");

/// The account directory: `M#{mandator}#A#{accountId}` → userId.
pub(super) const ACCOUNT_USERS: TableDefinition<&str, &str> = TableDefinition::new("account_users");

/// The table of the layout before per-user records: one entry per account and per transaction.
/// A database that still holds such entries is refused, never read half in one layout and half in
/// the other.
pub(super) const EARLIER_LAYOUT: TableDefinition<&str, &[u8]> = TableDefinition::new("account_data");

fn directory_key(mandator: &MandatorId, account: &AccountId) -> String {
    format!("M#{mandator}#A#{account}")
}

fn stored_value(version: u64, record: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + record.len());
    value.extend_from_slice(&version.to_be_bytes());
    value.extend_from_slice(record);
    value
}

/// The version and the record of a stored value.
fn split_value<'v>(value: &'v [u8], key: &str) -> Result<(u64, &'v [u8]), StoreError> {
    let (version, record) =
        value.split_first_chunk::<8>().ok_or_else(|| corrupt("user record", key, "shorter than its version"))?;
    Ok((u64::from_be_bytes(*version), record))
}

fn decode_user(key: &str, user: &UserId, value: &[u8]) -> Result<StoredUser, StoreError> {
    let (version, record) = split_value(value, key)?;
    let data = snapshot::decode(user.clone(), record).map_err(|e| corrupt("user record", key, e))?;
    Ok(StoredUser { data, version })
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
        // The walk runs on a blocking thread, outside the task whose reads are metered.
        let meter = segments_core::telemetry::current_read_meter();
        let walker = tokio::task::spawn_blocking(move || {
            if let Err(e) = walk_shard(&db, &prefix, &tx, meter.as_ref()) {
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

/// Walks one shard in key order on one read snapshot and sends each user decoded. Returns early,
/// without error, when the consumer has dropped the stream.
fn walk_shard(
    db: &Database,
    prefix: &str,
    tx: &mpsc::Sender<Result<UserData, StoreError>>,
    meter: Option<&ReadMeter>,
) -> Result<(), StoreError> {
    const WHAT: &str = "reading a shard";
    let read = db.begin_read().or_unavailable(WHAT)?;
    let table = read.open_table(USERS).or_unavailable(WHAT)?;
    let end = keys::prefix_end(prefix);
    for entry in table.range(prefix..end.as_str()).or_unavailable(WHAT)? {
        let (key, value) = entry.or_unavailable(WHAT)?;
        let key = key.value();
        let user = user_of_key(key, prefix)?;
        if let Some(meter) = meter {
            meter.add(1, (key.len() + value.value().len()) as u64);
        }
        let stored = decode_user(key, &user, value.value())?;
        if tx.blocking_send(Ok(stored.data)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn user_of_key(key: &str, prefix: &str) -> Result<UserId, StoreError> {
    key.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix("U#"))
        .and_then(|user| UserId::parse(user).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("unexpected user record key {key:?}")))
}

#[async_trait]
impl UserStore for EmbeddedStore {
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

    async fn get_user(
        &self,
        mandator: &MandatorId,
        shard_count: u32,
        user: &UserId,
    ) -> Result<Option<StoredUser>, StoreError> {
        let key = keys::user_key(mandator, shard_of(user, shard_count), user);
        let user = user.clone();
        self.blocking("reading a user", move |db| {
            const WHAT: &str = "reading a user";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let table = read.open_table(USERS).or_unavailable(WHAT)?;
            let value = table.get(key.as_str()).or_unavailable(WHAT)?;
            value.map(|v| decode_user(&key, &user, v.value())).transpose()
        })
        .await
    }

    async fn put_user(
        &self,
        mandator: &MandatorId,
        shard_count: u32,
        data: &UserData,
        expected: Option<u64>,
    ) -> Result<u64, UserWriteError> {
        let record = snapshot::encode(data)?;
        let user = data.user_id.clone();
        let key = keys::user_key(mandator, shard_of(&user, shard_count), &user);
        let accounts: BTreeSet<AccountId> = data.accounts.iter().map(|a| a.account.account_id.clone()).collect();
        let mandator = mandator.clone();
        self.blocking("writing a user", move |db| {
            const WHAT: &str = "writing a user";
            let write = db.begin_write().or_unavailable(WHAT)?;
            let version = {
                let mut users = write.open_table(USERS).or_unavailable(WHAT)?;
                let previous = match users.get(key.as_str()).or_unavailable(WHAT)? {
                    Some(v) => Some(decode_user(&key, &user, v.value())?),
                    None => None,
                };
                if previous.as_ref().map(|p| p.version) != expected {
                    return Ok(Err(UserWriteError::VersionChanged));
                }
                let mut directory = write.open_table(ACCOUNT_USERS).or_unavailable(WHAT)?;
                for account in &accounts {
                    let entry = directory_key(&mandator, account);
                    if let Some(holder) = directory.get(entry.as_str()).or_unavailable(WHAT)? {
                        let holder = holder.value();
                        if holder != user.as_str() {
                            let holder = UserId::parse(holder).map_err(|e| corrupt("account directory", &entry, e))?;
                            // Dropping the transaction unwritten leaves everything as it was.
                            return Ok(Err(UserWriteError::AccountHeld { account: account.clone(), holder }));
                        }
                    }
                    directory.insert(entry.as_str(), user.as_str()).or_unavailable(WHAT)?;
                }
                let dropped = previous
                    .iter()
                    .flat_map(|p| p.data.accounts.iter().map(|a| &a.account.account_id))
                    .filter(|a| !accounts.contains(*a));
                for account in dropped {
                    directory.remove(directory_key(&mandator, account).as_str()).or_unavailable(WHAT)?;
                }
                let version = next_version(expected);
                users.insert(key.as_str(), stored_value(version, &record).as_slice()).or_unavailable(WHAT)?;
                version
            };
            write.commit().or_unavailable(WHAT)?;
            Ok(Ok(version))
        })
        .await?
    }

    async fn delete_user(
        &self,
        mandator: &MandatorId,
        shard_count: u32,
        user: &UserId,
        expected: u64,
    ) -> Result<(), UserWriteError> {
        let key = keys::user_key(mandator, shard_of(user, shard_count), user);
        let user = user.clone();
        let mandator = mandator.clone();
        self.blocking("erasing a user", move |db| {
            const WHAT: &str = "erasing a user";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut users = write.open_table(USERS).or_unavailable(WHAT)?;
                let previous = match users.get(key.as_str()).or_unavailable(WHAT)? {
                    Some(v) => decode_user(&key, &user, v.value())?,
                    None => return Ok(Err(UserWriteError::VersionChanged)),
                };
                if previous.version != expected {
                    return Ok(Err(UserWriteError::VersionChanged));
                }
                let mut directory = write.open_table(ACCOUNT_USERS).or_unavailable(WHAT)?;
                for account in previous.data.accounts.iter().map(|a| &a.account.account_id) {
                    directory.remove(directory_key(&mandator, account).as_str()).or_unavailable(WHAT)?;
                }
                users.remove(key.as_str()).or_unavailable(WHAT)?;
            }
            write.commit().or_unavailable(WHAT)?;
            Ok(Ok(()))
        })
        .await?
    }

    fn user_ids<'a>(&'a self, mandator: &'a MandatorId, shard: u32) -> BoxStream<'a, Result<UserId, StoreError>> {
        let prefix = keys::shard_prefix(mandator, shard);
        let read = self.blocking("listing users", move |db| {
            const WHAT: &str = "listing users";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let table = read.open_table(USERS).or_unavailable(WHAT)?;
            let end = keys::prefix_end(&prefix);
            let mut ids = Vec::new();
            for entry in table.range(prefix.as_str()..end.as_str()).or_unavailable(WHAT)? {
                let (key, _) = entry.or_unavailable(WHAT)?;
                ids.push(user_of_key(key.value(), &prefix)?);
            }
            Ok(ids)
        });
        // Ids are a few dozen bytes each: a shard's list is held at once, its records are not.
        stream::once(read)
            .flat_map(|ids| match ids {
                Ok(ids) => stream::iter(ids.into_iter().map(Ok)).boxed(),
                Err(e) => stream::iter([Err(e)]).boxed(),
            })
            .boxed()
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
                    out.insert(
                        account,
                        UserId::parse(user.value()).map_err(|e| corrupt("account directory", &key, e))?,
                    );
                }
            }
            Ok(out)
        })
        .await
    }
}
