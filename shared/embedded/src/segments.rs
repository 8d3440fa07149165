//! Segments of the management API, their membership, and the refreshes of dynamic segments with
//! their change feeds, in the embedded store. Tables (created when the store opens):
//! - `segments`: `M#{mandator}#SEG#{segmentId}` → the segment (JSON);
//! - `segment_names`: `M#{mandator}#{scope}#{name}` → the segment id holding the name, for live
//!   segments only (`scope` is `ORG` or `L#{ledgerId}`; the name is compared exactly);
//! - `members_by_segment`: `M#{mandator}#SEG#{segmentId}#A#{accountId}` → userId (accountIds are
//!   unique per mandator);
//! - `members_by_account`: `M#{mandator}#ACC#{accountId}#SEG#{segmentId}` → userId, the reverse;
//! - `segment_schedules_due`: [`keys::due_key`] of `nextRefreshAt` → the segment's key, for live
//!   segments with a next refresh only: what the scheduler reads ([`RefreshStore::due_schedules`]);
//! - `refreshes`: `M#{mandator}#SEG#{segmentId}#R#{refreshId}` → the refresh (JSON); refresh ids
//!   are UUIDv7, so a segment's refreshes sort by start time;
//! - `refresh_changes`: `M#{mandator}#SEG#{segmentId}#R#{refreshId}#{entered|left}#A#{accountId}`
//!   → userId, so one range scan reads a kind's changes in accountId order;
//! - `refreshes_due`: [`keys::due_key`] of `checkAt` → the refresh's key, for unfinished refreshes
//!   only ([`RefreshStore::due_refreshes`]).
//!
//! Every write checks and writes inside one write transaction, the indexes of due times included;
//! redb runs one at a time, so the checks are atomic like DynamoDB's conditions.

use std::ops::Bound;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::due::{self, DueIndex};
use super::{EmbeddedStore, OrUnavailable, corrupt, keys};
use segments_core::domain::refresh::{ChangeKind, RefreshId, RefreshRecord};
use segments_core::domain::segment::{AccountRef, Segment, SegmentId, SegmentQuery};
use segments_core::domain::{AccountId, MandatorId, UserId};
use segments_core::ports::{RefreshStore, SegmentStore, StoreError};

const SEGMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("segments");
const SEGMENT_NAMES: TableDefinition<&str, &str> = TableDefinition::new("segment_names");
const SEGMENT_MEMBERS: TableDefinition<&str, &str> = TableDefinition::new("members_by_segment");
const ACCOUNT_SEGMENTS: TableDefinition<&str, &str> = TableDefinition::new("members_by_account");
const SCHEDULES_DUE: DueIndex = TableDefinition::new("segment_schedules_due");
const REFRESHES: TableDefinition<&str, &[u8]> = TableDefinition::new("refreshes");
const REFRESH_CHANGES: TableDefinition<&str, &str> = TableDefinition::new("refresh_changes");
const REFRESHES_DUE: DueIndex = TableDefinition::new("refreshes_due");

/// Creates the tables of this module, inside the write that opens the store.
pub(super) fn create_tables(write: &redb::WriteTransaction) -> Result<(), StoreError> {
    const WHAT: &str = "creating tables";
    write.open_table(SEGMENTS).or_unavailable(WHAT)?;
    write.open_table(SEGMENT_NAMES).or_unavailable(WHAT)?;
    write.open_table(SEGMENT_MEMBERS).or_unavailable(WHAT)?;
    write.open_table(ACCOUNT_SEGMENTS).or_unavailable(WHAT)?;
    write.open_table(SCHEDULES_DUE).or_unavailable(WHAT)?;
    write.open_table(REFRESHES).or_unavailable(WHAT)?;
    write.open_table(REFRESH_CHANGES).or_unavailable(WHAT)?;
    write.open_table(REFRESHES_DUE).or_unavailable(WHAT)?;
    Ok(())
}

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

/// The prefix of a segment's refreshes, ending in the separator.
fn refreshes_prefix(mandator: &MandatorId, segment: SegmentId) -> String {
    format!("M#{mandator}#SEG#{segment}#R#")
}

fn refresh_key(mandator: &MandatorId, segment: SegmentId, id: RefreshId) -> String {
    format!("{}{id}", refreshes_prefix(mandator, segment))
}

/// The prefix of every change of a refresh, ending in the separator.
fn changes_prefix(mandator: &MandatorId, segment: SegmentId, refresh: RefreshId) -> String {
    format!("{}#", refresh_key(mandator, segment, refresh))
}

/// The prefix of a refresh's changes of one kind, ending in the separator before the accountId.
fn kind_prefix(mandator: &MandatorId, segment: SegmentId, refresh: RefreshId, kind: ChangeKind) -> String {
    format!("{}{}#A#", changes_prefix(mandator, segment, refresh), kind.as_str())
}

/// When the scheduler refreshes the segment next, if it is live and scheduled: only those
/// segments are in the index of due schedules.
fn schedule_due(segment: &Segment) -> Option<DateTime<Utc>> {
    segment.next_refresh_at.filter(|_| !segment.is_deleted())
}

/// When the scheduler looks at the refresh next, if it is unfinished: a final refresh is never in
/// the index of due refreshes, whatever its `check_at` says.
fn refresh_due(refresh: &RefreshRecord) -> Option<DateTime<Utc>> {
    refresh.check_at.filter(|_| !refresh.state.is_final())
}

fn encode(segment: &Segment) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(segment).map_err(|e| StoreError::unavailable("encoding a segment", e))
}

fn decode(key: &str, bytes: &[u8]) -> Result<Segment, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("segment", key, e))
}

fn encode_refresh(refresh: &RefreshRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(refresh).map_err(|e| StoreError::unavailable("encoding a refresh", e))
}

fn decode_refresh(key: &str, bytes: &[u8]) -> Result<RefreshRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("refresh", key, e))
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
        let due_at = schedule_due(segment);
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
            if let Some(at) = due_at {
                due::add(&write, SCHEDULES_DUE, at, &key)?;
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
        let due_at = schedule_due(next);
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
                // The stored segment's index entry, not the caller's copy's: the index follows
                // what is stored.
                if let Some(at) = schedule_due(&stored) {
                    due::remove(&write, SCHEDULES_DUE, at, &key)?;
                }
            }
            if let Some(at) = due_at {
                due::add(&write, SCHEDULES_DUE, at, &key)?;
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

#[async_trait]
impl RefreshStore for EmbeddedStore {
    async fn create_refresh(&self, refresh: &RefreshRecord) -> Result<(), StoreError> {
        let key = refresh_key(&refresh.mandator, refresh.segment_id, refresh.id);
        let value = encode_refresh(refresh)?;
        let due_at = refresh_due(refresh);
        self.blocking("creating a refresh", move |db| {
            const WHAT: &str = "creating a refresh";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut refreshes = write.open_table(REFRESHES).or_unavailable(WHAT)?;
                if refreshes.get(key.as_str()).or_unavailable(WHAT)?.is_some() {
                    return Err(StoreError::Conflict(format!("refresh {key} exists already")));
                }
                refreshes.insert(key.as_str(), value.as_slice()).or_unavailable(WHAT)?;
            }
            if let Some(at) = due_at {
                due::add(&write, REFRESHES_DUE, at, &key)?;
            }
            write.commit().or_unavailable(WHAT)
        })
        .await
    }

    async fn get_refresh(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        id: RefreshId,
    ) -> Result<Option<RefreshRecord>, StoreError> {
        let key = refresh_key(mandator, segment, id);
        self.blocking("reading a refresh", move |db| {
            const WHAT: &str = "reading a refresh";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let Some(table) = open(&read, REFRESHES, WHAT)? else { return Ok(None) };
            let found = table.get(key.as_str()).or_unavailable(WHAT)?;
            found.map(|v| decode_refresh(&key, v.value())).transpose()
        })
        .await
    }

    async fn replace_refresh(&self, previous: &RefreshRecord, next: &RefreshRecord) -> Result<bool, StoreError> {
        let key = refresh_key(&previous.mandator, previous.segment_id, previous.id);
        if refresh_key(&next.mandator, next.segment_id, next.id) != key {
            return Err(StoreError::Conflict(format!("refresh {key} cannot be replaced by another refresh")));
        }
        let value = encode_refresh(next)?;
        let expected = previous.version;
        let due_at = refresh_due(next);
        self.blocking("replacing a refresh", move |db| {
            const WHAT: &str = "replacing a refresh";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut refreshes = write.open_table(REFRESHES).or_unavailable(WHAT)?;
                let stored = match refreshes.get(key.as_str()).or_unavailable(WHAT)? {
                    Some(v) => decode_refresh(&key, v.value())?,
                    None => return Ok(false),
                };
                if stored.version != expected {
                    return Ok(false);
                }
                refreshes.insert(key.as_str(), value.as_slice()).or_unavailable(WHAT)?;
                if let Some(at) = refresh_due(&stored) {
                    due::remove(&write, REFRESHES_DUE, at, &key)?;
                }
            }
            if let Some(at) = due_at {
                due::add(&write, REFRESHES_DUE, at, &key)?;
            }
            write.commit().or_unavailable(WHAT)?;
            Ok(true)
        })
        .await
    }

    async fn list_refreshes(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        before: Option<RefreshId>,
        limit: u32,
    ) -> Result<Vec<RefreshRecord>, StoreError> {
        let prefix = refreshes_prefix(mandator, segment);
        // Newest first: backwards from `before` (excluded), or from the end of the segment's keys.
        let upper = match before {
            Some(before) => refresh_key(mandator, segment, before),
            None => keys::prefix_end(&prefix),
        };
        self.blocking("listing refreshes", move |db| {
            const WHAT: &str = "listing refreshes";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let Some(table) = open(&read, REFRESHES, WHAT)? else { return Ok(Vec::new()) };
            let mut out = Vec::new();
            for entry in table.range(prefix.as_str()..upper.as_str()).or_unavailable(WHAT)?.rev().take(limit as usize) {
                let (k, v) = entry.or_unavailable(WHAT)?;
                out.push(decode_refresh(k.value(), v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn put_changes(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        refresh: RefreshId,
        kind: ChangeKind,
        accounts: &[AccountRef],
    ) -> Result<(), StoreError> {
        if accounts.is_empty() {
            return Ok(());
        }
        let prefix = kind_prefix(mandator, segment, refresh, kind);
        let changes: Vec<(String, String)> =
            accounts.iter().map(|a| (format!("{prefix}{}", a.account_id), a.user_id.to_string())).collect();
        self.blocking("recording changes", move |db| {
            const WHAT: &str = "recording changes";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut table = write.open_table(REFRESH_CHANGES).or_unavailable(WHAT)?;
                for (key, user) in &changes {
                    table.insert(key.as_str(), user.as_str()).or_unavailable(WHAT)?;
                }
            }
            write.commit().or_unavailable(WHAT)
        })
        .await
    }

    async fn changes(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        refresh: RefreshId,
        kind: ChangeKind,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountRef>, StoreError> {
        let prefix = kind_prefix(mandator, segment, refresh, kind);
        let end = keys::prefix_end(&prefix);
        let start = after.map(|a| format!("{prefix}{a}"));
        self.blocking("reading changes", move |db| {
            const WHAT: &str = "reading changes";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let Some(table) = open(&read, REFRESH_CHANGES, WHAT)? else { return Ok(Vec::new()) };
            let lower = match &start {
                Some(after) => Bound::Excluded(after.as_str()),
                None => Bound::Included(prefix.as_str()),
            };
            let mut out = Vec::new();
            for entry in
                table.range::<&str>((lower, Bound::Excluded(end.as_str()))).or_unavailable(WHAT)?.take(limit as usize)
            {
                let (k, v) = entry.or_unavailable(WHAT)?;
                let key = k.value();
                let account = key.strip_prefix(prefix.as_str()).and_then(|a| AccountId::parse(a).ok());
                let user = UserId::parse(v.value()).ok();
                match account.zip(user) {
                    Some((account_id, user_id)) => out.push(AccountRef { account_id, user_id }),
                    None => return Err(corrupt("change", key, "unexpected key or user")),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn clear_changes(
        &self,
        mandator: &MandatorId,
        segment: SegmentId,
        refresh: RefreshId,
    ) -> Result<(), StoreError> {
        let prefix = changes_prefix(mandator, segment, refresh);
        let end = keys::prefix_end(&prefix);
        self.blocking("clearing changes", move |db| {
            const WHAT: &str = "clearing changes";
            let write = db.begin_write().or_unavailable(WHAT)?;
            write
                .open_table(REFRESH_CHANGES)
                .or_unavailable(WHAT)?
                .retain_in(prefix.as_str()..end.as_str(), |_, _| false)
                .or_unavailable(WHAT)?;
            write.commit().or_unavailable(WHAT)
        })
        .await
    }

    async fn due_refreshes(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<RefreshRecord>, StoreError> {
        self.blocking("reading due refreshes", move |db| {
            due::read(db, REFRESHES_DUE, REFRESHES, now, limit, "reading due refreshes", decode_refresh)
        })
        .await
    }

    async fn due_schedules(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Segment>, StoreError> {
        self.blocking("reading due schedules", move |db| {
            due::read(db, SCHEDULES_DUE, SEGMENTS, now, limit, "reading due schedules", decode)
        })
        .await
    }
}
