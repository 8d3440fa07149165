//! Segments of the management API in the Segments table.
//!
//! Segments table (`pk`, `sk`, on-demand):
//! - segment: `pk = M#{mandatorId}#SEGMENTS`, `sk = SEG#{segmentId}`; `version` (N) and `doc`
//!   (S, the segment as JSON). One partition per mandator: a list is one Query.
//! - name claim: `pk = M#{mandatorId}#NAME#{scope}#{name}`, `sk = NAME`, `segmentId` (S); held by a
//!   live segment only. The name sits in the partition key (up to 2048 bytes) so a 256-character
//!   name always fits, and is compared exactly — no wildcard or case folding.
//! - member: `pk = M#{mandatorId}#SEG#{segmentId}`, `sk = A#{accountId}`, `userId` (S); accountIds
//!   are unique per mandator, so members sort by accountId;
//! - the reverse: `pk = M#{mandatorId}#ACC#{accountId}`, `sk = SEG#{segmentId}`, `userId` (S).
//!
//! Creating, renaming and deleting a segment write the segment and its name claims in one
//! transaction with conditions (claim absent, version unchanged): two concurrent creates of one
//! name cannot both win.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, DeleteRequest, Put, PutRequest, Select, TransactWriteItem, WriteRequest};
use tracing::instrument;

use super::items::{Item, PARTITION_KEY, SORT_KEY, n, s};
use super::retry::batch_write;
use crate::domain::{AccountId, MandatorId, UserId};
use crate::ports::{SegmentStore, StoreError};
use crate::segments_api::{AccountRef, Segment, SegmentId};

pub const SEGMENTS_TABLE_VAR: &str = "SEGMENTS_TABLE";

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
        let items = vec![TransactWriteItem::builder().put(put).build(), self.claim(segment)?];
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
    async fn list_segments(&self, mandator: &MandatorId) -> Result<Vec<Segment>, StoreError> {
        self.query_all(segments_pk(mandator), "listing segments").await?.iter().map(decode).collect()
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
