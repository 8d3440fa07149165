//! The use cases of the segments API, over the ports. Transport-free: the handler calls them with
//! an authenticated [`Caller`] and the organization and ledger of the path.
//!
//! Dynamic segments: `POST …/refresh` starts a financial-segment job with the segment's rule and
//! records it on the segment (`lastRefresh`, state `PENDING`). Nothing runs when the job
//! finishes; instead every read of the segment (and every further `POST …/refresh`) settles a
//! pending refresh whose job has completed, in two conditional steps on the segment's version:
//! 1. `PENDING` → `APPLYING`, recording the difference between the result's accounts and the
//!    current members (`added`, `removed`). Of concurrent readers exactly one records it.
//! 2. apply that difference (idempotent puts and deletes), then `APPLYING` → `APPLIED` with
//!    `refreshedAt`. A reader that finds `APPLYING` (a crash, or a slower peer) re-applies the
//!    recorded difference, which changes nothing the second time, and finishes the step.
//!
//! A failed or expired job turns the refresh `FAILED` and leaves the membership as it was.

pub mod body;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use tracing::instrument;

use super::create_job::JobIntake;
use super::read_result::{ResultReader, read_page};
use super::{AppError, Caller};
use crate::domain::date::timestamp;
use crate::domain::segment::{
    AccountRef, LedgerId, Refresh, RefreshState, Scope, Segment, SegmentId, SegmentQuery, Status,
};
use crate::domain::{AccountId, MandatorId, UserId};
use crate::jobs::{Job, JobStatus, MAX_PER_PAGE};
use crate::ports::{AccountDirectory, SegmentStore, StoreError};
use crate::rules::body::FieldError;
use body::{CreateSegment, ListQuery, MembershipChange, PatchSegment, SortOrder};

pub const READ_SCOPE: &str = "segments/definitions.read";
pub const WRITE_SCOPE: &str = "segments/definitions.write";

/// How often a use case re-reads a segment after losing a conditional write to a peer.
const SETTLE_ATTEMPTS: usize = 4;

/// What the segments API runs with: the job services (a refresh starts a job) plus the segment
/// store and the account directory.
#[derive(Clone)]
pub struct SegmentsServices {
    /// A refresh starts a financial-segment job ...
    pub intake: JobIntake,
    /// ... and reads its result.
    pub reader: ResultReader,
    pub segments: Arc<dyn SegmentStore>,
    pub directory: Arc<dyn AccountDirectory>,
}

/// The organization and ledger a request addresses, checked against the caller.
#[derive(Debug, Clone)]
pub struct Target {
    pub mandator: MandatorId,
    pub scope: Scope,
}

/// Checks the scope of the operation, then that the organization of the path is the caller's
/// mandator. Another organization is not found, whether it exists or not (docs/security.md).
pub fn authorize(caller: &Caller, organization: &str, ledger: Option<&str>, write: bool) -> Result<Target, AppError> {
    caller.require_scope(if write { WRITE_SCOPE } else { READ_SCOPE })?;
    if organization != caller.mandator.as_str() {
        return Err(AppError::NotFound("organization"));
    }
    let scope = match ledger {
        None => Scope::Organization,
        Some(l) => Scope::Ledger(LedgerId::parse(l).ok_or(AppError::NotFound("ledger"))?),
    };
    Ok(Target { mandator: caller.mandator.clone(), scope })
}

// ---------------------------------------------------------------------------------------------
// Answers

#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub code: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    pub segment_type: crate::domain::SegmentType,
    pub parameters: Box<RawValue>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshView {
    pub job_id: crate::domain::JobId,
    pub status: RefreshState,
    pub requested_at: String,
    pub refreshed_at: Option<String>,
    pub added: Vec<AccountRef>,
    pub removed: Vec<AccountRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A segment as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentView {
    pub id: String,
    pub organization_id: String,
    pub ledger_id: Option<String>,
    pub name: String,
    pub status: StatusView,
    pub metadata: crate::domain::segment::Metadata,
    pub rule: Option<RuleView>,
    pub member_count: u64,
    pub last_refresh: Option<RefreshView>,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
}

/// A page of a list.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub limit: u32,
    pub total_count: u64,
}

/// A segment an account is a member of.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountSegment {
    pub user_id: String,
    pub account_id: String,
    pub segment: SegmentView,
}

async fn view(s: &SegmentsServices, seg: &Segment) -> Result<SegmentView, AppError> {
    let member_count = s.segments.member_count(&seg.mandator, seg.id).await?;
    let rule = match &seg.rule {
        None => None,
        Some(r) => Some(RuleView {
            segment_type: r.segment_type,
            parameters: RawValue::from_string(r.parameters.clone())
                .map_err(|e| StoreError::Corrupt(format!("rule of segment {}: {e}", seg.id)))?,
        }),
    };
    Ok(SegmentView {
        id: seg.id.to_string(),
        organization_id: seg.mandator.to_string(),
        ledger_id: seg.ledger_id.as_ref().map(|l| l.as_str().to_owned()),
        name: seg.name.clone(),
        status: StatusView { code: seg.status.code.as_str().to_owned(), description: seg.status.description.clone() },
        metadata: seg.metadata.clone(),
        rule,
        member_count,
        last_refresh: seg.refresh.as_ref().map(|r| RefreshView {
            job_id: r.job_id,
            status: r.state,
            requested_at: timestamp(r.requested_at),
            refreshed_at: r.refreshed_at.map(timestamp),
            added: r.added.clone(),
            removed: r.removed.clone(),
            error: r.error.clone(),
        }),
        created_at: timestamp(seg.created_at),
        updated_at: timestamp(seg.updated_at),
        deleted_at: seg.deleted_at.map(timestamp),
    })
}

fn page_of<T: Clone>(all: &[T], limit: u32, page: u32) -> Vec<T> {
    let start = (u64::from(page.max(1)) - 1).saturating_mul(u64::from(limit));
    usize::try_from(start)
        .ok()
        .and_then(|s| all.get(s..))
        .unwrap_or_default()
        .iter()
        .take(limit as usize)
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Segments

/// The live segment `id` of the target's scope, or not found. An id that is not a UUID is a bad
/// parameter (400), as in Midaz; the organization was checked before, so this says nothing about
/// another mandator's segments.
async fn live(s: &SegmentsServices, t: &Target, id: &str) -> Result<Segment, AppError> {
    let id = SegmentId::parse(id)
        .ok_or_else(|| AppError::InvalidParameter(FieldError::new("segmentId", "must be a UUID")))?;
    match s.segments.get_segment(&t.mandator, id).await? {
        Some(seg) if !seg.is_deleted() && seg.scope() == t.scope => Ok(seg),
        _ => Err(AppError::NotFound("segment")),
    }
}

/// Whether a live segment of the scope other than `except` has this name (exact comparison).
async fn name_taken(s: &SegmentsServices, t: &Target, name: &str, except: Option<SegmentId>) -> Result<bool, AppError> {
    Ok(s.segments
        .list_segments(&t.mandator, &SegmentQuery::scope(t.scope.clone()))
        .await?
        .iter()
        .any(|seg| seg.name == name && Some(seg.id) != except))
}

#[instrument(skip_all, fields(mandator_id = %t.mandator))]
pub async fn create(
    s: &SegmentsServices,
    t: &Target,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<SegmentView, AppError> {
    let c = CreateSegment::parse(body, now.date_naive())?;
    // A friendly early answer; the conditional write below is what guarantees uniqueness.
    if name_taken(s, t, &c.name, None).await? {
        return Err(AppError::SegmentNameTaken(c.name));
    }
    let seg = Segment {
        id: SegmentId::new(),
        mandator: t.mandator.clone(),
        ledger_id: t.scope.ledger().cloned(),
        name: c.name,
        status: c.status,
        metadata: c.metadata.into_iter().collect(),
        rule: c.rule,
        refresh: None,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        version: 1,
    };
    match s.segments.create_segment(&seg).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(AppError::SegmentNameTaken(seg.name)),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(segment_id = %seg.id, "segment created");
    view(s, &seg).await
}

/// The live segments of the target's scope matching the filters, in the requested order. The
/// store selects the scope and the creation period (on AWS a Query of the scope's partition
/// within the period, in the requested direction); the status and metadata filters apply here, on that
/// selection. Paging is in memory: `totalCount` needs every match anyway, and a scope holds
/// hundreds of segments, not millions.
async fn filtered(s: &SegmentsServices, t: &Target, q: &ListQuery) -> Result<Vec<Segment>, AppError> {
    let query =
        SegmentQuery { scope: t.scope.clone(), created: q.created, newest_first: q.sort_order == SortOrder::Desc };
    let mut all: Vec<Segment> = s
        .segments
        .list_segments(&t.mandator, &query)
        .await?
        .into_iter()
        .filter(|seg| query.selects(seg))
        .filter(|seg| q.status.as_ref().is_none_or(|code| seg.status.code == *code))
        .filter(|seg| q.metadata.iter().all(|(k, v)| seg.metadata.get(k).is_some_and(|m| m.filter_text() == *v)))
        .collect();
    // The store's order, made exact: equal creation times are ordered by id.
    all.sort_by_key(|seg| (seg.created_at, seg.id));
    if query.newest_first {
        all.reverse();
    }
    Ok(all)
}

#[instrument(skip_all, fields(mandator_id = %t.mandator))]
pub async fn list(s: &SegmentsServices, t: &Target, q: &ListQuery) -> Result<Page<SegmentView>, AppError> {
    let all = filtered(s, t, q).await?;
    let mut items = Vec::new();
    for seg in page_of(&all, q.limit, q.page) {
        items.push(view(s, &seg).await?);
    }
    Ok(Page { items, page: q.page, limit: q.limit, total_count: all.len() as u64 })
}

/// `HEAD …/segments/metrics/count`: how many segments match the filters.
pub async fn count(s: &SegmentsServices, t: &Target, q: &ListQuery) -> Result<u64, AppError> {
    Ok(filtered(s, t, q).await?.len() as u64)
}

#[instrument(skip_all, fields(mandator_id = %t.mandator))]
pub async fn get(s: &SegmentsServices, t: &Target, id: &str, now: DateTime<Utc>) -> Result<SegmentView, AppError> {
    let seg = settle_refresh(s, t, id, now).await?;
    view(s, &seg).await
}

#[instrument(skip_all, fields(mandator_id = %t.mandator))]
pub async fn patch(
    s: &SegmentsServices,
    t: &Target,
    id: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<SegmentView, AppError> {
    let p = PatchSegment::parse(body, now.date_naive())?;
    let seg = live(s, t, id).await?;
    let mut next = seg.clone();
    if let Some(name) = p.name
        && name != seg.name
    {
        if name_taken(s, t, &name, Some(seg.id)).await? {
            return Err(AppError::SegmentNameTaken(name));
        }
        next.name = name;
    }
    if let Some(status) = p.status {
        next.status = Status { code: status.code, description: status.description };
    }
    for (key, value) in p.metadata.into_iter().flatten() {
        match value {
            Some(v) => next.metadata.insert(key, v),
            None => next.metadata.remove(&key),
        };
    }
    if let Some(rule) = p.rule {
        next.rule = rule;
    }
    next.updated_at = now;
    next.version = seg.version + 1;
    match s.segments.replace_segment(&seg, &next).await {
        Ok(()) => view(s, &next).await,
        Err(StoreError::Conflict(_)) => {
            // The name lost a race, or the segment changed: tell which.
            let current = live(s, t, id).await?;
            if current.version == seg.version && next.name != seg.name {
                Err(AppError::SegmentNameTaken(next.name))
            } else {
                Err(AppError::SegmentConflict)
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Soft delete: `deletedAt` is set, the segment disappears from reads and its name is free again.
#[instrument(skip_all, fields(mandator_id = %t.mandator))]
pub async fn delete(s: &SegmentsServices, t: &Target, id: &str, now: DateTime<Utc>) -> Result<(), AppError> {
    let seg = live(s, t, id).await?;
    let mut next = seg.clone();
    next.deleted_at = Some(now);
    next.updated_at = now;
    next.version = seg.version + 1;
    match s.segments.replace_segment(&seg, &next).await {
        Ok(()) => Ok(()),
        // Deleted or changed meanwhile: a second delete answers like a read of a deleted segment.
        Err(StoreError::Conflict(_)) => live(s, t, id).await.and(Err(AppError::SegmentConflict)),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Membership

#[instrument(skip_all, fields(mandator_id = %t.mandator))]
pub async fn change_members(s: &SegmentsServices, t: &Target, id: &str, body: &[u8]) -> Result<SegmentView, AppError> {
    let change = MembershipChange::parse(body)?;
    let seg = live(s, t, id).await?;
    if !seg.status.code.accepts_members() {
        return Err(AppError::SegmentNotTaggable(seg.status.code.as_str().to_owned()));
    }
    // Only accounts of the mandator's data can be tagged; removing a non-member (of any id)
    // changes nothing, so `remove` needs no lookup.
    let mut add = Vec::with_capacity(change.add.len());
    if !change.add.is_empty() {
        let mut users = s.directory.account_users(&t.mandator, &change.add).await?;
        let mut unknown = Vec::new();
        for account_id in change.add {
            match users.remove(&account_id) {
                Some(user_id) => add.push(AccountRef { account_id, user_id }),
                None => unknown.push(account_id.to_string()),
            }
        }
        if !unknown.is_empty() {
            return Err(AppError::UnknownAccounts(unknown));
        }
    }
    s.segments.change_members(&t.mandator, seg.id, &add, &change.remove).await?;
    tracing::info!(segment_id = %seg.id, added = add.len(), removed = change.remove.len(), "membership changed");
    view(s, &seg).await
}

pub async fn list_members(
    s: &SegmentsServices,
    t: &Target,
    id: &str,
    limit: u32,
    page: u32,
) -> Result<Page<AccountRef>, AppError> {
    let seg = live(s, t, id).await?;
    let members = s.segments.members(&t.mandator, seg.id).await?;
    Ok(Page { items: page_of(&members, limit, page), page, limit, total_count: members.len() as u64 })
}

/// The live segments (of any scope) an account with this id belongs to.
pub async fn account_segments(
    s: &SegmentsServices,
    t: &Target,
    account: &str,
    limit: u32,
    page: u32,
) -> Result<Page<AccountSegment>, AppError> {
    let Ok(account_id) = AccountId::parse(account) else {
        return Ok(Page { items: Vec::new(), page, limit, total_count: 0 });
    };
    let mut found = Vec::new();
    for (segment_id, user_id) in s.segments.segments_of_account(&t.mandator, &account_id).await? {
        if let Some(seg) = s.segments.get_segment(&t.mandator, segment_id).await?
            && !seg.is_deleted()
        {
            found.push((seg, user_id));
        }
    }
    found.sort_by(|a, b| (a.0.created_at, a.0.id, &a.1).cmp(&(b.0.created_at, b.0.id, &b.1)));
    let mut items = Vec::new();
    for (seg, user_id) in page_of(&found, limit, page) {
        items.push(AccountSegment {
            user_id: user_id.to_string(),
            account_id: account_id.to_string(),
            segment: view(s, &seg).await?,
        });
    }
    Ok(Page { items, page, limit, total_count: found.len() as u64 })
}

// ---------------------------------------------------------------------------------------------
// Dynamic segments

/// `POST …/refresh`: settles a refresh in flight (and returns it); when none is in flight, starts
/// one. Returns the segment and whether a job was started.
#[instrument(skip_all, fields(mandator_id = %t.mandator))]
pub async fn refresh(
    s: &SegmentsServices,
    caller: &Caller,
    t: &Target,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(SegmentView, bool), AppError> {
    let in_flight = |seg: &Segment| {
        seg.refresh.as_ref().is_some_and(|r| matches!(r.state, RefreshState::Pending | RefreshState::Applying))
    };
    // A refresh in flight is settled as far as its job allows, never started a second time.
    if in_flight(&live(s, t, id).await?) {
        let seg = settle_refresh(s, t, id, now).await?;
        return Ok((view(s, &seg).await?, false));
    }
    let seg = settle_refresh(s, t, id, now).await?;
    if in_flight(&seg) {
        return Ok((view(s, &seg).await?, false));
    }
    let rule = seg.rule.clone().ok_or(AppError::NoRule)?;
    if !seg.status.code.accepts_members() {
        return Err(AppError::SegmentNotTaggable(seg.status.code.as_str().to_owned()));
    }
    // Computing the rule is creating a job of its type: the caller needs that type's scope too.
    caller.require_scope(&rule.segment_type.scope())?;
    let job =
        super::create_job::create_job(&s.intake, caller, rule.segment_type, rule.parameters.as_bytes(), now).await?;
    let mut next = seg.clone();
    next.refresh = Some(Refresh {
        job_id: job.job_id,
        state: RefreshState::Pending,
        requested_at: now,
        refreshed_at: None,
        added: Vec::new(),
        removed: Vec::new(),
        error: None,
    });
    next.updated_at = now;
    next.version = seg.version + 1;
    match s.segments.replace_segment(&seg, &next).await {
        Ok(()) => {}
        // The job stays orphaned; it expires with its results.
        Err(StoreError::Conflict(_)) => return Err(AppError::SegmentConflict),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(segment_id = %seg.id, job_id = %job.job_id, "refresh started");
    Ok((view(s, &next).await?, true))
}

/// Reads the live segment and brings a pending refresh as far as its job allows (module docs).
async fn settle_refresh(s: &SegmentsServices, t: &Target, id: &str, now: DateTime<Utc>) -> Result<Segment, AppError> {
    for _ in 0..SETTLE_ATTEMPTS {
        let seg = live(s, t, id).await?;
        let Some(r) = seg.refresh.clone() else { return Ok(seg) };
        let mut next = seg.clone();
        next.version = seg.version + 1;
        let mut done = r.clone();
        match r.state {
            RefreshState::Applied | RefreshState::Failed => return Ok(seg),
            RefreshState::Pending => {
                let job = s.reader.jobs.get(&t.mandator, r.job_id).await?;
                match job {
                    Some(job) if !job.is_expired(now) => match job.status {
                        JobStatus::Queued | JobStatus::Running => return Ok(seg),
                        JobStatus::Failed => {
                            done.state = RefreshState::Failed;
                            done.error = Some(job.error.clone().unwrap_or_else(|| "the job failed".into()));
                        }
                        JobStatus::Completed => {
                            let wanted = result_accounts(s, &job).await?;
                            let current: BTreeMap<AccountId, UserId> = s
                                .segments
                                .members(&t.mandator, seg.id)
                                .await?
                                .into_iter()
                                .map(|a| (a.account_id, a.user_id))
                                .collect();
                            let only_in = |a: &BTreeMap<AccountId, UserId>, b: &BTreeMap<AccountId, UserId>| {
                                a.iter()
                                    .filter(|(id, _)| !b.contains_key(*id))
                                    .map(|(id, user)| AccountRef { account_id: id.clone(), user_id: user.clone() })
                                    .collect::<Vec<_>>()
                            };
                            done.state = RefreshState::Applying;
                            done.added = only_in(&wanted, &current);
                            done.removed = only_in(&current, &wanted);
                        }
                    },
                    _ => {
                        done.state = RefreshState::Failed;
                        done.error = Some("the job expired before its result was applied".into());
                    }
                }
            }
            RefreshState::Applying => {
                let removed: Vec<AccountId> = r.removed.iter().map(|a| a.account_id.clone()).collect();
                s.segments.change_members(&t.mandator, seg.id, &r.added, &removed).await?;
                done.state = RefreshState::Applied;
                done.refreshed_at = Some(now);
            }
        }
        next.refresh = Some(done);
        match s.segments.replace_segment(&seg, &next).await {
            // Applying: go round once more to apply what was just recorded.
            Ok(()) if next.refresh.as_ref().is_some_and(|r| r.state == RefreshState::Applying) => continue,
            Ok(()) => {
                tracing::info!(segment_id = %seg.id, job_id = %r.job_id, "refresh settled");
                return Ok(next);
            }
            // A peer moved it on: read again.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::SegmentConflict)
}

/// Every account listed in a completed job's result, with its user. The result is read page by
/// page through the result reader, one page of users in memory at a time. Every rule type lists
/// accounts per user (`{userId, accounts: [{accountId, …}]}`, docs/semantics.md); an entry without
/// `accounts` is not a result of such a type and is reported as corrupt rather than read as empty.
async fn result_accounts(s: &SegmentsServices, job: &Job) -> Result<BTreeMap<AccountId, UserId>, AppError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        user_id: UserId,
        accounts: Vec<Account>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Account {
        account_id: AccountId,
    }
    let mut out = BTreeMap::new();
    let mut page = 1;
    loop {
        let p = read_page(s.reader.results.as_ref(), job, page, MAX_PER_PAGE).await?;
        for raw in &p.users {
            let entry: Entry = serde_json::from_str(raw.get())
                .map_err(|e| StoreError::Corrupt(format!("result of job {}: {e}", job.job_id)))?;
            for a in entry.accounts {
                out.insert(a.account_id, entry.user_id.clone());
            }
        }
        if u64::from(page) >= p.total_pages {
            return Ok(out);
        }
        page += 1;
    }
}
