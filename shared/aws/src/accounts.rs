//! Account data in DynamoDB: each user's data is one compressed record (`segments_core::snapshot`)
//! kept as a few block items on the user's shard (layout in the `items` module, docs/storage.md).
//! A worker reads its shard with one Query stream; a write replaces or erases one user in one
//! transaction, together with the user's account directory items.
//!
//! The directory holds one item per account, `pk = M#{mandatorId}#ACCOUNT#{accountId}`,
//! `sk = USER`, `userId` (S): the user holding the account. The account data itself is keyed by
//! user, so without it a bare accountId could only be found by reading every shard. Each account
//! has its own partition, so reads spread over the table (no hot partition) and a lookup is one
//! BatchGetItem per 100 accounts.
//!
//! A write first reads the user's record (strongly consistent) to learn its version, its blocks
//! and its accounts, then sends one TransactWriteItems: block 0 put on condition that the version
//! is still the one read (or that no block 0 exists), the other blocks put, the blocks the record
//! no longer fills deleted, a directory item put for each account on condition that no other user
//! holds it, and the directory items of the accounts the user no longer has deleted. Every write
//! of a user passes through block 0's condition, so writes to one user are ordered, and a reader
//! never takes a mix of two writes for a record: every block names its version and the count.
//! `snapshot::MAX_BLOCKS` and `MAX_ACCOUNTS` keep a transaction within DynamoDB's 100 items.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem,
};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use tracing::{Instrument, instrument};

use super::items::{
    BLOCK_VERSION, Block, BlockError, Item, PARTITION_KEY, Record, SORT_KEY, block_item, block_key, decode_block,
    decode_shard_count, meta_key, n, parse_block_sk, s, shard_count_item, shard_pk, stored_size, user_sk_prefix,
};
use super::retry::{MAX_BATCH_ATTEMPTS, backoff};
use segments_core::domain::records::shard_of;
use segments_core::domain::{AccountId, MandatorId, UserData, UserId};
use segments_core::ports::{
    AccountDirectory, AccountSource, StoreError, StoredUser, UserStore, UserWriteError, next_version,
};
use segments_core::snapshot;

/// DynamoDB reads at most 100 keys per BatchGetItem.
const BATCH_GET_LIMIT: usize = 100;
/// BatchGetItem calls of one directory lookup in flight at the same time.
const READ_CONCURRENCY: usize = 4;
/// Consistent reads of one user's record while every read meets a write (blocks of two versions).
const RECORD_READ_ATTEMPTS: u32 = 5;
/// Sort key of a directory item.
const DIRECTORY_SORT_KEY: &str = "USER";
/// The user attribute of a directory item.
const DIRECTORY_USER: &str = "userId";

fn directory_key(mandator: &MandatorId, account: &AccountId) -> Item {
    Item::from([
        (PARTITION_KEY.to_owned(), s(format!("M#{mandator}#ACCOUNT#{account}"))),
        (SORT_KEY.to_owned(), s(DIRECTORY_SORT_KEY)),
    ])
}

fn directory_item(mandator: &MandatorId, account: &AccountId, user: &UserId) -> Item {
    let mut item = directory_key(mandator, account);
    item.insert(DIRECTORY_USER.to_owned(), s(user.as_str()));
    item
}

/// The account of a directory item's partition key.
fn directory_account(item: &Item) -> Option<AccountId> {
    let pk = match item.get(PARTITION_KEY) {
        Some(AttributeValue::S(pk)) => pk,
        _ => return None,
    };
    let (_, account) = pk.rsplit_once("#ACCOUNT#")?;
    AccountId::parse(account).ok()
}

/// The user a directory item names.
fn directory_user(item: &Item) -> Option<UserId> {
    match item.get(DIRECTORY_USER) {
        Some(AttributeValue::S(u)) => UserId::parse(u.as_str()).ok(),
        _ => None,
    }
}

/// The error of a shard or record holding something other than blocks.
fn block_error(mandator: &MandatorId, shard: u32, e: BlockError) -> StoreError {
    match e {
        BlockError::EarlierLayout => StoreError::Corrupt(format!(
            "the account data of mandator {mandator} is stored in the earlier layout (one item per account and \
             per transaction) and must be imported again (`segments import`)"
        )),
        BlockError::Invalid(e) => StoreError::Corrupt(format!("shard {shard} of mandator {mandator}: {e}")),
    }
}

/// A user's record as a writer reads it: what the write replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredRecord {
    user: StoredUser,
    blocks: usize,
}

/// The AccountData table (layout in the `items` module, docs/storage.md) and the account directory
/// beside it.
#[derive(Debug, Clone)]
pub struct DynamoAccounts {
    client: Client,
    table: String,
}

impl DynamoAccounts {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoAccounts { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The items of a shard's partition in sort key order, read with one Query page by page
    /// (1 MB each): no request per user. Eventually consistent, like every read of a whole
    /// shard; `keys_only` reads the sort keys alone.
    fn shard_items<'a>(
        &'a self,
        mandator: &'a MandatorId,
        shard: u32,
        keys_only: bool,
    ) -> BoxStream<'a, Result<Item, StoreError>> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":pk", s(shard_pk(mandator, shard)));
        if keys_only {
            query = query.projection_expression("#sk").expression_attribute_names("#sk", SORT_KEY);
        }
        let paginator = query.into_paginator().send();
        stream::unfold(paginator, move |mut paginator| async move {
            let page = paginator.next().await?;
            let page = page.map(|p| p.items.unwrap_or_default()).map_err(|e| {
                StoreError::unavailable(format!("reading shard {shard} of mandator {mandator}"), e.into_service_error())
            });
            Some((page, paginator))
        })
        .map_ok(|items| stream::iter(items.into_iter().map(Ok)))
        .try_flatten()
        // The shard reader asks once more after the last item; the pages must not be polled again.
        .fuse()
        .boxed()
    }

    /// Every block of the user, strongly consistent, in index order.
    async fn read_blocks(&self, mandator: &MandatorId, shard: u32, user: &UserId) -> Result<Vec<Block>, StoreError> {
        // The record may be larger than a page.
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :user)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":pk", s(shard_pk(mandator, shard)))
            .expression_attribute_values(":user", s(user_sk_prefix(user)))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut blocks = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                StoreError::unavailable(format!("reading a user of mandator {mandator}"), e.into_service_error())
            })?;
            for item in page.items.unwrap_or_default() {
                blocks.push(decode_block(item).map_err(|e| block_error(mandator, shard, e))?);
            }
        }
        Ok(blocks)
    }

    /// The user's record, strongly consistent. A Query is not a snapshot of a transaction: one
    /// that meets a write may see blocks of both versions, so it is read again after a short
    /// pause until it comes whole.
    async fn read_record(
        &self,
        mandator: &MandatorId,
        shard: u32,
        user: &UserId,
    ) -> Result<Option<StoredRecord>, StoreError> {
        for attempt in 0..RECORD_READ_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            match Record::of(self.read_blocks(mandator, shard, user).await?) {
                Record::Absent => return Ok(None),
                Record::Whole { version, blocks, bytes } => {
                    let data = decode_record(mandator, shard, user, &bytes)?;
                    return Ok(Some(StoredRecord { user: StoredUser { data, version }, blocks }));
                }
                Record::Torn => tracing::debug!(attempt, "a user's record read during a write"),
            }
        }
        Err(StoreError::unavailable(
            format!("reading a user of mandator {mandator}"),
            format!("its blocks changed during each of {RECORD_READ_ATTEMPTS} reads"),
        ))
    }

    /// Sends a user's transaction and reads a cancellation back in the port's terms.
    async fn write_user(
        &self,
        mandator: &MandatorId,
        user: &UserId,
        write: UserTransaction,
    ) -> Result<(), UserWriteError> {
        const WHAT: &str = "writing a user's account data";
        // The SDK gives the call an idempotency token and keeps it on its retries, so a retry
        // after a lost answer does not fail on the condition its own first attempt made false.
        let sent = self.client.transact_write_items().set_transact_items(Some(write.items)).send().await;
        let cancelled = match sent {
            Ok(_) => return Ok(()),
            Err(e) => match e.into_service_error() {
                TransactWriteItemsError::TransactionCanceledException(c) => c,
                other => return Err(StoreError::unavailable(WHAT, other).into()),
            },
        };
        match Cancellation::read(&write.parts, cancelled.cancellation_reasons()) {
            Cancellation::VersionChanged => Err(UserWriteError::VersionChanged),
            Cancellation::AccountHeld { account, holder: Some(holder) } => {
                Err(UserWriteError::AccountHeld { account, holder })
            }
            Cancellation::AccountHeld { account, holder: None } => {
                match self.holder(mandator, &account).await? {
                    Some(holder) if &holder != user => Err(UserWriteError::AccountHeld { account, holder }),
                    // Released meanwhile (or the item came back without its user): try again.
                    _ => Err(UserWriteError::VersionChanged),
                }
            }
            Cancellation::ReleaseRefused(account) => Err(StoreError::Conflict(format!(
                "the account directory names another user for account {account} of user {user} of mandator \
                 {mandator}"
            ))
            .into()),
            Cancellation::Failed => Err(StoreError::unavailable(WHAT, cancelled).into()),
        }
    }

    /// The user holding the account in the directory, strongly consistent.
    async fn holder(&self, mandator: &MandatorId, account: &AccountId) -> Result<Option<UserId>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(directory_key(mandator, account)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::unavailable("reading the account directory", e.into_service_error()))?;
        Ok(out.item.as_ref().and_then(directory_user))
    }
}

/// The user's data from its joined blocks.
fn decode_record(mandator: &MandatorId, shard: u32, user: &UserId, bytes: &[u8]) -> Result<UserData, StoreError> {
    snapshot::decode(user.clone(), bytes).map_err(|e| {
        StoreError::Corrupt(format!("the record of user {user} on shard {shard} of mandator {mandator}: {e}"))
    })
}

#[async_trait]
impl AccountSource for DynamoAccounts {
    #[instrument(skip_all, fields(mandator_id = %mandator))]
    async fn shard_count(&self, mandator: &MandatorId) -> Result<Option<u32>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(meta_key(mandator)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                StoreError::unavailable(
                    format!("reading the shard count of mandator {mandator}"),
                    e.into_service_error(),
                )
            })?;
        out.item.map(decode_shard_count).transpose()
    }

    fn users<'a>(&'a self, mandator: &'a MandatorId, shard: u32) -> BoxStream<'a, Result<UserData, StoreError>> {
        let reader =
            ShardReader { store: self, items: self.shard_items(mandator, shard, false), ahead: None, mandator, shard };
        let span = tracing::info_span!("shard_users", mandator_id = %mandator, shard);
        stream::try_unfold(reader, move |mut reader| {
            async move {
                let user = reader.next_user().await?;
                Ok(user.map(|u| (u, reader)))
            }
            .instrument(span.clone())
        })
        .boxed()
    }
}

/// Reads a shard's Query item by item and joins each user's blocks, so one user is held at a time
/// (and the page being read).
struct ShardReader<'a> {
    store: &'a DynamoAccounts,
    items: BoxStream<'a, Result<Item, StoreError>>,
    /// The first block of the next user, read while looking for the end of the previous one.
    ahead: Option<Block>,
    mandator: &'a MandatorId,
    shard: u32,
}

impl ShardReader<'_> {
    async fn next_user(&mut self) -> Result<Option<UserData>, StoreError> {
        loop {
            let first = match self.ahead.take() {
                Some(block) => block,
                None => match self.next_block().await? {
                    Some(block) => block,
                    None => return Ok(None),
                },
            };
            let mut blocks = vec![first];
            while let Some(block) = self.next_block().await? {
                if block.user != blocks[0].user {
                    self.ahead = Some(block);
                    break;
                }
                blocks.push(block);
            }
            let user = UserId::parse(&blocks[0].user).map_err(|e| {
                block_error(self.mandator, self.shard, BlockError::Invalid(format!("a block's userId {e}")))
            })?;
            match Record::of(blocks) {
                Record::Whole { bytes, .. } => {
                    return decode_record(self.mandator, self.shard, &user, &bytes).map(Some);
                }
                // The Query met a write of this user: read the user alone, consistently.
                Record::Torn | Record::Absent => {
                    tracing::debug!("a user written during the shard's read");
                    if let Some(record) = self.store.read_record(self.mandator, self.shard, &user).await? {
                        return Ok(Some(record.user.data));
                    }
                    // Erased meanwhile.
                }
            }
        }
    }

    async fn next_block(&mut self) -> Result<Option<Block>, StoreError> {
        match self.items.next().await {
            None => Ok(None),
            Some(item) => {
                let item = item?;
                segments_core::telemetry::item_read(stored_size(&item));
                decode_block(item).map(Some).map_err(|e| block_error(self.mandator, self.shard, e))
            }
        }
    }
}

#[async_trait]
impl UserStore for DynamoAccounts {
    #[instrument(skip_all, fields(mandator_id = %mandator, shard_count = shard_count))]
    async fn ensure_shard_count(&self, mandator: &MandatorId, shard_count: u32) -> Result<(), StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(shard_count_item(mandator, shard_count)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .send()
            .await;
        let err = match put {
            Ok(_) => return Ok(()),
            Err(e) => e.into_service_error(),
        };
        if !matches!(err, PutItemError::ConditionalCheckFailedException(_)) {
            return Err(StoreError::unavailable(format!("recording the shard count of mandator {mandator}"), err));
        }
        match self.shard_count(mandator).await? {
            Some(stored) if stored == shard_count => Ok(()),
            Some(stored) => Err(StoreError::Conflict(format!(
                "the account data of mandator {mandator} is placed on {stored} shards, not {shard_count}"
            ))),
            None => Err(StoreError::Conflict(format!("the shard count of mandator {mandator} changed concurrently"))),
        }
    }

    #[instrument(skip_all, fields(mandator_id = %mandator))]
    async fn get_user(
        &self,
        mandator: &MandatorId,
        shard_count: u32,
        user: &UserId,
    ) -> Result<Option<StoredUser>, StoreError> {
        let record = self.read_record(mandator, shard_of(user, shard_count), user).await?;
        Ok(record.map(|r| r.user))
    }

    #[instrument(skip_all, fields(mandator_id = %mandator))]
    async fn put_user(
        &self,
        mandator: &MandatorId,
        shard_count: u32,
        data: &UserData,
        expected: Option<u64>,
    ) -> Result<u64, UserWriteError> {
        let record = snapshot::encode(data)?;
        let shard = shard_of(&data.user_id, shard_count);
        // The blocks and accounts the write replaces; and a stale writer stops here, cheaply.
        let stored = self.read_record(mandator, shard, &data.user_id).await?;
        if stored.as_ref().map(|r| r.user.version) != expected {
            return Err(UserWriteError::VersionChanged);
        }
        let version = next_version(expected);
        let write = UserTransaction::replace(
            &self.table,
            mandator,
            shard,
            data,
            &record,
            version,
            stored.as_ref().map(Previous::of).as_ref(),
        )?;
        self.write_user(mandator, &data.user_id, write).await?;
        Ok(version)
    }

    #[instrument(skip_all, fields(mandator_id = %mandator))]
    async fn delete_user(
        &self,
        mandator: &MandatorId,
        shard_count: u32,
        user: &UserId,
        expected: u64,
    ) -> Result<(), UserWriteError> {
        let shard = shard_of(user, shard_count);
        let stored = self.read_record(mandator, shard, user).await?;
        let Some(stored) = stored.filter(|r| r.user.version == expected) else {
            return Err(UserWriteError::VersionChanged);
        };
        let write = UserTransaction::erase(&self.table, mandator, shard, user, &Previous::of(&stored))?;
        self.write_user(mandator, user, write).await
    }

    fn user_ids<'a>(&'a self, mandator: &'a MandatorId, shard: u32) -> BoxStream<'a, Result<UserId, StoreError>> {
        let items = self.shard_items(mandator, shard, true);
        stream::try_unfold(items, move |mut items| async move {
            while let Some(item) = items.next().await {
                let item = item?;
                let sk = match item.get(SORT_KEY) {
                    Some(AttributeValue::S(sk)) => sk.as_str(),
                    _ => return Err(block_error(mandator, shard, BlockError::Invalid("an item without sk".into()))),
                };
                // Every record has a block 0; the other blocks name the same user again.
                if let (user, 0) = parse_block_sk(sk).map_err(|e| block_error(mandator, shard, e))? {
                    let user = UserId::parse(user).map_err(|e| {
                        block_error(mandator, shard, BlockError::Invalid(format!("a block's userId {e}")))
                    })?;
                    return Ok(Some((user, items)));
                }
            }
            Ok(None)
        })
        .boxed()
    }
}

/// What a write replaces: the stored version, how many blocks it fills, its accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Previous {
    version: u64,
    blocks: usize,
    accounts: BTreeSet<AccountId>,
}

impl Previous {
    fn of(stored: &StoredRecord) -> Self {
        Previous {
            version: stored.user.version,
            blocks: stored.blocks,
            accounts: stored.user.data.accounts.iter().map(|h| h.account.account_id.clone()).collect(),
        }
    }
}

/// The part an item of a user's transaction plays, to read its cancellation reason back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Block 0, which carries the condition on the user's version.
    FirstBlock,
    Block,
    /// A block the new record no longer fills.
    StaleBlock,
    /// The directory item of an account the user has, claimed for the user.
    Claim(AccountId),
    /// The directory item of an account the user no longer has.
    Release(AccountId),
}

/// One user's write as a TransactWriteItems, each item with its part.
struct UserTransaction {
    items: Vec<TransactWriteItem>,
    parts: Vec<Part>,
}

impl UserTransaction {
    /// Replaces `previous` (`None`: nothing is stored) by `data`, whose encoded record is `record`,
    /// at `version`.
    fn replace(
        table: &str,
        mandator: &MandatorId,
        shard: u32,
        data: &UserData,
        record: &[u8],
        version: u64,
        previous: Option<&Previous>,
    ) -> Result<Self, StoreError> {
        let user = &data.user_id;
        let pk = shard_pk(mandator, shard);
        let blocks = snapshot::blocks(record);
        let mut write = UserTransaction { items: Vec::new(), parts: Vec::new() };
        let count = blocks.len();
        for (index, bytes) in blocks.into_iter().enumerate() {
            let item = block_item(&pk, user, index, count, version, bytes);
            let put = Put::builder().table_name(table).set_item(Some(item));
            // Block 0 carries the condition of the whole write.
            let (put, part) = match (index, previous) {
                (0, None) => (
                    put.condition_expression("attribute_not_exists(#pk)")
                        .expression_attribute_names("#pk", PARTITION_KEY),
                    Part::FirstBlock,
                ),
                (0, Some(p)) => (
                    put.condition_expression("#v = :expected")
                        .expression_attribute_names("#v", BLOCK_VERSION)
                        .expression_attribute_values(":expected", n(p.version)),
                    Part::FirstBlock,
                ),
                _ => (put, Part::Block),
            };
            write.push(TransactWriteItem::builder().put(build(put.build())?).build(), part);
        }
        for index in count..previous.map_or(0, |p| p.blocks) {
            let delete = Delete::builder().table_name(table).set_key(Some(block_key(&pk, user, index)));
            write.push(TransactWriteItem::builder().delete(build(delete.build())?).build(), Part::StaleBlock);
        }
        let accounts: BTreeSet<&AccountId> = data.accounts.iter().map(|h| &h.account.account_id).collect();
        for account in &accounts {
            let put = Put::builder()
                .table_name(table)
                .set_item(Some(directory_item(mandator, account, user)))
                .condition_expression("attribute_not_exists(#pk) OR #user = :user")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#user", DIRECTORY_USER)
                .expression_attribute_values(":user", s(user.as_str()))
                // The holder comes back with a refusal: no read to name it.
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
            write.push(TransactWriteItem::builder().put(build(put.build())?).build(), Part::Claim((*account).clone()));
        }
        for account in previous.iter().flat_map(|p| &p.accounts).filter(|a| !accounts.contains(a)) {
            write.release(table, mandator, user, account)?;
        }
        Ok(write)
    }

    /// Erases `previous`, the user's stored record, and its directory items.
    fn erase(
        table: &str,
        mandator: &MandatorId,
        shard: u32,
        user: &UserId,
        previous: &Previous,
    ) -> Result<Self, StoreError> {
        let pk = shard_pk(mandator, shard);
        let mut write = UserTransaction { items: Vec::new(), parts: Vec::new() };
        for index in 0..previous.blocks {
            let delete = Delete::builder().table_name(table).set_key(Some(block_key(&pk, user, index)));
            let (delete, part) = if index == 0 {
                let delete = delete
                    .condition_expression("#v = :expected")
                    .expression_attribute_names("#v", BLOCK_VERSION)
                    .expression_attribute_values(":expected", n(previous.version));
                (delete, Part::FirstBlock)
            } else {
                (delete, Part::StaleBlock)
            };
            write.push(TransactWriteItem::builder().delete(build(delete.build())?).build(), part);
        }
        for account in &previous.accounts {
            write.release(table, mandator, user, account)?;
        }
        Ok(write)
    }

    /// Deletes the account's directory item, unless another user holds it.
    fn release(
        &mut self,
        table: &str,
        mandator: &MandatorId,
        user: &UserId,
        account: &AccountId,
    ) -> Result<(), StoreError> {
        let delete = Delete::builder()
            .table_name(table)
            .set_key(Some(directory_key(mandator, account)))
            .condition_expression("attribute_not_exists(#pk) OR #user = :user")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#user", DIRECTORY_USER)
            .expression_attribute_values(":user", s(user.as_str()));
        self.push(TransactWriteItem::builder().delete(build(delete.build())?).build(), Part::Release(account.clone()));
        Ok(())
    }

    fn push(&mut self, item: TransactWriteItem, part: Part) {
        self.items.push(item);
        self.parts.push(part);
    }
}

fn build<T, E: std::error::Error + Send + Sync + 'static>(r: Result<T, E>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::unavailable("building a write of account data", e))
}

/// Why DynamoDB cancelled a user's transaction, from the reasons it gives per item (in the
/// order of the items).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cancellation {
    /// Block 0's condition failed, or a concurrent transaction on the same items won: read again.
    VersionChanged,
    /// Another user holds the account; `holder` when the refusal returned the directory item.
    AccountHeld { account: AccountId, holder: Option<UserId> },
    /// The directory names another user for an account the user had.
    ReleaseRefused(AccountId),
    /// Anything else (throttling, validation): not the caller's doing.
    Failed,
}

impl Cancellation {
    fn read(parts: &[Part], reasons: &[CancellationReason]) -> Self {
        let mut conflict = false;
        let mut held = None;
        let mut refused = None;
        for (part, reason) in parts.iter().zip(reasons) {
            match reason.code().unwrap_or("None") {
                "None" => {}
                "ConditionalCheckFailed" => match part {
                    Part::FirstBlock | Part::Block | Part::StaleBlock => return Cancellation::VersionChanged,
                    Part::Claim(account) => {
                        let holder = reason.item().and_then(directory_user);
                        held.get_or_insert(Cancellation::AccountHeld { account: account.clone(), holder });
                    }
                    Part::Release(account) => {
                        refused.get_or_insert(Cancellation::ReleaseRefused(account.clone()));
                    }
                },
                "TransactionConflict" => conflict = true,
                _ => return Cancellation::Failed,
            }
        }
        if conflict {
            return Cancellation::VersionChanged;
        }
        held.or(refused).unwrap_or(Cancellation::Failed)
    }
}

#[async_trait]
impl AccountDirectory for DynamoAccounts {
    #[instrument(skip_all, fields(mandator_id = %mandator, accounts = accounts.len()))]
    async fn account_users(
        &self,
        mandator: &MandatorId,
        accounts: &[AccountId],
    ) -> Result<BTreeMap<AccountId, UserId>, StoreError> {
        let unique: BTreeSet<&AccountId> = accounts.iter().collect();
        let chunks: Vec<Vec<AccountId>> =
            unique.into_iter().cloned().collect::<Vec<_>>().chunks(BATCH_GET_LIMIT).map(<[_]>::to_vec).collect();
        let found: Vec<Vec<(AccountId, UserId)>> = stream::iter(chunks)
            .map(|chunk| async move { self.read_directory(mandator, &chunk).await })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }
}

impl DynamoAccounts {
    /// The directory entries of at most 100 accounts, retrying unprocessed keys with backoff.
    async fn read_directory(
        &self,
        mandator: &MandatorId,
        accounts: &[AccountId],
    ) -> Result<Vec<(AccountId, UserId)>, StoreError> {
        const WHAT: &str = "reading the account directory";
        let mut keys: Vec<Item> = accounts.iter().map(|a| directory_key(mandator, a)).collect();
        let mut out = Vec::with_capacity(keys.len());
        for attempt in 0..MAX_BATCH_ATTEMPTS {
            if keys.is_empty() {
                return Ok(out);
            }
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut keys)))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::unavailable(WHAT, e))?;
            let reply = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| StoreError::unavailable(WHAT, e.into_service_error()))?;
            for item in reply.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default() {
                match (directory_account(&item), directory_user(&item)) {
                    (Some(account), Some(user)) => out.push((account, user)),
                    _ => return Err(StoreError::Corrupt(format!("{WHAT}: an unexpected directory item"))),
                }
            }
            keys = reply.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).map(|k| k.keys).unwrap_or_default();
        }
        if keys.is_empty() {
            Ok(out)
        } else {
            Err(StoreError::unavailable(WHAT, "keys still unprocessed after retries"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segments_core::domain::{Account, AccountHistory, AccountType, Currency, Money};
    use segments_core::snapshot::{BLOCK_BYTES, MAX_ACCOUNTS, MAX_BLOCKS};

    const TABLE: &str = "account-data";

    fn mandator() -> MandatorId {
        MandatorId::parse("bank-1").unwrap()
    }

    fn user() -> UserId {
        UserId::parse("u1").unwrap()
    }

    fn account_id(id: &str) -> AccountId {
        AccountId::parse(id).unwrap()
    }

    fn data(accounts: &[&str]) -> UserData {
        let history = |id: &str| AccountHistory {
            account: Account {
                user_id: user(),
                account_id: account_id(id),
                account_type: AccountType::Checking,
                currency: Currency::parse("EUR").unwrap(),
                balance: Money::from_cents(1),
                balance_date: "2024-05-31".parse().unwrap(),
            },
            transactions: Vec::new(),
        };
        UserData { user_id: user(), accounts: accounts.iter().map(|a| history(a)).collect() }
    }

    fn previous(version: u64, blocks: usize, accounts: &[&str]) -> Previous {
        Previous { version, blocks, accounts: accounts.iter().map(|a| account_id(a)).collect() }
    }

    fn text<'a>(item: &'a Item, name: &str) -> &'a str {
        match item.get(name) {
            Some(AttributeValue::S(v) | AttributeValue::N(v)) => v,
            other => panic!("{name} is {other:?}"),
        }
    }

    /// Each item as (operation, sort key or directory account, condition).
    fn summary(write: &UserTransaction) -> Vec<(&'static str, String, Option<String>)> {
        write
            .items
            .iter()
            .map(|item| {
                let (op, key, condition) = match (item.put(), item.delete()) {
                    (Some(put), None) => ("put", put.item(), put.condition_expression()),
                    (None, Some(delete)) => ("delete", delete.key(), delete.condition_expression()),
                    _ => panic!("one operation per item"),
                };
                let key = match directory_account(key) {
                    Some(account) => format!("ACCOUNT {account}"),
                    None => text(key, SORT_KEY).to_owned(),
                };
                (op, key, condition.map(str::to_owned))
            })
            .collect()
    }

    const CLAIM: &str = "attribute_not_exists(#pk) OR #user = :user";

    #[test]
    fn a_new_user_is_written_on_condition_that_none_is_stored_and_claims_its_accounts() {
        let record: Vec<u8> = (0..BLOCK_BYTES + 10).map(|i| i as u8).collect();
        let write = UserTransaction::replace(TABLE, &mandator(), 3, &data(&["a2", "a1"]), &record, 77, None).unwrap();
        assert_eq!(
            summary(&write),
            [
                ("put", "U#u1#B00".to_owned(), Some("attribute_not_exists(#pk)".to_owned())),
                ("put", "U#u1#B01".to_owned(), None),
                ("put", "ACCOUNT a1".to_owned(), Some(CLAIM.to_owned())),
                ("put", "ACCOUNT a2".to_owned(), Some(CLAIM.to_owned())),
            ]
        );
        assert_eq!(write.parts[..2], [Part::FirstBlock, Part::Block]);
        let blocks: Vec<&Item> = write.items[..2].iter().map(|i| i.put().unwrap().item()).collect();
        for (index, block) in blocks.iter().enumerate() {
            assert_eq!(text(block, PARTITION_KEY), "M#bank-1#S#0003");
            assert_eq!((text(block, "v"), text(block, "n")), ("77", "2"), "block {index}");
        }
        let joined: Vec<u8> = blocks
            .iter()
            .flat_map(|b| match &b["b"] {
                AttributeValue::B(bytes) => bytes.as_ref().to_vec(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(joined, record);
        let claim = write.items[2].put().unwrap();
        assert_eq!(text(claim.item(), DIRECTORY_USER), "u1");
        assert_eq!(
            claim.return_values_on_condition_check_failure(),
            Some(&ReturnValuesOnConditionCheckFailure::AllOld)
        );
    }

    #[test]
    fn a_replacement_is_conditional_on_the_version_and_removes_stale_blocks_and_dropped_accounts() {
        let write = UserTransaction::replace(
            TABLE,
            &mandator(),
            0,
            &data(&["a2", "a3"]),
            b"small",
            1_000_001,
            Some(&previous(1_000_000, 3, &["a1", "a2"])),
        )
        .unwrap();
        assert_eq!(
            summary(&write),
            [
                ("put", "U#u1#B00".to_owned(), Some("#v = :expected".to_owned())),
                ("delete", "U#u1#B01".to_owned(), None),
                ("delete", "U#u1#B02".to_owned(), None),
                ("put", "ACCOUNT a2".to_owned(), Some(CLAIM.to_owned())),
                ("put", "ACCOUNT a3".to_owned(), Some(CLAIM.to_owned())),
                ("delete", "ACCOUNT a1".to_owned(), Some(CLAIM.to_owned())),
            ]
        );
        let first = write.items[0].put().unwrap();
        assert_eq!(first.expression_attribute_values().unwrap()[":expected"], AttributeValue::N("1000000".into()));
        assert_eq!(text(first.item(), "n"), "1");
        assert_eq!(write.parts.last(), Some(&Part::Release(account_id("a1"))));
    }

    #[test]
    fn the_largest_write_fits_one_transaction() {
        let new: Vec<String> = (0..MAX_ACCOUNTS).map(|i| format!("new-{i}")).collect();
        let old: Vec<String> = (0..MAX_ACCOUNTS).map(|i| format!("old-{i}")).collect();
        let new: Vec<&str> = new.iter().map(String::as_str).collect();
        let old: Vec<&str> = old.iter().map(String::as_str).collect();
        let record = vec![7u8; MAX_BLOCKS * BLOCK_BYTES];
        let grow =
            UserTransaction::replace(TABLE, &mandator(), 0, &data(&new), &record, 2, Some(&previous(1, 1, &old)))
                .unwrap();
        let shrink =
            UserTransaction::replace(TABLE, &mandator(), 0, &data(&new), b"x", 2, Some(&previous(1, MAX_BLOCKS, &old)))
                .unwrap();
        for write in [grow, shrink] {
            assert_eq!(write.items.len(), MAX_BLOCKS + 2 * MAX_ACCOUNTS);
            assert!(write.items.len() <= 100, "DynamoDB's limit");
        }
    }

    #[test]
    fn an_erase_deletes_every_block_on_condition_of_the_version_and_releases_every_account() {
        let write = UserTransaction::erase(TABLE, &mandator(), 1, &user(), &previous(5, 2, &["a1", "a2"])).unwrap();
        assert_eq!(
            summary(&write),
            [
                ("delete", "U#u1#B00".to_owned(), Some("#v = :expected".to_owned())),
                ("delete", "U#u1#B01".to_owned(), None),
                ("delete", "ACCOUNT a1".to_owned(), Some(CLAIM.to_owned())),
                ("delete", "ACCOUNT a2".to_owned(), Some(CLAIM.to_owned())),
            ]
        );
        assert_eq!(write.parts[0], Part::FirstBlock);
    }

    fn reason(code: &str) -> CancellationReason {
        CancellationReason::builder().code(code).build()
    }

    #[test]
    fn cancellation_reasons_are_read_in_the_port_s_terms() {
        let parts = [
            Part::FirstBlock,
            Part::Block,
            Part::Claim(account_id("a1")),
            Part::Claim(account_id("a2")),
            Part::Release(account_id("a0")),
        ];
        let none = || reason("None");
        let held_by = |u: &str| {
            CancellationReason::builder()
                .code("ConditionalCheckFailed")
                .item(DIRECTORY_USER, s(u))
                .item(PARTITION_KEY, s("M#bank-1#ACCOUNT#a2"))
                .build()
        };
        let read = |reasons: Vec<CancellationReason>| Cancellation::read(&parts, &reasons);

        assert_eq!(
            read(vec![reason("ConditionalCheckFailed"), none(), none(), held_by("u9"), none()]),
            Cancellation::VersionChanged,
            "a stale version comes first: the claim is tried again after a new read"
        );
        assert_eq!(
            read(vec![none(), none(), none(), held_by("u9"), none()]),
            Cancellation::AccountHeld { account: account_id("a2"), holder: Some(UserId::parse("u9").unwrap()) }
        );
        assert_eq!(
            read(vec![none(), none(), reason("ConditionalCheckFailed"), none(), none()]),
            Cancellation::AccountHeld { account: account_id("a1"), holder: None },
            "without the item, the holder is read"
        );
        assert_eq!(
            read(vec![none(), reason("TransactionConflict"), none(), held_by("u9"), none()]),
            Cancellation::VersionChanged,
            "a concurrent transaction: read again"
        );
        assert_eq!(
            read(vec![none(), none(), none(), none(), reason("ConditionalCheckFailed")]),
            Cancellation::ReleaseRefused(account_id("a0"))
        );
        assert_eq!(read(vec![none(), reason("ThrottlingError"), none(), none(), none()]), Cancellation::Failed);
        assert_eq!(read(Vec::new()), Cancellation::Failed, "no reason given");
    }
}
