//! Dynamic segments end to end (docs/segments.md, docs/events.md), on the embedded store and on
//! DynamoDB, SQS and EventBridge (moto), with a simulated clock: the scheduler (`tick`) starts a
//! scheduled segment's refresh on its own and hands it to the applier once its job completed; the
//! applier (`apply`) records the change feed and applies it. Every expectation is computed here,
//! from the account data the test wrote, by the definitions of docs/semantics.md — never by the
//! service's own rule code.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use segments_core::domain::events::EVENT_SOURCE;
use segments_core::domain::refresh::{ChangeKind, RefreshMessage, RefreshState};
use segments_core::domain::segment::{AccountRef, Scope, SegmentId};
use segments_core::domain::{
    Account, AccountHistory, AccountId, AccountType, Currency, MandatorId, Money, Transaction, TransactionId, UserData,
    UserId,
};
use segments_core::usecases::segments::body::ListQuery;
use segments_core::usecases::segments::refresh::{self, ApplyOutcome, LEASE, RefreshSettings, TickReport};
use segments_core::usecases::segments::{self as segments_api, SegmentsServices, Target};
use segments_core::usecases::{AppError, Caller, Services};
use serde_json::{Value, json};

use crate::support::backend::Backend;
use crate::support::contract::unique_mandator;
use crate::support::faults::{DieAtWrite, refreshes_dying_at, segments_dying_at};
use crate::support::flows::{apply_queued_refreshes, queued_refreshes, run_queued_jobs};

on_both_backends!(a_scheduled_segment_refreshes_on_its_own_and_its_feed_lists_exactly_who_moved, |b| {
    scheduled_refreshes(b)
});
on_both_backends!(ten_thousand_accounts_leaving_keep_the_segment_small_and_the_feed_pages_through_each_once, |b| {
    ten_thousand_enter(b)
});
on_both_backends!(an_applier_dying_while_applying_ends_in_the_membership_of_an_undisturbed_run, |b| {
    crash_while_applying(b)
});
on_both_backends!(an_applier_dying_while_recording_the_feed_leaves_no_stale_change_behind, |b| {
    crash_while_diffing(b)
});
on_both_backends!(a_financial_breakdown_rule_selects_the_accounts_of_users_whose_average_compares, |b| {
    financial_breakdown_rule(b)
});
on_both_backends!(create_update_refresh_and_delete_publish_exactly_their_four_events, |b| { events_of_a_segment(b) });

/// The threshold of the highBalance rules, in cents.
const THRESHOLD_CENTS: i64 = 500_000;
/// Shards of every mandator's data.
const SHARDS: u32 = 4;
/// The balance date of every account: before any simulated day, so highBalance takes the stored
/// balance (docs/semantics.md, "Balance at end of day").
const BALANCE_DATE: &str = "2026-11-01";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("an RFC 3339 time").with_timezone(&Utc)
}

fn date(s: &str) -> NaiveDate {
    s.parse().expect("a date")
}

fn high_balance_rule() -> Value {
    json!({"segmentType": "highBalance", "parameters": {"accountType": "checking", "threshold": 5000}})
}

/// Small pages, so every run of the applier writes and reads several of them.
fn small_pages() -> RefreshSettings {
    RefreshSettings { page_size: 3, ..RefreshSettings::default() }
}

// ---------------------------------------------------------------------------------------------
// The account data a test writes, and what the rules select of it by their definitions

/// One account as the test writes it.
#[derive(Debug, Clone)]
struct Acct {
    kind: AccountType,
    balance_cents: i64,
    /// `(transactionId, bookingDate, cents, labels)`.
    transactions: Vec<(String, NaiveDate, i64, Vec<&'static str>)>,
}

/// A mandator's account data: userId → accountId → account.
#[derive(Debug, Clone, Default)]
struct Book {
    users: BTreeMap<String, BTreeMap<String, Acct>>,
}

/// `(accountId, userId)` pairs, ordered by accountId as the feeds and member lists are.
type Accounts = BTreeSet<(String, String)>;

impl Book {
    fn account(&mut self, user: &str, account: &str, kind: AccountType, balance_cents: i64) -> &mut Acct {
        let acct = Acct { kind, balance_cents, transactions: Vec::new() };
        let slot = self.users.entry(user.to_owned()).or_default().entry(account.to_owned()).or_insert(acct.clone());
        *slot = acct;
        slot
    }

    fn user_data(&self, user: &str) -> UserData {
        let eur = Currency::parse("EUR").unwrap();
        let accounts = self.users[user]
            .iter()
            .map(|(id, a)| {
                let mut transactions: Vec<Transaction> = a
                    .transactions
                    .iter()
                    .map(|(tid, booked, cents, labels)| Transaction {
                        transaction_id: TransactionId::parse(tid).unwrap(),
                        booking_date: *booked,
                        amount: Money::from_cents(*cents),
                        currency: eur,
                        counterpart_name: "Counterpart".into(),
                        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
                    })
                    .collect();
                transactions.sort_by(|x, y| {
                    (x.booking_date, x.transaction_id.as_str()).cmp(&(y.booking_date, y.transaction_id.as_str()))
                });
                AccountHistory {
                    account: Account {
                        user_id: UserId::parse(user).unwrap(),
                        account_id: AccountId::parse(id).unwrap(),
                        account_type: a.kind,
                        currency: eur,
                        balance: Money::from_cents(a.balance_cents),
                        balance_date: date(BALANCE_DATE),
                    },
                    transactions,
                }
            })
            .collect();
        UserData { user_id: UserId::parse(user).unwrap(), accounts }
    }

    /// Writes `users` through the data API's use case (a whole user per write).
    async fn write<'a>(&self, b: &Backend, mandator: &MandatorId, users: impl IntoIterator<Item = &'a str>) {
        b.users.ensure_shard_count(mandator, SHARDS).await.expect("the shard count is recorded");
        let data = b.account_data();
        for user in users {
            data.replace(mandator, &self.user_data(user)).await.unwrap_or_else(|e| panic!("{user} is written: {e:?}"));
        }
    }

    async fn write_all(&self, b: &Backend, mandator: &MandatorId) {
        self.write(b, mandator, self.users.keys().map(String::as_str)).await;
    }

    /// highBalance `{"accountType": "checking", "threshold": 5000}` by its definition: checking
    /// accounts whose balance (dated before asOf) is strictly greater than 5000.00.
    fn rich_checking(&self) -> Accounts {
        self.accounts(|a| a.kind == AccountType::Checking && a.balance_cents > THRESHOLD_CENTS)
    }

    fn accounts(&self, keep: impl Fn(&Acct) -> bool) -> Accounts {
        self.users
            .iter()
            .flat_map(|(user, accounts)| {
                accounts.iter().filter(|(_, a)| keep(a)).map(move |(id, _)| (id.clone(), user.clone()))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the segment, its refreshes and its feed through the use cases

struct Api<'a> {
    b: &'a Backend,
    s: SegmentsServices,
    core: Services,
    mandator: MandatorId,
    t: Target,
}

impl<'a> Api<'a> {
    fn new(b: &'a Backend, label: &str, settings: RefreshSettings) -> Api<'a> {
        Self::of(b, unique_mandator(label), settings)
    }

    fn of(b: &'a Backend, mandator: MandatorId, settings: RefreshSettings) -> Api<'a> {
        let t = Target { mandator: mandator.clone(), scope: Scope::Organization };
        Api { b, s: b.segments_services(settings), core: b.services(), mandator, t }
    }

    /// A caller allowed to refresh a highBalance or financialBreakdown segment.
    fn caller(&self) -> Caller {
        let scopes = ["segments/highBalance", "segments/financialBreakdown"];
        Caller { mandator: self.mandator.clone(), scopes: scopes.into_iter().map(str::to_owned).collect() }
    }

    async fn create(&self, body: Value, now: DateTime<Utc>) -> String {
        let view = segments_api::create(&self.s, &self.t, body.to_string().as_bytes(), now)
            .await
            .unwrap_or_else(|e| panic!("{body} is created: {e:?}"));
        view.id
    }

    /// The segment as `GET` shows it, as JSON.
    async fn view(&self, id: &str) -> Value {
        let view = segments_api::get(&self.s, &self.t, id).await.expect("the segment reads");
        serde_json::to_value(view).unwrap()
    }

    /// Tags accounts by hand (`PUT …/accounts`).
    async fn tag(&self, id: &str, accounts: &[&str]) {
        let body = json!({ "add": accounts }).to_string();
        segments_api::change_members(&self.s, &self.t, id, body.as_bytes()).await.expect("the accounts are tagged");
    }

    /// `POST …/refresh`; whether it started one.
    async fn refresh(&self, id: &str, now: DateTime<Utc>) -> bool {
        refresh::refresh(&self.s, &self.caller(), &self.t, id, now).await.expect("the refresh request is taken").1
    }

    async fn tick(&self, now: DateTime<Utc>) -> TickReport {
        refresh::tick(&self.s, now).await.expect("the tick runs")
    }

    async fn run_jobs(&self, now: DateTime<Utc>) -> usize {
        run_queued_jobs(self.b, &self.core, now).await
    }

    async fn members(&self, id: &str) -> Accounts {
        let id = SegmentId::parse(id).unwrap();
        let members = self.b.segments.members(&self.mandator, id).await.expect("the members read");
        let ids: Vec<&AccountId> = members.iter().map(|m| &m.account_id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "members are listed by accountId, once each");
        members.iter().map(|m| (m.account_id.to_string(), m.user_id.to_string())).collect()
    }

    /// The whole change feed of one kind, read page by page with `limit`: every page but the last
    /// is full and has a cursor, the last has none; the items come sorted by accountId, each once.
    async fn feed(&self, id: &str, refresh_id: &str, kind: ChangeKind, limit: u32) -> Vec<(String, String)> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = refresh::list_changes(&self.s, &self.t, id, refresh_id, kind, limit, cursor.as_deref())
                .await
                .expect("the feed reads");
            assert_eq!(page.limit, limit);
            assert!(page.items.len() <= limit as usize);
            items.extend(page.items.iter().map(|a| (a.account_id.to_string(), a.user_id.to_string())));
            match page.next_cursor {
                Some(next) => {
                    assert_eq!(page.items.len(), limit as usize, "only a full page continues");
                    assert_eq!(Some(next.as_str()), page.items.last().map(|a| a.account_id.as_str()));
                    cursor = Some(next);
                }
                None => break,
            }
        }
        let ids: Vec<&String> = items.iter().map(|(a, _)| a).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "the {kind:?} feed is sorted by accountId, each once");
        items
    }

    /// Both halves of the feed of a refresh, as sets (each listed once, sorted: checked by `feed`).
    async fn changes(&self, id: &str, refresh_id: &str, limit: u32) -> (Accounts, Accounts) {
        let entered = self.feed(id, refresh_id, ChangeKind::Entered, limit).await.into_iter().collect();
        let left = self.feed(id, refresh_id, ChangeKind::Left, limit).await.into_iter().collect();
        (entered, left)
    }

    /// The refresh messages queued now, all of them for `refresh_id` of segment `id`.
    async fn queued_for(&self, id: &str, refresh_id: &str) -> Vec<RefreshMessage> {
        let messages = queued_refreshes(self.b).await;
        for m in &messages {
            assert_eq!(
                (m.mandator_id.as_str(), m.segment_id.to_string(), m.refresh_id.to_string()),
                (self.mandator.as_str(), id.to_owned(), refresh_id.to_owned())
            );
        }
        messages
    }
}

fn last_refresh_id(view: &Value) -> String {
    view["lastRefresh"]["id"].as_str().unwrap_or_else(|| panic!("a last refresh: {view}")).to_owned()
}

fn pairs(list: &[(&str, &str)]) -> Accounts {
    list.iter().map(|(a, u)| ((*a).to_owned(), (*u).to_owned())).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. A scheduled segment

/// 24 users with a checking account around the threshold and a savings account far above it
/// (the wrong type); one checking balance is exactly the threshold (not above it).
fn scheduled_book() -> Book {
    let mut book = Book::default();
    for i in 0..24 {
        let user = format!("user-{i:02}");
        let cents = (i * 7919 * 113) % 1_000_000;
        book.account(&user, &format!("chk-{i:02}"), AccountType::Checking, cents);
        book.account(&user, &format!("sav-{i:02}"), AccountType::Savings, 2_000_000 + i);
    }
    book.account("user-05", "chk-05", AccountType::Checking, THRESHOLD_CENTS);
    book
}

async fn scheduled_refreshes(b: Backend) {
    let api = Api::new(&b, "scheduled", small_pages());
    let mut book = scheduled_book();
    book.write_all(&b, &api.mandator).await;
    let first_expected = book.rich_checking();
    assert!((5..20).contains(&first_expected.len()), "the data spreads around the threshold: {first_expected:?}");

    let body = json!({"name": "Rich", "rule": high_balance_rule(), "refresh": {"every": "day", "at": "06:00"}});
    let id = api.create(body, at("2026-12-01T05:00:00Z")).await;
    let view = api.view(&id).await;
    assert_eq!(view["refresh"], json!({"every": "day", "at": "06:00"}));
    assert_eq!(view["nextRefreshAt"], "2026-12-01T06:00:00.000Z");
    assert_eq!(view["lastRefresh"], Value::Null);
    // A member the rule does not select, tagged by hand: the first refresh takes it out.
    let (tagged, tagged_user) = book
        .accounts(|a| a.kind == AccountType::Checking && a.balance_cents < THRESHOLD_CENTS)
        .into_iter()
        .next()
        .expect("an account below the threshold");
    let tagged_by_hand = pairs(&[(tagged.as_str(), tagged_user.as_str())]);
    api.tag(&id, &[tagged.as_str()]).await;

    // Before 06:00 nothing starts.
    assert_eq!(api.tick(at("2026-12-01T05:59:59Z")).await, TickReport::default());
    assert_eq!(api.run_jobs(at("2026-12-01T05:59:59Z")).await, 0, "no job was created");
    assert!(queued_refreshes(&b).await.is_empty());
    assert_eq!(api.view(&id).await["lastRefresh"], Value::Null);

    // At 06:00 one refresh starts, and the next run moves to tomorrow.
    let six = at("2026-12-01T06:00:00Z");
    assert_eq!(api.tick(six).await, TickReport { started: 1, ..TickReport::default() });
    let view = api.view(&id).await;
    assert_eq!(view["nextRefreshAt"], "2026-12-02T06:00:00.000Z");
    assert_eq!(
        (view["lastRefresh"]["status"].as_str(), view["lastRefresh"]["trigger"].as_str()),
        (Some("PENDING"), Some("SCHEDULE")),
        "{view}"
    );
    let first = last_refresh_id(&view);

    // At most one unfinished refresh per segment: neither a tick, nor a request, nor the next
    // scheduled run while it is unfinished starts another.
    assert_eq!(api.tick(six).await.started, 0);
    assert!(!api.refresh(&id, six + Duration::seconds(30)).await, "a refresh is unfinished");
    let next_day = at("2026-12-02T06:00:00Z");
    let passed_over = api.tick(next_day).await;
    assert_eq!((passed_over.started, passed_over.skipped, passed_over.sent), (0, 1, 0), "{passed_over:?}");
    let view = api.view(&id).await;
    assert_eq!(last_refresh_id(&view), first);
    assert_eq!(view["nextRefreshAt"], "2026-12-03T06:00:00.000Z");
    let listed = refresh::list_refreshes(&api.s, &api.t, &id, 10, None).await.unwrap();
    assert_eq!(listed.items.len(), 1, "one refresh was started");
    assert!(queued_refreshes(&b).await.is_empty(), "its job has not run: nothing to apply");
    // The feed of a refresh whose difference is not recorded is refused, not empty.
    let early = refresh::list_changes(&api.s, &api.t, &id, &first, ChangeKind::Entered, 10, None).await;
    assert!(matches!(early, Err(AppError::RefreshNotRecorded(_))), "{early:?}");

    // Its job runs; the next look hands the refresh to the applier.
    assert_eq!(api.run_jobs(next_day).await, SHARDS as usize);
    let look = next_day + Duration::minutes(1);
    assert_eq!(api.tick(look).await, TickReport { sent: 1, ..TickReport::default() });
    let messages = api.queued_for(&id, &first).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(api.members(&id).await, tagged_by_hand, "nothing is applied before the applier runs");
    assert_eq!(refresh::apply(&api.s, &messages[0], look).await.unwrap(), ApplyOutcome::Done);

    let view = api.view(&id).await;
    let last = &view["lastRefresh"];
    assert_eq!(last["status"], "APPLIED", "{view}");
    assert_eq!((last["entered"].as_u64(), last["left"].as_u64()), (Some(first_expected.len() as u64), Some(1)));
    assert_eq!(last["finishedAt"], "2026-12-02T06:01:00.000Z");
    assert_eq!(view["memberCount"].as_u64(), Some(first_expected.len() as u64));
    let (entered, left) = api.changes(&id, &first, 3).await;
    assert_eq!(entered, first_expected);
    assert_eq!(left, tagged_by_hand);
    assert_eq!(api.members(&id).await, first_expected);
    // The message delivered again changes nothing.
    assert_eq!(refresh::apply(&api.s, &messages[0], look).await.unwrap(), ApplyOutcome::Done);
    assert_eq!(api.members(&id).await, first_expected);
    assert_eq!(api.tick(look + Duration::minutes(20)).await, TickReport::default(), "nothing is left to look at");

    // The data changes: three accounts fall (one exactly onto the threshold), two rise (one to a
    // cent above it), a new user arrives above it. Reads of the segment change nothing.
    let above: Vec<(String, String)> = first_expected.iter().take(3).cloned().collect();
    let below: Vec<(String, String)> = book
        .accounts(|a| a.kind == AccountType::Checking && a.balance_cents <= THRESHOLD_CENTS)
        .into_iter()
        .take(2)
        .collect();
    for (n, (account, user)) in above.iter().enumerate() {
        let cents = if n == 0 { THRESHOLD_CENTS } else { 100_000 + n as i64 };
        book.account(user, account, AccountType::Checking, cents);
    }
    for (n, (account, user)) in below.iter().enumerate() {
        let cents = if n == 0 { THRESHOLD_CENTS + 1 } else { 900_000 + n as i64 };
        book.account(user, account, AccountType::Checking, cents);
    }
    book.account("user-new", "chk-new", AccountType::Checking, 750_000);
    let changed: BTreeSet<&str> = above.iter().chain(&below).map(|(_, u)| u.as_str()).chain(["user-new"]).collect();
    book.write(&b, &api.mandator, changed).await;
    let second_expected = book.rich_checking();
    assert_eq!(api.view(&id).await["memberCount"].as_u64(), Some(first_expected.len() as u64));
    assert_eq!(api.members(&id).await, first_expected, "the membership waits for the next refresh");

    let third_day = at("2026-12-03T06:00:00Z");
    assert_eq!(api.tick(third_day - Duration::seconds(1)).await, TickReport::default());
    assert_eq!(api.tick(third_day).await, TickReport { started: 1, ..TickReport::default() });
    let second = last_refresh_id(&api.view(&id).await);
    assert_ne!(second, first);
    assert_eq!(api.run_jobs(third_day).await, SHARDS as usize);
    let look = third_day + Duration::minutes(1);
    assert_eq!(api.tick(look).await, TickReport { sent: 1, ..TickReport::default() });
    let applied = apply_queued_refreshes(&b, &api.s, look).await;
    assert_eq!(applied.len(), 1);
    assert_eq!((applied[0].0.refresh_id.to_string(), applied[0].1), (second.clone(), ApplyOutcome::Done));

    // The second feed lists exactly the accounts that moved.
    let moved_in: Accounts = second_expected.difference(&first_expected).cloned().collect();
    let moved_out: Accounts = first_expected.difference(&second_expected).cloned().collect();
    assert_eq!(moved_in.len(), 3, "two rose and one is new: {moved_in:?}");
    assert_eq!(moved_out.len(), 3, "three fell, one onto the threshold: {moved_out:?}");
    assert_eq!(api.changes(&id, &second, 2).await, (moved_in.clone(), moved_out.clone()));
    assert_eq!(api.members(&id).await, second_expected);
    let view = api.view(&id).await;
    assert_eq!((view["lastRefresh"]["entered"].as_u64(), view["lastRefresh"]["left"].as_u64()), (Some(3), Some(3)));
    assert_eq!(view["nextRefreshAt"], "2026-12-04T06:00:00.000Z");
    // The first feed is still what the first refresh did.
    assert_eq!(api.changes(&id, &first, 1000).await.0, first_expected);

    // Both refreshes, newest first, page by page.
    let newest = refresh::list_refreshes(&api.s, &api.t, &id, 1, None).await.unwrap();
    assert_eq!(newest.items.len(), 1);
    assert_eq!(newest.items[0].id, second);
    let older = refresh::list_refreshes(&api.s, &api.t, &id, 1, newest.next_cursor.as_deref()).await.unwrap();
    assert_eq!(older.items.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [first.as_str()]);
    assert!(older.next_cursor.is_none());
    let one = refresh::get_refresh(&api.s, &api.t, &id, &first).await.unwrap();
    assert_eq!((one.status, one.entered, one.left), (RefreshState::Applied, first_expected.len() as u64, 1));
}

// ---------------------------------------------------------------------------------------------
// 2. 10,000 accounts changing

async fn ten_thousand_enter(b: Backend) {
    let api = Api::new(&b, "ten-thousand", RefreshSettings::default());
    // Three rich users, one of them a member already, and one poor user.
    let mut book = Book::default();
    for (user, cents) in [("rich-1", 600_000), ("rich-2", 700_000), ("rich-3", 800_000), ("poor", 100)] {
        book.account(user, &format!("{user}-chk"), AccountType::Checking, cents);
    }
    book.write_all(&b, &api.mandator).await;
    let rich = book.rich_checking();
    assert_eq!(rich.len(), 3);

    let now = at("2026-12-01T09:00:00Z");
    let id = api.create(json!({"name": "Everyone rich", "rule": high_balance_rule()}), now).await;
    // 10,000 members the rule does not select (as a rule of another time, or tagging, left them),
    // plus the first rich account: written through the store, as a previous refresh's pages are.
    let segment = SegmentId::parse(&id).unwrap();
    let stale: Vec<AccountRef> = (0..10_000)
        .map(|i| AccountRef {
            account_id: AccountId::parse(&format!("gone-{i:05}")).unwrap(),
            user_id: UserId::parse(&format!("gone-user-{:04}", i / 4)).unwrap(),
        })
        .collect();
    for page in stale.chunks(1000) {
        b.segments.change_members(&api.mandator, segment, page, &[]).await.expect("members written");
    }
    let (kept_id, kept_user) = rich.iter().next().cloned().unwrap();
    let kept =
        AccountRef { account_id: AccountId::parse(&kept_id).unwrap(), user_id: UserId::parse(&kept_user).unwrap() };
    b.segments.change_members(&api.mandator, segment, &[kept], &[]).await.expect("member written");
    let expected_left: Accounts = stale.iter().map(|a| (a.account_id.to_string(), a.user_id.to_string())).collect();
    let expected_entered: Accounts = rich.iter().filter(|(a, _)| *a != kept_id).cloned().collect();

    assert!(api.refresh(&id, now).await);
    api.run_jobs(now).await;
    let look = now + Duration::minutes(1);
    assert_eq!(api.tick(look).await.sent, 1);
    let applied = apply_queued_refreshes(&b, &api.s, look).await;
    assert_eq!(applied.iter().map(|(_, o)| *o).collect::<Vec<_>>(), [ApplyOutcome::Done]);

    // The segment shows counts, never the accounts: small whatever the change.
    let view = api.view(&id).await;
    let text = view.to_string();
    assert!(text.len() < 2048, "the segment view is {} bytes: {text}", text.len());
    assert_no_arrays(&view);
    assert_eq!(view["memberCount"], 3);
    assert_eq!(
        (view["lastRefresh"]["entered"].as_u64(), view["lastRefresh"]["left"].as_u64()),
        (Some(2), Some(10_000))
    );
    let listed = segments_api::list(&api.s, &api.t, &ListQuery::default()).await.unwrap();
    let listed = serde_json::to_value(listed).unwrap();
    let text = listed.to_string();
    assert!(text.len() < 4096, "the list is {} bytes: {text}", text.len());
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    assert_no_arrays(&listed["items"][0]);

    // The feed pages through every account exactly once, in order: ten full pages of those that
    // left, one of those that entered.
    let refresh_id = last_refresh_id(&view);
    let left = api.feed(&id, &refresh_id, ChangeKind::Left, 1000).await;
    assert_eq!(left.len(), 10_000);
    assert!(left.windows(2).all(|w| w[0] < w[1]), "by accountId, each once");
    assert_eq!(left.into_iter().collect::<Accounts>(), expected_left);
    let entered = api.feed(&id, &refresh_id, ChangeKind::Entered, 1000).await;
    assert_eq!(entered.into_iter().collect::<Accounts>(), expected_entered);
    assert_eq!(api.members(&id).await, rich);
}

/// A view that holds arrays could hold accounts.
fn assert_no_arrays(v: &Value) {
    match v {
        Value::Array(items) => panic!("an array in the segment view: {items:?}"),
        Value::Object(m) => m.values().for_each(assert_no_arrays),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The applier dying mid-way

/// 8 users with one checking account each: five above the threshold, three below.
fn crash_book() -> Book {
    let mut book = Book::default();
    for (i, cents) in [900_000, 100, 650_000, 200, 510_000, 300, 700_000, 800_000].into_iter().enumerate() {
        book.account(&format!("user-{i}"), &format!("acc-{i}"), AccountType::Checking, cents);
    }
    book
}

/// Two segments with one rule and the same hand-tagged members (two the rule does not select),
/// each refreshed once at `now` up to the applier: their messages are returned.
async fn twin_refreshes(api: &Api<'_>, now: DateTime<Utc>) -> [(String, String, RefreshMessage); 2] {
    let mut out = Vec::new();
    for name in ["Undisturbed", "Dying"] {
        let id = api.create(json!({"name": name, "rule": high_balance_rule()}), now).await;
        api.tag(&id, &["acc-1", "acc-3", "acc-0"]).await;
        assert!(api.refresh(&id, now).await);
        out.push(id);
    }
    api.run_jobs(now).await;
    assert_eq!(api.tick(now + Duration::minutes(1)).await.sent, 2);
    let messages = queued_refreshes(api.b).await;
    assert_eq!(messages.len(), 2);
    let mut twins = Vec::new();
    for id in out {
        let view = api.view(&id).await;
        let refresh_id = last_refresh_id(&view);
        let m = messages.iter().find(|m| m.refresh_id.to_string() == refresh_id).expect("its message").clone();
        twins.push((id, refresh_id, m));
    }
    twins.try_into().expect("two")
}

async fn crash_while_applying(b: Backend) {
    // Pages of 2: entering takes two pages (acc-2/acc-4, acc-6/acc-7; acc-0 is a member), leaving
    // one (acc-1, acc-3).
    let api = Api::new(&b, "dies-applying", RefreshSettings { page_size: 2, ..RefreshSettings::default() });
    let book = crash_book();
    book.write_all(&b, &api.mandator).await;
    let expected = book.rich_checking();
    let now = at("2026-12-01T09:00:00Z");
    let [(calm, _, calm_message), (dying, dying_refresh, dying_message)] = twin_refreshes(&api, now).await;
    let look = now + Duration::minutes(1);
    assert_eq!(refresh::apply(&api.s, &calm_message, look).await.unwrap(), ApplyOutcome::Done);
    assert_eq!(api.members(&calm).await, expected);
    let calm_changes = api.changes(&calm, &last_refresh_id(&api.view(&calm).await), 10).await;

    // The applier dies at its second membership write: the first entering page is applied, the
    // second written but unanswered, the leaving page not written.
    let die = DieAtWrite::new(2);
    let dying_services = SegmentsServices { segments: segments_dying_at(b.segments.clone(), &die), ..api.s.clone() };
    let crashed = refresh::apply(&dying_services, &dying_message, look).await;
    assert!(crashed.is_err(), "the run died: {crashed:?}");
    assert_eq!(die.calls(), 2);
    let view = api.view(&dying).await;
    assert_eq!(view["lastRefresh"]["status"], "APPLYING", "{view}");
    let halfway = api.members(&dying).await;
    assert_ne!(halfway, expected, "the run died before the end");
    assert!(halfway.contains(&("acc-1".into(), "user-1".into())), "leaving was not applied: {halfway:?}");
    assert_eq!(api.changes(&dying, &dying_refresh, 10).await, calm_changes, "the feed was recorded whole");

    // The message again while the dead run's lease holds: not now. The scheduler sends it again
    // once the lease has run out, and not before.
    assert_eq!(refresh::apply(&api.s, &dying_message, look).await.unwrap(), ApplyOutcome::NotNow);
    assert_eq!(api.tick(look + LEASE - Duration::seconds(1)).await, TickReport::default());
    let after_lease = look + LEASE;
    assert_eq!(api.tick(after_lease).await, TickReport { sent: 1, ..TickReport::default() });
    let applied = apply_queued_refreshes(&b, &api.s, after_lease).await;
    assert_eq!(applied.len(), 1);
    assert_eq!((&applied[0].0, applied[0].1), (&dying_message, ApplyOutcome::Done));

    assert_eq!(api.members(&dying).await, api.members(&calm).await);
    assert_eq!(api.members(&dying).await, expected);
    assert_eq!(api.changes(&dying, &dying_refresh, 10).await, calm_changes, "the feed is unchanged");
    let (calm_view, dying_view) = (api.view(&calm).await, api.view(&dying).await);
    for field in ["status", "entered", "left"] {
        assert_eq!(dying_view["lastRefresh"][field], calm_view["lastRefresh"][field], "{field}");
    }
    assert_eq!(dying_view["memberCount"], calm_view["memberCount"]);
}

async fn crash_while_diffing(b: Backend) {
    let api = Api::new(&b, "dies-diffing", RefreshSettings { page_size: 2, ..RefreshSettings::default() });
    let book = crash_book();
    book.write_all(&b, &api.mandator).await;
    let expected = book.rich_checking();
    let now = at("2026-12-01T09:00:00Z");
    let [(calm, calm_refresh, calm_message), (dying, dying_refresh, dying_message)] = twin_refreshes(&api, now).await;
    let look = now + Duration::minutes(1);

    // The applier dies at its third feed write: both entering pages are recorded, the leaving
    // page (acc-1, acc-3) is recorded but unanswered.
    let die = DieAtWrite::new(3);
    let dying_services = SegmentsServices { refreshes: refreshes_dying_at(b.refreshes.clone(), &die), ..api.s.clone() };
    let crashed = refresh::apply(&dying_services, &dying_message, look).await;
    assert!(crashed.is_err(), "the run died: {crashed:?}");
    assert_eq!(die.calls(), 3);
    assert_eq!(api.view(&dying).await["lastRefresh"]["status"], "DIFFING");
    let unrecorded = refresh::list_changes(&api.s, &api.t, &dying, &dying_refresh, ChangeKind::Left, 10, None).await;
    assert!(matches!(unrecorded, Err(AppError::RefreshNotRecorded(_))), "{unrecorded:?}");
    // Tagging by hand waits while a difference is recorded.
    let body = json!({"remove": ["acc-1"]}).to_string();
    let refused = segments_api::change_members(&api.s, &api.t, &dying, body.as_bytes()).await;
    assert!(matches!(refused, Err(AppError::RefreshNotRecorded(_))), "{refused:?}");

    // Meanwhile user-1 is erased through the data API: acc-1 leaves every segment at once, so
    // the recorded "acc-1 left" is no longer part of the difference.
    b.account_data().erase(&api.mandator, &UserId::parse("user-1").unwrap()).await.expect("user-1 is erased");
    assert!(!api.members(&dying).await.contains(&("acc-1".into(), "user-1".into())));

    // Once the lease has run out the scheduler sends the refresh again — and the twin's too,
    // whose message was never handled within a run's time.
    let after_lease = look + LEASE;
    assert_eq!(api.tick(after_lease).await, TickReport { sent: 2, ..TickReport::default() });
    let applied = apply_queued_refreshes(&b, &api.s, after_lease).await;
    let mut delivered: Vec<(&RefreshMessage, ApplyOutcome)> = applied.iter().map(|(m, o)| (m, *o)).collect();
    delivered.sort_by_key(|(m, _)| m.refresh_id);
    let mut sent = vec![(&calm_message, ApplyOutcome::Done), (&dying_message, ApplyOutcome::Done)];
    sent.sort_by_key(|(m, _)| m.refresh_id);
    assert_eq!(delivered, sent);

    // The feed is exactly the difference recorded by the run that finished: no leftover.
    let (entered, left) = api.changes(&dying, &dying_refresh, 1).await;
    let was_member = pairs(&[("acc-0", "user-0")]);
    assert_eq!(entered, expected.difference(&was_member).cloned().collect());
    assert_eq!(left, pairs(&[("acc-3", "user-3")]));
    let view = api.view(&dying).await;
    assert_eq!(
        (
            view["lastRefresh"]["status"].as_str(),
            view["lastRefresh"]["entered"].as_u64(),
            view["lastRefresh"]["left"].as_u64()
        ),
        (Some("APPLIED"), Some(entered.len() as u64), Some(1))
    );
    assert_eq!(api.members(&dying).await, expected);

    // The undisturbed twin, applied after the erasure too, ends the same.
    assert_eq!(api.members(&calm).await, expected);
    assert_eq!(api.changes(&calm, &calm_refresh, 10).await, (entered, left));
}

// ---------------------------------------------------------------------------------------------
// 4. financialBreakdown

/// The monthly totals of a label group's transactions over the window, by docs/semantics.md: a
/// transaction belongs to the group when one of its labels is included and none excluded; a month
/// without any contributes 0. `None` when the user has no matching transaction in the window of
/// any of `groups` (such a user is absent from the result).
fn monthly_totals(
    accounts: &BTreeMap<String, Acct>,
    window: &[(i32, u32)],
    group: (&[&str], &[&str]),
    groups: &[(&[&str], &[&str])],
) -> Option<Vec<i64>> {
    use chrono::Datelike;
    let belongs = |labels: &[&str], (include, exclude): (&[&str], &[&str])| {
        labels.iter().any(|l| include.contains(l)) && !labels.iter().any(|l| exclude.contains(l))
    };
    let in_window = |d: NaiveDate| window.contains(&(d.year(), d.month()));
    let transactions = || accounts.values().flat_map(|a| a.transactions.iter());
    let present = transactions().any(|(_, d, _, labels)| in_window(*d) && groups.iter().any(|g| belongs(labels, *g)));
    present.then(|| {
        window
            .iter()
            .map(|m| {
                transactions()
                    .filter(|(_, d, _, labels)| (d.year(), d.month()) == *m && belongs(labels, group))
                    .map(|(_, _, cents, _)| cents)
                    .sum()
            })
            .collect()
    })
}

/// Σ / N in cents, rounded half-even to whole cents.
fn average_cents(totals: &[i64]) -> i64 {
    let sum = Decimal::from(totals.iter().sum::<i64>());
    let mean =
        (sum / Decimal::from(totals.len() as i64)).round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven);
    i64::try_from(mean.mantissa()).unwrap() / 10_i64.pow(mean.scale())
}

async fn financial_breakdown_rule(b: Backend) {
    let api = Api::new(&b, "breakdown", small_pages());
    // asOf 2026-12-15: the window of 3 complete months is September to November 2026.
    let now = at("2026-12-15T09:00:00Z");
    let window = [(2026, 9), (2026, 10), (2026, 11)];
    let housing: (&[&str], &[&str]) = (&["RENT", "MORTGAGE"], &["REFUND"]);
    let salary: (&[&str], &[&str]) = (&["SALARY"], &[]);
    let mut book = Book::default();
    // Monthly housing payments per user (cents, September to November), booked on an account of
    // the user; each user also has a savings and a checking account.
    let rents: [(&str, [i64; 3]); 8] = [
        ("u-a", [-120_000, -120_000, -120_000]), // average -1200.00
        ("u-b", [-100_000, -100_000, -100_001]), // -1000.0033… rounds to -1000.00: on the threshold
        ("u-c", [-100_000, -100_000, -99_999]),  // -999.9966… rounds to -1000.00: on it too
        ("u-d", [-150_000, 0, -150_000]),        // -1000.00: a month without rent counts 0
        ("u-e", [-50_000, -50_000, -50_000]),    // -500.00
        ("u-f", [-300_000, 0, 0]),               // -1000.00, from one month
        ("u-g", [-99_999, -99_999, -99_999]),    // -999.99: a cent short
        ("u-h", [0, 0, 0]),                      // salary only: in the result, average 0
    ];
    for (n, (user, months)) in rents.iter().enumerate() {
        let checking = book.account(user, &format!("{user}-chk"), AccountType::Checking, 100_000);
        for (i, cents) in months.iter().enumerate() {
            let (y, m) = window[i];
            if *cents != 0 {
                let labels = if i == 1 { vec!["MORTGAGE"] } else { vec!["RENT", "HOME"] };
                checking.transactions.push((
                    format!("r-{i}"),
                    NaiveDate::from_ymd_opt(y, m, 3).unwrap(),
                    *cents,
                    labels,
                ));
            }
            checking.transactions.push((
                format!("s-{i}"),
                NaiveDate::from_ymd_opt(y, m, 25).unwrap(),
                250_000,
                vec!["SALARY"],
            ));
        }
        // Outside the window (the month of asOf, and the month before the window), and a refund
        // excluded from the group: none of them count.
        checking.transactions.push(("x-now".into(), date("2026-12-02"), -900_000, vec!["RENT"]));
        checking.transactions.push(("x-old".into(), date("2026-08-31"), -900_000, vec!["RENT"]));
        checking.transactions.push(("x-refund".into(), date("2026-10-10"), -400_000, vec!["RENT", "REFUND"]));
        book.account(user, &format!("{user}-sav"), AccountType::Savings, 5_000 * n as i64);
        if n % 2 == 0 {
            book.account(user, &format!("{user}-sav2"), AccountType::Savings, 7);
        }
    }
    // A user without any transaction in the window is absent from the result: never selected.
    book.account("u-z", "u-z-chk", AccountType::Checking, 100).transactions.push((
        "x".into(),
        date("2026-12-01"),
        -900_000,
        vec!["RENT"],
    ));
    book.write_all(&b, &api.mandator).await;

    // Expected: users whose average monthly housing total is at most -1000.00.
    let threshold = -100_000;
    let selected_users: BTreeSet<String> = book
        .users
        .iter()
        .filter_map(|(user, accounts)| {
            let totals = monthly_totals(accounts, &window, housing, &[housing, salary])?;
            (average_cents(&totals) <= threshold).then(|| user.clone())
        })
        .collect();
    assert_eq!(
        selected_users.iter().map(String::as_str).collect::<Vec<_>>(),
        ["u-a", "u-b", "u-c", "u-d", "u-f"],
        "the data covers both sides of the threshold"
    );
    let of_users = |kind: Option<AccountType>| -> Accounts {
        book.users
            .iter()
            .filter(|(u, _)| selected_users.contains(*u))
            .flat_map(|(u, accounts)| {
                accounts
                    .iter()
                    .filter(|(_, a)| kind.is_none_or(|k| a.kind == k))
                    .map(move |(id, _)| (id.clone(), u.clone()))
            })
            .collect()
    };

    let parameters = json!({
        "labelGroups": [{"alias": "HOUSING", "includeLabels": ["RENT", "MORTGAGE"], "excludeLabels": ["REFUND"]}, "SALARY"],
        "durationInMonth": 3
    });
    // The threshold as the API shows money: two decimals (a literal, so the number keeps them).
    let condition: Value = serde_json::from_str(
        r#"{"figure": "average", "labelGroup": "HOUSING", "operator": "lte", "threshold": -1000.00}"#,
    )
    .expect("a condition");
    let all_accounts = json!({"segmentType": "financialBreakdown", "parameters": parameters, "condition": condition});
    let mut savings_only = all_accounts.clone();
    savings_only["accountType"] = json!("savings");
    for (name, rule, expected) in [
        ("Housing", all_accounts, of_users(None)),
        ("Housing savings", savings_only, of_users(Some(AccountType::Savings))),
    ] {
        let id = api.create(json!({"name": name, "rule": rule}), now).await;
        assert_eq!(api.view(&id).await["rule"], rule, "the rule is shown as given");
        assert!(api.refresh(&id, now).await);
        api.run_jobs(now).await;
        let look = now + Duration::minutes(1);
        assert_eq!(api.tick(look).await.sent, 1);
        let applied = apply_queued_refreshes(&b, &api.s, look).await;
        assert_eq!(applied.iter().map(|(_, o)| *o).collect::<Vec<_>>(), [ApplyOutcome::Done], "{name}");
        assert_eq!(api.members(&id).await, expected, "{name}");
        let refresh_id = last_refresh_id(&api.view(&id).await);
        assert_eq!(api.changes(&id, &refresh_id, 4).await, (expected, Accounts::new()), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Events

/// The fields of an event's `detail` (docs/events.md), and those of them that are numbers: ids,
/// states and counts, never balances, names or people.
const DETAIL_FIELDS: [&str; 15] = [
    "eventId",
    "kind",
    "organizationId",
    "ledgerId",
    "segmentId",
    "version",
    "status",
    "dynamic",
    "scheduled",
    "refreshId",
    "jobId",
    "trigger",
    "entered",
    "left",
    "memberCount",
];
const NUMBER_FIELDS: [&str; 4] = ["version", "entered", "left", "memberCount"];

/// The events of one segment's life — created, updated, a refresh applied, deleted — as a
/// subscriber receives them, after checking what every one must hold; then with the ids that
/// differ from run to run replaced by their names, so the same steps give the same list on both
/// stores.
async fn segment_life_events(b: &Backend) -> Vec<Value> {
    // One organization name on both stores (each backend is new), so their events compare.
    let api = Api::of(b, MandatorId::parse("bank-events").unwrap(), small_pages());
    let mut book = Book::default();
    book.account("kunde-1", "konto-1", AccountType::Checking, 900_000);
    book.account("kunde-2", "konto-2", AccountType::Checking, 4_200);
    book.account("kunde-3", "konto-3", AccountType::Checking, 600_000);
    book.write_all(b, &api.mandator).await;
    assert!(b.subscriber.lock().await.received().await.is_empty(), "writing account data publishes nothing");

    let now = at("2026-12-01T09:00:00Z");
    let id = api.create(json!({"name": "Rich", "metadata": {"tier": "gold"}}), now).await;
    let patch = json!({"rule": high_balance_rule(), "metadata": {"tier": "platinum"}}).to_string();
    segments_api::patch(&api.s, &api.t, &id, patch.as_bytes(), now + Duration::seconds(1)).await.expect("patched");
    assert!(api.refresh(&id, now + Duration::seconds(2)).await);
    api.run_jobs(now).await;
    // The first look at a refresh comes a poll interval after it started.
    let look = now + Duration::seconds(2) + Duration::minutes(1);
    assert_eq!(api.tick(look).await.sent, 1);
    assert_eq!(apply_queued_refreshes(b, &api.s, look).await.len(), 1);
    let view = api.view(&id).await;
    let (refresh_id, job_id) = (last_refresh_id(&view), view["lastRefresh"]["jobId"].as_str().unwrap().to_owned());
    segments_api::delete(&api.s, &api.t, &id, look + Duration::minutes(1)).await.expect("deleted");

    let received = b.subscriber.lock().await.received().await;
    let kinds: Vec<&str> = received.iter().map(|e| e["detail-type"].as_str().unwrap_or("?")).collect();
    assert_eq!(kinds, ["Segment Created", "Segment Updated", "Segment Membership Changed", "Segment Deleted"]);
    for event in &received {
        assert_eq!(event["source"], EVENT_SOURCE, "{event}");
        assert!(event["time"].is_string(), "{event}");
        let detail = event["detail"].as_object().unwrap_or_else(|| panic!("a detail object: {event}"));
        assert_eq!(detail["segmentId"].as_str(), Some(id.as_str()), "{event}");
        assert_eq!(detail["organizationId"], "bank-events", "{event}");
        for (field, value) in detail {
            assert!(DETAIL_FIELDS.contains(&field.as_str()), "{field} is not a documented detail field: {event}");
            assert_eq!(value.is_number(), NUMBER_FIELDS.contains(&field.as_str()), "{field}: {event}");
        }
        let text = event.to_string();
        for private in ["Rich", "gold", "platinum", "kunde", "konto"] {
            assert!(!text.contains(private), "{private} in {text}");
        }
    }
    let membership = &received[2]["detail"];
    assert_eq!(membership["refreshId"].as_str(), Some(refresh_id.as_str()));
    assert_eq!(membership["jobId"].as_str(), Some(job_id.as_str()));
    assert_eq!(membership["trigger"], "MANUAL");
    assert_eq!(
        (membership["entered"].as_u64(), membership["left"].as_u64(), membership["memberCount"].as_u64()),
        (Some(2), Some(0), Some(2))
    );
    let (created, updated, deleted) = (&received[0]["detail"], &received[1]["detail"], &received[3]["detail"]);
    assert_eq!((created["dynamic"].as_bool(), updated["dynamic"].as_bool()), (Some(false), Some(true)));
    let versions: Vec<u64> = [created, updated, deleted].iter().map(|d| d["version"].as_u64().unwrap()).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "each event names the version after its change: {versions:?}");
    assert!(b.subscriber.lock().await.received().await.is_empty(), "nothing more");

    received
        .into_iter()
        .map(|mut e| {
            // The event id is derived from the segment's id, which differs from run to run.
            assert!(e["detail"]["eventId"].as_str().is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()), "{e}");
            e["detail"]["eventId"] = json!("{eventId}");
            let same = json!({"source": e["source"], "detail-type": e["detail-type"], "detail": e["detail"]});
            let text = same
                .to_string()
                .replace(&id, "{segmentId}")
                .replace(&refresh_id, "{refreshId}")
                .replace(&job_id, "{jobId}");
            serde_json::from_str(&text).unwrap()
        })
        .collect()
}

async fn events_of_a_segment(b: Backend) {
    segment_life_events(&b).await;
}

/// The local event file holds what the EventBridge subscriber receives for the same steps: the
/// same `source`, `detail-type` and `detail`, in the same order.
#[tokio::test(flavor = "multi_thread")]
async fn the_local_event_file_holds_what_an_eventbridge_subscriber_receives() {
    let local = segment_life_events(&Backend::embedded()).await;
    let bus = segment_life_events(&Backend::moto().await).await;
    assert_eq!(local, bus);
}
