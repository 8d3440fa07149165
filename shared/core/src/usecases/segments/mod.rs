//! The use cases of the segments API, over the ports. Transport-free: the handler calls them with
//! an authenticated [`Caller`] and the organization and ledger of the path.
//!
//! Dynamic segments (a rule, optionally a schedule) are refreshed by the service: `refresh`.
//! Every create, change and delete publishes an event: `events`.

pub mod body;
pub mod events;
pub mod refresh;
pub mod selection;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use tracing::instrument;

use super::create_job::JobIntake;
use super::read_result::ResultReader;
use super::{AppError, Caller};
use crate::domain::date::timestamp;
use crate::domain::events::{EventKind, SegmentEvent};
use crate::domain::refresh::Schedule;
use crate::domain::segment::{AccountRef, LedgerId, Scope, Segment, SegmentId, SegmentQuery, Status};
use crate::domain::{AccountId, MandatorId};
use crate::ports::{EventPublisher, RefreshQueue, RefreshStore, SegmentStore, StoreError, UserStore};
use crate::rules::body::FieldError;
use body::{CreateSegment, ListQuery, MembershipChange, PatchSegment, SortOrder};

pub const READ_SCOPE: &str = "segments/definitions.read";
pub const WRITE_SCOPE: &str = "segments/definitions.write";

/// How often a use case re-reads a segment after losing a conditional write to a peer.
pub(crate) const SETTLE_ATTEMPTS: usize = 4;

/// What the segments API, the refresh scheduler and the refresh applier run with: the job
/// services (a refresh starts a job and reads its result), the segment and refresh stores, the
/// account data (its directory resolves members; a financialBreakdown rule selects a user's
/// accounts from it), where events go and the queue of refresh steps.
#[derive(Clone)]
pub struct SegmentsServices {
    /// A refresh starts a financial-segment job (and a segment's events are signed with the
    /// mandator's callback secret, under the callback URL policy, of its callbacks) ...
    pub intake: JobIntake,
    /// ... and reads its result.
    pub reader: ResultReader,
    pub segments: Arc<dyn SegmentStore>,
    pub refreshes: Arc<dyn RefreshStore>,
    pub users: Arc<dyn UserStore>,
    pub events: Arc<dyn EventPublisher>,
    pub refresh_queue: Arc<dyn RefreshQueue>,
    pub refresh_settings: refresh::RefreshSettings,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<crate::domain::segment::Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_type: Option<crate::domain::AccountType>,
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
    /// The schedule (`{"every", "on", "at"}`).
    pub refresh: Option<Schedule>,
    /// When the next scheduled refresh starts.
    pub next_refresh_at: Option<String>,
    pub last_refresh: Option<refresh::RefreshView>,
    #[serde(rename = "callbackURL")]
    pub callback_url: Option<String>,
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

/// `seg` as the API shows it (the handler shows the segment a refresh started on with it).
pub async fn view(s: &SegmentsServices, seg: &Segment) -> Result<SegmentView, AppError> {
    let member_count = s.segments.member_count(&seg.mandator, seg.id).await?;
    let rule = match &seg.rule {
        None => None,
        Some(r) => Some(RuleView {
            segment_type: r.segment_type,
            parameters: RawValue::from_string(r.parameters.clone())
                .map_err(|e| StoreError::Corrupt(format!("rule of segment {}: {e}", seg.id)))?,
            condition: r.condition.clone(),
            account_type: r.account_type,
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
        refresh: seg.schedule,
        next_refresh_at: seg.next_refresh_at.map(timestamp),
        last_refresh: seg.last_refresh.as_ref().map(refresh::RefreshView::from),
        callback_url: seg.callback_url.clone(),
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

/// Checks a segment's `callbackURL` like a job's, and makes sure the mandator's signing secret
/// exists: the functions that later deliver the segment's events only read it.
async fn callback_target(s: &SegmentsServices, mandator: &MandatorId, url: &str) -> Result<(), AppError> {
    s.intake.callbacks.validate(url).await?;
    s.intake.callbacks.secrets.secret(mandator).await?;
    Ok(())
}

#[instrument(skip_all, fields(mandator_id = %t.mandator))]
pub async fn create(
    s: &SegmentsServices,
    t: &Target,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<SegmentView, AppError> {
    let c = CreateSegment::parse(body, now.date_naive())?;
    if let Some(url) = &c.callback_url {
        callback_target(s, &t.mandator, url).await?;
    }
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
        last_refresh: None,
        next_refresh_at: c.schedule.map(|sch| sch.next_after(now)),
        schedule: c.schedule,
        callback_url: c.callback_url,
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
    events::publish_after_write(s, &seg, SegmentEvent::segment(EventKind::Created, &seg, now)).await;
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
pub async fn get(s: &SegmentsServices, t: &Target, id: &str) -> Result<SegmentView, AppError> {
    let seg = live(s, t, id).await?;
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
    if let Some(schedule) = p.schedule {
        next.schedule = schedule;
        next.next_refresh_at = schedule.map(|sch| sch.next_after(now));
    }
    if next.schedule.is_some() && next.rule.is_none() {
        return Err(AppError::InvalidField(FieldError::new(
            "refresh",
            "needs a rule: only a dynamic segment is refreshed (remove the schedule with the rule)",
        )));
    }
    if let Some(url) = p.callback_url {
        if let Some(url) = &url {
            callback_target(s, &t.mandator, url).await?;
        }
        next.callback_url = url;
    }
    next.updated_at = now;
    next.version = seg.version + 1;
    match s.segments.replace_segment(&seg, &next).await {
        Ok(()) => {
            events::publish_after_write(s, &next, SegmentEvent::segment(EventKind::Updated, &next, now)).await;
            view(s, &next).await
        }
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
    next.next_refresh_at = None;
    next.updated_at = now;
    next.version = seg.version + 1;
    match s.segments.replace_segment(&seg, &next).await {
        Ok(()) => {
            events::publish_after_write(s, &next, SegmentEvent::segment(EventKind::Deleted, &next, now)).await;
            Ok(())
        }
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
    // While a refresh records its difference the members must hold still, or the feed would
    // not be the difference applied.
    if seg.last_refresh.as_ref().is_some_and(|r| r.state == crate::domain::refresh::RefreshState::Diffing) {
        return Err(AppError::RefreshNotRecorded("DIFFING"));
    }
    // Only accounts of the mandator's data can be tagged; removing a non-member (of any id)
    // changes nothing, so `remove` needs no lookup.
    let mut add = Vec::with_capacity(change.add.len());
    if !change.add.is_empty() {
        let mut users = s.users.account_users(&t.mandator, &change.add).await?;
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
