//! The contract of the storage ports (`segments_core::ports`), checked the same way against every
//! adapter: the embedded store, and DynamoDB and S3 on a local emulator.
//!
//! Every check creates its own mandators (random ids), so one store can serve any number of
//! checks, also concurrently. Timestamps are whole seconds: the contract is about semantics, not
//! about how finely a store keeps time.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use futures::{StreamExt, TryStreamExt};
use segments_core::domain::{
    Account, AccountHistory, AccountId, AccountType, Currency, JobId, MandatorId, Money, SegmentType, Transaction,
    TransactionId, UserData, UserId,
};
use segments_core::jobs::{IdempotencyKey, Job, JobStatus, ResultSummary};
use segments_core::ports::{AccountSink, AccountSource, JobStore, KeyClaim, ResultStore, StoreError};
use segments_core::domain::records::{AccountItem, shard_of};
use segments_core::rules::SegmentRequest;

/// A mandator id no other check uses.
pub fn unique_mandator(label: &str) -> MandatorId {
    MandatorId::parse(&format!("{label}-{}", uuid::Uuid::new_v4().simple())).expect("a valid mandator id")
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

fn date(s: &str) -> NaiveDate {
    s.parse().expect("a valid date")
}

fn money(s: &str) -> Money {
    Money::parse(s).expect("a valid amount")
}

/// A validated request body of each segment type, with amounts that a float would not keep.
fn requests() -> Vec<(SegmentType, SegmentRequest)> {
    let today = Utc::now().date_naive();
    [
        (SegmentType::HighBalance, r#"{"accountType":"savings","threshold":1234567890123.45,"currency":"EUR"}"#),
        (SegmentType::LowBalance, r#"{"threshold":-0.1,"durationInMonth":3}"#),
        (SegmentType::IncomeSpendingSummary, r#"{"dateFrom":"2024-01-01","dateTo":"2024-03-31"}"#),
        (SegmentType::InsuranceSpending, r#"{"durationInMonth":6,"callbackURL":"https://bank.example/hook"}"#),
        (
            SegmentType::FinancialBreakdown,
            r#"{"durationInMonth":2,"labelGroups":["RENT",{"alias":"food","includeLabels":["FOOD","GROCERY"],"excludeLabels":["ATM"]}]}"#,
        ),
    ]
    .into_iter()
    .map(|(t, body)| (t, SegmentRequest::parse(t, body.as_bytes(), today).expect("a valid request body")))
    .collect()
}

fn new_job(mandator: &MandatorId, request: SegmentRequest, shards_total: u32) -> Job {
    Job::new(mandator.clone(), request.as_of, request.params, request.callback_url, shards_total, now())
}

async fn stored_job(store: &dyn JobStore, mandator: &MandatorId, id: JobId) -> Job {
    store.get(mandator, id).await.expect("get succeeds").expect("the job exists")
}

/// `JobStore`: records round-trip exactly, keys include the mandator, and the transitions follow
/// the lifecycle QUEUED → RUNNING → COMPLETED | FAILED whatever order calls arrive in.
pub async fn job_store_contract(store: &dyn JobStore) {
    let mandator = unique_mandator("jobs");
    let other = unique_mandator("jobs-other");
    // A mandator whose id extends the first one: its keys share a prefix.
    let longer = MandatorId::parse(&format!("{mandator}x")).expect("a valid mandator id");

    // Every segment type round-trips, parameters included (their shapes overlap).
    let mut jobs = Vec::new();
    for (t, request) in requests() {
        let job = new_job(&mandator, request, 4);
        store.create(&job).await.expect("create succeeds");
        let stored = store.get(&mandator, job.job_id).await.expect("get succeeds");
        assert_eq!(stored.as_ref(), Some(&job), "a {t} job reads back as it was written");
        jobs.push(job);
    }
    let job = jobs[0].clone();
    let id = job.job_id;

    // Creating the same id again conflicts and changes nothing.
    let mut again = job.clone();
    again.shards_total = 99;
    assert!(matches!(store.create(&again).await, Err(StoreError::Conflict(_))), "a second create conflicts");
    assert_eq!(stored_job(store, &mandator, id).await, job);

    // Another mandator sees nothing: not by id, not through a mandator id that extends this one.
    assert_eq!(store.get(&other, id).await.expect("get succeeds"), None);
    assert_eq!(store.get(&longer, id).await.expect("get succeeds"), None);
    assert_eq!(store.get(&mandator, JobId::new()).await.expect("get succeeds"), None);

    // Another mandator's transitions neither touch the job nor create one of their own.
    store.mark_running(&other, id).await.expect("a no-op, not an error");
    assert_eq!(store.record_shard(&other, id, 3).await.expect("a no-op, not an error"), None);
    let summary = ResultSummary { total_elements: 7, chunk_size: 1000, chunk_count: 1 };
    let foreign = Job { mandator_id: other.clone(), ..job.clone() };
    assert!(!matches!(store.complete(&foreign, summary).await, Ok(true)), "complete must not reach another tenant");
    assert!(!matches!(store.fail(&other, id, "x").await, Ok(true)), "fail must not reach another tenant");
    assert_eq!(stored_job(store, &mandator, id).await, job, "another mandator's calls changed the job");
    assert_eq!(store.get(&other, id).await.expect("get succeeds"), None, "a transition created a job");

    // Transitions of a job that does not exist create nothing.
    let missing = JobId::new();
    store.mark_running(&mandator, missing).await.expect("a no-op, not an error");
    assert_eq!(store.record_shard(&mandator, missing, 1).await.expect("a no-op, not an error"), None);
    assert!(!matches!(store.complete(&Job { job_id: missing, ..job.clone() }, summary).await, Ok(true)));
    assert!(!matches!(store.fail(&mandator, missing, "x").await, Ok(true)));
    assert_eq!(store.get(&mandator, missing).await.expect("get succeeds"), None);

    // QUEUED → RUNNING, once; repeating it is a no-op.
    store.mark_running(&mandator, id).await.expect("mark_running succeeds");
    assert_eq!(stored_job(store, &mandator, id).await.status, JobStatus::Running);
    store.mark_running(&mandator, id).await.expect("a repeated mark_running is a no-op");
    assert_eq!(stored_job(store, &mandator, id).await.status, JobStatus::Running);

    // Shards are a set: recording one again counts nothing.
    for (shard, expected) in [(2, 1), (0, 2), (2, 2), (3, 3), (0, 3)] {
        let recorded = store.record_shard(&mandator, id, shard).await.expect("record_shard succeeds");
        let recorded = recorded.expect("the job exists");
        assert_eq!(recorded.shards_done, expected, "after recording {shard}");
        assert_eq!(recorded, stored_job(store, &mandator, id).await, "record_shard answers the stored job");
    }
    let recorded = stored_job(store, &mandator, id).await;
    assert_eq!(recorded.done_shards.iter().copied().collect::<Vec<_>>(), [0, 2, 3]);
    assert!(!recorded.all_shards_done());
    assert_eq!(recorded.status, JobStatus::Running);

    // Recording a shard of a QUEUED job moves it to RUNNING.
    let queued = &jobs[3];
    let recorded = store.record_shard(&mandator, queued.job_id, 0).await.expect("record_shard succeeds");
    assert_eq!(recorded.map(|j| (j.status, j.shards_done)), Some((JobStatus::Running, 1)));

    // → COMPLETED once, metered once; a redelivered complete or a late fail changes nothing.
    let month = job.usage_month();
    let before = store.usage(&mandator, month, job.segment_type).await.expect("usage succeeds");
    assert!(store.complete(&job, summary).await.expect("complete succeeds"), "the first complete wins");
    assert_eq!(store.usage(&mandator, month, job.segment_type).await.expect("usage succeeds"), before + 1);
    let completed = stored_job(store, &mandator, id).await;
    assert_eq!(
        (completed.status, completed.result, completed.error.as_deref()),
        (JobStatus::Completed, Some(summary), None)
    );
    let other_summary = ResultSummary { total_elements: 1, chunk_size: 1000, chunk_count: 1 };
    assert!(!store.complete(&job, other_summary).await.expect("complete succeeds"), "already final");
    assert_eq!(
        store.usage(&mandator, month, job.segment_type).await.expect("usage succeeds"),
        before + 1,
        "a second completion is not metered"
    );
    assert!(!store.fail(&mandator, id, "too late").await.expect("fail succeeds"), "already final");
    store.mark_running(&mandator, id).await.expect("a no-op on a final job");
    let after = store.record_shard(&mandator, id, 1).await.expect("a no-op on a final job");
    assert_eq!(after.as_ref(), Some(&completed), "recording a shard of a final job answers it unchanged");
    assert_eq!(stored_job(store, &mandator, id).await, completed, "a final job does not change");
    let untouched = Job {
        status: JobStatus::Completed,
        shards_done: 3,
        done_shards: [0, 2, 3].into(),
        result: Some(summary),
        ..job.clone()
    };
    assert_eq!(completed, untouched, "complete changes status and result, nothing else");

    // QUEUED → FAILED directly, with the reason; then nothing moves it.
    let failing = jobs[1].job_id;
    assert!(store.fail(&mandator, failing, "shard 3: account data unreadable").await.expect("fail succeeds"));
    let failed = stored_job(store, &mandator, failing).await;
    assert_eq!((failed.status, failed.error.as_deref()), (JobStatus::Failed, Some("shard 3: account data unreadable")));
    assert!(!store.complete(&jobs[1], summary).await.expect("complete succeeds"));
    assert!(!store.fail(&mandator, failing, "again").await.expect("fail succeeds"));
    store.mark_running(&mandator, failing).await.expect("a no-op on a final job");
    assert_eq!(stored_job(store, &mandator, failing).await, failed);

    // RUNNING → FAILED.
    let running = jobs[2].job_id;
    store.mark_running(&mandator, running).await.expect("mark_running succeeds");
    assert!(store.fail(&mandator, running, "boom").await.expect("fail succeeds"));
    assert_eq!(stored_job(store, &mandator, running).await.status, JobStatus::Failed);

    // complete and fail racing on one job: exactly one wins, and the record agrees with it.
    for (t, request) in requests() {
        let job = new_job(&mandator, request, 1);
        store.create(&job).await.expect("create succeeds");
        let (completed, failed) =
            futures::join!(store.complete(&job, summary), store.fail(&mandator, job.job_id, "lost"));
        let (completed, failed) = (completed.expect("complete succeeds"), failed.expect("fail succeeds"));
        assert!(completed != failed, "{t}: exactly one of complete ({completed}) and fail ({failed}) wins");
        let stored = stored_job(store, &mandator, job.job_id).await;
        let expected = if completed { JobStatus::Completed } else { JobStatus::Failed };
        assert_eq!(stored.status, expected, "{t}");
        assert_eq!(stored.result.is_some(), completed, "{t}");
        assert_eq!(stored.error.is_some(), failed, "{t}");
    }

    // Two completions racing: one wins and is metered once.
    let racing = new_job(&mandator, requests().remove(0).1, 1);
    store.create(&racing).await.expect("create succeeds");
    let before = store.usage(&mandator, racing.usage_month(), racing.segment_type).await.expect("usage succeeds");
    let (a, b) = futures::join!(store.complete(&racing, summary), store.complete(&racing, summary));
    assert!(a.expect("complete succeeds") != b.expect("complete succeeds"), "exactly one completion wins");
    let after = store.usage(&mandator, racing.usage_month(), racing.segment_type).await.expect("usage succeeds");
    assert_eq!(after, before + 1);
    // Usage is per mandator, month and type.
    assert_eq!(store.usage(&other, racing.usage_month(), racing.segment_type).await.expect("usage succeeds"), 0);
    let next = racing.usage_month().next();
    assert_eq!(store.usage(&mandator, next, racing.segment_type).await.expect("usage succeeds"), 0);
}

/// Idempotency keys: a key claims one job atomically, per mandator, until it expires.
pub async fn idempotency_contract(store: &dyn JobStore) {
    let mandator = unique_mandator("keys");
    let other = unique_mandator("keys-other");
    let key = IdempotencyKey::parse("order-1").expect("a valid key");
    let request = || requests().remove(0).1;

    let first = new_job(&mandator, request(), 2);
    assert_eq!(store.create_with_key(&first, &key, "hash-a", now()).await.expect("claim succeeds"), KeyClaim::Created);
    assert_eq!(store.get(&mandator, first.job_id).await.expect("get succeeds"), Some(first.clone()));

    // The key is taken: the second job is not stored, the first is named with its hash.
    let second = new_job(&mandator, request(), 2);
    let claim = store.create_with_key(&second, &key, "hash-b", now()).await.expect("claim succeeds");
    assert_eq!(claim, KeyClaim::Existing { job_id: first.job_id, request_hash: "hash-a".into() });
    assert_eq!(store.get(&mandator, second.job_id).await.expect("get succeeds"), None);

    // Keys are per mandator.
    let foreign = new_job(&other, request(), 2);
    assert_eq!(
        store.create_with_key(&foreign, &key, "hash-a", now()).await.expect("claim succeeds"),
        KeyClaim::Created
    );

    // Concurrent claims of one key: exactly one job.
    let racing_key = IdempotencyKey::parse("order-2").expect("a valid key");
    let (a, b) = (new_job(&mandator, request(), 2), new_job(&mandator, request(), 2));
    let (ca, cb) = futures::join!(
        store.create_with_key(&a, &racing_key, "h", now()),
        store.create_with_key(&b, &racing_key, "h", now())
    );
    let claims = [ca.expect("claim succeeds"), cb.expect("claim succeeds")];
    let created = claims.iter().filter(|c| **c == KeyClaim::Created).count();
    assert_eq!(created, 1, "{claims:?}");
    let mut existing = 0;
    for id in [a.job_id, b.job_id] {
        if store.get(&mandator, id).await.expect("get succeeds").is_some() {
            existing += 1;
        }
    }
    assert_eq!(existing, 1, "one job stored");

    // An expired key is free again (it expires with its job), even before a TTL removes it.
    let later = first.expires_at + chrono::Duration::seconds(1);
    let r = request();
    let third = Job::new(mandator.clone(), r.as_of, r.params, None, 2, later);
    assert_eq!(store.create_with_key(&third, &key, "hash-c", later).await.expect("claim succeeds"), KeyClaim::Created);
    let fourth = new_job(&mandator, request(), 2);
    let claim = store.create_with_key(&fourth, &key, "hash-c", later).await.expect("claim succeeds");
    assert_eq!(claim, KeyClaim::Existing { job_id: third.job_id, request_hash: "hash-c".into() });
}

/// `ResultStore`: bytes by key, exactly, overwritable.
pub async fn result_store_contract(store: &dyn ResultStore) {
    let mandator = unique_mandator("results");
    let prefix = format!("results/{mandator}/highBalance/{}/", JobId::new());
    let chunk = format!("{prefix}chunks/000000.ndjson");
    let manifest = format!("{prefix}manifest.json");

    assert_eq!(store.get(&chunk).await.expect("get succeeds"), None, "nothing before it is written");

    let body: Vec<u8> = b"{\"userId\":\"u1\",\"accounts\":[{\"accountId\":\"a1\",\"amount\":0.10}]}\n".to_vec();
    store.put(&chunk, body.clone().into()).await.expect("put succeeds");
    assert_eq!(store.get(&chunk).await.expect("get succeeds").as_deref(), Some(body.as_slice()));

    // Overwrite (a finalize step that runs again).
    let replaced = b"{}\n".to_vec();
    store.put(&chunk, replaced.clone().into()).await.expect("put succeeds");
    assert_eq!(store.get(&chunk).await.expect("get succeeds").as_deref(), Some(replaced.as_slice()));

    // Any bytes, any size, also none.
    let binary: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024 + 7).collect();
    store.put(&manifest, binary.clone().into()).await.expect("put succeeds");
    assert_eq!(store.get(&manifest).await.expect("get succeeds").as_deref(), Some(binary.as_slice()));
    let empty = format!("{prefix}empty");
    store.put(&empty, Vec::new().into()).await.expect("put succeeds");
    assert_eq!(store.get(&empty).await.expect("get succeeds").as_deref(), Some(&[][..]));

    // Keys are exact: neither a prefix nor an extension of a key finds it.
    assert_eq!(store.get(&prefix).await.expect("get succeeds"), None);
    assert_eq!(store.get(&format!("{chunk}x")).await.expect("get succeeds"), None);
    let other = format!("results/{}/highBalance/{}/manifest.json", unique_mandator("results-other"), JobId::new());
    assert_eq!(store.get(&other).await.expect("get succeeds"), None);

    // Written piece by piece (more than one S3 upload part, pieces of uneven sizes), invisible
    // until finished, read back piece by piece, exactly.
    let export = format!("{prefix}export.ndjson");
    let mut expected = Vec::new();
    let mut writer = store.writer(&export).await.expect("writer opens");
    for (i, size) in [1usize, 3 << 20, 0, 7 << 20, 12345].into_iter().enumerate() {
        let piece: Vec<u8> = (0..size).map(|b| (b % 251) as u8 ^ i as u8).collect();
        expected.extend_from_slice(&piece);
        writer.write(piece.into()).await.expect("write succeeds");
    }
    assert_eq!(store.get(&export).await.expect("get succeeds"), None, "nothing is visible before finish");
    writer.finish().await.expect("finish succeeds");
    let mut stream = store.get_stream(&export).await.expect("get_stream succeeds").expect("the object exists");
    let mut read = Vec::new();
    while let Some(piece) = stream.next().await {
        read.extend_from_slice(&piece.expect("a piece reads"));
    }
    assert!(read == expected, "streamed bytes equal written bytes ({} vs {})", read.len(), expected.len());
    assert!(store.get_stream(&format!("{export}x")).await.expect("get_stream succeeds").is_none());

    // A small object written in pieces, and an empty one.
    let small = format!("{prefix}parts/0001.ndjson");
    let mut writer = store.writer(&small).await.expect("writer opens");
    writer.write(b"{\"userId\":\"a\"}\n".to_vec().into()).await.expect("write succeeds");
    writer.write(b"{\"userId\":\"b\"}\n".to_vec().into()).await.expect("write succeeds");
    writer.finish().await.expect("finish succeeds");
    assert_eq!(
        store.get(&small).await.expect("get succeeds").as_deref(),
        Some(&b"{\"userId\":\"a\"}\n{\"userId\":\"b\"}\n"[..])
    );
    let nothing = format!("{prefix}parts/0002.ndjson");
    store.writer(&nothing).await.expect("writer opens").finish().await.expect("finish succeeds");
    assert_eq!(store.get(&nothing).await.expect("get succeeds").as_deref(), Some(&[][..]));
}

/// Account data of one mandator as a test writes it: users by id, accounts by id, transactions.
type Data = BTreeMap<UserId, BTreeMap<AccountId, (Account, Vec<Transaction>)>>;

fn account(user: &UserId, id: &str, currency: &str, balance: &str) -> Account {
    Account {
        user_id: user.clone(),
        account_id: AccountId::parse(id).expect("a valid account id"),
        account_type: if id.ends_with('s') { AccountType::Savings } else { AccountType::Checking },
        currency: Currency::parse(currency).expect("a valid currency"),
        balance: money(balance),
        balance_date: date("2024-05-31"),
    }
}

fn transaction(id: &str, booking_date: &str, amount: &str, currency: &str) -> Transaction {
    Transaction {
        transaction_id: TransactionId::parse(id).expect("a valid transaction id"),
        booking_date: date(booking_date),
        amount: money(amount),
        currency: Currency::parse(currency).expect("a valid currency"),
        counterpart_name: format!("  Counterpart {id}  "),
        purpose: String::new(),
        labels: if id.len().is_multiple_of(2) { vec!["RENT".into(), "HOUSING".into()] } else { vec![] },
    }
}

/// Users whose ids test byte order (`-` < `.` < digits < upper case < lower case, shorter first),
/// accounts likewise, and transactions out of order, on equal dates, with exact amounts.
fn sample_data() -> Data {
    let user_ids = ["u1", "u10", "u2", "U9", "u-1", "u.1", "u1x", "u_1", "user:1@bank", "a", "z=9", "u+3"];
    let mut data = Data::new();
    for (i, uid) in user_ids.iter().chain(["v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7"].iter()).enumerate() {
        let user = UserId::parse(uid).expect("a valid user id");
        let mut accounts = BTreeMap::new();
        let account_ids: &[&str] = match i % 3 {
            0 => &["a1"],
            1 => &["a2", "a10", "A1s"],
            _ => &["acc-1", "acc.1"],
        };
        for (j, aid) in account_ids.iter().enumerate() {
            let currency = if j == 2 { "USD" } else { "EUR" };
            let a = account(&user, aid, currency, ["1234567890123.45", "-0.10", "0", "99.99"][(i + j) % 4]);
            let transactions = match (i + j) % 3 {
                0 => vec![],
                1 => vec![
                    transaction("t2", "2024-05-03", "-0.01", currency),
                    transaction("t10", "2024-05-03", "100", currency),
                    transaction("t1", "2024-04-30", "-9999999999999.99", currency),
                    transaction("t0", "2024-06-02", "0.1", currency),
                ],
                _ => (0..25).map(|k| transaction(&format!("tx{k:03}"), "2024-03-15", "-12.30", currency)).collect(),
            };
            accounts.insert(a.account_id.clone(), (a, transactions));
        }
        data.insert(user, accounts);
    }
    // One user larger than a DynamoDB page (1 MB): its items span several pages of a Query.
    let big = UserId::parse("u5-big").expect("a valid user id");
    let a = account(&big, "main", "EUR", "10.00");
    let purpose = "p".repeat(600);
    let transactions = (0..2000)
        .map(|k| {
            let mut t =
                transaction(&format!("t{k:05}"), &format!("2023-{:02}-{:02}", k % 12 + 1, k % 28 + 1), "-1.01", "EUR");
            t.purpose = purpose.clone();
            t
        })
        .collect();
    data.insert(big, BTreeMap::from([(a.account_id.clone(), (a, transactions))]));
    data
}

/// The items of `data` in an order unlike the stored one: transactions before their accounts,
/// users backwards.
fn items_of(data: &Data) -> Vec<AccountItem> {
    let mut items = Vec::new();
    for (user, accounts) in data.iter().rev() {
        for (account, transactions) in accounts.values() {
            for t in transactions.iter().rev() {
                items.push(AccountItem::Transaction {
                    user_id: user.clone(),
                    account_id: account.account_id.clone(),
                    transaction: t.clone(),
                });
            }
            items.push(AccountItem::Account(account.clone()));
        }
    }
    items
}

/// What `users` must yield for `data` on one shard.
fn expected_shard(data: &Data, shard: u32, shard_count: u32) -> Vec<UserData> {
    data.iter()
        .filter(|(user, _)| shard_of(user, shard_count) == shard)
        .map(|(user, accounts)| UserData {
            user_id: user.clone(),
            accounts: accounts
                .values()
                .map(|(account, transactions)| {
                    let mut transactions = transactions.clone();
                    transactions.sort_by(|a, b| {
                        (a.booking_date, a.transaction_id.as_str()).cmp(&(b.booking_date, b.transaction_id.as_str()))
                    });
                    AccountHistory { account: account.clone(), transactions }
                })
                .collect(),
        })
        .collect()
}

async fn put_all(sink: &dyn AccountSink, mandator: &MandatorId, shard_count: u32, items: &[AccountItem]) {
    // Several calls of different sizes, as the importer and the generator make them.
    for chunk in items.chunks(333) {
        sink.put_items(mandator, shard_count, chunk).await.expect("put_items succeeds");
    }
}

async fn read_shard(source: &dyn AccountSource, mandator: &MandatorId, shard: u32) -> Vec<UserData> {
    source.users(mandator, shard).try_collect().await.expect("the shard reads without error")
}

/// `AccountSink` and `AccountSource` over one store: the shard count is recorded once, every
/// shard streams its users whole and in order, amounts stay exact, writes are upserts, and one
/// mandator never sees another's data.
pub async fn account_contract(sink: &dyn AccountSink, source: &dyn AccountSource) {
    const SHARDS: u32 = 4;
    let mandator = unique_mandator("accounts");
    // Mandators whose ids extend the first one: their keys share its prefix.
    let longer = MandatorId::parse(&format!("{mandator}x")).expect("a valid mandator id");
    let dashed = MandatorId::parse(&format!("{mandator}-1")).expect("a valid mandator id");

    // The shard count: unknown, recorded, confirmed, never changed.
    assert_eq!(source.shard_count(&mandator).await.expect("shard_count succeeds"), None, "no data yet");
    sink.ensure_shard_count(&mandator, SHARDS).await.expect("the first count is recorded");
    sink.ensure_shard_count(&mandator, SHARDS).await.expect("the same count is confirmed");
    assert!(
        matches!(sink.ensure_shard_count(&mandator, SHARDS * 2).await, Err(StoreError::Conflict(_))),
        "a different count conflicts"
    );
    assert_eq!(source.shard_count(&mandator).await.expect("shard_count succeeds"), Some(SHARDS));
    assert_eq!(source.shard_count(&longer).await.expect("shard_count succeeds"), None, "counts are per mandator");

    // Before any item: every shard is empty.
    for shard in 0..SHARDS {
        assert!(read_shard(source, &mandator, shard).await.is_empty());
    }

    // The same users and ids under other mandators, with other amounts, written first.
    let mut decoy = sample_data();
    for accounts in decoy.values_mut() {
        for (account, transactions) in accounts.values_mut() {
            account.balance = money("-1.00");
            transactions.truncate(1);
        }
    }
    for other in [&longer, &dashed] {
        sink.ensure_shard_count(other, SHARDS).await.expect("the first count is recorded");
        put_all(sink, other, SHARDS, &items_of(&decoy)).await;
    }

    let mut data = sample_data();
    put_all(sink, &mandator, SHARDS, &items_of(&data)).await;

    let mut seen = 0;
    for shard in 0..SHARDS {
        let users = read_shard(source, &mandator, shard).await;
        let ids: Vec<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
        assert!(ids.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()), "shard {shard} is in userId order: {ids:?}");
        assert_eq!(users, expected_shard(&data, shard, SHARDS), "shard {shard} yields exactly the data written");
        for user in &users {
            for history in &user.accounts {
                let want = &data[&user.user_id][&history.account.account_id].0;
                assert_eq!(history.account.balance.to_string(), want.balance.to_string(), "exact balance");
            }
        }
        seen += users.len();
    }
    assert_eq!(seen, data.len(), "every user is on exactly one shard");
    assert!(read_shard(source, &mandator, SHARDS).await.is_empty(), "a shard past the count is empty");

    // Writes are upserts: a changed account and transaction replace the stored ones.
    let (user, account_id) = data
        .iter()
        .find_map(|(u, accounts)| {
            accounts.iter().find(|(_, (_, t))| !t.is_empty()).map(|(a, _)| (u.clone(), a.clone()))
        })
        .expect("sample data has transactions");
    let (changed_account, transactions) = data.get_mut(&user).and_then(|a| a.get_mut(&account_id)).expect("present");
    changed_account.balance = money("-42.42");
    transactions[0].amount = money("0.01");
    transactions[0].labels = vec!["CHANGED".into()];
    let changed = vec![
        AccountItem::Account(changed_account.clone()),
        AccountItem::Transaction {
            user_id: user.clone(),
            account_id: account_id.clone(),
            transaction: transactions[0].clone(),
        },
    ];
    sink.put_items(&mandator, SHARDS, &changed).await.expect("put_items succeeds");
    let shard = shard_of(&user, SHARDS);
    assert_eq!(read_shard(source, &mandator, shard).await, expected_shard(&data, shard, SHARDS), "upserted in place");

    // The other mandators read only their own data.
    for other in [&longer, &dashed] {
        for shard in 0..SHARDS {
            assert_eq!(read_shard(source, other, shard).await, expected_shard(&decoy, shard, SHARDS), "{other}");
        }
    }

    // A transaction whose account item is missing is reported, never silently left out.
    let broken = unique_mandator("accounts-orphan");
    sink.ensure_shard_count(&broken, 1).await.expect("the first count is recorded");
    let user = UserId::parse("u1").expect("a valid user id");
    let present = account(&user, "a1", "EUR", "1.00");
    let orphan = AccountItem::Transaction {
        user_id: user.clone(),
        account_id: AccountId::parse("a0").expect("a valid account id"),
        transaction: transaction("t1", "2024-05-01", "1.00", "EUR"),
    };
    sink.put_items(&broken, 1, &[AccountItem::Account(present), orphan]).await.expect("put_items succeeds");
    let read: Vec<_> = source.users(&broken, 0).collect().await;
    assert!(
        read.iter().any(|r| matches!(r, Err(StoreError::Corrupt(_)))),
        "a transaction without its account is Corrupt: {read:?}"
    );

    // A consumer may stop early.
    let busiest = (0..SHARDS).max_by_key(|s| expected_shard(&data, *s, SHARDS).len()).unwrap_or(0);
    let first = source.users(&mandator, busiest).next().await;
    assert!(matches!(first, Some(Ok(_))), "the first user of a shard");
}
