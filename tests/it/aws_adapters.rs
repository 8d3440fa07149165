//! The AWS adapters against a local AWS-compatible server (moto), over real HTTP with the real
//! SDK clients. Each test starts its own server.

use std::collections::{BTreeMap, HashMap};

use crate::support::moto::MotoServer;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, KeyType, TimeToLiveStatus};
use aws_sdk_s3::types::ExpirationStatus;
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use segments_aws::provision::{
    self, RESULTS_LIFECYCLE_RULE_ID, RESULTS_PREFIX, create_account_table, create_jobs_table, create_queue_with_dlq,
    create_results_bucket,
};
use segments_aws::{
    AwsClients, AwsResources, DynamoAccounts, DynamoCatalog, DynamoJobs, JOBS_TTL_ATTRIBUTE, S3Results, SqsQueue,
};
use segments_core::domain::records::shard_of;
use segments_core::domain::{
    Account, AccountHistory, AccountId, AccountType, Currency, JobId, MandatorId, Money, SegmentType, Transaction,
    TransactionId, UserData, UserId,
};
use segments_core::jobs::{Job, JobMessage, JobStatus, ResultSummary};
use segments_core::ports::{
    AccountDirectory, AccountSource, JobQueue, JobStore, ResultStore, StoreError, UserStore, UserWriteError,
};
use segments_core::rules::SegmentParams;
use segments_core::rules::params::{FinancialBreakdownParams, HighBalanceParams, LabelGroup};
use segments_core::snapshot;

// ---------------------------------------------------------------------------------------------
// Builders

fn mandator(s: &str) -> MandatorId {
    MandatorId::parse(s).unwrap()
}

fn money(s: &str) -> Money {
    s.parse().unwrap()
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn transaction(id: &str, day: &str, amount: &str) -> Transaction {
    Transaction {
        transaction_id: TransactionId::parse(id).unwrap(),
        booking_date: date(day),
        amount: money(amount),
        currency: eur(),
        counterpart_name: String::new(),
        labels: Vec::new(),
    }
}

/// A user with these accounts (accountId, transaction count), in store order.
fn user_data(user_id: &str, accounts: &[(&str, usize)]) -> UserData {
    let accounts = accounts
        .iter()
        .map(|(id, count)| AccountHistory {
            account: Account {
                user_id: user(user_id),
                account_id: AccountId::parse(id).unwrap(),
                account_type: AccountType::Checking,
                currency: eur(),
                balance: money("12.34"),
                balance_date: date("2024-05-31"),
            },
            transactions: (0..*count).map(|k| transaction(&format!("t{k:05}"), "2024-05-01", "-1.01")).collect(),
        })
        .collect();
    UserData { user_id: user(user_id), accounts }
}

/// A user whose record takes four blocks, more than a Query page: random transaction ids do not
/// compress.
fn large_user(user_id: &str) -> UserData {
    let main = format!("{user_id}.main");
    let mut data = user_data(user_id, &[(main.as_str(), 0)]);
    let transactions = &mut data.accounts[0].transactions;
    for _ in 0..36_000 {
        let id = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        transactions.push(transaction(&id, "2024-05-01", "-1.01"));
    }
    transactions.sort_by(|a, b| a.transaction_id.cmp(&b.transaction_id));
    assert!(snapshot::encode(&data).unwrap().len() > 3 * snapshot::BLOCK_BYTES, "four blocks");
    data
}

async fn shard_users(accounts: &DynamoAccounts, m: &MandatorId, shard: u32) -> Result<Vec<UserData>, StoreError> {
    accounts.users(m, shard).try_collect().await
}

async fn accounts_on(server: &MotoServer) -> (AwsClients, DynamoAccounts) {
    let clients = server.clients().await;
    create_account_table(&clients.dynamodb, "account-data").await.unwrap();
    let accounts = DynamoAccounts::new(clients.dynamodb.clone(), "account-data");
    (clients, accounts)
}

type RawItem = HashMap<String, AttributeValue>;

/// Every item of a partition of the account data table as stored, in sort key order.
async fn raw_items(clients: &AwsClients, pk: &str) -> Vec<RawItem> {
    let pages: Vec<_> = clients
        .dynamodb
        .query()
        .table_name("account-data")
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
        .into_paginator()
        .send()
        .try_collect()
        .await
        .unwrap();
    pages.into_iter().flat_map(|p| p.items.unwrap_or_default()).collect()
}

async fn put_raw(clients: &AwsClients, item: &[(&str, AttributeValue)]) {
    let item: RawItem = item.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    clients.dynamodb.put_item().table_name("account-data").set_item(Some(item)).send().await.unwrap();
}

fn text(item: &RawItem, name: &str) -> String {
    match &item[name] {
        AttributeValue::S(v) | AttributeValue::N(v) => v.clone(),
        other => panic!("{name} is {other:?}"),
    }
}

fn bytes(item: &RawItem) -> &[u8] {
    item["b"].as_b().unwrap().as_ref()
}

fn block(pk: &str, sk: &str, version: u64, count: usize, data: &[u8]) -> Vec<(&'static str, AttributeValue)> {
    vec![
        ("pk", AttributeValue::S(pk.to_owned())),
        ("sk", AttributeValue::S(sk.to_owned())),
        ("v", AttributeValue::N(version.to_string())),
        ("n", AttributeValue::N(count.to_string())),
        ("b", AttributeValue::B(Blob::new(data))),
    ]
}

async fn directory_user(clients: &AwsClients, m: &MandatorId, account: &str) -> Option<String> {
    let out = clients
        .dynamodb
        .get_item()
        .table_name("account-data")
        .key("pk", AttributeValue::S(format!("M#{m}#ACCOUNT#{account}")))
        .key("sk", AttributeValue::S("USER".to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.item.map(|item| text(&item, "userId"))
}

// ---------------------------------------------------------------------------------------------
// Account data

/// The layout of docs/storage.md, item by item: blocks of the record carrying the version and the
/// count, a directory item per account; a smaller record and an erase leave nothing behind.
#[tokio::test]
async fn a_user_is_stored_as_blocks_of_its_record_beside_its_directory_items() {
    let server = MotoServer::start();
    let (clients, accounts) = accounts_on(&server).await;
    let bank = mandator("bank-a");
    let shards = 4;
    accounts.ensure_shard_count(&bank, shards).await.unwrap();
    let pk = format!("M#bank-a#S#{:04}", shard_of(&user("u1"), shards));

    let large = large_user("u1");
    let version = accounts.put_user(&bank, shards, &large, None).await.unwrap();
    let items = raw_items(&clients, &pk).await;
    let keys: Vec<String> = items.iter().map(|i| text(i, "sk")).collect();
    assert_eq!(keys, ["U#u1#B00", "U#u1#B01", "U#u1#B02", "U#u1#B03"]);
    for item in &items {
        let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["b", "n", "pk", "sk", "v"], "short names, nothing else");
        assert_eq!((text(item, "v"), text(item, "n")), (version.to_string(), "4".to_owned()));
        assert!(bytes(item).len() <= snapshot::BLOCK_BYTES);
    }
    let record: Vec<u8> = items.iter().flat_map(|i| bytes(i).to_vec()).collect();
    assert_eq!(snapshot::decode(user("u1"), &record).unwrap(), large);
    assert_eq!(directory_user(&clients, &bank, "u1.main").await.as_deref(), Some("u1"));

    // A smaller record: one block, no stale block of the larger one; the dropped account released.
    let small = user_data("u1", &[("u1.other", 2)]);
    let smaller = accounts.put_user(&bank, shards, &small, Some(version)).await.unwrap();
    let items = raw_items(&clients, &pk).await;
    let keys: Vec<(String, String, String)> =
        items.iter().map(|i| (text(i, "sk"), text(i, "v"), text(i, "n"))).collect();
    assert_eq!(keys, [("U#u1#B00".to_owned(), smaller.to_string(), "1".to_owned())]);
    assert_eq!(directory_user(&clients, &bank, "u1.main").await, None);
    assert_eq!(directory_user(&clients, &bank, "u1.other").await.as_deref(), Some("u1"));
    assert_eq!(shard_users(&accounts, &bank, shard_of(&user("u1"), shards)).await.unwrap(), [small]);

    // Erased: no item of the user is left.
    accounts.delete_user(&bank, shards, &user("u1"), smaller).await.unwrap();
    assert!(raw_items(&clients, &pk).await.is_empty());
    assert_eq!(directory_user(&clients, &bank, "u1.other").await, None);
}

#[tokio::test]
async fn a_mandator_s_shard_count_is_fixed_once_recorded() {
    let server = MotoServer::start();
    let (_, accounts) = accounts_on(&server).await;
    let bank = mandator("bank-a");

    accounts.ensure_shard_count(&bank, 4).await.unwrap();
    accounts.ensure_shard_count(&bank, 4).await.unwrap();
    let err = accounts.ensure_shard_count(&bank, 8).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(accounts.shard_count(&bank).await.unwrap(), Some(4));
    // Each mandator has its own.
    accounts.ensure_shard_count(&mandator("bank-b"), 8).await.unwrap();
    assert_eq!(accounts.shard_count(&mandator("bank-b")).await.unwrap(), Some(8));
}

/// Account data written in the layout before this one (an item per account and per transaction)
/// is never read as data, nor written over: the mandator must be imported again.
#[tokio::test]
async fn a_shard_holding_the_earlier_layout_is_refused() {
    let server = MotoServer::start();
    let (clients, accounts) = accounts_on(&server).await;
    let bank = mandator("bank-a");
    accounts.ensure_shard_count(&bank, 1).await.unwrap();
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: &str| AttributeValue::N(v.to_owned());
    let pk = s("M#bank-a#S#0000");
    put_raw(
        &clients,
        &[
            ("pk", pk.clone()),
            ("sk", s("U#u1#A#a1")),
            ("itemType", s("ACCOUNT")),
            ("userId", s("u1")),
            ("accountId", s("a1")),
            ("accountType", s("checking")),
            ("currency", s("EUR")),
            ("balance", n("1.00")),
            ("balanceDate", s("2024-05-31")),
        ],
    )
    .await;
    put_raw(
        &clients,
        &[
            ("pk", pk.clone()),
            ("sk", s("U#u1#A#a1#T#2024-05-01#t1")),
            ("itemType", s("TRANSACTION")),
            ("userId", s("u1")),
            ("accountId", s("a1")),
            ("transactionId", s("t1")),
            ("bookingDate", s("2024-05-01")),
            ("amount", n("-1.00")),
            ("currency", s("EUR")),
        ],
    )
    .await;
    let refused = |e: &StoreError| {
        matches!(e, StoreError::Corrupt(m) if m.contains("bank-a") && m.contains("earlier layout")
            && m.contains("imported again") && m.contains("segments import"))
    };

    let read: Vec<Result<UserData, StoreError>> = futures::StreamExt::collect(accounts.users(&bank, 0)).await;
    assert!(matches!(read.as_slice(), [Err(e)] if refused(e) && !e.is_transient()), "{read:?}");
    let ids: Vec<Result<UserId, StoreError>> = futures::StreamExt::collect(accounts.user_ids(&bank, 0)).await;
    assert!(matches!(ids.as_slice(), [Err(e)] if refused(e)), "{ids:?}");
    let got = accounts.get_user(&bank, 1, &user("u1")).await;
    assert!(matches!(&got, Err(e) if refused(e)), "{got:?}");
    let put = accounts.put_user(&bank, 1, &user_data("u1", &[("a1", 1)]), None).await;
    assert!(matches!(&put, Err(UserWriteError::Store(e)) if refused(e)), "{put:?}");
    assert_eq!(raw_items(&clients, "M#bank-a#S#0000").await.len(), 2, "nothing written over it");

    // Never mixed with users in this layout on the same shard either.
    accounts.put_user(&bank, 1, &user_data("u0", &[("a0", 1)]), None).await.unwrap();
    let read: Vec<Result<UserData, StoreError>> = futures::StreamExt::collect(accounts.users(&bank, 0)).await;
    assert!(matches!(read.last(), Some(Err(e)) if refused(e)), "{read:?}");
}

/// Blocks that keep disagreeing (two versions at once) are read again a few times, then the
/// store is reported unavailable, never a mix returned; a record that does not decode is corrupt.
#[tokio::test]
async fn records_that_are_not_whole_or_do_not_decode_are_never_returned() {
    let server = MotoServer::start();
    let (clients, accounts) = accounts_on(&server).await;
    let bank = mandator("bank-a");
    accounts.ensure_shard_count(&bank, 1).await.unwrap();
    let pk = "M#bank-a#S#0000";
    let record = snapshot::encode(&user_data("u1", &[("a1", 3)])).unwrap();
    put_raw(&clients, &block(pk, "U#u1#B00", 2, 1, &record)).await;
    put_raw(&clients, &block(pk, "U#u1#B01", 1, 2, b"rest of an earlier record")).await;

    let got = accounts.get_user(&bank, 1, &user("u1")).await;
    assert!(matches!(&got, Err(e) if e.is_transient()), "{got:?}");
    let read = shard_users(&accounts, &bank, 0).await;
    assert!(matches!(&read, Err(e) if e.is_transient()), "{read:?}");

    put_raw(&clients, &block(pk, "U#u2#B00", 7, 1, b"not zstd")).await;
    let got = accounts.get_user(&bank, 1, &user("u2")).await;
    assert!(matches!(&got, Err(StoreError::Corrupt(m)) if m.contains("u2")), "{got:?}");
}

/// A shard read while one of its users is rewritten and erased sees the user whole, before or
/// after each write, or not at all: the record spans two Query pages, so a write may land between
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_read_during_writes_sees_every_user_whole() {
    let server = MotoServer::start();
    let (_, accounts) = accounts_on(&server).await;
    let bank = mandator("bank-a");
    accounts.ensure_shard_count(&bank, 1).await.unwrap();
    let large = large_user("u1");
    let small = user_data("u1", &[("u1.small", 3)]);
    let others = [user_data("u0", &[("u0.a", 1)]), user_data("u2", &[("u2.a", 1)])];
    for data in others.iter().chain([&large]) {
        accounts.put_user(&bank, 1, data, None).await.unwrap();
    }

    let writer = {
        let (accounts, bank) = (accounts.clone(), bank.clone());
        let (large, small) = (large.clone(), small.clone());
        tokio::spawn(async move {
            for i in 0..12 {
                let version = accounts.get_user(&bank, 1, &user("u1")).await.unwrap().map(|s| s.version);
                match i % 3 {
                    0 => drop(accounts.put_user(&bank, 1, &small, version).await.unwrap()),
                    1 => accounts.delete_user(&bank, 1, &user("u1"), version.unwrap()).await.unwrap(),
                    _ => drop(accounts.put_user(&bank, 1, &large, version).await.unwrap()),
                }
            }
        })
    };
    let whole = |u: &UserData| *u == large || *u == small;
    loop {
        let finished = writer.is_finished();
        let users = shard_users(&accounts, &bank, 0).await.unwrap();
        assert_eq!([users.first(), users.last()], [Some(&others[0]), Some(&others[1])]);
        assert!(users.len() == 2 || users.len() == 3 && whole(&users[1]), "u1 whole or erased");
        let stored = accounts.get_user(&bank, 1, &user("u1")).await.unwrap();
        assert!(stored.is_none_or(|s| whole(&s.data)), "u1 whole or erased");
        if finished {
            break;
        }
    }
    writer.await.unwrap();
}

/// Writers racing on one user: the transaction's conditions, not only the read before it, decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_writers_exactly_one_wins() {
    let server = MotoServer::start();
    let (_, accounts) = accounts_on(&server).await;
    let bank = mandator("bank-a");
    accounts.ensure_shard_count(&bank, 2).await.unwrap();
    let version = accounts.put_user(&bank, 2, &user_data("u1", &[("u1.a", 1)]), None).await.unwrap();

    // On one version of one user.
    let writes = (0..6).map(|i| {
        let (accounts, bank) = (accounts.clone(), bank.clone());
        tokio::spawn(async move {
            let data = user_data("u1", &[("u1.a", i + 1)]);
            accounts.put_user(&bank, 2, &data, Some(version)).await
        })
    });
    let results: Vec<_> = futures::future::join_all(writes).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(_) | Err(UserWriteError::VersionChanged))), "{results:?}");

    // On one accountId, by new users.
    let claims = (0..6).map(|i| {
        let (accounts, bank) = (accounts.clone(), bank.clone());
        tokio::spawn(async move {
            let data = user_data(&format!("w{i}"), &[("shared", 1)]);
            (data.user_id.clone(), accounts.put_user(&bank, 2, &data, None).await)
        })
    });
    let results: Vec<_> = futures::future::join_all(claims).await.into_iter().map(Result::unwrap).collect();
    let winners: Vec<&UserId> = results.iter().filter(|(_, r)| r.is_ok()).map(|(u, _)| u).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (_, result) in &results {
        match result {
            Ok(_) => {}
            Err(UserWriteError::AccountHeld { account, holder }) => {
                assert_eq!((account.as_str(), holder), ("shared", winners[0]));
            }
            other => panic!("{other:?}"),
        }
    }
    let holders = accounts.account_users(&bank, &[AccountId::parse("shared").unwrap()]).await.unwrap();
    assert_eq!(holders.values().collect::<Vec<_>>(), winners);
}

#[tokio::test]
async fn a_missing_table_is_an_unavailable_store() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    let accounts = DynamoAccounts::new(clients.dynamodb.clone(), "no-such-table");
    let err = shard_users(&accounts, &mandator("bank-a"), 0).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let err = accounts.put_user(&mandator("bank-a"), 1, &user_data("u1", &[("a1", 0)]), None).await.unwrap_err();
    assert!(matches!(err, UserWriteError::Store(StoreError::Unavailable { .. })), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Jobs

fn high_balance_job(m: &MandatorId, now: DateTime<Utc>) -> Job {
    let params = SegmentParams::HighBalance(HighBalanceParams {
        account_type: AccountType::Savings,
        threshold: money("5000.10"),
        currency: Some(eur()),
    });
    Job::new(m.clone(), date("2024-05-31"), params, Some("https://bank.example/callback".to_owned()), 4, now)
}

async fn jobs_on(server: &MotoServer) -> (AwsClients, DynamoJobs) {
    let clients = server.clients().await;
    create_jobs_table(&clients.dynamodb, "jobs").await.unwrap();
    let jobs = DynamoJobs::new(clients.dynamodb.clone(), "jobs");
    (clients, jobs)
}

#[tokio::test]
async fn job_lifecycle_is_conditional_and_idempotent() {
    let server = MotoServer::start();
    let (clients, jobs) = jobs_on(&server).await;
    let bank = mandator("bank-a");
    let now = DateTime::parse_from_rfc3339("2024-06-01T10:00:00.123456Z").unwrap().with_timezone(&Utc);
    let job = high_balance_job(&bank, now);
    let id = job.job_id;

    jobs.create(&job).await.unwrap();
    let err = jobs.create(&job).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let stored = jobs.get(&bank, id).await.unwrap().unwrap();
    // The TTL attribute holds whole epoch seconds; everything else reads back as written.
    assert_eq!(stored.expires_at.timestamp(), job.expires_at.timestamp());
    assert_eq!(Job { expires_at: job.expires_at, ..stored.clone() }, job);
    assert_eq!(stored.status, JobStatus::Queued);
    assert_eq!(jobs.get(&mandator("bank-b"), id).await.unwrap(), None, "another mandator's job is not found");
    assert_eq!(jobs.get(&bank, JobId::new()).await.unwrap(), None);

    let raw = clients
        .dynamodb
        .get_item()
        .table_name("jobs")
        .key("pk", AttributeValue::S("M#bank-a".into()))
        .key("sk", AttributeValue::S(format!("JOB#{id}")))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(raw.get(JOBS_TTL_ATTRIBUTE), Some(&AttributeValue::N(job.expires_at.timestamp().to_string())));

    jobs.mark_running(&bank, id).await.unwrap();
    jobs.mark_running(&bank, id).await.unwrap();
    assert_eq!(jobs.get(&bank, id).await.unwrap().unwrap().status, JobStatus::Running);

    jobs.record_shard(&bank, id, 2).await.unwrap();
    jobs.record_shard(&bank, id, 2).await.unwrap();
    assert_eq!(jobs.get(&bank, id).await.unwrap().unwrap().shards_done, 1, "a shard counts once");
    jobs.record_shard(&bank, id, 0).await.unwrap();
    jobs.record_shard(&bank, id, 3).await.unwrap();
    assert_eq!(jobs.get(&bank, id).await.unwrap().unwrap().shards_done, 3);
    let raw = |attribute: &'static str| {
        let clients = clients.clone();
        async move {
            let item = clients
                .dynamodb
                .get_item()
                .table_name("jobs")
                .key("pk", AttributeValue::S("M#bank-a".into()))
                .key("sk", AttributeValue::S(format!("JOB#{id}")))
                .send()
                .await
                .unwrap()
                .item
                .unwrap();
            item.get(attribute).cloned()
        }
    };
    let mut shards = match raw("doneShards").await {
        Some(AttributeValue::Ns(shards)) => shards,
        other => panic!("doneShards is a number set: {other:?}"),
    };
    shards.sort();
    assert_eq!(shards, ["0", "2", "3"]);
    assert_eq!(raw("shardsDone").await, Some(AttributeValue::N("3".into())), "the count follows the set");

    let summary = ResultSummary { total_elements: 1234, chunk_size: 1000, chunk_count: 2 };
    assert!(jobs.complete(&job, summary).await.unwrap());
    let other = ResultSummary { total_elements: 1, chunk_size: 1000, chunk_count: 1 };
    assert!(!jobs.complete(&job, other).await.unwrap(), "a second completion changes nothing");
    assert!(!jobs.fail(&bank, id, "late failure").await.unwrap());
    jobs.record_shard(&bank, id, 1).await.unwrap();
    jobs.mark_running(&bank, id).await.unwrap();

    // The job's own usage record, in the layout `GET /usage` reads.
    let usage = clients
        .dynamodb
        .get_item()
        .table_name("jobs")
        .key("pk", AttributeValue::S("M#bank-a".into()))
        .key("sk", AttributeValue::S(format!("USAGE#{}#highBalance#{id}", job.usage_month())))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(usage.get("jobs"), Some(&AttributeValue::N("1".into())));
    assert_eq!(job.usage_month().to_string(), "2024-06");

    let done = jobs.get(&bank, id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.result, Some(summary));
    assert_eq!(done.shards_done, 3, "no progress after the job is final");
    assert_eq!(done.error, None);

    // Another mandator cannot touch it.
    assert!(!jobs.fail(&mandator("bank-b"), id, "not yours").await.unwrap());
    assert_eq!(jobs.get(&mandator("bank-b"), id).await.unwrap(), None);
}

#[tokio::test]
async fn a_failed_job_keeps_its_reason_and_stays_failed() {
    let server = MotoServer::start();
    let (_, jobs) = jobs_on(&server).await;
    let bank = mandator("bank-a");
    let params = SegmentParams::FinancialBreakdown(FinancialBreakdownParams {
        label_groups: vec![
            LabelGroup { alias: "RENT".into(), include_labels: vec!["RENT".into()], exclude_labels: vec![] },
            LabelGroup {
                alias: "insurance".into(),
                include_labels: vec!["INSURANCE".into(), "CARINSURANCE".into()],
                exclude_labels: vec!["REFUND".into()],
            },
        ],
        duration_in_month: 6,
    });
    let job = Job::new(bank.clone(), date("2024-05-31"), params, None, 16, Utc::now());
    let id = job.job_id;
    jobs.create(&job).await.unwrap();

    assert!(jobs.fail(&bank, id, "shard 3 kept failing: storage unavailable").await.unwrap());
    assert!(!jobs.fail(&bank, id, "again").await.unwrap());
    assert!(!jobs.complete(&job, ResultSummary { total_elements: 0, chunk_size: 1000, chunk_count: 0 }).await.unwrap());
    jobs.mark_running(&bank, id).await.unwrap();

    let failed = jobs.get(&bank, id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("shard 3 kept failing: storage unavailable"));
    assert_eq!(failed.result, None);
    assert_eq!(failed.params, job.params);
    assert_eq!(failed.callback_url, None);

    // Transitions of a job that does not exist change nothing and create nothing.
    let ghost = JobId::new();
    jobs.mark_running(&bank, ghost).await.unwrap();
    assert_eq!(jobs.record_shard(&bank, ghost, 1).await.unwrap(), None);
    let ghost_job = Job { job_id: ghost, ..job.clone() };
    assert!(
        !jobs.complete(&ghost_job, ResultSummary { total_elements: 0, chunk_size: 1, chunk_count: 0 }).await.unwrap()
    );
    assert_eq!(jobs.get(&bank, ghost).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Results

#[tokio::test]
async fn results_are_put_and_read_back_and_a_missing_key_is_none() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    create_results_bucket(&clients.s3, "results").await.unwrap();
    let results = S3Results::new(clients.s3.clone(), "results");
    let key = "results/bank-a/highBalance/0190c2a8-0000-7000-8000-000000000000/chunks/000000.ndjson";

    assert_eq!(results.get(key).await.unwrap(), None);
    let body: &[u8] = b"{\"userId\":\"u1\",\"accounts\":[{\"accountId\":\"a1\",\"amount\":0.10}]}\n";
    results.put(key, body.to_vec().into()).await.unwrap();
    assert_eq!(results.get(key).await.unwrap().as_deref(), Some(body));
    results.put(key, Vec::new().into()).await.unwrap();
    assert_eq!(results.get(key).await.unwrap().as_deref(), Some(&[][..]));

    // A missing bucket is a broken configuration, not an absent result.
    let nowhere = S3Results::new(clients.s3.clone(), "no-such-bucket");
    let err = nowhere.get(key).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Queues

fn message(m: &MandatorId) -> JobMessage {
    JobMessage { mandator_id: m.clone(), job_id: JobId::new(), segment_type: SegmentType::HighBalance, shard: 0 }
}

#[tokio::test]
async fn queue_messages_are_sent_received_counted_and_deleted() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    let (url, _dlq) = create_queue_with_dlq(&clients.sqs, "work-high-balance", 5).await.unwrap();
    let queue = SqsQueue::new(clients.sqs.clone(), BTreeMap::from([(SegmentType::HighBalance, url.clone())]));
    let sent = message(&mandator("bank-a"));

    queue.enqueue(&sent).await.unwrap();
    let first = queue.receive(SegmentType::HighBalance, 10, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    assert_eq!(serde_json::from_str::<JobMessage>(&first[0].body).unwrap(), sent);

    // Make it visible again at once instead of waiting out the visibility timeout.
    clients
        .sqs
        .change_message_visibility()
        .queue_url(&url)
        .receipt_handle(&first[0].receipt_handle)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let second = queue.receive(SegmentType::HighBalance, 10, 1).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message_id, first[0].message_id);
    assert_eq!(second[0].receive_count, 2);

    queue.delete(SegmentType::HighBalance, &second[0].receipt_handle).await.unwrap();
    clients
        .sqs
        .change_message_visibility()
        .queue_url(&url)
        .receipt_handle(&second[0].receipt_handle)
        .visibility_timeout(0)
        .send()
        .await
        .ok();
    assert!(queue.receive(SegmentType::HighBalance, 10, 0).await.unwrap().is_empty());

    // A type without a configured queue is a clear error, not a silent drop.
    let mut low = message(&mandator("bank-a"));
    low.segment_type = SegmentType::LowBalance;
    let err = queue.enqueue(&low).await.unwrap_err();
    let source = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
    assert!(source.contains("LOW_BALANCE_QUEUE_URL"), "{err:?}");
}

#[tokio::test]
async fn messages_are_sent_in_batches_of_ten_and_all_arrive() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    let (url, _dlq) = create_queue_with_dlq(&clients.sqs, "work-high-balance", 5).await.unwrap();
    let queue = SqsQueue::new(clients.sqs.clone(), BTreeMap::from([(SegmentType::HighBalance, url)]));
    let bank = mandator("bank-a");
    let job_id = JobId::new();
    let sent: Vec<JobMessage> = (0..23)
        .map(|shard| JobMessage { mandator_id: bank.clone(), job_id, segment_type: SegmentType::HighBalance, shard })
        .collect();
    queue.enqueue_all(&sent).await.unwrap();
    let mut shards = Vec::new();
    loop {
        let got = queue.receive(SegmentType::HighBalance, 10, 0).await.unwrap();
        if got.is_empty() {
            break;
        }
        for m in got {
            shards.push(serde_json::from_str::<JobMessage>(&m.body).unwrap().shard);
            queue.delete(SegmentType::HighBalance, &m.receipt_handle).await.unwrap();
        }
    }
    shards.sort_unstable();
    assert_eq!(shards, (0..23).collect::<Vec<u32>>(), "every shard's message arrives once");

    let mut low = sent[0].clone();
    low.segment_type = SegmentType::LowBalance;
    assert!(queue.enqueue_all(&[low]).await.is_err(), "a type without a queue is an error");
}

#[tokio::test]
async fn a_message_received_too_often_moves_to_the_dead_letter_queue() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    let (url, dlq_url) = create_queue_with_dlq(&clients.sqs, "work-low-balance", 2).await.unwrap();
    let queue = SqsQueue::new(clients.sqs.clone(), BTreeMap::from([(SegmentType::HighBalance, url.clone())]));
    let dlq = SqsQueue::new(clients.sqs.clone(), BTreeMap::from([(SegmentType::HighBalance, dlq_url)]));
    let sent = message(&mandator("bank-a"));
    queue.enqueue(&sent).await.unwrap();

    for receive in 1..=2 {
        let got = queue.receive(SegmentType::HighBalance, 1, 1).await.unwrap();
        assert_eq!(got.len(), 1, "receive {receive}");
        assert_eq!(got[0].receive_count, receive);
        clients
            .sqs
            .change_message_visibility()
            .queue_url(&url)
            .receipt_handle(&got[0].receipt_handle)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }
    assert!(queue.receive(SegmentType::HighBalance, 1, 0).await.unwrap().is_empty());
    let dead = dlq.receive(SegmentType::HighBalance, 10, 1).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(serde_json::from_str::<JobMessage>(&dead[0].body).unwrap(), sent);
}

// ---------------------------------------------------------------------------------------------
// Provisioning

#[tokio::test]
async fn provisioning_creates_every_resource_as_configured_and_can_run_again() {
    let server = MotoServer::start();
    let clients = server.clients().await;

    let resources = provision::provision_all(&clients, "fs-test", 5).await.unwrap();
    assert_eq!(resources.account_table, "fs-test-account-data");
    assert_eq!(resources.jobs_table, "fs-test-jobs");
    assert_eq!(resources.results_bucket, "fs-test-results");
    assert_eq!(resources.queue_urls.len(), SegmentType::ALL.len());

    for table in [&resources.account_table, &resources.jobs_table] {
        let described = clients.dynamodb.describe_table().table_name(table).send().await.unwrap();
        let keys: Vec<(&str, KeyType)> = described
            .table()
            .unwrap()
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name(), k.key_type().clone()))
            .collect();
        assert_eq!(keys, [("pk", KeyType::Hash), ("sk", KeyType::Range)], "{table}");
    }

    let ttl = clients.dynamodb.describe_time_to_live().table_name(&resources.jobs_table).send().await.unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some(JOBS_TTL_ATTRIBUTE));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));

    let lifecycle =
        clients.s3.get_bucket_lifecycle_configuration().bucket(&resources.results_bucket).send().await.unwrap();
    let rules = lifecycle.rules();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].id(), Some(RESULTS_LIFECYCLE_RULE_ID));
    assert_eq!(rules[0].status(), &ExpirationStatus::Enabled);
    assert_eq!(rules[0].filter().and_then(|f| f.prefix()), Some(RESULTS_PREFIX));
    assert_eq!(rules[0].expiration().and_then(|e| e.days()), Some(14));
    assert_eq!(
        rules[0].abort_incomplete_multipart_upload().and_then(|a| a.days_after_initiation()),
        Some(provision::ABORT_INCOMPLETE_UPLOADS_DAYS),
        "uploads a crash left unfinished are removed"
    );
    // The uploaded files of imports go with their import's record.
    assert_eq!(rules[1].id(), Some(provision::IMPORTS_LIFECYCLE_RULE_ID));
    assert_eq!(rules[1].status(), &ExpirationStatus::Enabled);
    assert_eq!(rules[1].filter().and_then(|f| f.prefix()), Some(segments_core::imports::IMPORTS_PREFIX));
    assert_eq!(rules[1].expiration().and_then(|e| e.days()), Some(14));

    for (segment_type, url) in &resources.queue_urls {
        assert!(url.ends_with(&format!("fs-test-{}", segment_type.kebab())), "{url}");
        let attributes = clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let redrive: serde_json::Value = serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).unwrap();
        assert_eq!(redrive["maxReceiveCount"].to_string().trim_matches('"'), "5");
        assert!(
            redrive["deadLetterTargetArn"]
                .as_str()
                .unwrap()
                .ends_with(&format!("fs-test-{}-dlq", segment_type.kebab())),
            "{redrive}"
        );
    }

    // Idempotent: a second run finds everything and changes the redrive when asked to.
    let again = provision::provision_all(&clients, "fs-test", 3).await.unwrap();
    assert_eq!(again, resources);
    let url = &again.queue_urls[&SegmentType::HighBalance];
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    let redrive: serde_json::Value = serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(redrive["maxReceiveCount"].to_string().trim_matches('"'), "3");

    // The provisioned resources work end to end through the adapters.
    let adapters = segments_aws::AwsAdapters::new(&clients, &again);
    let bank = mandator("bank-a");
    adapters.accounts.ensure_shard_count(&bank, 2).await.unwrap();
    adapters.accounts.put_user(&bank, 2, &user_data("u1", &[("a1", 1)]), None).await.unwrap();
    assert_eq!(adapters.accounts.shard_count(&bank).await.unwrap(), Some(2));
    adapters.jobs.create(&high_balance_job(&bank, Utc::now())).await.unwrap();
    adapters.results.put("results/x", b"x".to_vec().into()).await.unwrap();
    adapters.queue.enqueue(&message(&bank)).await.unwrap();
    assert_eq!(adapters.queue.receive(SegmentType::HighBalance, 1, 1).await.unwrap().len(), 1);

    let vars: HashMap<String, String> = again.env_vars().into_iter().collect();
    assert_eq!(vars["RESULTS_BUCKET"], "fs-test-results");
    assert_eq!(vars[&AwsResources::queue_url_var(SegmentType::HighBalance)], *url);
}

#[tokio::test]
async fn servers_are_independent_and_reset_clears_them() {
    let first = MotoServer::start();
    let second = MotoServer::start();
    assert_ne!(first.endpoint(), second.endpoint());
    let clients = first.clients().await;
    create_account_table(&clients.dynamodb, "only-here").await.unwrap();

    let listed = |c: AwsClients| async move { c.dynamodb.list_tables().send().await.unwrap().table_names().to_vec() };
    assert_eq!(listed(first.clients().await).await, ["only-here"]);
    assert!(listed(second.clients().await).await.is_empty());
    first.reset().await;
    assert!(listed(first.clients().await).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Beyond the port contracts (contracts.rs)

/// The job list filled across Query requests: one item per request, so every page takes several.
#[tokio::test]
async fn the_job_catalog_contract_holds_with_one_item_per_query_request() {
    let server = MotoServer::start();
    let (clients, jobs) = jobs_on(&server).await;
    let catalog = DynamoCatalog::new(clients.dynamodb.clone(), "jobs").with_query_page(1);
    crate::support::contract::job_catalog_contract(&jobs, &catalog).await;
}
