//! The AWS adapters against a local AWS-compatible server (moto), over real HTTP with the real
//! SDK clients. Each test starts its own server.

use std::collections::{BTreeMap, HashMap};

use crate::support::moto::MotoServer;
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
use segments_core::domain::records::{AccountItem, shard_of};
use segments_core::domain::{
    Account, AccountHistory, AccountId, AccountType, Currency, JobId, MandatorId, Money, SegmentType, Transaction,
    TransactionId, UserData, UserId,
};
use segments_core::jobs::{Job, JobMessage, JobStatus, ResultSummary};
use segments_core::ports::{AccountSink, AccountSource, JobQueue, JobStore, ResultStore, StoreError};
use segments_core::rules::SegmentParams;
use segments_core::rules::params::{FinancialBreakdownParams, HighBalanceParams, LabelGroup};

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

fn account(user: &str, id: &str, account_type: AccountType, balance: &str) -> AccountItem {
    AccountItem::Account(Account {
        user_id: UserId::parse(user).unwrap(),
        account_id: AccountId::parse(id).unwrap(),
        account_type,
        currency: eur(),
        balance: money(balance),
        balance_date: date("2024-05-31"),
    })
}

fn tx(user: &str, account: &str, id: &str, day: &str, amount: &str) -> AccountItem {
    AccountItem::Transaction {
        user_id: UserId::parse(user).unwrap(),
        account_id: AccountId::parse(account).unwrap(),
        transaction: Transaction {
            transaction_id: TransactionId::parse(id).unwrap(),
            booking_date: date(day),
            amount: money(amount),
            currency: eur(),
            counterpart_name: String::new(),
            labels: Vec::new(),
        },
    }
}

fn labelled(item: AccountItem, counterpart: &str, purpose: &str, labels: &[&str]) -> AccountItem {
    match item {
        AccountItem::Transaction { user_id, account_id, mut transaction } => {
            transaction.counterpart_name = counterpart.to_owned();
            transaction.purpose = purpose.to_owned();
            transaction.labels = labels.iter().map(|l| (*l).to_owned()).collect();
            AccountItem::Transaction { user_id, account_id, transaction }
        }
        other => other,
    }
}

/// What a shard must yield for these items, by the port's contract: users by userId, accounts
/// by accountId, transactions by (bookingDate, transactionId).
fn expected_users(items: &[AccountItem]) -> BTreeMap<UserId, UserData> {
    let mut accounts: BTreeMap<UserId, BTreeMap<AccountId, AccountHistory>> = BTreeMap::new();
    for item in items {
        if let AccountItem::Account(a) = item {
            accounts
                .entry(a.user_id.clone())
                .or_default()
                .insert(a.account_id.clone(), AccountHistory { account: a.clone(), transactions: Vec::new() });
        }
    }
    for item in items {
        if let AccountItem::Transaction { user_id, account_id, transaction } = item {
            accounts.get_mut(user_id).unwrap().get_mut(account_id).unwrap().transactions.push(transaction.clone());
        }
    }
    accounts
        .into_iter()
        .map(|(user_id, by_id)| {
            let mut histories: Vec<AccountHistory> = by_id.into_values().collect();
            for h in &mut histories {
                h.transactions
                    .sort_by(|a, b| (a.booking_date, &a.transaction_id).cmp(&(b.booking_date, &b.transaction_id)));
            }
            (user_id.clone(), UserData { user_id, accounts: histories })
        })
        .collect()
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

// ---------------------------------------------------------------------------------------------
// Account data

#[tokio::test]
async fn account_data_reads_back_per_shard_grouped_ordered_and_exact() {
    let server = MotoServer::start();
    let (_, accounts) = accounts_on(&server).await;
    let bank = mandator("bank-a");
    let other = mandator("bank-b");
    let shards = 4;

    let mut items = vec![
        account("u1", "a2", AccountType::Savings, "1234567.89"),
        account("u1", "a1", AccountType::Checking, "-0.10"),
        account("u1", "a1-x", AccountType::CreditCard, "0"),
        tx("u1", "a1", "t9", "2024-05-02", "0.10"),
        tx("u1", "a1", "t10", "2024-05-02", "-1234567.89"),
        tx("u1", "a1", "t1", "2024-05-03", "-12.30"),
        tx("u1", "a1", "t5", "2024-04-30", "100"),
        labelled(
            tx("u1", "a2", "t1", "2024-05-02", "-45.67"),
            "ACME Insurance AG",
            "policy 42",
            &["INSURANCE", "CARINSURANCE"],
        ),
        account("u10", "a1", AccountType::Loan, "-50000.00"),
        account("u2", "a1", AccountType::Checking, "0.01"),
        tx("u2", "a1", "t1", "2024-01-15", "0.01"),
        account("u1-2", "b", AccountType::Pocket, "7.00"),
    ];
    for i in 3..12 {
        let user = format!("user-{i:02}");
        items.push(account(&user, "acc", AccountType::Checking, &format!("{i}.{i:02}")));
        items.push(tx(&user, "acc", "t1", "2024-05-01", &format!("-{i}.05")));
        items.push(tx(&user, "acc", "t2", "2024-05-01", &format!("{i}")));
    }
    // Written in an order unlike the stored one: the store must order them itself.
    items.reverse();
    accounts.ensure_shard_count(&bank, shards).await.unwrap();
    accounts.put_items(&bank, shards, &items).await.unwrap();

    // Another mandator with the same user id and different data.
    let foreign = vec![
        account("u1", "a1", AccountType::Checking, "999.99"),
        account("z-only-b", "a1", AccountType::Checking, "1.00"),
    ];
    accounts.ensure_shard_count(&other, 2).await.unwrap();
    accounts.put_items(&other, 2, &foreign).await.unwrap();

    assert_eq!(accounts.shard_count(&bank).await.unwrap(), Some(shards));
    assert_eq!(accounts.shard_count(&other).await.unwrap(), Some(2));
    assert_eq!(accounts.shard_count(&mandator("bank-none")).await.unwrap(), None);

    let expected = expected_users(&items);
    let mut seen = BTreeMap::new();
    for shard in 0..shards {
        let users = shard_users(&accounts, &bank, shard).await.unwrap();
        let ids: Vec<&UserId> = users.iter().map(|u| &u.user_id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "shard {shard} users out of order: {ids:?}");
        for user in users {
            assert_eq!(shard_of(&user.user_id, shards), shard, "{} on the wrong shard", user.user_id);
            assert!(seen.insert(user.user_id.clone(), user).is_none(), "a user appears twice");
        }
    }
    assert_eq!(seen, expected);

    // Spot checks of what matters most, in plain terms.
    let u1 = &seen[&UserId::parse("u1").unwrap()];
    let ids: Vec<&str> = u1.accounts.iter().map(|h| h.account.account_id.as_str()).collect();
    assert_eq!(ids, ["a1", "a1-x", "a2"]);
    let a1: Vec<(&str, String)> =
        u1.accounts[0].transactions.iter().map(|t| (t.transaction_id.as_str(), t.amount.to_string())).collect();
    assert_eq!(
        a1,
        [
            ("t5", "100.00".to_owned()),
            ("t10", "-1234567.89".to_owned()),
            ("t9", "0.10".to_owned()),
            ("t1", "-12.30".to_owned())
        ]
    );
    assert_eq!(u1.accounts[0].account.balance.to_string(), "-0.10");
    assert_eq!(u1.accounts[2].account.balance.to_string(), "1234567.89");
    let insurance = &u1.accounts[2].transactions[0];
    assert_eq!(insurance.labels, ["INSURANCE", "CARINSURANCE"]);
    assert_eq!(insurance.counterpart_name, "ACME Insurance AG");
    assert_eq!(insurance.purpose, "policy 42");

    // The other mandator sees only its own data.
    let mut foreign_users = Vec::new();
    for shard in 0..2 {
        foreign_users.extend(shard_users(&accounts, &other, shard).await.unwrap());
    }
    assert_eq!(
        foreign_users.into_iter().map(|u| (u.user_id.clone(), u)).collect::<BTreeMap<_, _>>(),
        expected_users(&foreign)
    );
    assert!(!seen.contains_key(&UserId::parse("z-only-b").unwrap()));
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

#[tokio::test]
async fn put_items_writes_more_than_one_batch_and_the_last_write_of_a_key_wins() {
    let server = MotoServer::start();
    let (_, accounts) = accounts_on(&server).await;
    let bank = mandator("bank-a");

    let mut items = vec![account("u1", "a1", AccountType::Checking, "10.00")];
    for i in 0..70 {
        items.push(tx("u1", "a1", &format!("t{i:03}"), "2024-05-01", "1.00"));
    }
    for i in 0..40 {
        items.push(account(&format!("v{i:02}"), "a1", AccountType::Savings, "5.00"));
    }
    // The same key twice in one call: the later item wins.
    items.push(tx("u1", "a1", "t000", "2024-05-01", "-2.50"));
    accounts.ensure_shard_count(&bank, 1).await.unwrap();
    accounts.put_items(&bank, 1, &items).await.unwrap();

    let users = shard_users(&accounts, &bank, 0).await.unwrap();
    assert_eq!(users.len(), 41);
    let u1 = users.iter().find(|u| u.user_id.as_str() == "u1").unwrap();
    assert_eq!(u1.accounts.len(), 1);
    assert_eq!(u1.accounts[0].transactions.len(), 70);
    assert_eq!(u1.accounts[0].transactions[0].amount, money("-2.50"));

    // Writing again is an upsert, not a duplicate.
    accounts.put_items(&bank, 1, &items).await.unwrap();
    assert_eq!(shard_users(&accounts, &bank, 0).await.unwrap(), users);
}

#[tokio::test]
async fn a_transaction_without_its_account_is_corrupt_data() {
    let server = MotoServer::start();
    let (_, accounts) = accounts_on(&server).await;
    let bank = mandator("bank-a");

    accounts.ensure_shard_count(&bank, 1).await.unwrap();
    accounts
        .put_items(
            &bank,
            1,
            &[account("u1", "a1", AccountType::Checking, "1.00"), tx("u2", "a9", "t1", "2024-05-01", "3.00")],
        )
        .await
        .unwrap();

    let results: Vec<Result<UserData, StoreError>> = futures::StreamExt::collect(accounts.users(&bank, 0)).await;
    assert_eq!(results.len(), 2, "the stream ends after the error");
    assert_eq!(results[0].as_ref().unwrap().user_id.as_str(), "u1");
    let err = results[1].as_ref().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(m) if m.contains("t1") && m.contains("a9")), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_missing_table_is_an_unavailable_store() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    let accounts = DynamoAccounts::new(clients.dynamodb.clone(), "no-such-table");
    let err = shard_users(&accounts, &mandator("bank-a"), 0).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
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

    // The usage counter, in the layout `GET /usage` reads.
    let usage = clients
        .dynamodb
        .get_item()
        .table_name("jobs")
        .key("pk", AttributeValue::S("M#bank-a".into()))
        .key("sk", AttributeValue::S(format!("USAGE#{}#highBalance", job.usage_month())))
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
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].id(), Some(RESULTS_LIFECYCLE_RULE_ID));
    assert_eq!(rules[0].status(), &ExpirationStatus::Enabled);
    assert_eq!(rules[0].filter().and_then(|f| f.prefix()), Some(RESULTS_PREFIX));
    assert_eq!(rules[0].expiration().and_then(|e| e.days()), Some(14));
    assert_eq!(
        rules[0].abort_incomplete_multipart_upload().and_then(|a| a.days_after_initiation()),
        Some(provision::ABORT_INCOMPLETE_UPLOADS_DAYS),
        "uploads a crash left unfinished are removed"
    );

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
    adapters.accounts.put_items(&bank, 2, &[account("u1", "a1", AccountType::Checking, "1.00")]).await.unwrap();
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
