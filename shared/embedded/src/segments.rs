//! Segments of the management API and their membership in the embedded store. Tables (created on first write; a missing table reads as empty):
//! - `segments`: `M#{mandator}#SEG#{segmentId}` → the segment (JSON);
//! - `segment_names`: `M#{mandator}#{scope}#{name}` → the segment id holding the name, for live
//!   segments only (`scope` is `ORG` or `L#{ledgerId}`; the name is compared exactly);
//! - `members_by_segment`: `M#{mandator}#SEG#{segmentId}#A#{accountId}` → userId (accountIds are
//!   unique per mandator);
//! - `members_by_account`: `M#{mandator}#ACC#{accountId}#SEG#{segmentId}` → userId, the reverse.
//!
//! Every write checks and writes inside one write transaction; redb runs one at a time, so the
//! checks are atomic like DynamoDB's conditions.

use async_trait::async_trait;
use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::{EmbeddedStore, OrUnavailable, corrupt, keys};
use segments_core::domain::segment::{AccountRef, Segment, SegmentId, SegmentQuery};
use segments_core::domain::{AccountId, MandatorId, UserId};
use segments_core::ports::{SegmentStore, StoreError};

const SEGMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("segments");
const SEGMENT_NAMES: TableDefinition<&str, &str> = TableDefinition::new("segment_names");
const SEGMENT_MEMBERS: TableDefinition<&str, &str> = TableDefinition::new("members_by_segment");
const ACCOUNT_SEGMENTS: TableDefinition<&str, &str> = TableDefinition::new("members_by_account");

fn segment_key(mandator: &MandatorId, id: SegmentId) -> String {
    format!("M#{mandator}#SEG#{id}")
}

fn name_key(segment: &Segment) -> String {
    format!("M#{}#{}#{}", segment.mandator, segment.scope().key(), segment.name)
}

fn members_prefix(mandator: &MandatorId, id: SegmentId) -> String {
    format!("M#{mandator}#SEG#{id}#")
}

fn member_key(mandator: &MandatorId, id: SegmentId, account: &AccountId) -> String {
    format!("{}A#{account}", members_prefix(mandator, id))
}

fn account_prefix(mandator: &MandatorId, account: &AccountId) -> String {
    format!("M#{mandator}#ACC#{account}#")
}

fn reverse_key(mandator: &MandatorId, id: SegmentId, account: &AccountId) -> String {
    format!("{}SEG#{id}", account_prefix(mandator, account))
}

fn encode(segment: &Segment) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(segment).map_err(|e| StoreError::unavailable("encoding a segment", e))
}

fn decode(key: &str, bytes: &[u8]) -> Result<Segment, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("segment", key, e))
}

/// A table for reading, or `None` when it was never written.
fn open<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &ReadTransaction,
    table: TableDefinition<K, V>,
    what: &str,
) -> Result<Option<ReadOnlyTable<K, V>>, StoreError> {
    match read.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e).or_unavailable(what),
    }
}

#[async_trait]
impl SegmentStore for EmbeddedStore {
    async fn create_segment(&self, segment: &Segment) -> Result<(), StoreError> {
        let key = segment_key(&segment.mandator, segment.id);
        let name = name_key(segment);
        let value = encode(segment)?;
        let id = segment.id.to_string();
        self.blocking("creating a segment", move |db| {
            const WHAT: &str = "creating a segment";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut names = write.open_table(SEGMENT_NAMES).or_unavailable(WHAT)?;
                if names.get(name.as_str()).or_unavailable(WHAT)?.is_some() {
                    return Err(StoreError::Conflict("the name is held by another segment".into()));
                }
                let mut segments = write.open_table(SEGMENTS).or_unavailable(WHAT)?;
                if segments.get(key.as_str()).or_unavailable(WHAT)?.is_some() {
                    return Err(StoreError::Conflict(format!("segment {key} exists already")));
                }
                names.insert(name.as_str(), id.as_str()).or_unavailable(WHAT)?;
                segments.insert(key.as_str(), value.as_slice()).or_unavailable(WHAT)?;
            }
            write.commit().or_unavailable(WHAT)
        })
        .await
    }

    async fn get_segment(&self, mandator: &MandatorId, id: SegmentId) -> Result<Option<Segment>, StoreError> {
        let key = segment_key(mandator, id);
        self.blocking("reading a segment", move |db| {
            const WHAT: &str = "reading a segment";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let Some(table) = open(&read, SEGMENTS, WHAT)? else { return Ok(None) };
            let found = table.get(key.as_str()).or_unavailable(WHAT)?;
            found.map(|v| decode(&key, v.value())).transpose()
        })
        .await
    }

    async fn list_segments(&self, mandator: &MandatorId, query: &SegmentQuery) -> Result<Vec<Segment>, StoreError> {
        // One range scan of the mandator's segments: the embedded store serves one machine, and
        // a mandator has hundreds of segments, so no per-scope index is kept here.
        let prefix = format!("M#{mandator}#SEG#");
        let query = query.clone();
        self.blocking("listing segments", move |db| {
            const WHAT: &str = "listing segments";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let Some(table) = open(&read, SEGMENTS, WHAT)? else { return Ok(Vec::new()) };
            let end = keys::prefix_end(&prefix);
            let mut out = Vec::new();
            for entry in table.range(prefix.as_str()..end.as_str()).or_unavailable(WHAT)? {
                let (k, v) = entry.or_unavailable(WHAT)?;
                let segment = decode(k.value(), v.value())?;
                if query.selects(&segment) {
                    out.push(segment);
                }
            }
            out.sort_by_key(|s| (s.created_at, s.id));
            if query.newest_first {
                out.reverse();
            }
            Ok(out)
        })
        .await
    }

    async fn replace_segment(&self, previous: &Segment, next: &Segment) -> Result<(), StoreError> {
        let key = segment_key(&previous.mandator, previous.id);
        let old_name = name_key(previous);
        let new_name = (!next.is_deleted()).then(|| name_key(next));
        let value = encode(next)?;
        let expected = previous.version;
        let id = previous.id.to_string();
        self.blocking("replacing a segment", move |db| {
            const WHAT: &str = "replacing a segment";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut segments = write.open_table(SEGMENTS).or_unavailable(WHAT)?;
                let stored = match segments.get(key.as_str()).or_unavailable(WHAT)? {
                    Some(v) => decode(&key, v.value())?,
                    None => return Err(StoreError::Conflict(format!("segment {key} does not exist"))),
                };
                if stored.version != expected {
                    return Err(StoreError::Conflict(format!("segment {key} changed meanwhile")));
                }
                let mut names = write.open_table(SEGMENT_NAMES).or_unavailable(WHAT)?;
                if new_name.as_deref() != Some(old_name.as_str()) {
                    if let Some(new_name) = &new_name
                        && names.get(new_name.as_str()).or_unavailable(WHAT)?.is_some()
                    {
                        return Err(StoreError::Conflict("the name is held by another segment".into()));
                    }
                    let held_by_us =
                        names.get(old_name.as_str()).or_unavailable(WHAT)?.is_some_and(|v| v.value() == id);
                    if held_by_us {
                        names.remove(old_name.as_str()).or_unavailable(WHAT)?;
                    }
                    if let Some(new_name) = &new_name {
                        names.insert(new_name.as_str(), id.as_str()).or_unavailable(WHAT)?;
                    }
                }
                segments.insert(key.as_str(), value.as_slice()).or_unavailable(WHAT)?;
            }
            write.commit().or_unavailable(WHAT)
        })
        .await
    }

    async fn change_members(
        &self,
        mandator: &MandatorId,
        id: SegmentId,
        add: &[AccountRef],
        remove: &[AccountId],
    ) -> Result<(), StoreError> {
        let adds: Vec<(String, String, String)> = add
            .iter()
            .map(|a| {
                let (m, r) = (member_key(mandator, id, &a.account_id), reverse_key(mandator, id, &a.account_id));
                (m, r, a.user_id.to_string())
            })
            .collect();
        let removes: Vec<(String, String)> =
            remove.iter().map(|a| (member_key(mandator, id, a), reverse_key(mandator, id, a))).collect();
        self.blocking("changing members", move |db| {
            const WHAT: &str = "changing members";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut members = write.open_table(SEGMENT_MEMBERS).or_unavailable(WHAT)?;
                let mut reverse = write.open_table(ACCOUNT_SEGMENTS).or_unavailable(WHAT)?;
                for (m, r, user) in &adds {
                    members.insert(m.as_str(), user.as_str()).or_unavailable(WHAT)?;
                    reverse.insert(r.as_str(), user.as_str()).or_unavailable(WHAT)?;
                }
                for (m, r) in &removes {
                    members.remove(m.as_str()).or_unavailable(WHAT)?;
                    reverse.remove(r.as_str()).or_unavailable(WHAT)?;
                }
            }
            write.commit().or_unavailable(WHAT)
        })
        .await
    }

    async fn members(&self, mandator: &MandatorId, id: SegmentId) -> Result<Vec<AccountRef>, StoreError> {
        let prefix = members_prefix(mandator, id);
        self.blocking("reading members", move |db| {
            const WHAT: &str = "reading members";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let Some(table) = open(&read, SEGMENT_MEMBERS, WHAT)? else { return Ok(Vec::new()) };
            let end = keys::prefix_end(&prefix);
            let mut out = Vec::new();
            for entry in table.range(prefix.as_str()..end.as_str()).or_unavailable(WHAT)? {
                let (k, v) = entry.or_unavailable(WHAT)?;
                let key = k.value();
                let account = key
                    .strip_prefix(prefix.as_str())
                    .and_then(|rest| rest.strip_prefix("A#"))
                    .and_then(|a| AccountId::parse(a).ok());
                let user = UserId::parse(v.value()).ok();
                match account.zip(user) {
                    Some((account_id, user_id)) => out.push(AccountRef { account_id, user_id }),
                    None => return Err(corrupt("member", key, "unexpected key or user")),
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn member_count(&self, mandator: &MandatorId, id: SegmentId) -> Result<u64, StoreError> {
        let prefix = members_prefix(mandator, id);
        self.blocking("counting members", move |db| {
            const WHAT: &str = "counting members";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let Some(table) = open(&read, SEGMENT_MEMBERS, WHAT)? else { return Ok(0) };
            let end = keys::prefix_end(&prefix);
            let mut n = 0u64;
            for entry in table.range(prefix.as_str()..end.as_str()).or_unavailable(WHAT)? {
                entry.or_unavailable(WHAT)?;
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn segments_of_account(
        &self,
        mandator: &MandatorId,
        account: &AccountId,
    ) -> Result<Vec<(SegmentId, UserId)>, StoreError> {
        let prefix = account_prefix(mandator, account);
        self.blocking("reading an account's segments", move |db| {
            const WHAT: &str = "reading an account's segments";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let Some(table) = open(&read, ACCOUNT_SEGMENTS, WHAT)? else { return Ok(Vec::new()) };
            let end = keys::prefix_end(&prefix);
            let mut out = Vec::new();
            for entry in table.range(prefix.as_str()..end.as_str()).or_unavailable(WHAT)? {
                let (k, v) = entry.or_unavailable(WHAT)?;
                let key = k.value();
                let segment = key
                    .strip_prefix(prefix.as_str())
                    .and_then(|rest| rest.strip_prefix("SEG#"))
                    .and_then(SegmentId::parse);
                let user = UserId::parse(v.value()).ok();
                out.push(segment.zip(user).ok_or_else(|| corrupt("account segment", key, "unexpected key or user"))?);
            }
            Ok(out)
        })
        .await
    }
}
