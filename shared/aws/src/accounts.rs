//! Account data in DynamoDB: one Query stream per shard for the workers, batch writes for the
//! importer, and the account directory.
//!
//! The directory holds one item per account, `pk = M#{mandatorId}#ACCOUNT#{accountId}`,
//! `sk = USER`, `userId` (S): the user holding the account. The account data itself is keyed by
//! user, so without it a bare accountId could only be found by reading every shard. Each account
//! has its own partition, so reads spread over the table (no hot partition) and a lookup is one
//! BatchGetItem per 100 accounts.
//!
//! `put_items` writes each account's directory item in the same batches as the account item
//! (upserts; the last write of an accountId names its user). AccountIds are unique per mandator:
//! the importer, the writer of account data, refuses a file that gives an accountId to a second
//! user — within the file or against this directory — before writing anything.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, PutRequest, WriteRequest};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use tracing::{Instrument, instrument};

use super::items::{
    Item, PARTITION_KEY, SORT_KEY, account_data_item, decode_account_data, decode_shard_count, meta_key, s,
    shard_count_item, shard_pk,
};
use super::retry::{MAX_BATCH_ATTEMPTS, backoff, batch_write};
use segments_core::domain::assembly::{AssemblyError, UserAssembler};
use segments_core::domain::records::AccountItem;
use segments_core::domain::{AccountId, MandatorId, UserData, UserId};
use segments_core::ports::{AccountDirectory, AccountSink, AccountSource, StoreError};

/// DynamoDB refuses a BatchWriteItem of more than 25 requests.
const BATCH_WRITE_LIMIT: usize = 25;
/// Batches written at the same time by one `put_items` call.
const WRITE_CONCURRENCY: usize = 4;
/// DynamoDB reads at most 100 keys per BatchGetItem.
const BATCH_GET_LIMIT: usize = 100;
/// BatchGetItem calls of one directory lookup in flight at the same time.
const READ_CONCURRENCY: usize = 4;
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
        // One Query over the shard's partition, read page by page (1 MB each): no request per user.
        let paginator = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":pk", s(shard_pk(mandator, shard)))
            .into_paginator()
            .send();
        let pages = stream::unfold(paginator, move |mut paginator| async move {
            let page = paginator.next().await?;
            let page = page.map(|p| p.items.unwrap_or_default()).map_err(|e| {
                StoreError::unavailable(format!("reading shard {shard} of mandator {mandator}"), e.into_service_error())
            });
            Some((page, paginator))
        })
        .boxed();
        let reader = ShardReader {
            pages,
            items: Vec::new().into_iter(),
            assembler: UserAssembler::new(),
            exhausted: false,
            mandator,
            shard,
        };
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

/// The item pages of a shard's Query.
type Pages<'a> = BoxStream<'a, Result<Vec<Item>, StoreError>>;

/// Reads a shard's Query page by page and hands its items to the [`UserAssembler`], so one user
/// is held at a time.
struct ShardReader<'a> {
    pages: Pages<'a>,
    items: std::vec::IntoIter<Item>,
    assembler: UserAssembler,
    exhausted: bool,
    mandator: &'a MandatorId,
    shard: u32,
}

impl ShardReader<'_> {
    async fn next_user(&mut self) -> Result<Option<UserData>, StoreError> {
        while let Some(item) = self.next_item().await? {
            if let Some(done) = self.assembler.push(decode_account_data(item)?).map_err(|e| self.corrupt(e))? {
                return Ok(Some(done));
            }
        }
        self.assembler.finish().map_err(|e| self.corrupt(e))
    }

    async fn next_item(&mut self) -> Result<Option<Item>, StoreError> {
        loop {
            if let Some(item) = self.items.next() {
                return Ok(Some(item));
            }
            if self.exhausted {
                return Ok(None);
            }
            match self.pages.next().await {
                Some(page) => {
                    let items = page?;
                    tracing::trace!(items = items.len(), "account data page");
                    self.items = items.into_iter();
                }
                None => self.exhausted = true,
            }
        }
    }

    fn corrupt(&self, e: AssemblyError) -> StoreError {
        StoreError::Corrupt(format!("{e} on shard {} of mandator {}", self.shard, self.mandator))
    }
}

#[async_trait]
impl AccountSink for DynamoAccounts {
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

    #[instrument(skip_all, fields(mandator_id = %mandator, shard_count = shard_count, items = items.len()))]
    async fn put_items(
        &self,
        mandator: &MandatorId,
        shard_count: u32,
        items: &[AccountItem],
    ) -> Result<(), StoreError> {
        let batches = write_batches(mandator, shard_count, items)?;
        stream::iter(batches.into_iter().map(Ok))
            .try_for_each_concurrent(WRITE_CONCURRENCY, |batch| {
                batch_write(&self.client, &self.table, batch, "writing account data")
            })
            .await
    }
}

/// The items as BatchWriteItem batches of at most 25 requests, each key written once: a batch may
/// not name one key twice, and the last write of a key wins, as with single puts.
fn write_batches(
    mandator: &MandatorId,
    shard_count: u32,
    items: &[AccountItem],
) -> Result<Vec<Vec<WriteRequest>>, StoreError> {
    let mut seen = HashSet::with_capacity(items.len());
    let mut writes = Vec::with_capacity(items.len());
    for data in items.iter().rev() {
        let directory = match data {
            AccountItem::Account(a) => Some(directory_item(mandator, &a.account_id, &a.user_id)),
            AccountItem::Transaction { .. } => None,
        };
        for item in [Some(account_data_item(mandator, shard_count, data)), directory].into_iter().flatten() {
            if !seen.insert((key_text(&item, PARTITION_KEY), key_text(&item, SORT_KEY))) {
                continue;
            }
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|e| StoreError::unavailable("building an account data write", e))?;
            writes.push(WriteRequest::builder().put_request(put).build());
        }
    }
    writes.reverse();

    let mut batches = Vec::with_capacity(writes.len().div_ceil(BATCH_WRITE_LIMIT));
    let mut writes = writes.into_iter();
    loop {
        let batch: Vec<WriteRequest> = writes.by_ref().take(BATCH_WRITE_LIMIT).collect();
        if batch.is_empty() {
            return Ok(batches);
        }
        batches.push(batch);
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
        let unique: std::collections::BTreeSet<&AccountId> = accounts.iter().collect();
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
                let user = match item.get(DIRECTORY_USER) {
                    Some(AttributeValue::S(u)) => UserId::parse(u.as_str()).ok(),
                    _ => None,
                };
                match (directory_account(&item), user) {
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

fn key_text(item: &Item, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(v)) => v.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::{AMOUNT, USER_ID};
    use segments_core::domain::{Account, AccountId, AccountType, Currency, Money, Transaction, TransactionId, UserId};

    fn transaction(user: &str, id: &str, amount: i64) -> AccountItem {
        AccountItem::Transaction {
            user_id: UserId::parse(user).unwrap(),
            account_id: AccountId::parse("a1").unwrap(),
            transaction: Transaction {
                transaction_id: TransactionId::parse(id).unwrap(),
                booking_date: "2024-05-01".parse().unwrap(),
                amount: Money::from_cents(amount),
                currency: Currency::parse("EUR").unwrap(),
                counterpart_name: String::new(),
                labels: Vec::new(),
            },
        }
    }

    fn amount_of(write: &WriteRequest) -> &AttributeValue {
        &write.put_request().unwrap().item()[AMOUNT]
    }

    #[test]
    fn batches_hold_at_most_25_writes_with_distinct_keys_and_the_last_write_wins() {
        let mandator = MandatorId::parse("bank-1").unwrap();
        let mut items: Vec<AccountItem> = (0..60).map(|i| transaction(&format!("u{i}"), "t1", 100)).collect();
        items.push(AccountItem::Account(Account {
            user_id: UserId::parse("u0").unwrap(),
            account_id: AccountId::parse("a1").unwrap(),
            account_type: AccountType::Checking,
            currency: Currency::parse("EUR").unwrap(),
            balance: Money::ZERO,
            balance_date: "2024-05-31".parse().unwrap(),
        }));
        items.push(transaction("u7", "t1", -250));

        let batches = write_batches(&mandator, 4, &items).unwrap();
        // 60 distinct transactions, the account and its directory item.
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [25, 25, 12]);
        let directory = batches
            .iter()
            .flatten()
            .map(|w| w.put_request().unwrap().item())
            .filter(|item| key_text(item, PARTITION_KEY) == "M#bank-1#ACCOUNT#a1")
            .collect::<Vec<_>>();
        assert_eq!(directory.len(), 1);
        assert_eq!(directory[0][DIRECTORY_USER], AttributeValue::S("u0".into()));
        let mut keys = HashSet::new();
        for write in batches.iter().flatten() {
            let item = write.put_request().unwrap().item();
            assert!(keys.insert((key_text(item, PARTITION_KEY), key_text(item, SORT_KEY))));
        }
        let u7 = batches
            .iter()
            .flatten()
            .filter(|w| w.put_request().unwrap().item()[USER_ID] == AttributeValue::S("u7".into()))
            .collect::<Vec<_>>();
        assert_eq!(u7.len(), 1);
        assert_eq!(amount_of(u7[0]), &AttributeValue::N("-2.50".into()));
    }
}
