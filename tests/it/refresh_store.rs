//! The contract of the refresh store (`RefreshStore`, and the index of due schedules the segment
//! store's writes keep), written once over the ports and run against both adapters: the embedded
//! store, and the Segments table (with its `DueIndex`) on a local DynamoDB emulator.
//!
//! The checks of what is due read every mandator's refreshes and schedules, so each check runs on
//! a store of its own: nothing else is due there. The other checks use their own mandators.

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use segments_core::domain::refresh::{
    ChangeKind, RefreshId, RefreshRecord, RefreshState, RefreshTrigger, Schedule, whole_seconds,
};
use segments_core::domain::segment::{AccountRef, Metadata, Rule, Segment, SegmentId, Status};
use segments_core::domain::{AccountId, JobId, MandatorId, SegmentType, UserId};
use segments_core::ports::{RefreshStore, SegmentStore, StoreError};

use crate::support::contract::unique_mandator;

/// Runs each check on a store of its own, one test per check and adapter.
macro_rules! refresh_store_contract {
    ($($check:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $check() {
                    let dir = tempfile::tempdir().expect("a temporary directory");
                    let store = segments_embedded::EmbeddedStore::open(dir.path()).expect("the store opens");
                    super::$check(&store, &store).await;
                }
            )*
        }

        mod moto {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $check() {
                    let server = crate::support::moto::MotoServer::start();
                    let clients = server.clients().await;
                    let table = segments_aws::provision::segments_table_name("refresh-contract");
                    segments_aws::provision::create_segments_table(&clients.dynamodb, &table)
                        .await
                        .expect("the segments table");
                    let store = segments_aws::DynamoSegments::new(clients.dynamodb.clone(), &table);
                    super::$check(&store, &store).await;
                }
            )*
        }
    };
}

refresh_store_contract!(
    a_refresh_is_created_once_and_replaced_only_from_the_stored_version,
    refreshes_are_listed_newest_first_from_a_position,
    changes_are_recorded_idempotently_and_paged_by_account_id,
    ten_thousand_changes_are_paged_through_whole,
    due_refreshes_follow_check_at_and_leave_once_final,
    due_schedules_follow_next_refresh_at_of_live_segments,
);

/// A fixed morning: the due checks compare with times around it.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 6, 0, 0).unwrap()
}

fn account(id: &str) -> AccountRef {
    AccountRef { account_id: AccountId::parse(id).unwrap(), user_id: UserId::parse(&format!("user-of-{id}")).unwrap() }
}

fn ids(refs: &[AccountRef]) -> Vec<&str> {
    refs.iter().map(|a| a.account_id.as_str()).collect()
}

fn refresh(mandator: &MandatorId, segment: SegmentId, check_at: Option<DateTime<Utc>>) -> RefreshRecord {
    let mut r = RefreshRecord::start(
        mandator.clone(),
        segment,
        JobId::new(),
        RefreshTrigger::Manual,
        rule(),
        whole_seconds(Utc::now()),
        Duration::minutes(1),
    );
    r.check_at = check_at;
    r
}

/// The rule a dynamic segment is refreshed by.
fn rule() -> Rule {
    Rule {
        segment_type: SegmentType::HighBalance,
        parameters: r#"{"accountType":"checking","threshold":100}"#.to_owned(),
        condition: None,
        account_type: None,
    }
}

fn daily() -> Schedule {
    serde_json::from_str(r#"{"every":"day","at":"06:00"}"#).unwrap()
}

/// A live segment, scheduled to be refreshed next at `next_refresh_at` when given.
fn segment(mandator: &MandatorId, name: &str, next_refresh_at: Option<DateTime<Utc>>) -> Segment {
    let now = whole_seconds(Utc::now());
    Segment {
        id: SegmentId::new(),
        mandator: mandator.clone(),
        ledger_id: None,
        name: name.to_owned(),
        status: Status::default(),
        metadata: Metadata::new(),
        rule: next_refresh_at.map(|_| rule()),
        last_refresh: None,
        schedule: next_refresh_at.map(|_| daily()),
        next_refresh_at,
        callback_url: None,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        version: 1,
    }
}

/// `segment` changed by `change`, as the next version, written to the store.
async fn change_segment(segments: &dyn SegmentStore, segment: &Segment, change: impl FnOnce(&mut Segment)) -> Segment {
    let mut next = Segment { version: segment.version + 1, ..segment.clone() };
    change(&mut next);
    segments.replace_segment(segment, &next).await.expect("the segment is replaced");
    next
}

/// `r` changed by `change`, as the next version, written to the store.
async fn change_refresh(
    refreshes: &dyn RefreshStore,
    r: &RefreshRecord,
    change: impl FnOnce(&mut RefreshRecord),
) -> RefreshRecord {
    let mut next = r.next();
    change(&mut next);
    assert!(refreshes.replace_refresh(r, &next).await.expect("replaced"), "the stored version is {}", r.version);
    next
}

fn refresh_ids(found: &[RefreshRecord]) -> BTreeSet<RefreshId> {
    found.iter().map(|r| r.id).collect()
}

fn segment_ids(found: &[Segment]) -> BTreeSet<SegmentId> {
    found.iter().map(|s| s.id).collect()
}

pub async fn a_refresh_is_created_once_and_replaced_only_from_the_stored_version(
    _segments: &dyn SegmentStore,
    refreshes: &dyn RefreshStore,
) {
    let mandator = unique_mandator("refreshes");
    let segment = SegmentId::new();
    let first = refresh(&mandator, segment, Some(t0()));
    refreshes.create_refresh(&first).await.unwrap();
    assert!(
        matches!(refreshes.create_refresh(&first).await, Err(StoreError::Conflict(_))),
        "a second create of one id is a conflict"
    );
    assert_eq!(refreshes.get_refresh(&mandator, segment, first.id).await.unwrap(), Some(first.clone()));
    let other = unique_mandator("refreshes-other");
    assert_eq!(refreshes.get_refresh(&other, segment, first.id).await.unwrap(), None, "another mandator's");
    assert_eq!(refreshes.get_refresh(&mandator, SegmentId::new(), first.id).await.unwrap(), None, "another segment's");

    let mut applying = first.next();
    applying.state = RefreshState::Applying;
    applying.entered = 3;
    applying.left = 1;
    applying.lease_until = Some(t0() + Duration::minutes(5));
    assert!(refreshes.replace_refresh(&first, &applying).await.unwrap());
    assert_eq!(refreshes.get_refresh(&mandator, segment, first.id).await.unwrap(), Some(applying.clone()));

    // A writer that read version 1 lost the race: nothing changes.
    let mut stale = first.next();
    stale.state = RefreshState::Failed;
    stale.error = Some("too late".into());
    assert!(!refreshes.replace_refresh(&first, &stale).await.unwrap(), "a stale version is refused");
    assert_eq!(refreshes.get_refresh(&mandator, segment, first.id).await.unwrap(), Some(applying.clone()));

    let missing = refresh(&mandator, segment, None);
    assert!(!refreshes.replace_refresh(&missing, &missing.next()).await.unwrap(), "a missing refresh is not written");
    assert_eq!(refreshes.get_refresh(&mandator, segment, missing.id).await.unwrap(), None);
}

pub async fn refreshes_are_listed_newest_first_from_a_position(
    _segments: &dyn SegmentStore,
    refreshes: &dyn RefreshStore,
) {
    let mandator = unique_mandator("refresh-list");
    // A mandator whose id extends the first one: its keys share a prefix.
    let longer = MandatorId::parse(&format!("{mandator}x")).unwrap();
    let segment = SegmentId::new();
    let mut made = Vec::new();
    for _ in 0..5 {
        let r = refresh(&mandator, segment, None);
        refreshes.create_refresh(&r).await.unwrap();
        made.push(r);
    }
    refreshes.create_refresh(&refresh(&mandator, SegmentId::new(), None)).await.unwrap();
    refreshes.create_refresh(&refresh(&longer, segment, None)).await.unwrap();
    let newest_first: Vec<RefreshRecord> = made.iter().rev().cloned().collect();

    assert_eq!(refreshes.list_refreshes(&mandator, segment, None, 10).await.unwrap(), newest_first);
    assert_eq!(refreshes.list_refreshes(&mandator, segment, None, 2).await.unwrap(), newest_first[..2]);
    let after_second = refreshes.list_refreshes(&mandator, segment, Some(newest_first[1].id), 2).await.unwrap();
    assert_eq!(after_second, newest_first[2..4], "the page after a position starts below it");
    let oldest = newest_first[4].id;
    assert_eq!(refreshes.list_refreshes(&mandator, segment, Some(oldest), 10).await.unwrap(), []);
    assert_eq!(refreshes.list_refreshes(&mandator, SegmentId::new(), None, 10).await.unwrap(), []);
}

pub async fn changes_are_recorded_idempotently_and_paged_by_account_id(
    _segments: &dyn SegmentStore,
    refreshes: &dyn RefreshStore,
) {
    let mandator = unique_mandator("changes");
    let longer = MandatorId::parse(&format!("{mandator}x")).unwrap();
    let segment = SegmentId::new();
    let (r, other) = (RefreshId::new(), RefreshId::new());
    // "acc-1" is a prefix of "acc-10": the page after it must still hold "acc-10".
    let entered = [account("acc-2"), account("acc-10"), account("acc-1")];
    refreshes.put_changes(&mandator, segment, r, ChangeKind::Entered, &entered).await.unwrap();
    refreshes.put_changes(&mandator, segment, r, ChangeKind::Entered, &entered[2..]).await.unwrap();
    refreshes.put_changes(&mandator, segment, r, ChangeKind::Left, &[account("acc-9")]).await.unwrap();
    refreshes.put_changes(&mandator, segment, other, ChangeKind::Entered, &[account("acc-5")]).await.unwrap();
    refreshes.put_changes(&longer, segment, r, ChangeKind::Entered, &[account("acc-6")]).await.unwrap();

    let all = refreshes.changes(&mandator, segment, r, ChangeKind::Entered, None, 10).await.unwrap();
    assert_eq!(ids(&all), ["acc-1", "acc-10", "acc-2"], "by accountId, each once");
    assert_eq!(all[0], account("acc-1"), "with its user");
    let first = AccountId::parse("acc-1").unwrap();
    let page = refreshes.changes(&mandator, segment, r, ChangeKind::Entered, Some(&first), 1).await.unwrap();
    assert_eq!(ids(&page), ["acc-10"]);
    let last = AccountId::parse("acc-2").unwrap();
    assert_eq!(refreshes.changes(&mandator, segment, r, ChangeKind::Entered, Some(&last), 10).await.unwrap(), []);
    let left = refreshes.changes(&mandator, segment, r, ChangeKind::Left, None, 10).await.unwrap();
    assert_eq!(ids(&left), ["acc-9"]);

    refreshes.clear_changes(&mandator, segment, r).await.unwrap();
    for kind in ChangeKind::ALL {
        assert_eq!(refreshes.changes(&mandator, segment, r, kind, None, 10).await.unwrap(), [], "{kind:?} cleared");
    }
    let kept = refreshes.changes(&mandator, segment, other, ChangeKind::Entered, None, 10).await.unwrap();
    assert_eq!(ids(&kept), ["acc-5"], "another refresh keeps its changes");
    let kept = refreshes.changes(&longer, segment, r, ChangeKind::Entered, None, 10).await.unwrap();
    assert_eq!(ids(&kept), ["acc-6"], "another mandator keeps its changes");
    // A difference recorded again after a clear starts clean.
    refreshes.put_changes(&mandator, segment, r, ChangeKind::Entered, &entered[..1]).await.unwrap();
    let again = refreshes.changes(&mandator, segment, r, ChangeKind::Entered, None, 10).await.unwrap();
    assert_eq!(ids(&again), ["acc-2"]);
}

pub async fn ten_thousand_changes_are_paged_through_whole(_segments: &dyn SegmentStore, refreshes: &dyn RefreshStore) {
    const CHANGES: usize = 10_000;
    let mandator = unique_mandator("many-changes");
    let segment = SegmentId::new();
    let r = RefreshId::new();
    let accounts: Vec<AccountRef> = (0..CHANGES).map(|i| account(&format!("acc-{i:05}"))).collect();
    let started = Instant::now();
    // Pages of the applier's size, in an order that is not the accounts' order.
    for page in accounts.rchunks(1000) {
        refreshes.put_changes(&mandator, segment, r, ChangeKind::Left, page).await.unwrap();
    }
    let written = started.elapsed();
    let started = Instant::now();
    let mut read: Vec<AccountRef> = Vec::new();
    loop {
        let after = read.last().map(|a| a.account_id.clone());
        // 999: pages that do not line up with the writes.
        let page = refreshes.changes(&mandator, segment, r, ChangeKind::Left, after.as_ref(), 999).await.unwrap();
        assert!(page.len() <= 999, "a page holds at most the limit");
        if page.is_empty() {
            break;
        }
        read.extend(page);
    }
    eprintln!("{CHANGES} changes: written in {written:?}, paged through in {:?}", started.elapsed());
    assert_eq!(read, accounts, "every change once, in accountId order");
    assert_eq!(refreshes.changes(&mandator, segment, r, ChangeKind::Entered, None, 10).await.unwrap(), []);
}

pub async fn due_refreshes_follow_check_at_and_leave_once_final(
    _segments: &dyn SegmentStore,
    refreshes: &dyn RefreshStore,
) {
    let s = |n| t0() + Duration::seconds(n);
    let mandator = unique_mandator("due-refreshes");
    let segment = SegmentId::new();
    let (first, second, third) = (
        refresh(&mandator, segment, Some(s(0))),
        refresh(&mandator, segment, Some(s(10))),
        refresh(&mandator, segment, Some(s(20))),
    );
    let unchecked = refresh(&mandator, segment, None);
    for r in [&first, &second, &third, &unchecked] {
        refreshes.create_refresh(r).await.unwrap();
    }
    let due = |now, limit| refreshes.due_refreshes(now, limit);

    assert_eq!(due(s(-1), 10).await.unwrap(), [], "nothing is due before its time");
    assert_eq!(due(s(0), 10).await.unwrap(), std::slice::from_ref(&first), "due at its time: the bound is inclusive");
    assert_eq!(refresh_ids(&due(s(10), 10).await.unwrap()), refresh_ids(&[first.clone(), second.clone()]));
    let limited = due(s(20), 2).await.unwrap();
    assert_eq!(limited.len(), 2, "at most the limit");
    assert!(limited.iter().all(|r| [first.id, second.id, third.id].contains(&r.id)));

    // The first one finishes: it leaves the index. The second is looked at later: it moves.
    let mut finished = first.next();
    finished.state = RefreshState::Applied;
    finished.finished_at = Some(s(5));
    finished.check_at = None;
    assert!(refreshes.replace_refresh(&first, &finished).await.unwrap());
    let moved = change_refresh(refreshes, &second, |r| {
        r.state = RefreshState::Diffing;
        r.check_at = Some(s(30));
    })
    .await;
    assert_eq!(due(s(20), 10).await.unwrap(), std::slice::from_ref(&third), "neither the final nor the moved one");
    let at_30 = due(s(30), 10).await.unwrap();
    assert_eq!(refresh_ids(&at_30), refresh_ids(&[moved.clone(), third.clone()]));
    let found = at_30.iter().find(|r| r.id == moved.id).unwrap();
    assert_eq!(*found, moved, "a due refresh is read as stored now");
    assert!(due(s(1_000_000), 10).await.unwrap().iter().all(|r| r.id != finished.id && r.id != unchecked.id));
    assert_eq!(due(s(30), 0).await.unwrap(), [], "a limit of 0 reads nothing");
}

pub async fn due_schedules_follow_next_refresh_at_of_live_segments(
    segments: &dyn SegmentStore,
    refreshes: &dyn RefreshStore,
) {
    let s = |n| t0() + Duration::seconds(n);
    let mandator = unique_mandator("due-schedules");
    let morning = segment(&mandator, "morning", Some(s(0)));
    let later = segment(&mandator, "later", Some(s(10)));
    let unscheduled = segment(&mandator, "unscheduled", None);
    let deleted = segment(&mandator, "deleted", Some(s(0)));
    let unplanned = segment(&mandator, "unplanned", Some(s(0)));
    for seg in [&morning, &later, &unscheduled, &deleted, &unplanned] {
        segments.create_segment(seg).await.unwrap();
    }
    let due = |now, limit| refreshes.due_schedules(now, limit);
    assert_eq!(due(s(-1), 10).await.unwrap(), [], "nothing is due before its time");
    assert_eq!(
        segment_ids(&due(s(0), 10).await.unwrap()),
        segment_ids(&[morning.clone(), deleted.clone(), unplanned.clone()]),
        "due at its time: the bound is inclusive"
    );
    assert_eq!(due(s(10), 2).await.unwrap().len(), 2, "at most the limit");

    let deleted = change_segment(segments, &deleted, |seg| seg.deleted_at = Some(s(1))).await;
    let unplanned = change_segment(segments, &unplanned, |seg| {
        seg.schedule = None;
        seg.next_refresh_at = None;
    })
    .await;
    let later = change_segment(segments, &later, |seg| seg.next_refresh_at = Some(s(30))).await;
    // A change that keeps the time keeps the segment due, read as stored now.
    let morning = change_segment(segments, &morning, |seg| seg.name = "early morning".into()).await;

    assert_eq!(
        due(s(10), 10).await.unwrap(),
        std::slice::from_ref(&morning),
        "neither deleted, unscheduled nor moved ones"
    );
    let at_30 = due(s(30), 10).await.unwrap();
    assert_eq!(segment_ids(&at_30), segment_ids(&[morning.clone(), later.clone()]));
    assert_eq!(*at_30.iter().find(|seg| seg.id == later.id).unwrap(), later);
    let far = due(s(1_000_000), 10).await.unwrap();
    assert!(far.iter().all(|seg| ![deleted.id, unplanned.id, unscheduled.id].contains(&seg.id)));
}
