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
//! Creating, changing and deleting a segment write the segment, its listing entry and its name
//! claims in one transaction with conditions (claim absent, version unchanged): two concurrent
//! creates of one name cannot both win, and the listing entry never differs from the segment.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, DeleteRequest, Put, PutRequest, Select, TransactWriteItem, WriteRequest};
use chrono::{DateTime, Utc};
use tracing::instrument;

use super::items::{Item, PARTITION_KEY, SORT_KEY, n, s};
use super::retry::batch_write;
use segments_core::domain::date::timestamp;
use segments_core::domain::segment::{AccountRef, Scope, Segment, SegmentId, SegmentQuery};
use segments_core::domain::{AccountId, MandatorId, UserId};
use segments_core::ports::{SegmentStore, StoreError};

const VERSION: &str = "version";
const DOC: &str = "doc";
const SEGMENT_ID: &str = "segmentId";
const USER_ID: &str = "userId";
const NAME_SORT_KEY: &str = "NAME";
const BATCH_WRITE_LIMIT: usize = 25;

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
    Ok(item)
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
