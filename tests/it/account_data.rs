//! A user's account data as a unit, over both backends, through the account data use case and
//! the shard reader the workers use: a change replaces what it changes and nothing is counted
//! twice, an erasure leaves nothing behind, concurrent writers are ordered, and a reader sees each
//! user wholly before or wholly after any write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use rand::{Rng, SeedableRng};
use segments_core::domain::segment::{AccountRef, Metadata, Segment, SegmentId, Status};
use segments_core::domain::{
    Account, AccountHistory, AccountId, AccountType, Currency, MandatorId, Money, SegmentType, Transaction,
    TransactionId, UserData, UserId,
};
use segments_core::ports::UserStore;
use segments_core::rules::{SegmentRequest, SegmentSpec};
use segments_core::usecases::account_data::patch::{AccountPatch, UserPatch};
use segments_core::usecases::account_data::{AccountData, DataError};

use crate::support::backend::Backend;

on_both_backends!(a_changed_transaction_is_replaced_and_counted_once_by_every_type, |b| changed_transaction(b));
on_both_backends!(an_erased_user_is_gone_from_data_shards_and_segments, |b| erasure(b));
on_both_backends!(concurrent_patches_of_one_user_are_both_applied, |b| concurrent_patches(b));
on_both_backends!(a_reader_sees_each_user_wholly_before_or_after_a_write, |b| torn_reads(b));

fn mandator() -> MandatorId {
    MandatorId::parse("bank-data").expect("a mandator id")
}

fn uid(s: &str) -> UserId {
    UserId::parse(s).expect("a user id")
}

fn aid(s: &str) -> AccountId {
    AccountId::parse(s).expect("an account id")
}

fn tid(s: &str) -> TransactionId {
    TransactionId::parse(s).expect("a transaction id")
}

fn day(s: &str) -> NaiveDate {
    s.parse().expect("a date")
}

fn eur() -> Currency {
    Currency::parse("EUR").expect("a currency")
}

fn tx(id: &str, date: &str, cents: i64, counterpart: &str, labels: &[&str]) -> Transaction {
    Transaction {
        transaction_id: tid(id),
        booking_date: day(date),
        amount: Money::from_cents(cents),
        currency: eur(),
        counterpart_name: counterpart.to_owned(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
    }
}

fn account(
    user: &str,
    id: &str,
    account_type: AccountType,
    cents: i64,
    transactions: Vec<Transaction>,
) -> AccountHistory {
    AccountHistory {
        account: Account {
            user_id: uid(user),
            account_id: aid(id),
            account_type,
            currency: eur(),
            balance: Money::from_cents(cents),
            balance_date: day("2026-10-31"),
        },
        transactions,
    }
}

fn services(b: &Backend) -> AccountData {
    AccountData { users: b.users.clone(), segments: b.segments.clone() }
}

/// Every user of every shard of the mandator, as a worker reads them.
async fn stored_users(users: &dyn UserStore) -> BTreeMap<UserId, UserData> {
    let mandator = mandator();
    let Some(shards) = users.shard_count(&mandator).await.expect("the shard count") else {
        return BTreeMap::new();
    };
    let mut all = BTreeMap::new();
    for shard in 0..shards {
        let shard_users: Vec<UserData> = users.users(&mandator, shard).try_collect().await.expect("the shard reads");
        for user in shard_users {
            assert!(all.insert(user.user_id.clone(), user).is_none(), "a user appears once");
        }
    }
    all
}

/// The five computations with parameters that every transaction of the test users falls into.
fn specs() -> Vec<(SegmentType, SegmentSpec)> {
    let bodies = [
        (SegmentType::HighBalance, r#"{"asOf":"2026-10-31","threshold":0,"accountType":"checking"}"#),
        (SegmentType::LowBalance, r#"{"asOf":"2026-10-31","threshold":100000,"durationInMonth":6}"#),
        (SegmentType::IncomeSpendingSummary, r#"{"asOf":"2026-10-31","dateFrom":"2026-01-01","dateTo":"2026-10-31"}"#),
        (SegmentType::InsuranceSpending, r#"{"asOf":"2026-10-31","durationInMonth":12}"#),
        (
            SegmentType::FinancialBreakdown,
            r#"{"asOf":"2026-10-31","durationInMonth":6,"labelGroups":["GROCERIES","SALARY"]}"#,
        ),
    ];
    bodies
        .into_iter()
        .map(|(t, body)| {
            let request = SegmentRequest::parse(t, body.as_bytes(), day("2026-11-29")).expect("valid parameters");
            (t, SegmentSpec { as_of: request.as_of, params: request.params })
        })
        .collect()
}

async fn changed_transaction(b: Backend) {
    let data = services(&b);
    let m = mandator();
    let before = UserData {
        user_id: uid("u-1"),
        accounts: vec![
            account(
                "u-1",
                "a-checking",
                AccountType::Checking,
                120_000,
                vec![
                    tx("t-salary", "2026-09-30", 300_000, "ACME GmbH", &["SALARY"]),
                    tx("t-food", "2026-10-03", -5_000, "Markt", &["GROCERIES"]),
                    tx("t-gone", "2026-10-04", -1_234, "Markt", &["GROCERIES"]),
                    tx("t-ins", "2026-10-01", -4_500, "Allianz", &["INSURANCE", "CONTRACT"]),
                ],
            ),
            account("u-1", "a-savings", AccountType::Savings, 500_000, vec![tx("t-int", "2026-09-30", 1_000, "", &[])]),
        ],
    };
    data.replace(&m, &before).await.expect("the user is stored");

    // The bank moved t-food to another day and changed its amount, reversed t-gone and closed
    // the savings account.
    let patch = UserPatch {
        accounts: vec![AccountPatch {
            account_id: aid("a-checking"),
            balance: Money::from_cents(121_234),
            balance_date: day("2026-10-31"),
            account_type: None,
            currency: None,
            upsert_transactions: vec![tx("t-food", "2026-10-20", -6_000, "Markt", &["GROCERIES"])],
            delete_transactions: vec![tid("t-gone")],
        }],
        delete_accounts: vec![aid("a-savings")],
    };
    let summary = data.patch(&m, &uid("u-1"), &patch).await.expect("the patch applies");
    assert_eq!((summary.accounts, summary.transactions), (1, 3));

    let expected = UserData {
        user_id: uid("u-1"),
        accounts: vec![account(
            "u-1",
            "a-checking",
            AccountType::Checking,
            121_234,
            vec![
                tx("t-salary", "2026-09-30", 300_000, "ACME GmbH", &["SALARY"]),
                tx("t-ins", "2026-10-01", -4_500, "Allianz", &["INSURANCE", "CONTRACT"]),
                tx("t-food", "2026-10-20", -6_000, "Markt", &["GROCERIES"]),
            ],
        )],
    };
    let stored = stored_users(b.users.as_ref()).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[&uid("u-1")], expected, "the shard holds the changed user, each transaction once");
    // The worker's computations see exactly the expected user: what each type reports is what it
    // reports for the expected data, in which the moved transaction exists once, at its new date.
    for (t, spec) in specs() {
        let from_store = spec.evaluate(&stored[&uid("u-1")]).expect("available");
        let from_expected = spec.evaluate(&expected).expect("available");
        assert_eq!(
            serde_json::to_value(&from_store).expect("json"),
            serde_json::to_value(&from_expected).expect("json"),
            "{t}"
        );
    }
    let directory = b.directory.account_users(&m, &[aid("a-checking"), aid("a-savings")]).await.expect("directory");
    assert_eq!(
        directory.into_iter().collect::<Vec<_>>(),
        [(aid("a-checking"), uid("u-1"))],
        "a closed account is released"
    );
}

fn segment(m: &MandatorId, name: &str, now: DateTime<Utc>) -> Segment {
    Segment {
        id: SegmentId::new(),
        mandator: m.clone(),
        ledger_id: None,
        name: name.to_owned(),
        status: Status::default(),
        metadata: Metadata::new(),
        rule: None,
        last_refresh: None,
        schedule: None,
        next_refresh_at: None,
        callback_url: None,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        version: 1,
    }
}

async fn erasure(b: Backend) {
    let data = services(&b);
    let m = mandator();
    for user in ["u-1", "u-2"] {
        let accounts = vec![
            account(
                user,
                &format!("{user}-a"),
                AccountType::Checking,
                10_000,
                vec![tx("t1", "2026-10-01", -100, "", &[])],
            ),
            account(user, &format!("{user}-b"), AccountType::Savings, 20_000, vec![]),
        ];
        data.replace(&m, &UserData { user_id: uid(user), accounts }).await.expect("stored");
    }
    let gold = segment(&m, "gold", Utc::now());
    b.segments.create_segment(&gold).await.expect("a segment");
    let members: Vec<AccountRef> =
        ["u-1-a", "u-1-b", "u-2-a"].iter().map(|a| AccountRef { account_id: aid(a), user_id: uid(&a[..3]) }).collect();
    b.segments.change_members(&m, gold.id, &members, &[]).await.expect("tagged");

    data.erase(&m, &uid("u-1")).await.expect("erased");

    assert!(data.get(&m, &uid("u-1")).await.expect("read").is_none(), "GET answers nothing");
    assert!(matches!(data.erase(&m, &uid("u-1")).await, Err(DataError::NotFound)), "a second erasure finds nothing");
    let stored = stored_users(b.users.as_ref()).await;
    assert_eq!(stored.keys().cloned().collect::<Vec<_>>(), [uid("u-2")], "no shard names the erased user");
    let remaining: Vec<String> =
        b.segments.members(&m, gold.id).await.expect("members").into_iter().map(|r| r.account_id.to_string()).collect();
    assert_eq!(remaining, ["u-2-a"], "the erased user's accounts left the segment");
    for account in ["u-1-a", "u-1-b"] {
        assert!(b.segments.segments_of_account(&m, &aid(account)).await.expect("read").is_empty());
    }
    let directory = b.directory.account_users(&m, &[aid("u-1-a"), aid("u-2-a")]).await.expect("directory");
    assert_eq!(directory.keys().cloned().collect::<Vec<_>>(), [aid("u-2-a")]);
    // The erased user's accountIds are free for another user.
    let taker =
        UserData { user_id: uid("u-3"), accounts: vec![account("u-3", "u-1-a", AccountType::Checking, 1, vec![])] };
    data.replace(&m, &taker).await.expect("a freed accountId can be taken");
}

async fn concurrent_patches(b: Backend) {
    let data = Arc::new(services(&b));
    let m = mandator();
    let user =
        UserData { user_id: uid("u-1"), accounts: vec![account("u-1", "a-1", AccountType::Checking, 0, vec![])] };
    data.replace(&m, &user).await.expect("stored");
    let patch = |id: &str, cents: i64| UserPatch {
        accounts: vec![AccountPatch {
            account_id: aid("a-1"),
            balance: Money::from_cents(cents),
            balance_date: day("2026-10-31"),
            account_type: None,
            currency: None,
            upsert_transactions: vec![tx(id, "2026-10-05", cents, "", &[])],
            delete_transactions: vec![],
        }],
        delete_accounts: vec![],
    };
    let writers: Vec<_> = (0..6)
        .map(|i| {
            let (data, m, p) = (data.clone(), m.clone(), patch(&format!("t-{i}"), 100 + i));
            tokio::spawn(async move { data.patch(&m, &uid("u-1"), &p).await })
        })
        .collect();
    for writer in writers {
        writer.await.expect("the writer ran").expect("every patch applies, in some order");
    }
    let stored = data.get(&m, &uid("u-1")).await.expect("read").expect("stored");
    let ids: Vec<String> = stored.data.accounts[0].transactions.iter().map(|t| t.transaction_id.to_string()).collect();
    assert_eq!(ids, ["t-0", "t-1", "t-2", "t-3", "t-4", "t-5"], "no patch was lost");
}

/// Transactions with ids and amounts zstd cannot squeeze, so a user's record spans blocks.
fn bulky_user(user: &str, transactions: usize, seed: u64, balance: i64) -> UserData {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let txs = (0..transactions)
        .map(|_| {
            let id: String = (0..24).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect();
            let date = day("2026-01-01") + chrono::Days::new(rng.random_range(0..300));
            Transaction {
                transaction_id: tid(&id),
                booking_date: date,
                amount: Money::from_cents(rng.random_range(-1_000_000..1_000_000)),
                currency: eur(),
                counterpart_name: String::new(),
                labels: vec![],
            }
        })
        .collect();
    UserData {
        user_id: uid(user),
        accounts: vec![account(user, &format!("{user}-a"), AccountType::Checking, balance, txs)],
    }
}

async fn torn_reads(b: Backend) {
    let m = mandator();
    b.users.ensure_shard_count(&m, 1).await.expect("one shard");
    // Two versions of a user whose record spans several blocks (more than one 1 MB Query page
    // together with its neighbours), written back and forth while the shard is read.
    let versions = [bulky_user("u-big", 40_000, 1, 1), bulky_user("u-big", 28_000, 2, 2)];
    let record = segments_core::snapshot::encode(&versions[0]).expect("encodable");
    assert!(segments_core::snapshot::blocks(&record).len() >= 3, "the record spans blocks");
    let neighbours = [bulky_user("u-a", 2_000, 3, 0), bulky_user("u-z", 2_000, 4, 0)];
    for user in &neighbours {
        b.users.put_user(&m, 1, user, None).await.expect("stored");
    }
    let mut version = b.users.put_user(&m, 1, &versions[0], None).await.expect("stored");

    let normalized: Vec<UserData> = versions.iter().map(normalize).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (users, m, versions, stop) = (b.users.clone(), m.clone(), versions.clone(), stop.clone());
        tokio::spawn(async move {
            let mut writes = 0;
            while !stop.load(Ordering::Relaxed) || writes < 2 {
                let next = &versions[(writes + 1) % 2];
                version = users.put_user(&m, 1, next, Some(version)).await.expect("the only writer wins");
                writes += 1;
            }
            writes
        })
    };
    for _ in 0..6 {
        let read: Vec<UserData> = b.users.users(&m, 0).try_collect().await.expect("the shard reads");
        let ids: Vec<&str> = read.iter().map(|u| u.user_id.as_str()).collect();
        assert_eq!(ids, ["u-a", "u-big", "u-z"]);
        assert!(
            read[1] == normalized[0] || read[1] == normalized[1],
            "the written user is one version wholly, never a mix of both"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("the writer ran");
    assert!(writes >= 2, "writes happened during the reads");
}

/// The user as a reader returns it: transactions in (bookingDate, transactionId) order.
fn normalize(user: &UserData) -> UserData {
    let mut user = user.clone();
    for account in &mut user.accounts {
        account
            .transactions
            .sort_by(|a, b| (a.booking_date, &a.transaction_id).cmp(&(b.booking_date, &b.transaction_id)));
    }
    user
}
