//! Refreshes of dynamic segments, run by the service (docs/segments.md):
//!
//! - [`start`]: `POST …/refresh` and the scheduler start a refresh — a financial-segment job with
//!   the segment's rule, and a refresh record `PENDING`. At most one refresh of a segment is
//!   unfinished at a time: starting is a conditional write of the segment.
//! - [`tick`]: the scheduler, every minute: starts the refreshes whose schedule is due and looks
//!   at the unfinished refreshes due a look (both found through indexes, never a scan): one whose
//!   job completed is handed to the applier by a message, one whose job failed is failed.
//! - [`apply`]: the applier, per message: records the difference between the accounts the rule
//!   selects and the members (`DIFFING`: the change feed), then applies it page by page
//!   (`APPLYING`, with a cursor), publishes "membership changed" and ends `APPLIED`. A run holds
//!   a lease on the refresh; a run that dies leaves a state the next message resumes from, and
//!   the scheduler sends that message once the lease has run out. A run that reaches its time
//!   budget saves its cursor and sends itself a message to go on.
//!
//! Reads never write: a GET shows what the steps recorded.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tracing::instrument;

use super::selection::{SelectedAccounts, select};
use super::{SegmentsServices, Target, live};
use crate::domain::events::SegmentEvent;
use crate::domain::refresh::{
    ApplyCursor, ChangeKind, RefreshId, RefreshMessage, RefreshRecord, RefreshState, RefreshTrigger, whole_seconds,
};
use crate::domain::segment::{AccountRef, Segment};
use crate::domain::{AccountId, UserId};
use crate::jobs::{Job, JobStatus, MAX_PER_PAGE};
use crate::ports::StoreError;
use crate::usecases::read_result::read_page;
use crate::usecases::{AppError, Caller};

/// How long a run of the applier holds a refresh: a Lambda runs at most 15 minutes.
pub const LEASE: Duration = Duration::minutes(15);
/// Pages of changes recorded at once.
const CONCURRENT_PAGES: usize = 8;
/// Most due schedules and due refreshes one tick takes of each; the rest wait a minute.
pub const TICK_LIMIT: u32 = 200;

/// How the scheduler and the applier work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshSettings {
    /// How often an unfinished refresh whose job runs is looked at (the deployed scheduler runs
    /// every minute; the local runner looks every few seconds).
    pub poll_interval: Duration,
    /// Changes recorded, read and applied per store call.
    pub page_size: u32,
    /// After this long a run saves its cursor and sends itself a message to go on (well inside
    /// the function's timeout).
    pub budget: std::time::Duration,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        RefreshSettings {
            poll_interval: Duration::minutes(1),
            page_size: 1000,
            budget: std::time::Duration::from_secs(10 * 60),
        }
    }
}

fn in_flight(seg: &Segment) -> bool {
    seg.last_refresh.as_ref().is_some_and(|r| !r.state.is_final())
}

// ---------------------------------------------------------------------------------------------
// Starting

/// Starts a refresh of `seg` (a live segment of the caller's mandator) unless one is unfinished,
/// which is then returned with `false`. A scheduled start also moves the segment's next run.
pub async fn start(
    s: &SegmentsServices,
    caller: &Caller,
    seg: &Segment,
    trigger: RefreshTrigger,
    now: DateTime<Utc>,
) -> Result<(Segment, bool), AppError> {
    if in_flight(seg) {
        return Ok((seg.clone(), false));
    }
    let rule = seg.rule.clone().ok_or(AppError::NoRule)?;
    if !seg.status.code.accepts_members() {
        return Err(AppError::SegmentNotTaggable(seg.status.code.as_str().to_owned()));
    }
    // Computing the rule is creating a job of its type: the caller needs that type's scope too.
    caller.require_scope(&rule.segment_type.scope())?;
    let job =
        crate::usecases::create_job::create_job(&s.intake, caller, rule.segment_type, rule.parameters.as_bytes(), now)
            .await?;
    let record = RefreshRecord::start(
        seg.mandator.clone(),
        seg.id,
        job.job_id,
        trigger,
        rule,
        now,
        s.refresh_settings.poll_interval,
    );
    s.refreshes.create_refresh(&record).await?;
    let mut next = seg.clone();
    next.last_refresh = Some(record.summary());
    if trigger == RefreshTrigger::Schedule {
        next.next_refresh_at = seg.schedule.map(|sch| sch.next_after(now));
    }
    next.updated_at = now;
    next.version = seg.version + 1;
    match s.segments.replace_segment(seg, &next).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            // Another change of the segment won: this refresh never becomes its refresh. Its job
            // runs on and expires with its results.
            let mut lost = record.next();
            lost.state = RefreshState::Failed;
            lost.error = Some("the segment changed while the refresh started".into());
            lost.finished_at = Some(now);
            lost.check_at = None;
            s.refreshes.replace_refresh(&record, &lost).await?;
            return Err(AppError::SegmentConflict);
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(segment_id = %seg.id, refresh_id = %record.id, job_id = %job.job_id, ?trigger, "refresh started");
    Ok((next, true))
}

/// `POST …/segments/{segmentId}/refresh`: the started refresh, or the unfinished one (`false`).
#[instrument(skip_all, fields(mandator_id = %t.mandator))]
pub async fn refresh(
    s: &SegmentsServices,
    caller: &Caller,
    t: &Target,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(Segment, bool), AppError> {
    let seg = live(s, t, id).await?;
    start(s, caller, &seg, RefreshTrigger::Manual, now).await
}

// ---------------------------------------------------------------------------------------------
// The scheduler

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TickReport {
    /// Scheduled refreshes started.
    pub started: u32,
    /// Due schedules passed over because the segment's last refresh is unfinished (the next run
    /// is then the following one) or it cannot be refreshed now (no rule, not taking members).
    pub skipped: u32,
    /// Due schedules left for the next tick (the mandator's live-job limit, the store busy).
    pub deferred: u32,
    /// Refreshes handed to the applier.
    pub sent: u32,
    /// Refreshes failed because their job failed or expired.
    pub failed: u32,
}

/// The scheduler's caller for a mandator: the service itself, allowed exactly the rule's type.
fn service_caller(seg: &Segment) -> Option<Caller> {
    let rule = seg.rule.as_ref()?;
    Some(Caller { mandator: seg.mandator.clone(), scopes: [rule.segment_type.scope()].into_iter().collect() })
}

/// One run of the scheduler at `now` (module docs).
#[instrument(skip_all)]
pub async fn tick(s: &SegmentsServices, now: DateTime<Utc>) -> Result<TickReport, AppError> {
    let mut report = TickReport::default();
    for due in s.refreshes.due_schedules(now, TICK_LIMIT).await? {
        // The index may lag: act on the segment as it is.
        let Some(seg) = s.segments.get_segment(&due.mandator, due.id).await? else { continue };
        if seg.is_deleted() || seg.next_refresh_at.is_none_or(|at| at > now) {
            continue;
        }
        match scheduled_start(s, &seg, now).await {
            Ok(true) => report.started += 1,
            Ok(false) => report.skipped += 1,
            Err(e) => {
                tracing::warn!(segment_id = %seg.id, error = %e, "scheduled refresh deferred");
                report.deferred += 1;
            }
        }
    }
    for r in s.refreshes.due_refreshes(now, TICK_LIMIT).await? {
        match look_at(s, &r, now).await {
            Ok(Look::Sent) => report.sent += 1,
            Ok(Look::Failed) => report.failed += 1,
            Ok(Look::Nothing) => {}
            Err(e) => tracing::warn!(refresh_id = %r.id, error = %e, "refresh not looked at; next tick"),
        }
    }
    tracing::info!(?report, "tick");
    Ok(report)
}

/// Starts the scheduled refresh of a due segment, or moves its next run when it cannot start
/// now for a reason that waiting a minute does not change. `Err` leaves it due.
async fn scheduled_start(s: &SegmentsServices, seg: &Segment, now: DateTime<Utc>) -> Result<bool, AppError> {
    let startable = seg.rule.is_some() && seg.status.code.accepts_members() && !in_flight(seg);
    if let (true, Some(caller)) = (startable, service_caller(seg)) {
        match start(s, &caller, seg, RefreshTrigger::Schedule, now).await {
            Ok((_, started)) => return Ok(started),
            // The rule's parameters no longer pass (a fixed date now too far back, say): this run
            // is skipped, the refresh record says nothing — the log does.
            Err(
                e @ (AppError::InvalidField(_) | AppError::MalformedBody(_) | AppError::SegmentTypeNotAvailable(_)),
            ) => {
                tracing::warn!(segment_id = %seg.id, error = %e, "scheduled refresh skipped: the rule is refused");
            }
            Err(e) => return Err(e),
        }
    }
    let mut next = seg.clone();
    next.next_refresh_at = seg.schedule.map(|sch| sch.next_after(now));
    next.version = seg.version + 1;
    match s.segments.replace_segment(seg, &next).await {
        Ok(()) | Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

enum Look {
    Sent,
    Failed,
    Nothing,
}

/// Looks at an unfinished refresh whose `check_at` has come.
async fn look_at(s: &SegmentsServices, r: &RefreshRecord, now: DateTime<Utc>) -> Result<Look, AppError> {
    // Read it again: the index may lag.
    let Some(r) = s.refreshes.get_refresh(&r.mandator, r.segment_id, r.id).await? else { return Ok(Look::Nothing) };
    if r.state.is_final() || r.check_at.is_none_or(|at| at > now) {
        return Ok(Look::Nothing);
    }
    let mut next = r.next();
    if r.lease_until.is_some_and(|until| until > now) {
        // A run of the applier holds it: look again when its lease ends.
        next.check_at = r.lease_until;
        s.refreshes.replace_refresh(&r, &next).await?;
        return Ok(Look::Nothing);
    }
    if r.state == RefreshState::Pending {
        match job_outcome(s, &r, now).await? {
            JobOutcome::Running => {
                next.check_at = Some(whole_seconds(now + s.refresh_settings.poll_interval));
                s.refreshes.replace_refresh(&r, &next).await?;
                return Ok(Look::Nothing);
            }
            JobOutcome::Failed(reason) => {
                fail(s, &r, reason, now).await?;
                return Ok(Look::Failed);
            }
            JobOutcome::Completed(_) => {}
        }
    }
    // Its job completed, or a run of the applier stopped short of the end: send it on. If this
    // message is lost too, the next look comes when a run would have ended.
    next.check_at = Some(whole_seconds(now + LEASE));
    if !s.refreshes.replace_refresh(&r, &next).await? {
        return Ok(Look::Nothing);
    }
    s.refresh_queue.enqueue_refresh(&RefreshMessage::of(&next)).await?;
    Ok(Look::Sent)
}

enum JobOutcome {
    Running,
    Completed(Box<Job>),
    Failed(String),
}

async fn job_outcome(s: &SegmentsServices, r: &RefreshRecord, now: DateTime<Utc>) -> Result<JobOutcome, AppError> {
    Ok(match s.reader.jobs.get(&r.mandator, r.job_id).await? {
        Some(job) if !job.is_expired(now) => match job.status {
            JobStatus::Queued | JobStatus::Running => JobOutcome::Running,
            JobStatus::Completed => JobOutcome::Completed(Box::new(job)),
            JobStatus::Failed => JobOutcome::Failed(job.error.clone().unwrap_or_else(|| "the job failed".into())),
        },
        _ => JobOutcome::Failed("the job expired before its result was applied".into()),
    })
}

// ---------------------------------------------------------------------------------------------
// The applier

/// What a run of the applier came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ApplyOutcome {
    /// The refresh is final (now or before).
    Done,
    /// The time budget ran out; a message to go on was sent.
    Continued,
    /// Its job still runs, or another run holds the refresh: the scheduler looks again.
    NotNow,
    /// No such refresh (its segment was deleted, or the message is not ours).
    Gone,
}

/// One run of the applier for `message` (module docs). An `Err` leaves the refresh as far as it
/// got, for the message to be delivered again.
#[instrument(skip_all, fields(mandator_id = %message.mandator_id, refresh_id = %message.refresh_id))]
pub async fn apply(
    s: &SegmentsServices,
    message: &RefreshMessage,
    now: DateTime<Utc>,
) -> Result<ApplyOutcome, AppError> {
    let started = Instant::now();
    let settings = s.refresh_settings;
    let Some(r) = s.refreshes.get_refresh(&message.mandator_id, message.segment_id, message.refresh_id).await? else {
        return Ok(ApplyOutcome::Gone);
    };
    if r.state.is_final() {
        return Ok(ApplyOutcome::Done);
    }
    if r.lease_until.is_some_and(|until| until > now) {
        return Ok(ApplyOutcome::NotNow);
    }
    // Claim it: of two runs, one wins this write; the other stops.
    let mut claimed = r.next();
    claimed.lease_until = Some(whole_seconds(now + LEASE));
    claimed.check_at = claimed.lease_until;
    if !s.refreshes.replace_refresh(&r, &claimed).await? {
        return Ok(ApplyOutcome::NotNow);
    }
    let r = claimed;
    match s.segments.get_segment(&r.mandator, r.segment_id).await? {
        Some(seg) if !seg.is_deleted() => {}
        _ => {
            fail(s, &r, "the segment was deleted".into(), now).await?;
            return Ok(ApplyOutcome::Done);
        }
    }
    match steps(s, r.clone(), settings, started, now).await {
        // Stored data that cannot be read (a corrupt result) will not read better next time: the
        // refresh fails with the reason instead of coming back forever. Other errors may pass.
        Err(AppError::Unavailable(StoreError::Corrupt(reason))) => {
            let current = s.refreshes.get_refresh(&r.mandator, r.segment_id, r.id).await?;
            if let Some(current) = current.filter(|c| !c.state.is_final()) {
                fail(s, &current, format!("the result cannot be read: {reason}"), now).await?;
            }
            Ok(ApplyOutcome::Done)
        }
        outcome => outcome,
    }
}

/// The steps of one run that holds the refresh `r`.
async fn steps(
    s: &SegmentsServices,
    mut r: RefreshRecord,
    settings: RefreshSettings,
    started: Instant,
    now: DateTime<Utc>,
) -> Result<ApplyOutcome, AppError> {
    loop {
        r = match r.state {
            RefreshState::Applied | RefreshState::Failed => return Ok(ApplyOutcome::Done),
            RefreshState::Pending => match job_outcome(s, &r, now).await? {
                JobOutcome::Running => {
                    let mut next = r.next();
                    next.lease_until = None;
                    next.check_at = Some(whole_seconds(now + s.refresh_settings.poll_interval));
                    s.refreshes.replace_refresh(&r, &next).await?;
                    return Ok(ApplyOutcome::NotNow);
                }
                JobOutcome::Failed(reason) => {
                    fail(s, &r, reason, now).await?;
                    return Ok(ApplyOutcome::Done);
                }
                JobOutcome::Completed(_) => step(s, &r, |n| n.state = RefreshState::Diffing, now).await?,
            },
            RefreshState::Diffing => {
                let JobOutcome::Completed(job) = job_outcome(s, &r, now).await? else {
                    fail(s, &r, "the job's result expired before its difference was recorded".into(), now).await?;
                    return Ok(ApplyOutcome::Done);
                };
                let (entered, left) = record_difference(s, &r, &job, settings).await?;
                step(
                    s,
                    &r,
                    |n| {
                        n.state = RefreshState::Applying;
                        n.entered = entered;
                        n.left = left;
                        n.cursor = None;
                    },
                    now,
                )
                .await?
            }
            RefreshState::Applying => {
                let (applied, r) = apply_pages(s, r, settings, started).await?;
                if applied {
                    finish(s, &r, now).await?;
                    return Ok(ApplyOutcome::Done);
                }
                // Out of time: release the refresh and go on in a fresh run.
                let mut next = r.next();
                next.lease_until = None;
                next.check_at = Some(whole_seconds(now + LEASE));
                if s.refreshes.replace_refresh(&r, &next).await? {
                    s.refresh_queue.enqueue_refresh(&RefreshMessage::of(&next)).await?;
                }
                return Ok(ApplyOutcome::Continued);
            }
        };
    }
}

/// Moves the refresh one state on (what `change` sets) and shows it on the segment.
async fn step(
    s: &SegmentsServices,
    r: &RefreshRecord,
    change: impl FnOnce(&mut RefreshRecord),
    now: DateTime<Utc>,
) -> Result<RefreshRecord, AppError> {
    let mut next = r.next();
    change(&mut next);
    next.lease_until = Some(whole_seconds(now + LEASE));
    next.check_at = next.lease_until;
    if !s.refreshes.replace_refresh(r, &next).await? {
        // Only the holder of the lease writes; a lost write means the lease was taken over.
        return Err(AppError::SegmentConflict);
    }
    show_on_segment(s, &next).await?;
    Ok(next)
}

/// Copies the refresh's summary onto its segment, if the segment's last refresh is this one.
async fn show_on_segment(s: &SegmentsServices, r: &RefreshRecord) -> Result<(), AppError> {
    for _ in 0..super::SETTLE_ATTEMPTS {
        let Some(seg) = s.segments.get_segment(&r.mandator, r.segment_id).await? else { return Ok(()) };
        if seg.last_refresh.as_ref().is_none_or(|last| last.id != r.id) || seg.is_deleted() {
            return Ok(());
        }
        let mut next = seg.clone();
        next.last_refresh = Some(r.summary());
        if next.last_refresh == seg.last_refresh {
            return Ok(());
        }
        next.version = seg.version + 1;
        match s.segments.replace_segment(&seg, &next).await {
            Ok(()) => return Ok(()),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::SegmentConflict)
}

/// Ends a refresh `FAILED`; the membership stays as it was.
async fn fail(s: &SegmentsServices, r: &RefreshRecord, reason: String, now: DateTime<Utc>) -> Result<(), AppError> {
    let mut next = r.next();
    next.state = RefreshState::Failed;
    next.error = Some(reason);
    next.finished_at = Some(now);
    next.check_at = None;
    next.lease_until = None;
    // The segment first: once the record is final nothing looks at it again.
    show_on_segment(s, &next).await?;
    if s.refreshes.replace_refresh(r, &next).await? {
        crate::telemetry::refresh_finished(false, 0, 0);
        tracing::warn!(segment_id = %r.segment_id, refresh_id = %r.id, error = ?next.error, "refresh failed");
    }
    Ok(())
}

/// Records the difference of the refresh: the accounts the rule selects in the job's result
/// that are not members (entered), and the members it does not select (left). What an earlier,
/// interrupted run recorded is removed first, so the feed is exactly this difference.
async fn record_difference(
    s: &SegmentsServices,
    r: &RefreshRecord,
    job: &Job,
    settings: RefreshSettings,
) -> Result<(u64, u64), AppError> {
    let wanted = selected_accounts(s, r, job).await?;
    let current: BTreeMap<AccountId, UserId> =
        s.segments.members(&r.mandator, r.segment_id).await?.into_iter().map(|a| (a.account_id, a.user_id)).collect();
    let only_in = |a: &BTreeMap<AccountId, UserId>, b: &BTreeMap<AccountId, UserId>| {
        a.iter()
            .filter(|(id, _)| !b.contains_key(*id))
            .map(|(id, user)| AccountRef { account_id: id.clone(), user_id: user.clone() })
            .collect::<Vec<_>>()
    };
    let entered = only_in(&wanted, &current);
    let left = only_in(&current, &wanted);
    s.refreshes.clear_changes(&r.mandator, r.segment_id, r.id).await?;
    // Pages are independent (idempotent puts of distinct keys): several at once, so a difference
    // of a million accounts is recorded well within one run.
    let size = settings.page_size.max(1) as usize;
    let pages: Vec<(ChangeKind, Vec<AccountRef>)> = [(ChangeKind::Entered, &entered), (ChangeKind::Left, &left)]
        .into_iter()
        .flat_map(|(kind, changes)| changes.chunks(size).map(move |page| (kind, page.to_vec())))
        .collect();
    // Each future owns its page, so the run stays `Send` (a borrowed page makes the compiler
    // unable to prove it) and can be spawned.
    let (mandator, segment, refresh) = (&r.mandator, r.segment_id, r.id);
    futures::stream::iter(pages)
        .map(|(kind, page)| async move { s.refreshes.put_changes(mandator, segment, refresh, kind, &page).await })
        .buffer_unordered(CONCURRENT_PAGES)
        .try_collect::<Vec<()>>()
        .await?;
    tracing::info!(entered = entered.len(), left = left.len(), "difference recorded");
    Ok((entered.len() as u64, left.len() as u64))
}

/// Every account the rule selects in a completed job's result, with its user (docs/segments.md,
/// "Which accounts a rule selects"). The result is read page by page; only the selection is kept.
async fn selected_accounts(
    s: &SegmentsServices,
    r: &RefreshRecord,
    job: &Job,
) -> Result<BTreeMap<AccountId, UserId>, AppError> {
    let mut out = BTreeMap::new();
    let mut shard_count = None;
    let mut page = 1;
    loop {
        let p = read_page(s.reader.results.as_ref(), job, page, MAX_PER_PAGE).await?;
        for raw in &p.users {
            let Some(selected) = select(&r.rule, raw).map_err(|e| {
                StoreError::Corrupt(format!("result of job {} for segment {}: {e}", job.job_id, r.segment_id))
            })?
            else {
                continue;
            };
            match selected.accounts {
                SelectedAccounts::Listed(ids) => {
                    out.extend(ids.into_iter().map(|id| (id, selected.user_id.clone())));
                }
                SelectedAccounts::OfUser(account_type) => {
                    let shards = match shard_count {
                        Some(n) => n,
                        None => {
                            let n = s.users.shard_count(&r.mandator).await?.unwrap_or(1);
                            *shard_count.insert(n)
                        }
                    };
                    // The user's accounts as they are now; a user erased since the job ran has none.
                    if let Some(user) = s.users.get_user(&r.mandator, shards, &selected.user_id).await? {
                        for h in &user.data.accounts {
                            if account_type.is_none_or(|t| h.account.account_type == t) {
                                out.insert(h.account.account_id.clone(), selected.user_id.clone());
                            }
                        }
                    }
                }
            }
        }
        if u64::from(page) >= p.total_pages {
            return Ok(out);
        }
        page += 1;
    }
}

/// Applies the recorded changes from the refresh's cursor on, saving the cursor after every page
/// (a run that dies resumes after the last saved page; applying a page twice changes nothing).
/// Returns whether every change is applied, and the refresh as last saved.
async fn apply_pages(
    s: &SegmentsServices,
    mut r: RefreshRecord,
    settings: RefreshSettings,
    started: Instant,
) -> Result<(bool, RefreshRecord), AppError> {
    let mut cursor = r.cursor.clone().unwrap_or(ApplyCursor { kind: ChangeKind::Entered, after: None });
    loop {
        let page = s
            .refreshes
            .changes(&r.mandator, r.segment_id, r.id, cursor.kind, cursor.after.as_ref(), settings.page_size)
            .await?;
        if let Some(last) = page.last() {
            match cursor.kind {
                ChangeKind::Entered => s.segments.change_members(&r.mandator, r.segment_id, &page, &[]).await?,
                ChangeKind::Left => {
                    let ids: Vec<AccountId> = page.iter().map(|a| a.account_id.clone()).collect();
                    s.segments.change_members(&r.mandator, r.segment_id, &[], &ids).await?
                }
            }
            cursor.after = Some(last.account_id.clone());
        }
        let done = page.len() < settings.page_size as usize;
        if done {
            match cursor.kind {
                ChangeKind::Entered => cursor = ApplyCursor { kind: ChangeKind::Left, after: None },
                ChangeKind::Left => return Ok((true, r)),
            }
        }
        let mut saved = r.next();
        saved.cursor = Some(cursor.clone());
        if !s.refreshes.replace_refresh(&r, &saved).await? {
            // Only the holder of the lease writes; a lost write means the lease was taken over.
            return Err(AppError::SegmentConflict);
        }
        r = saved;
        if started.elapsed() >= settings.budget {
            return Ok((false, r));
        }
    }
}

/// The difference is applied: tells subscribers, shows it on the segment, ends `APPLIED` — in
/// that order, so a run that dies in between repeats the event (with the same id) rather than
/// losing it.
async fn finish(s: &SegmentsServices, r: &RefreshRecord, now: DateTime<Utc>) -> Result<(), AppError> {
    let mut next = r.next();
    next.state = RefreshState::Applied;
    next.finished_at = Some(now);
    next.cursor = None;
    next.check_at = None;
    next.lease_until = None;
    if let Some(seg) = s.segments.get_segment(&r.mandator, r.segment_id).await?
        && !seg.is_deleted()
    {
        let members = s.segments.member_count(&r.mandator, r.segment_id).await?;
        super::events::publish(
            s,
            &seg,
            SegmentEvent::refreshed(&seg, &next, members, now),
            super::events::Patience::Worker,
        )
        .await?;
    }
    show_on_segment(s, &next).await?;
    if s.refreshes.replace_refresh(r, &next).await? {
        crate::telemetry::refresh_finished(true, r.entered, r.left);
        tracing::info!(entered = r.entered, left = r.left, "refresh applied");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The change feed

/// A refresh as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshView {
    pub id: String,
    pub job_id: String,
    pub trigger: RefreshTrigger,
    pub status: RefreshState,
    pub requested_at: String,
    pub finished_at: Option<String>,
    pub entered: u64,
    pub left: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<&crate::domain::refresh::RefreshSummary> for RefreshView {
    fn from(r: &crate::domain::refresh::RefreshSummary) -> Self {
        use crate::domain::date::timestamp;
        RefreshView {
            id: r.id.to_string(),
            job_id: r.job_id.to_string(),
            trigger: r.trigger,
            status: r.state,
            requested_at: timestamp(r.requested_at),
            finished_at: r.finished_at.map(timestamp),
            entered: r.entered,
            left: r.left,
            error: r.error.clone(),
        }
    }
}

/// A page of a feed: `nextCursor` continues it, absent on the last page.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CursorPage<T> {
    pub items: Vec<T>,
    pub limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Page sizes of the feeds.
pub const DEFAULT_FEED_LIMIT: u32 = 100;
pub const MAX_FEED_LIMIT: u32 = 1000;

/// `GET …/segments/{segmentId}/refreshes`: newest first.
pub async fn list_refreshes(
    s: &SegmentsServices,
    t: &Target,
    id: &str,
    limit: u32,
    cursor: Option<&str>,
) -> Result<CursorPage<RefreshView>, AppError> {
    let seg = live(s, t, id).await?;
    let before = cursor.map(|c| parse_cursor(c, RefreshId::parse)).transpose()?;
    let mut found = s.refreshes.list_refreshes(&t.mandator, seg.id, before, limit + 1).await?;
    let more = found.len() > limit as usize;
    found.truncate(limit as usize);
    Ok(CursorPage {
        next_cursor: more.then(|| found.last().map(|r| r.id.to_string())).flatten(),
        items: found.iter().map(|r| RefreshView::from(&r.summary())).collect(),
        limit,
    })
}

/// `GET …/segments/{segmentId}/refreshes/{refreshId}`.
pub async fn get_refresh(s: &SegmentsServices, t: &Target, id: &str, refresh: &str) -> Result<RefreshView, AppError> {
    let r = refresh_of(s, t, id, refresh).await?;
    Ok(RefreshView::from(&r.summary()))
}

/// `GET …/refreshes/{refreshId}/changes?kind=entered|left`: by accountId. A refresh whose
/// difference is not recorded yet has no changes to show: 409, so a client does not take an
/// empty page for "nothing changed".
pub async fn list_changes(
    s: &SegmentsServices,
    t: &Target,
    id: &str,
    refresh: &str,
    kind: ChangeKind,
    limit: u32,
    cursor: Option<&str>,
) -> Result<CursorPage<AccountRef>, AppError> {
    let r = refresh_of(s, t, id, refresh).await?;
    if matches!(r.state, RefreshState::Pending | RefreshState::Diffing) {
        return Err(AppError::RefreshNotRecorded(r.state.as_str()));
    }
    let after = cursor.map(|c| parse_cursor(c, |c| AccountId::parse(c).ok())).transpose()?;
    let mut found = s.refreshes.changes(&t.mandator, r.segment_id, r.id, kind, after.as_ref(), limit + 1).await?;
    let more = found.len() > limit as usize;
    found.truncate(limit as usize);
    Ok(CursorPage {
        next_cursor: more.then(|| found.last().map(|a| a.account_id.to_string())).flatten(),
        items: found,
        limit,
    })
}

async fn refresh_of(s: &SegmentsServices, t: &Target, id: &str, refresh: &str) -> Result<RefreshRecord, AppError> {
    let seg = live(s, t, id).await?;
    let refresh_id = RefreshId::parse(refresh).ok_or_else(|| {
        AppError::InvalidParameter(crate::rules::body::FieldError::new("refreshId", "must be a UUID"))
    })?;
    s.refreshes.get_refresh(&t.mandator, seg.id, refresh_id).await?.ok_or(AppError::NotFound("refresh"))
}

/// A feed's cursor is the last item's id; anything else is a bad parameter.
fn parse_cursor<T>(c: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, AppError> {
    parse(c).ok_or_else(|| {
        AppError::InvalidParameter(crate::rules::body::FieldError::new(
            "cursor",
            "must be a nextCursor of an earlier page",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawnable<T: Send>(_: &T) {}

    /// The local runner spawns the applier on its runtime: the run must be `Send`.
    #[allow(dead_code)]
    fn an_apply_run_can_be_spawned(s: &SegmentsServices, m: &RefreshMessage) {
        spawnable(&apply(s, m, Utc::now()));
        spawnable(&tick(s, Utc::now()));
    }
}
