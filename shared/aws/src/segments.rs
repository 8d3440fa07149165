//! Segments of the management API in the Segments table.
//!
//! Segments table (`pk`, `sk`, on-demand):
//! - segment: `pk = M#{mandatorId}#SEGMENTS`, `sk = SEG#{segmentId}`; `version` (N) and `doc`
//!   (S, the segment as JSON): read by id.
//! - its listing entry, for live segments only: `pk = M#{mandatorId}#SCOPE#{scope}`,
//!   `sk = {createdAt}#{segmentId}` (createdAt as fixed-width UTC text with milliseconds, so key
//!   order is creation order), `doc` (the same JSON). A list is one Query of its scope's
//!   partition, the creation period as a key condition and the sort order as the Query's
//!   direction: no other scope and no deleted segment is read.
//! - name claim: `pk = M#{mandatorId}#NAME#{scope}#{name}`, `sk = NAME`, `segmentId` (S); held by a
//!   live segment only. The name sits in the partition key (up to 2048 bytes) so a 256-character
//!   name always fits, and is compared exactly — no wildcard or case folding.
//! - member: `pk = M#{mandatorId}#SEG#{segmentId}`, `sk = A#{accountId}`, `userId` (S); accountIds
//!   are unique per mandator, so members sort by accountId;
//! - the reverse: `pk = M#{mandatorId}#ACC#{accountId}`, `sk = SEG#{segmentId}`, `userId` (S).
//!
//! - refresh: `pk = M#{mandatorId}#SEG#{segmentId}#REFRESHES`, `sk = R#{refreshId}`; `version` (N)
//!   and `doc` (S, the record as JSON). Refresh ids are UUIDv7, so key order is start order and
//!   a list newest first is one Query read backwards.
//! - change of a refresh: `pk = M#{mandatorId}#SEG#{segmentId}#R#{refreshId}#{entered|left}`,
//!   `sk = A#{accountId}`, `userId` (S): by accountId, as members are.
//!
//! The sparse index `DueIndex` (`duePartition` S, `dueAt` N epoch seconds, keys only) holds what
//! the scheduler looks for: a segment item carries `duePartition = SCHEDULE#{0-7}` and `dueAt =
//! nextRefreshAt` while it is live and scheduled, a refresh item `duePartition = REFRESH#{0-7}`
//! and `dueAt = checkAt` while it is unfinished. Every write puts the whole item, so an item that
//! stops being due loses the attributes, and its index entry, in the same write.
//!
//! Creating, changing and deleting a segment write the segment, its listing entry and its name
//! claims in one transaction with conditions (claim absent, version unchanged): two concurrent
//! creates of one name cannot both win, and the listing entry never differs from the segment.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, DeleteRequest, Put, PutRequest, Select, TransactWriteItem, WriteRequest};
use chrono::{DateTime, Utc};
use tracing::instrument;

use super::items::{DUE_AT, DUE_PARTITION, Item, PARTITION_KEY, SORT_KEY, n, partition_of, s};
use super::progress_index::{DUE, entries_up_to};
use super::retry::{batch_get, batch_write};
use segments_core::domain::date::timestamp;
use segments_core::domain::refresh::{ChangeKind, RefreshId, RefreshRecord};
use segments_core::domain::segment::{AccountRef, Scope, Segment, SegmentId, SegmentQuery};
use segments_core::domain::{AccountId, MandatorId, UserId};
use segments_core::ports::{RefreshStore, SegmentStore, StoreError};

const VERSION: &str = "version";
const DOC: &str = "doc";
const SEGMENT_ID: &str = "segmentId";
const USER_ID: &str = "userId";
const NAME_SORT_KEY: &str = "NAME";
const BATCH_WRITE_LIMIT: usize = 25;
/// Most keys of one BatchGetItem.
const BATCH_GET_LIMIT: usize = 100;

fn segments_pk(mandator: &MandatorId) -> String {
    format!("M#{mandator}#SEGMENTS")
}

fn segment_sk(id: SegmentId) -> String {
    format!("SEG#{id}")
}

fn name_pk(segment: &Segment) -> String {
    format!("M#{}#NAME#{}#{}", segment.mandator, segment.scope().key(), segment.name)
}

fn members_pk(mandator: &MandatorId, id: SegmentId) -> String {
    format!("M#{mandator}#SEG#{id}")
}

fn member_sk(account: &AccountId) -> String {
    format!("A#{account}")
}

fn account_pk(mandator: &MandatorId, account: &AccountId) -> String {
    format!("M#{mandator}#ACC#{account}")
}

/// The member of a member item: the account from the key, its user from the attribute.
fn decode_member(item: &Item) -> Option<AccountRef> {
    let account = text(item, SORT_KEY)?.strip_prefix("A#")?;
    Some(AccountRef { account_id: AccountId::parse(account).ok()?, user_id: UserId::parse(text(item, USER_ID)?).ok()? })
}

fn key(pk: String, sk: String) -> Item {
    HashMap::from([(PARTITION_KEY.to_owned(), s(pk)), (SORT_KEY.to_owned(), s(sk))])
}

fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn listing_pk(mandator: &MandatorId, scope: &Scope) -> String {
    format!("M#{mandator}#SCOPE#{}", scope.key())
}

/// Fixed-width UTC text (`2026-11-22T10:00:00.000Z`): byte order is time order.
fn listing_time(t: DateTime<Utc>) -> String {
    timestamp(t)
}

fn listing_key(segment: &Segment) -> Item {
    key(listing_pk(&segment.mandator, &segment.scope()), format!("{}#{}", listing_time(segment.created_at), segment.id))
}

fn listing_item(segment: &Segment) -> Result<Item, StoreError> {
    let doc = serde_json::to_string(segment).map_err(|e| StoreError::unavailable("encoding a segment", e))?;
    let mut item = listing_key(segment);
    item.insert(DOC.to_owned(), s(doc));
    Ok(item)
}

fn segment_item(segment: &Segment) -> Result<Item, StoreError> {
    let doc = serde_json::to_string(segment).map_err(|e| StoreError::unavailable("encoding a segment", e))?;
    let mut item = key(segments_pk(&segment.mandator), segment_sk(segment.id));
    item.insert(VERSION.to_owned(), n(segment.version));
    item.insert(DOC.to_owned(), s(doc));
    if let Some(at) = segment.next_refresh_at.filter(|_| !segment.is_deleted()) {
        item.insert(DUE_PARTITION.to_owned(), s(schedule_partition_name(partition_of(segment.id))));
        item.insert(DUE_AT.to_owned(), n(at.timestamp()));
    }
    Ok(item)
}

/// The `DueIndex` partition of scheduled segments.
fn schedule_partition_name(index: u32) -> String {
    format!("SCHEDULE#{index}")
}

/// The `DueIndex` partition of unfinished refreshes.
fn refresh_partition_name(index: u32) -> String {
    format!("REFRESH#{index}")
}

fn refreshes_pk(mandator: &MandatorId, segment: SegmentId) -> String {
    format!("M#{mandator}#SEG#{segment}#REFRESHES")
}

fn refresh_sk(id: RefreshId) -> String {
    format!("R#{id}")
}

fn changes_pk(mandator: &MandatorId, segment: SegmentId, refresh: RefreshId, kind: ChangeKind) -> String {
    format!("M#{mandator}#SEG#{segment}#R#{refresh}#{}", kind.as_str())
}

fn refresh_item(refresh: &RefreshRecord) -> Result<Item, StoreError> {
    let doc = serde_json::to_string(refresh).map_err(|e| StoreError::unavailable("encoding a refresh", e))?;
    let mut item = key(refreshes_pk(&refresh.mandator, refresh.segment_id), refresh_sk(refresh.id));
    item.insert(VERSION.to_owned(), n(refresh.version));
    item.insert(DOC.to_owned(), s(doc));
    if let Some(at) = refresh.check_at {
        item.insert(DUE_PARTITION.to_owned(), s(refresh_partition_name(partition_of(refresh.id))));
        item.insert(DUE_AT.to_owned(), n(at.timestamp()));
    }
    Ok(item)
}

fn decode_refresh(item: &Item) -> Result<RefreshRecord, StoreError> {
    let doc = text(item, DOC).ok_or_else(|| StoreError::Corrupt("a refresh item without doc".into()))?;
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("refresh item: {e}")))
}

fn decode(item: &Item) -> Result<Segment, StoreError> {
    let doc = text(item, DOC).ok_or_else(|| StoreError::Corrupt("a segment item without doc".into()))?;
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("segment item: {e}")))
}

fn build<T, E: std::error::Error + Send + Sync + 'static>(r: Result<T, E>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::unavailable("building a request", e))
}

/// The Segments table.
#[derive(Debug, Clone)]
pub struct DynamoSegments {
    client: Client,
    table: String,
}

impl DynamoSegments {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoSegments { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn transact(&self, items: Vec<TransactWriteItem>, what: &str) -> Result<(), StoreError> {
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.into_service_error() {
                // A condition was false, or a concurrent transaction on the same items won.
                TransactWriteItemsError::TransactionCanceledException(c) => {
                    Err(StoreError::Conflict(format!("{what}: {}", c.message().unwrap_or("cancelled"))))
                }
                other => Err(StoreError::unavailable(what.to_owned(), other)),
            },
        }
    }

    fn claim(&self, segment: &Segment) -> Result<TransactWriteItem, StoreError> {
        let mut item = key(name_pk(segment), NAME_SORT_KEY.to_owned());
        item.insert(SEGMENT_ID.to_owned(), s(segment.id.to_string()));
        let put = build(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .build(),
        )?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Writes the listing entry of a live segment (its scope and creation time never change).
    fn list(&self, segment: &Segment) -> Result<TransactWriteItem, StoreError> {
        let put = build(Put::builder().table_name(&self.table).set_item(Some(listing_item(segment)?)).build())?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn release(&self, segment: &Segment) -> Result<TransactWriteItem, StoreError> {
        let delete = build(
            Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(name_pk(segment), NAME_SORT_KEY.to_owned())))
                .condition_expression("attribute_not_exists(#pk) OR #id = :id")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#id", SEGMENT_ID)
                .expression_attribute_values(":id", s(segment.id.to_string()))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// Up to `limit` items of partition `pk` in key order (`forward`) or backwards, those whose
    /// sort key compares with `bound` as its operator says (`("<", key)`) when given, page by page
    /// until `limit` are read or the partition ends.
    async fn query_up_to(
        &self,
        pk: String,
        bound: Option<(&str, String)>,
        forward: bool,
        limit: u32,
        what: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut found: Vec<Item> = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let remaining = limit.saturating_sub(u32::try_from(found.len()).unwrap_or(u32::MAX));
            if remaining == 0 {
                return Ok(found);
            }
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_values(":pk", s(pk.clone()))
                .scan_index_forward(forward)
                .consistent_read(true)
                .limit(i32::try_from(remaining).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            request = match &bound {
                None => request.key_condition_expression("#pk = :pk"),
                Some((operator, value)) => request
                    .key_condition_expression(format!("#pk = :pk AND #sk {operator} :bound"))
                    .expression_attribute_names("#sk", SORT_KEY)
                    .expression_attribute_values(":bound", s(value.clone())),
            };
            let out =
                request.send().await.map_err(|e| StoreError::unavailable(what.to_owned(), e.into_service_error()))?;
            found.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(found),
            }
        }
    }

    /// The items whose `DueIndex` entries (partitions named by `partition_name`) are due at `now`,
    /// at most `limit`, each read again whole and consistently: the index projects only keys, and
    /// may still hold an entry its item has lost (an eventually consistent index).
    async fn due_items(
        &self,
        partition_name: fn(u32) -> String,
        now: DateTime<Utc>,
        limit: u32,
        what: &'static str,
    ) -> Result<Vec<Item>, StoreError> {
        let entries = entries_up_to(&self.client, &self.table, DUE, partition_name, now, limit, what).await?;
        let keys: Vec<Item> = entries
            .into_iter()
            .filter_map(|entry| {
                let (pk, sk) = (entry.get(PARTITION_KEY)?, entry.get(SORT_KEY)?);
                Some(HashMap::from([(PARTITION_KEY.to_owned(), pk.clone()), (SORT_KEY.to_owned(), sk.clone())]))
            })
            .collect();
        let mut items = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_GET_LIMIT) {
            items.extend(batch_get(&self.client, &self.table, chunk.to_vec(), what).await?);
        }
        Ok(items)
    }

    /// Every item of a partition, page by page.
    async fn query_all(&self, pk: String, what: &str) -> Result<Vec<Item>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut items = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| StoreError::unavailable(what.to_owned(), e.into_service_error()))?;
            items.extend(page.items.unwrap_or_default());
        }
        Ok(items)
    }
}

#[async_trait]
impl SegmentStore for DynamoSegments {
    #[instrument(skip_all, fields(mandator_id = %segment.mandator, segment_id = %segment.id))]
    async fn create_segment(&self, segment: &Segment) -> Result<(), StoreError> {
        let put = build(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(segment_item(segment)?))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .build(),
        )?;
        let items = vec![TransactWriteItem::builder().put(put).build(), self.claim(segment)?, self.list(segment)?];
        self.transact(items, "creating a segment").await
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, segment_id = %id))]
    async fn get_segment(&self, mandator: &MandatorId, id: SegmentId) -> Result<Option<Segment>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(segments_pk(mandator), segment_sk(id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::unavailable(format!("reading segment {id}"), e.into_service_error()))?;
        out.item.as_ref().map(decode).transpose()
    }

    #[instrument(skip_all, fields(mandator_id = %mandator))]
    async fn list_segments(&self, mandator: &MandatorId, query: &SegmentQuery) -> Result<Vec<Segment>, StoreError> {
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":pk", s(listing_pk(mandator, &query.scope)))
            .scan_index_forward(!query.newest_first)
            .consistent_read(true);
        request = match query.created {
            None => request.key_condition_expression("#pk = :pk"),
            // `[from, to)`: keys are `{createdAt}#{id}`, so the bare time `to` sorts before
            // every key created at `to` and `from` before every key created at `from`.
            Some((from, to)) => request
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
                .expression_attribute_names("#sk", SORT_KEY)
                .expression_attribute_values(":from", s(listing_time(from)))
                .expression_attribute_values(":to", s(listing_time(to))),
        };
        let mut pages = request.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| StoreError::unavailable("listing segments", e.into_service_error()))?;
            for item in page.items.unwrap_or_default() {
                out.push(decode(&item)?);
            }
        }
        Ok(out)
    }

    #[instrument(skip_all, fields(mandator_id = %previous.mandator, segment_id = %previous.id))]
    async fn replace_segment(&self, previous: &Segment, next: &Segment) -> Result<(), StoreError> {
        let put = build(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(segment_item(next)?))
                .condition_expression("#version = :version")
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_values(":version", n(previous.version))
                .build(),
        )?;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        if next.is_deleted() {
            let delete = build(Delete::builder().table_name(&self.table).set_key(Some(listing_key(previous))).build())?;
            items.push(TransactWriteItem::builder().delete(delete).build());
        } else {
            items.push(self.list(next)?);
        }
        let name_moves = next.is_deleted() || name_pk(next) != name_pk(previous);
        if name_moves {
            items.push(self.release(previous)?);
            if !next.is_deleted() {
                items.push(self.claim(next)?);
            }
        }
        self.transact(items, "replacing a segment").await
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, segment_id = %id))]
    async fn change_members(
        &self,
        mandator: &MandatorId,
        id: SegmentId,
        add: &[AccountRef],
        remove: &[AccountId],
    ) -> Result<(), StoreError> {
        let mut writes = Vec::with_capacity(2 * (add.len() + remove.len()));
        for a in add {
            for mut item in [
                key(members_pk(mandator, id), member_sk(&a.account_id)),
                key(account_pk(mandator, &a.account_id), segment_sk(id)),
            ] {
                item.insert(USER_ID.to_owned(), s(a.user_id.as_str()));
                writes.push(
                    WriteRequest::builder()
                        .put_request(build(PutRequest::builder().set_item(Some(item)).build())?)
                        .build(),
                );
            }
        }
        for a in remove {
            for k in [key(members_pk(mandator, id), member_sk(a)), key(account_pk(mandator, a), segment_sk(id))] {
                writes.push(
                    WriteRequest::builder()
                        .delete_request(build(DeleteRequest::builder().set_key(Some(k)).build())?)
                        .build(),
                );
            }
        }
        while !writes.is_empty() {
            let rest = writes.split_off(writes.len().min(BATCH_WRITE_LIMIT));
            batch_write(&self.client, &self.table, writes, "writing segment members").await?;
            writes = rest;
        }
        Ok(())
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, segment_id = %id))]
    async fn members(&self, mandator: &MandatorId, id: SegmentId) -> Result<Vec<AccountRef>, StoreError> {
        let items = self.query_all(members_pk(mandator, id), "reading members").await?;
        let mut out = items
            .iter()
            .map(|item| decode_member(item).ok_or_else(|| StoreError::Corrupt("an unexpected member item".into())))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort();
        Ok(out)
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, segment_id = %id))]
    async fn member_count(&self, mandator: &MandatorId, id: SegmentId) -> Result<u64, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":pk", s(members_pk(mandator, id)))
            .select(Select::Count)
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut count = 0u64;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| StoreError::unavailable("counting members", e.into_service_error()))?;
            count += u64::try_from(page.count).unwrap_or_default();
        }
        Ok(count)
    }

    #[instrument(skip_all, fields(mandator_id = %mandator))]
    async fn segments_of_account(
        &self,
        mandator: &MandatorId,
        account: &AccountId,
    ) -> Result<Vec<(SegmentId, UserId)>, StoreError> {
        let items = self.query_all(account_pk(mandator, account), "reading an account's segments").await?;
        items
            .iter()
            .map(|item| {
                let segment = text(item, SORT_KEY).and_then(|sk| sk.strip_prefix("SEG#")).and_then(SegmentId::parse);
                let user = text(item, USER_ID).and_then(|u| UserId::parse(u).ok());
                segment.zip(user).ok_or_else(|| StoreError::Corrupt("an unexpected account segment item".into()))
            })
            .collect()
    }
}

#[async_trait]
impl RefreshStore for DynamoSegments {
    #[instrument(skip_all, fields(mandator_id = %refresh.mandator, segment_id = %refresh.segment_id, refresh_id = %refresh.id))]
    async fn create_refresh(&self, refresh: &RefreshRecord) -> Result<(), StoreError> {
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(refresh_item(refresh)?))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .send()
            .await;
        match written.map_err(|e| e.into_service_error()) {
            Ok(_) => Ok(()),
            Err(PutItemError::ConditionalCheckFailedException(_)) => {
                Err(StoreError::Conflict(format!("refresh {} exists already", refresh.id)))
            }
            Err(other) => Err(StoreError::unavailable(format!("creating refresh {}", refresh.id), other)),
        }
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, segment_id = %segment, refresh_id = %id))]
    async fn get_refresh(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        id: RefreshId,
    ) -> Result<Option<RefreshRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(refreshes_pk(mandator, segment), refresh_sk(id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::unavailable(format!("reading refresh {id}"), e.into_service_error()))?;
        out.item.as_ref().map(decode_refresh).transpose()
    }

    #[instrument(skip_all, fields(mandator_id = %previous.mandator, segment_id = %previous.segment_id, refresh_id = %previous.id))]
    async fn replace_refresh(&self, previous: &RefreshRecord, next: &RefreshRecord) -> Result<bool, StoreError> {
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(refresh_item(next)?))
            .condition_expression("#version = :version")
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":version", n(previous.version))
            .send()
            .await;
        match written.map_err(|e| e.into_service_error()) {
            Ok(_) => Ok(true),
            // Another write came first, or there is no such refresh: nothing changed.
            Err(PutItemError::ConditionalCheckFailedException(_)) => Ok(false),
            Err(other) => Err(StoreError::unavailable(format!("replacing refresh {}", previous.id), other)),
        }
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, segment_id = %segment, limit))]
    async fn list_refreshes(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        before: Option<RefreshId>,
        limit: u32,
    ) -> Result<Vec<RefreshRecord>, StoreError> {
        let bound = before.map(|b| ("<", refresh_sk(b)));
        let items = self.query_up_to(refreshes_pk(mandator, segment), bound, false, limit, "listing refreshes").await?;
        items.iter().map(decode_refresh).collect()
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, segment_id = %segment, refresh_id = %refresh, kind = kind.as_str(), count = accounts.len()))]
    async fn put_changes(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        refresh: RefreshId,
        kind: ChangeKind,
        accounts: &[AccountRef],
    ) -> Result<(), StoreError> {
        let pk = changes_pk(mandator, segment, refresh, kind);
        for chunk in accounts.chunks(BATCH_WRITE_LIMIT) {
            // One request per key: BatchWriteItem refuses a batch naming one key twice.
            let mut seen = std::collections::BTreeSet::new();
            let mut writes = Vec::with_capacity(chunk.len());
            for a in chunk.iter().filter(|a| seen.insert(&a.account_id)) {
                let mut item = key(pk.clone(), member_sk(&a.account_id));
                item.insert(USER_ID.to_owned(), s(a.user_id.as_str()));
                writes.push(
                    WriteRequest::builder()
                        .put_request(build(PutRequest::builder().set_item(Some(item)).build())?)
                        .build(),
                );
            }
            batch_write(&self.client, &self.table, writes, "recording refresh changes").await?;
        }
        Ok(())
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, segment_id = %segment, refresh_id = %refresh, kind = kind.as_str(), limit))]
    async fn changes(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        refresh: RefreshId,
        kind: ChangeKind,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountRef>, StoreError> {
        let bound = after.map(|a| (">", member_sk(a)));
        let pk = changes_pk(mandator, segment, refresh, kind);
        let items = self.query_up_to(pk, bound, true, limit, "reading refresh changes").await?;
        items
            .iter()
            .map(|item| {
                decode_member(item).ok_or_else(|| StoreError::Corrupt("an unexpected refresh change item".into()))
            })
            .collect()
    }

    #[instrument(skip_all, fields(mandator_id = %mandator, segment_id = %segment, refresh_id = %refresh))]
    async fn clear_changes(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        refresh: RefreshId,
    ) -> Result<(), StoreError> {
        for kind in ChangeKind::ALL {
            // Page by page: a refresh's changes may be many, and only one page of keys is held.
            let mut pages = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .projection_expression("#pk, #sk")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#sk", SORT_KEY)
                .expression_attribute_values(":pk", s(changes_pk(mandator, segment, refresh, kind)))
                .consistent_read(true)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page =
                    page.map_err(|e| StoreError::unavailable("reading refresh changes", e.into_service_error()))?;
                let deletes = page
                    .items
                    .unwrap_or_default()
                    .into_iter()
                    .map(|k| {
                        Ok(WriteRequest::builder()
                            .delete_request(build(DeleteRequest::builder().set_key(Some(k)).build())?)
                            .build())
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                for chunk in deletes.chunks(BATCH_WRITE_LIMIT) {
                    batch_write(&self.client, &self.table, chunk.to_vec(), "clearing refresh changes").await?;
                }
            }
        }
        Ok(())
    }

    #[instrument(skip_all, fields(now = %now, limit))]
    async fn due_refreshes(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<RefreshRecord>, StoreError> {
        let items = self.due_items(refresh_partition_name, now, limit, "reading due refreshes").await?;
        let mut due = Vec::with_capacity(items.len());
        for item in &items {
            let refresh = decode_refresh(item)?;
            if !refresh.state.is_final() && refresh.check_at.is_some_and(|at| at <= now) {
                due.push(refresh);
            }
        }
        due.sort_by_key(|r| (r.check_at, r.id));
        Ok(due)
    }

    #[instrument(skip_all, fields(now = %now, limit))]
    async fn due_schedules(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Segment>, StoreError> {
        let items = self.due_items(schedule_partition_name, now, limit, "reading due schedules").await?;
        let mut due = Vec::with_capacity(items.len());
        for item in &items {
            let segment = decode(item)?;
            if !segment.is_deleted() && segment.next_refresh_at.is_some_and(|at| at <= now) {
                due.push(segment);
            }
        }
        due.sort_by_key(|seg| (seg.next_refresh_at, seg.id));
        Ok(due)
    }
}
