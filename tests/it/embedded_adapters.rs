//! The embedded store and queue beyond the port contracts (`contracts.rs`): what only a local
//! store has to do — keep its data across restarts, list the jobs to requeue, stream large shards,
//! serve concurrent contract runs from one store.

use std::collections::BTreeSet;

use crate::support::contract::{self, unique_mandator};
use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use segments_core::domain::{
    Account, AccountHistory, AccountId, AccountType, Currency, MandatorId, Money, SegmentType, Transaction,
    TransactionId, UserData, UserId,
};
use segments_core::jobs::{Job, JobMessage, ResultSummary};
use segments_core::ports::{AccountSource, JobQueue, JobStore, ResultStore, UserStore};
use segments_core::rules::SegmentRequest;
use segments_embedded::{DATABASE_FILE, EmbeddedQueue, EmbeddedStore};

fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(dir.path()).expect("the store opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_store_serves_concurrent_contract_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    futures::join!(
        contract::job_store_contract(&store),
        contract::job_store_contract(&store),
        contract::user_store_contract(&store),
        contract::user_store_contract(&store),
        contract::result_store_contract(&store),
    );
}

fn job(mandator: &MandatorId, segment_type: SegmentType, body: &str) -> Job {
    let request = SegmentRequest::parse(segment_type, body.as_bytes(), Utc::now().date_naive()).unwrap();
    Job::new(mandator.clone(), request.as_of, request.params, request.callback_url, 2, Utc::now())
}

fn message(job: &Job, shard: u32) -> JobMessage {
    JobMessage { mandator_id: job.mandator_id.clone(), job_id: job.job_id, segment_type: job.segment_type, shard }
}

fn account(user: &str, id: &str, balance: &str) -> Account {
    Account {
        user_id: UserId::parse(user).unwrap(),
        account_id: AccountId::parse(id).unwrap(),
        account_type: AccountType::Checking,
        currency: Currency::parse("EUR").unwrap(),
        balance: Money::parse(balance).unwrap(),
        balance_date: NaiveDate::from_ymd_opt(2024, 5, 31).unwrap(),
    }
}

fn transaction(account: &Account, id: &str, amount: &str) -> Transaction {
    Transaction {
        transaction_id: TransactionId::parse(id).unwrap(),
        booking_date: NaiveDate::from_ymd_opt(2024, 5, 2).unwrap(),
        amount: Money::parse(amount).unwrap(),
        currency: account.currency,
        counterpart_name: "ACME".into(),
        labels: vec!["RENT".into()],
    }
}

/// A user with one account and its transactions.
fn user_data(account: &Account, transactions: Vec<Transaction>) -> UserData {
    UserData {
        user_id: account.user_id.clone(),
        accounts: vec![AccountHistory { account: account.clone(), transactions }],
    }
}

#[tokio::test]
async fn data_survives_closing_and_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mandator = unique_mandator("restart");
    let a = account("u1", "a1", "0.10");
    let queued = job(&mandator, SegmentType::LowBalance, r#"{"threshold":-0.1,"durationInMonth":3}"#);
    let done = job(&mandator, SegmentType::HighBalance, r#"{"accountType":"checking","threshold":5}"#);
    let summary = ResultSummary { total_elements: 1, chunk_size: 1000, chunk_count: 1 };
    {
        let store = open(&dir);
        let clone = store.clone();
        store.ensure_shard_count(&mandator, 2).await.unwrap();
        store.put_user(&mandator, 2, &user_data(&a, vec![transaction(&a, "t1", "-0.01")]), None).await.unwrap();
        clone.create(&queued).await.unwrap();
        clone.create(&done).await.unwrap();
        clone.complete(&done, summary).await.unwrap();
        store.put("results/x/manifest.json", b"{\"chunks\":1}".to_vec().into()).await.unwrap();
    }
    assert!(dir.path().join(DATABASE_FILE).is_file());

    let store = open(&dir);
    assert_eq!(store.shard_count(&mandator).await.unwrap(), Some(2));
    let shard = segments_core::domain::records::shard_of(&a.user_id, 2);
    let users: Vec<_> = store.users(&mandator, shard).collect().await;
    assert_eq!(users.len(), 1);
    let user = users.into_iter().next().unwrap().unwrap();
    assert_eq!(user.accounts[0].account, a);
    assert_eq!(user.accounts[0].transactions[0].amount.to_string(), "-0.01");
    assert_eq!(JobStore::get(&store, &mandator, queued.job_id).await.unwrap(), Some(queued.clone()));
    let reread = JobStore::get(&store, &mandator, done.job_id).await.unwrap().unwrap();
    assert_eq!(reread.result, Some(summary));
    let manifest = ResultStore::get(&store, "results/x/manifest.json").await.unwrap();
    assert_eq!(manifest.as_deref(), Some(&b"{\"chunks\":1}"[..]));
    assert_eq!(store.unfinished_jobs().await.unwrap(), [message(&queued, 0), message(&queued, 1)]);
}

#[tokio::test]
async fn a_data_directory_is_open_in_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let err = EmbeddedStore::open(dir.path()).expect_err("the file is locked");
    assert!(err.to_string().contains("already open"), "{err}");
    drop(store);
    open(&dir);
}

#[tokio::test]
async fn open_creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a").join("b");
    let store = EmbeddedStore::open(&nested).unwrap();
    assert_eq!(store.path(), nested.join(DATABASE_FILE));
}

#[tokio::test]
async fn unfinished_jobs_are_the_queued_and_running_ones_of_every_mandator() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (m1, m2) = (unique_mandator("unfinished"), unique_mandator("unfinished"));
    let body = r#"{"durationInMonth":6}"#;
    let [queued, running, completed, failed, other] =
        [&m1, &m1, &m1, &m1, &m2].map(|m| job(m, SegmentType::InsuranceSpending, body));
    for j in [&queued, &running, &completed, &failed, &other] {
        store.create(j).await.unwrap();
    }
    store.record_shard(&m1, running.job_id, 1).await.unwrap();
    store.complete(&completed, ResultSummary { total_elements: 0, chunk_size: 1000, chunk_count: 0 }).await.unwrap();
    store.fail(&m1, failed.job_id, "x").await.unwrap();
    let finalizing = job(&m1, SegmentType::InsuranceSpending, body);
    store.create(&finalizing).await.unwrap();
    store.record_shard(&m1, finalizing.job_id, 0).await.unwrap();
    store.record_shard(&m1, finalizing.job_id, 1).await.unwrap();

    // One message per shard not done; a job whose shards are all done gets one, to finalize.
    let unfinished: BTreeSet<_> =
        store.unfinished_jobs().await.unwrap().into_iter().map(|m| (m.job_id, m.shard)).collect();
    let expected = BTreeSet::from([
        (queued.job_id, 0),
        (queued.job_id, 1),
        (running.job_id, 0),
        (other.job_id, 0),
        (other.job_id, 1),
        (finalizing.job_id, 0),
    ]);
    assert_eq!(unfinished, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_of_thousands_of_users_streams_in_order() {
    const USERS: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mandator = unique_mandator("stream");
    store.ensure_shard_count(&mandator, 1).await.unwrap();
    for i in (0..USERS).rev() {
        let a = account(&format!("user{i}"), &format!("a{i}"), "1.00");
        let data = user_data(&a, vec![transaction(&a, "t2", "-2.00"), transaction(&a, "t1", "1.00")]);
        store.put_user(&mandator, 1, &data, None).await.unwrap();
    }

    let mut users = store.users(&mandator, 0);
    let mut previous: Option<UserId> = None;
    let mut count = 0;
    while let Some(user) = users.next().await {
        let user = user.unwrap();
        assert!(previous.as_ref().is_none_or(|p| p < &user.user_id), "users in userId order");
        assert_eq!(user.accounts.len(), 1);
        let ids: Vec<&str> = user.accounts[0].transactions.iter().map(|t| t.transaction_id.as_str()).collect();
        assert_eq!(ids, ["t1", "t2"]);
        previous = Some(user.user_id);
        count += 1;
    }
    assert_eq!(count, USERS);
    drop(users);

    // A consumer that stops early releases the reader: the store can be reopened right away.
    let first: Vec<_> = store.users(&mandator, 0).take(3).collect().await;
    assert_eq!(first.len(), 3);
    drop(store);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match EmbeddedStore::open(dir.path()) {
            Ok(_) => break,
            // The reader notices the dropped stream when it next sends a user.
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("already open"), "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(e) => panic!("the reader of a dropped stream never finished: {e}"),
        }
    }
}

#[tokio::test]
async fn the_queue_hands_messages_to_its_receiver() {
    let (queue, mut receiver) = EmbeddedQueue::new();
    let m = job(&unique_mandator("queue"), SegmentType::InsuranceSpending, "{}");
    queue.enqueue_all(&m.messages()).await.unwrap();
    assert_eq!(receiver.recv().await, Some(message(&m, 0)));
    assert_eq!(receiver.recv().await, Some(message(&m, 1)));
}
