//! The contract of the storage ports (`segments_core::ports`), checked the same way against every
//! adapter: the embedded store, and DynamoDB and S3 on a local emulator.
//!
//! Every check creates its own mandators (random ids), so one store can serve any number of
//! checks, also concurrently. Timestamps are whole seconds: the contract is about semantics, not
//! about how finely a store keeps time.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use futures::{StreamExt, TryStreamExt};
use segments_core::domain::records::shard_of;
use segments_core::domain::refresh::{RefreshId, RefreshState, RefreshSummary, RefreshTrigger};
use segments_core::domain::segment::{
    AccountRef, Comparison, Condition, Figure, LedgerId, MetaValue, Metadata, Rule, Scope, Segment, SegmentId,
    SegmentQuery, Status, StatusCode,
};
use segments_core::domain::{
    Account, AccountHistory, AccountId, AccountType, Currency, JobId, MandatorId, Money, SegmentType, Transaction,
    TransactionId, UserData, UserId,
};
use segments_core::jobs::{IdempotencyKey, Job, JobMessage, JobStatus, ResultSummary};
use segments_core::ports::{
    AccountDirectory, AccountSource, CallbackSecrets, JobCatalog, JobPage, JobQueue, JobStore, KeyClaim, ResultLinks,
    ResultStore, SegmentStore, StoreError, StoredUser, UserStore, UserWriteError,
};
use segments_core::rules::SegmentRequest;
use segments_core::snapshot;

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

    live_jobs_contract(store).await;
    usage_records_contract(store).await;
}

/// `JobStore::live_jobs`: the QUEUED and RUNNING jobs of one mandator, all types together,
/// counted up to a bound; a job leaves the count in the write that makes it final.
async fn live_jobs_contract(store: &dyn JobStore) {
    let mandator = unique_mandator("live");
    // Its keys share a prefix with the first mandator's.
    let longer = MandatorId::parse(&format!("{mandator}x")).expect("a valid mandator id");
    let live = |m: &MandatorId, at_most: u32| {
        let m = m.clone();
        async move { store.live_jobs(&m, at_most).await.expect("live_jobs succeeds") }
    };
    assert_eq!(live(&mandator, 20).await, 0, "a new mandator has no live job");

    // One job of every type, one of them under an idempotency key: each counts.
    let mut jobs = Vec::new();
    for (_, request) in requests() {
        let job = new_job(&mandator, request, 2);
        store.create(&job).await.expect("create succeeds");
        jobs.push(job);
    }
    let keyed = new_job(&mandator, requests().remove(0).1, 2);
    let key = IdempotencyKey::parse("live-1").expect("a valid key");
    assert_eq!(store.create_with_key(&keyed, &key, "h", now()).await.expect("claim succeeds"), KeyClaim::Created);
    // A claim that finds the key taken stores no job and marks nothing live.
    let refused = new_job(&mandator, requests().remove(0).1, 2);
    let claim = store.create_with_key(&refused, &key, "h", now()).await.expect("claim succeeds");
    assert!(matches!(claim, KeyClaim::Existing { .. }), "{claim:?}");
    // A repeated create of one id conflicts and marks nothing twice.
    assert!(matches!(store.create(&jobs[0]).await, Err(StoreError::Conflict(_))));
    let total = jobs.len() as u32 + 1;
    assert_eq!(live(&mandator, 100).await, total, "every created job is live");
    assert_eq!(live(&mandator, 2).await, 2, "counting stops at the bound");
    assert_eq!(live(&mandator, 0).await, 0);
    assert_eq!(live(&longer, 100).await, 0, "another mandator's jobs are not counted");

    // RUNNING is still live; COMPLETED and FAILED are not, and a repeated final write changes nothing.
    let summary = ResultSummary { total_elements: 0, chunk_size: 1000, chunk_count: 0 };
    store.record_shard(&mandator, jobs[0].job_id, 0).await.expect("record_shard succeeds");
    assert_eq!(live(&mandator, 100).await, total, "a running job is live");
    assert!(store.complete(&jobs[0], summary).await.expect("complete succeeds"));
    assert_eq!(live(&mandator, 100).await, total - 1, "a completed job is not live");
    assert!(store.fail(&mandator, jobs[1].job_id, "broken").await.expect("fail succeeds"));
    assert_eq!(live(&mandator, 100).await, total - 2, "a failed job is not live");
    assert!(!store.complete(&jobs[1], summary).await.expect("complete succeeds"));
    assert!(!store.fail(&mandator, jobs[0].job_id, "late").await.expect("fail succeeds"));
    assert!(store.complete(&keyed, summary).await.expect("complete succeeds"));
    assert_eq!(live(&mandator, 100).await, total - 3);

    // `key_claim` names the job of an unexpired key, and nothing for a free or expired one.
    assert_eq!(
        store.key_claim(&mandator, &key, now()).await.expect("key_claim succeeds"),
        Some(KeyClaim::Existing { job_id: keyed.job_id, request_hash: "h".into() })
    );
    let free = IdempotencyKey::parse("live-2").expect("a valid key");
    assert_eq!(store.key_claim(&mandator, &free, now()).await.expect("key_claim succeeds"), None);
    assert_eq!(store.key_claim(&longer, &key, now()).await.expect("key_claim succeeds"), None, "keys are per mandator");
    let expired = keyed.expires_at + chrono::Duration::seconds(1);
    assert_eq!(store.key_claim(&mandator, &key, expired).await.expect("key_claim succeeds"), None);
}

/// Usage: one record per completed job, summed per mandator, month and type; completions of
/// many jobs at once are each metered once.
async fn usage_records_contract(store: &dyn JobStore) {
    let mandator = unique_mandator("usage");
    let summary = ResultSummary { total_elements: 1, chunk_size: 1000, chunk_count: 1 };
    let (first_type, first) = requests().remove(0);
    let (second_type, second) = requests().remove(1);
    let mut of_first = Vec::new();
    for _ in 0..12 {
        let job = new_job(&mandator, first.clone(), 1);
        store.create(&job).await.expect("create succeeds");
        of_first.push(job);
    }
    let of_second = new_job(&mandator, second, 1);
    store.create(&of_second).await.expect("create succeeds");
    let completions = futures::future::join_all(of_first.iter().map(|job| store.complete(job, summary))).await;
    for (job, completed) in of_first.iter().zip(completions) {
        assert!(completed.expect("each completion succeeds at once"), "job {} completes", job.job_id);
    }
    assert!(store.complete(&of_second, summary).await.expect("complete succeeds"));
    let month = of_first[0].usage_month();
    assert_eq!(store.usage(&mandator, month, first_type).await.expect("usage succeeds"), 12);
    assert_eq!(store.usage(&mandator, month, second_type).await.expect("usage succeeds"), 1, "types are apart");
    // Completing them all again counts nothing.
    for job in &of_first {
        assert!(!store.complete(job, summary).await.expect("complete succeeds"));
    }
    assert_eq!(store.usage(&mandator, month, first_type).await.expect("usage succeeds"), 12);
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
type Data = BTreeMap<UserId, Accounts>;
type Accounts = BTreeMap<AccountId, (Account, Vec<Transaction>)>;

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
        labels: if id.len().is_multiple_of(2) { vec!["RENT".into(), "HOUSING".into()] } else { vec![] },
    }
}

/// Users whose ids test byte order (`-` < `.` < digits < upper case < lower case, shorter first),
/// accounts likewise (accountIds are unique per mandator: each starts with its user's id), and
/// transactions out of order, on equal dates, with exact amounts; and one user whose record
/// takes several blocks.
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
            let balance = ["1234567890123.45", "-0.10", "0", "99.99"][(i + j) % 4];
            let a = account(&user, &format!("{uid}.{aid}"), currency, balance);
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
    let big = UserId::parse("u5-big").expect("a valid user id");
    data.insert(big.clone(), large_accounts(&big));
    data
}

/// An account whose record needs four blocks, more than a DynamoDB Query page: its transaction
/// ids are random, so compression cannot shrink them.
fn large_accounts(user: &UserId) -> Accounts {
    let a = account(user, &format!("{user}.main"), "EUR", "10.00");
    let transactions = (0..36_000)
        .map(|k| {
            let id = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
            transaction(&id, &format!("2023-{:02}-{:02}", k % 12 + 1, k % 28 + 1), "-1.01", "EUR")
        })
        .collect();
    let accounts = BTreeMap::from([(a.account_id.clone(), (a, transactions))]);
    let record = snapshot::encode(&stored_form(user, &accounts)).expect("the record fits the store");
    assert!(record.len() > 3 * snapshot::BLOCK_BYTES, "four blocks, not {} bytes", record.len());
    accounts
}

/// A user's data as a store gives it back: accounts by accountId, transactions by (bookingDate,
/// transactionId).
fn stored_form(user: &UserId, accounts: &Accounts) -> UserData {
    UserData {
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
    }
}

/// A user's data in an order unlike the stored one: accounts and transactions backwards.
fn written_form(user: &UserId, accounts: &Accounts) -> UserData {
    let mut data = stored_form(user, accounts);
    data.accounts.reverse();
    for history in &mut data.accounts {
        history.transactions.reverse();
    }
    data
}

/// What `users` must yield for `data` on one shard.
fn expected_shard(data: &Data, shard: u32, shard_count: u32) -> Vec<UserData> {
    data.iter()
        .filter(|(user, _)| shard_of(user, shard_count) == shard)
        .map(|(user, accounts)| stored_form(user, accounts))
        .collect()
}

/// Writes every user of `data` as a new user; the versions written.
async fn put_new(store: &dyn UserStore, mandator: &MandatorId, shard_count: u32, data: &Data) -> BTreeMap<UserId, u64> {
    let mut versions = BTreeMap::new();
    for (user, accounts) in data {
        let written = written_form(user, accounts);
        let version = store.put_user(mandator, shard_count, &written, None).await.expect("put_user succeeds");
        versions.insert(user.clone(), version);
    }
    versions
}

async fn read_shard(source: &dyn AccountSource, mandator: &MandatorId, shard: u32) -> Vec<UserData> {
    source.users(mandator, shard).try_collect().await.expect("the shard reads without error")
}

async fn ids_of_shard(store: &dyn UserStore, mandator: &MandatorId, shard: u32) -> Vec<UserId> {
    store.user_ids(mandator, shard).try_collect().await.expect("the shard's ids read without error")
}

async fn stored_user(
    store: &dyn UserStore,
    mandator: &MandatorId,
    shard_count: u32,
    user: &UserId,
) -> Option<StoredUser> {
    store.get_user(mandator, shard_count, user).await.expect("get_user succeeds")
}

fn version_changed<T: std::fmt::Debug>(result: Result<T, UserWriteError>) -> bool {
    matches!(result, Err(UserWriteError::VersionChanged))
}

/// `UserStore` with the `AccountSource` and `AccountDirectory` it extends: the shard count is
/// recorded once; a user's data reads back exactly and in store order; every shard streams its
/// users whole, exact and in userId order, and lists their ids; writes are conditional on the
/// version and write nothing when refused; a record of several blocks shrinks without leaving
/// anything behind; an accountId belongs to one user at a time, and is free again once its user
/// drops it or is erased; one mandator never sees another's data.
pub async fn user_store_contract(store: &dyn UserStore) {
    const SHARDS: u32 = 4;
    let mandator = unique_mandator("accounts");
    // Mandators whose ids extend the first one: their keys share its prefix.
    let longer = MandatorId::parse(&format!("{mandator}x")).expect("a valid mandator id");
    let dashed = MandatorId::parse(&format!("{mandator}-1")).expect("a valid mandator id");

    // The shard count: unknown, recorded, confirmed, never changed.
    assert_eq!(store.shard_count(&mandator).await.expect("shard_count succeeds"), None, "no data yet");
    store.ensure_shard_count(&mandator, SHARDS).await.expect("the first count is recorded");
    store.ensure_shard_count(&mandator, SHARDS).await.expect("the same count is confirmed");
    assert!(
        matches!(store.ensure_shard_count(&mandator, SHARDS * 2).await, Err(StoreError::Conflict(_))),
        "a different count conflicts"
    );
    assert_eq!(store.shard_count(&mandator).await.expect("shard_count succeeds"), Some(SHARDS));
    assert_eq!(store.shard_count(&longer).await.expect("shard_count succeeds"), None, "counts are per mandator");

    // Before any user: every shard is empty.
    for shard in 0..SHARDS {
        assert!(read_shard(store, &mandator, shard).await.is_empty());
        assert!(ids_of_shard(store, &mandator, shard).await.is_empty());
    }
    assert_eq!(stored_user(store, &mandator, SHARDS, &user_id("u1")).await, None);

    // The same users and ids under other mandators, with other amounts, written first: accountIds
    // are unique per mandator only.
    let mut decoy = sample_data();
    for accounts in decoy.values_mut() {
        for (account, transactions) in accounts.values_mut() {
            account.balance = money("-1.00");
            transactions.truncate(1);
        }
    }
    for other in [&longer, &dashed] {
        store.ensure_shard_count(other, SHARDS).await.expect("the first count is recorded");
        put_new(store, other, SHARDS, &decoy).await;
    }

    let mut data = sample_data();
    let versions = put_new(store, &mandator, SHARDS, &data).await;

    // Each user reads back exactly, in store order, at the version its write returned.
    for (user, accounts) in &data {
        let stored = stored_user(store, &mandator, SHARDS, user).await.expect("the user is stored");
        assert_eq!(stored.version, versions[user], "{user}");
        assert_eq!(stored.data, stored_form(user, accounts), "{user} reads back exactly");
        for (history, (want, _)) in stored.data.accounts.iter().zip(accounts.values()) {
            assert_eq!(history.account.balance.to_string(), want.balance.to_string(), "exact balance");
        }
    }

    // Every shard streams its users whole and in userId order, and lists the same ids.
    let mut seen = 0;
    for shard in 0..SHARDS {
        let users = read_shard(store, &mandator, shard).await;
        let ids: Vec<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
        assert!(ids.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()), "shard {shard} is in userId order: {ids:?}");
        assert_eq!(users, expected_shard(&data, shard, SHARDS), "shard {shard} yields exactly the data written");
        let listed = ids_of_shard(store, &mandator, shard).await;
        assert_eq!(listed.iter().map(UserId::as_str).collect::<Vec<_>>(), ids, "shard {shard} lists its users");
        seen += users.len();
    }
    assert_eq!(seen, data.len(), "every user is on exactly one shard");
    assert!(read_shard(store, &mandator, SHARDS).await.is_empty(), "a shard past the count is empty");

    // A writer that read an older version, or none, writes nothing.
    let user = user_id("u10");
    let before = stored_user(store, &mandator, SHARDS, &user).await.expect("the user is stored");
    let mut changed = before.data.clone();
    changed.accounts[0].account.balance = money("-42.42");
    changed.accounts[0].transactions.truncate(1);
    for stale in [None, Some(before.version - 1), Some(before.version + 1)] {
        let put = store.put_user(&mandator, SHARDS, &changed, stale).await;
        assert!(version_changed(put), "a write expecting {stale:?} is refused");
    }
    assert!(version_changed(store.delete_user(&mandator, SHARDS, &user, before.version - 1).await));
    assert_eq!(stored_user(store, &mandator, SHARDS, &user).await, Some(before.clone()), "nothing was written");
    let version = store.put_user(&mandator, SHARDS, &changed, Some(before.version)).await.expect("put_user succeeds");
    assert!(version > before.version, "a write moves the version on");
    assert_eq!(stored_user(store, &mandator, SHARDS, &user).await, Some(StoredUser { data: changed.clone(), version }));
    assert!(version_changed(store.put_user(&mandator, SHARDS, &before.data, Some(before.version)).await));
    let history = &changed.accounts[0];
    data.get_mut(&user)
        .expect("present")
        .insert(history.account.account_id.clone(), (history.account.clone(), history.transactions.clone()));

    // A record of several blocks replaced by a small one: nothing of the larger one is left.
    let big = user_id("u5-big");
    let small = account(&big, "u5-big.main", "EUR", "3.00");
    let small: Accounts =
        BTreeMap::from([(small.account_id.clone(), (small, vec![transaction("t1", "2024-05-01", "-0.01", "EUR")]))]);
    let big_version = versions[&big];
    let version = store
        .put_user(&mandator, SHARDS, &written_form(&big, &small), Some(big_version))
        .await
        .expect("put_user succeeds");
    assert!(version > big_version);
    data.insert(big.clone(), small);
    assert_eq!(
        stored_user(store, &mandator, SHARDS, &big).await,
        Some(StoredUser { data: stored_form(&big, &data[&big]), version })
    );
    let shard = shard_of(&big, SHARDS);
    assert_eq!(read_shard(store, &mandator, shard).await, expected_shard(&data, shard, SHARDS), "no block left");
    let ids: Vec<UserId> = expected_shard(&data, shard, SHARDS).into_iter().map(|u| u.user_id).collect();
    assert_eq!(ids_of_shard(store, &mandator, shard).await, ids);

    // An accountId another user holds is refused, and nothing is written.
    let holder = user_id("u1");
    let held = account_id("u1.a1");
    let newcomer = user_id("w-new");
    let claims = BTreeMap::from([
        (account_id("w-new.a"), (account(&newcomer, "w-new.a", "EUR", "1.00"), vec![])),
        (held.clone(), (account(&newcomer, "u1.a1", "EUR", "1.00"), vec![])),
    ]);
    match store.put_user(&mandator, SHARDS, &written_form(&newcomer, &claims), None).await {
        Err(UserWriteError::AccountHeld { account, holder: h }) => {
            assert_eq!((account, h), (held.clone(), holder.clone()))
        }
        other => panic!("a held account is refused, not {other:?}"),
    }
    assert_eq!(stored_user(store, &mandator, SHARDS, &newcomer).await, None, "nothing was written");
    let lookup = [held.clone(), account_id("w-new.a")];
    assert_eq!(
        store.account_users(&mandator, &lookup).await.expect("account_users succeeds"),
        BTreeMap::from([(held.clone(), holder.clone())]),
        "the directory is unchanged"
    );
    // Also for a stored user taking it on.
    let taker = user_id("u2");
    let before = stored_user(store, &mandator, SHARDS, &taker).await.expect("the user is stored");
    let mut more = data[&taker].clone();
    more.insert(held.clone(), (account(&taker, "u1.a1", "EUR", "5.00"), vec![]));
    let put = store.put_user(&mandator, SHARDS, &written_form(&taker, &more), Some(before.version)).await;
    assert!(matches!(put, Err(UserWriteError::AccountHeld { ref account, .. }) if *account == held), "{put:?}");
    assert_eq!(stored_user(store, &mandator, SHARDS, &taker).await, Some(before), "nothing was written");

    // An account its user drops is free for another.
    let holder_version = stored_user(store, &mandator, SHARDS, &holder).await.expect("the user is stored").version;
    let replacement = BTreeMap::from([(account_id("u1.b1"), (account(&holder, "u1.b1", "EUR", "2.00"), vec![]))]);
    store
        .put_user(&mandator, SHARDS, &written_form(&holder, &replacement), Some(holder_version))
        .await
        .expect("put_user succeeds");
    data.insert(holder.clone(), replacement);
    let free = store.account_users(&mandator, &[held.clone(), account_id("u1.b1")]).await.expect("account_users");
    assert_eq!(free, BTreeMap::from([(account_id("u1.b1"), holder.clone())]), "the dropped account is released");
    store
        .put_user(&mandator, SHARDS, &written_form(&newcomer, &claims), None)
        .await
        .expect("the free account is taken");
    data.insert(newcomer.clone(), claims);
    assert_eq!(
        store.account_users(&mandator, &lookup).await.expect("account_users succeeds"),
        BTreeMap::from([(held.clone(), newcomer.clone()), (account_id("w-new.a"), newcomer.clone())])
    );

    // An erased user is gone, with its accounts; written again, it gets a later version.
    let erased = user_id("u-1");
    let last = stored_user(store, &mandator, SHARDS, &erased).await.expect("the user is stored");
    store.delete_user(&mandator, SHARDS, &erased, last.version).await.expect("delete_user succeeds");
    assert_eq!(stored_user(store, &mandator, SHARDS, &erased).await, None);
    assert!(version_changed(store.delete_user(&mandator, SHARDS, &erased, last.version).await), "erased already");
    let erased_accounts = data.remove(&erased).expect("present");
    let ids: Vec<AccountId> = erased_accounts.keys().cloned().collect();
    assert_eq!(store.account_users(&mandator, &ids).await.expect("account_users succeeds"), BTreeMap::new());
    for shard in 0..SHARDS {
        assert_eq!(read_shard(store, &mandator, shard).await, expected_shard(&data, shard, SHARDS), "{shard}");
        let ids: Vec<UserId> = expected_shard(&data, shard, SHARDS).into_iter().map(|u| u.user_id).collect();
        assert_eq!(ids_of_shard(store, &mandator, shard).await, ids, "{shard}");
    }
    let again = store
        .put_user(&mandator, SHARDS, &written_form(&erased, &erased_accounts), None)
        .await
        .expect("put_user succeeds");
    assert!(again > last.version, "never a version an earlier reader may hold");
    data.insert(erased.clone(), erased_accounts);

    // Data the store cannot keep is refused before anything is written.
    let crowded = user_id("w-crowded");
    let many: Accounts = (0..=snapshot::MAX_ACCOUNTS)
        .map(|i| {
            let a = account(&crowded, &format!("w-crowded.{i}"), "EUR", "1.00");
            (a.account_id.clone(), (a, vec![]))
        })
        .collect();
    let put = store.put_user(&mandator, SHARDS, &written_form(&crowded, &many), None).await;
    assert!(matches!(put, Err(UserWriteError::TooLarge(_))), "{put:?}");
    assert_eq!(stored_user(store, &mandator, SHARDS, &crowded).await, None);

    // The other mandators read only their own data.
    for other in [&longer, &dashed] {
        for shard in 0..SHARDS {
            assert_eq!(read_shard(store, other, shard).await, expected_shard(&decoy, shard, SHARDS), "{other}");
        }
    }

    // A consumer may stop early.
    let busiest = (0..SHARDS).max_by_key(|s| expected_shard(&data, *s, SHARDS).len()).unwrap_or(0);
    let first = store.users(&mandator, busiest).next().await;
    assert!(matches!(first, Some(Ok(_))), "the first user of a shard");
    let first = store.user_ids(&mandator, busiest).next().await;
    assert!(matches!(first, Some(Ok(_))), "the first id of a shard");
}

// ---------------------------------------------------------------------------------------------
// JobQueue

/// The far end of a queue, for [`job_queue_contract`] to take back what was enqueued.
#[async_trait::async_trait]
pub trait QueueReader: Send {
    /// The next `n` messages, in any order, taken off the queue. Panics when they do not all
    /// arrive within a few seconds.
    async fn take(&mut self, n: usize) -> Vec<JobMessage>;

    /// Whatever the queue holds right now, taken off it.
    async fn drain(&mut self) -> Vec<JobMessage>;
}

/// Messages in a fixed order, so two lists compare as multisets.
fn sorted(mut messages: Vec<JobMessage>) -> Vec<JobMessage> {
    messages.sort_by_key(|m| (m.mandator_id.to_string(), m.job_id, m.segment_type, m.shard));
    messages
}

/// `JobQueue`: every message enqueued arrives once, exactly as it was sent (whatever its type or
/// mandator, in batches of any size); a queue that cannot take messages answers `Err`.
/// `reader` reads `queue`; `closed` is a queue of the same kind that cannot take anything.
pub async fn job_queue_contract(queue: &dyn JobQueue, reader: &mut dyn QueueReader, closed: &dyn JobQueue) {
    let mandator = unique_mandator("queue");
    let other = unique_mandator("queue-other");
    assert_eq!(reader.drain().await, [], "the queue starts empty");

    // One message, exactly.
    let one = JobMessage {
        mandator_id: mandator.clone(),
        job_id: JobId::new(),
        segment_type: SegmentType::LowBalance,
        shard: 7,
    };
    queue.enqueue(&one).await.expect("enqueue succeeds");
    assert_eq!(reader.take(1).await, std::slice::from_ref(&one));
    assert_eq!(reader.drain().await, [], "a message arrives once");

    // Many at once: more than one SQS batch, every segment type, two mandators, a message sent
    // twice (both copies arrive: the queue does not deduplicate), shards up to u32::MAX.
    let mut sent = Vec::new();
    for (i, &segment_type) in SegmentType::ALL.iter().enumerate() {
        let job_id = JobId::new();
        for shard in 0..4 {
            let mandator_id = if shard % 2 == 0 { mandator.clone() } else { other.clone() };
            sent.push(JobMessage { mandator_id, job_id, segment_type, shard: shard + i as u32 });
        }
    }
    sent.push(JobMessage { shard: u32::MAX, ..one.clone() });
    sent.push(one.clone());
    sent.push(one.clone());
    assert!(sent.len() > 20, "more than two SQS batches");
    queue.enqueue_all(&sent).await.expect("enqueue_all succeeds");
    let received = reader.take(sent.len()).await;
    assert_eq!(sorted(received), sorted(sent.clone()), "every message arrives as sent");
    assert_eq!(reader.drain().await, [], "nothing more arrives");

    // Nothing to send is no error and sends nothing.
    queue.enqueue_all(&[]).await.expect("enqueue_all of nothing succeeds");
    assert_eq!(reader.drain().await, []);

    // A queue that cannot take messages says so.
    assert!(closed.enqueue(&one).await.is_err(), "enqueue on a closed queue is an error");
    assert!(closed.enqueue_all(&sent).await.is_err(), "enqueue_all on a closed queue is an error");
    assert_eq!(reader.drain().await, [], "a closed queue sends nothing to an open one");
}

// ---------------------------------------------------------------------------------------------
// SegmentStore

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).expect("a valid time").with_timezone(&Utc)
}

fn ledger(id: &str) -> LedgerId {
    LedgerId::parse(id).expect("a valid ledger id")
}

fn account_id(id: &str) -> AccountId {
    AccountId::parse(id).expect("a valid account id")
}

fn user_id(id: &str) -> UserId {
    UserId::parse(id).expect("a valid user id")
}

fn member(account: &str, user: &str) -> AccountRef {
    AccountRef { account_id: account_id(account), user_id: user_id(user) }
}

fn segment(mandator: &MandatorId, ledger: Option<&LedgerId>, name: &str, created_at: DateTime<Utc>) -> Segment {
    Segment {
        id: SegmentId::new(),
        mandator: mandator.clone(),
        ledger_id: ledger.cloned(),
        name: name.to_owned(),
        status: Status::default(),
        metadata: Metadata::new(),
        rule: None,
        last_refresh: None,
        schedule: None,
        next_refresh_at: None,
        callback_url: None,
        created_at,
        updated_at: created_at,
        deleted_at: None,
        version: 1,
    }
}

/// A segment with every optional part set, and values a float or a trimming store would change.
fn rich_segment(mandator: &MandatorId, name: &str, created_at: DateTime<Utc>) -> Segment {
    let number = serde_json::from_str("12345678901234567890.125").expect("a number");
    Segment {
        status: Status {
            code: StatusCode::parse("PENDING").unwrap(),
            description: Some("  waiting for review  ".into()),
        },
        metadata: Metadata::from([
            ("tier".to_owned(), MetaValue::String("gold ✓".into())),
            ("limit".to_owned(), MetaValue::Number(number)),
            ("vip".to_owned(), MetaValue::Bool(false)),
            ("".to_owned(), MetaValue::String(String::new())),
        ]),
        rule: Some(Rule {
            segment_type: SegmentType::HighBalance,
            parameters: r#"{"threshold":0.10}"#.into(),
            condition: Some(Condition {
                figure: Figure::Amount,
                label_group: None,
                operator: Comparison::Gte,
                threshold: Money::parse("1234567890123.45").unwrap(),
            }),
            account_type: None,
        }),
        last_refresh: Some(RefreshSummary {
            id: RefreshId::new(),
            job_id: JobId::new(),
            trigger: RefreshTrigger::Schedule,
            state: RefreshState::Applied,
            requested_at: created_at,
            finished_at: Some(created_at + chrono::Duration::milliseconds(1500)),
            entered: 1,
            left: 2,
            error: None,
        }),
        schedule: Some(serde_json::from_str(r#"{"every":"week","on":"friday","at":"18:30"}"#).unwrap()),
        next_refresh_at: Some(created_at + chrono::Duration::days(3)),
        callback_url: Some("https://hooks.example.com/segments?x=1".into()),
        ..segment(mandator, None, name, created_at)
    }
}

/// `segment` changed the way the use cases change one: the next version.
fn next_version(segment: &Segment, change: impl FnOnce(&mut Segment)) -> Segment {
    let mut next = segment.clone();
    change(&mut next);
    next.version = segment.version + 1;
    next.updated_at = segment.updated_at + chrono::Duration::seconds(1);
    next
}

async fn stored_segment(store: &dyn SegmentStore, mandator: &MandatorId, id: SegmentId) -> Option<Segment> {
    store.get_segment(mandator, id).await.expect("get_segment succeeds")
}

async fn segments_of(store: &dyn SegmentStore, mandator: &MandatorId, account: &str) -> Vec<(SegmentId, UserId)> {
    let mut found =
        store.segments_of_account(mandator, &account_id(account)).await.expect("segments_of_account succeeds");
    found.sort();
    found
}

fn ids(segments: &[Segment]) -> Vec<(String, SegmentId)> {
    segments.iter().map(|s| (s.name.clone(), s.id)).collect()
}

/// `SegmentStore`: segments round-trip exactly and per mandator; a name is held by one live
/// segment of its scope (exact comparison) and moves or frees with renames and deletes; replaces
/// are conditional on the version; lists select one scope and period in (createdAt, id) order;
/// membership is idempotent, ordered by accountId, per mandator, and kept after a delete.
pub async fn segment_store_contract(store: &dyn SegmentStore) {
    let mandator = unique_mandator("segments");
    let other = unique_mandator("segments-other");
    let longer = MandatorId::parse(&format!("{mandator}x")).expect("a valid mandator id");
    let (l1, l2) = (ledger("ledger-1"), ledger("ledger-2"));

    // A segment reads back exactly as written, only for its mandator.
    let gold = rich_segment(&mandator, "Gold", at("2024-03-01T10:00:00Z"));
    store.create_segment(&gold).await.expect("create succeeds");
    assert_eq!(stored_segment(store, &mandator, gold.id).await.as_ref(), Some(&gold));
    assert_eq!(stored_segment(store, &other, gold.id).await, None, "another mandator's segment is not found");
    assert_eq!(stored_segment(store, &longer, gold.id).await, None, "nor through a mandator id extending it");
    assert_eq!(stored_segment(store, &mandator, SegmentId::new()).await, None);

    // A live segment of the scope holds the name: a second one conflicts and is not stored.
    let clash = segment(&mandator, None, "Gold", at("2024-03-01T10:01:00Z"));
    let created = store.create_segment(&clash).await;
    assert!(matches!(created, Err(StoreError::Conflict(_))), "a held name conflicts: {created:?}");
    assert_eq!(stored_segment(store, &mandator, clash.id).await, None, "the losing segment is not stored");

    // Names compare exactly, per scope, per mandator.
    let lower = segment(&mandator, None, "gold", at("2024-03-01T10:02:00Z"));
    let spaced = segment(&mandator, None, "Gold ", at("2024-03-01T10:03:00Z"));
    let in_l1 = segment(&mandator, Some(&l1), "Gold", at("2024-03-01T10:04:00Z"));
    let in_l2 = segment(&mandator, Some(&l2), "Gold", at("2024-03-01T10:05:00Z"));
    let foreign = segment(&other, None, "Gold", at("2024-03-01T10:06:00Z"));
    let foreign_longer = segment(&longer, None, "Gold", at("2024-03-01T10:07:00Z"));
    for s in [&lower, &spaced, &in_l1, &in_l2, &foreign, &foreign_longer] {
        store
            .create_segment(s)
            .await
            .unwrap_or_else(|e| panic!("{:?} in {:?} of {}: {e}", s.name, s.scope(), s.mandator));
        assert_eq!(stored_segment(store, &s.mandator, s.id).await.as_ref(), Some(s));
    }
    let clash_in_l1 = segment(&mandator, Some(&l1), "Gold", at("2024-03-01T10:08:00Z"));
    assert!(matches!(store.create_segment(&clash_in_l1).await, Err(StoreError::Conflict(_))), "names are per ledger");

    // Two concurrent creates of one name: exactly one wins.
    let (a, b) = (
        segment(&mandator, None, "Race", at("2024-03-01T10:09:00Z")),
        segment(&mandator, None, "Race", at("2024-03-01T10:09:00Z")),
    );
    let (ra, rb) = futures::join!(store.create_segment(&a), store.create_segment(&b));
    assert!(ra.is_ok() != rb.is_ok(), "exactly one create wins: {ra:?} {rb:?}");
    assert!(matches!(if ra.is_ok() { &rb } else { &ra }, Err(StoreError::Conflict(_))), "the loser conflicts");
    let (race, lost) = if ra.is_ok() { (a, b) } else { (b, a) };
    assert_eq!(stored_segment(store, &mandator, race.id).await.as_ref(), Some(&race));
    assert_eq!(stored_segment(store, &mandator, lost.id).await, None);

    // Replacing is conditional on the stored version.
    let gold2 = next_version(&gold, |s| {
        s.status = Status { code: StatusCode::parse("SUSPENDED").unwrap(), description: None };
        s.metadata.remove("vip");
        s.rule = None;
    });
    store.replace_segment(&gold, &gold2).await.expect("replace succeeds");
    assert_eq!(stored_segment(store, &mandator, gold.id).await.as_ref(), Some(&gold2));
    let stale = next_version(&gold, |s| s.status.code = StatusCode::parse("INACTIVE").unwrap());
    let replaced = store.replace_segment(&gold, &stale).await;
    assert!(matches!(replaced, Err(StoreError::Conflict(_))), "a stale previous conflicts: {replaced:?}");
    assert_eq!(
        stored_segment(store, &mandator, gold.id).await.as_ref(),
        Some(&gold2),
        "a lost replace changes nothing"
    );
    let never_created = segment(&mandator, None, "Ghost", at("2024-03-01T10:10:00Z"));
    let ghost = next_version(&never_created, |_| {});
    assert!(matches!(store.replace_segment(&never_created, &ghost).await, Err(StoreError::Conflict(_))));
    assert_eq!(stored_segment(store, &mandator, never_created.id).await, None, "a replace creates nothing");
    // Another mandator's replace reaches nothing.
    let foreign_previous = Segment { mandator: other.clone(), ..gold2.clone() };
    let foreign_next = next_version(&foreign_previous, |s| s.name = "Stolen".into());
    assert!(store.replace_segment(&foreign_previous, &foreign_next).await.is_err(), "no such segment for other");
    assert_eq!(stored_segment(store, &mandator, gold.id).await.as_ref(), Some(&gold2));
    assert_eq!(stored_segment(store, &other, gold.id).await, None);

    // Two concurrent replaces of one version: exactly one wins.
    let (x, y) = (
        next_version(&gold2, |s| s.status.description = Some("x".into())),
        next_version(&gold2, |s| s.status.description = Some("y".into())),
    );
    let (rx, ry) = futures::join!(store.replace_segment(&gold2, &x), store.replace_segment(&gold2, &y));
    assert!(rx.is_ok() != ry.is_ok(), "exactly one replace wins: {rx:?} {ry:?}");
    let gold3 = if rx.is_ok() { x } else { y };
    assert_eq!(stored_segment(store, &mandator, gold.id).await.as_ref(), Some(&gold3));

    // A rename moves the claim: the old name is free, the new one held; a held name refuses it.
    let taken = next_version(&gold3, |s| s.name = "gold".into());
    assert!(matches!(store.replace_segment(&gold3, &taken).await, Err(StoreError::Conflict(_))), "new name held");
    assert_eq!(stored_segment(store, &mandator, gold.id).await.as_ref(), Some(&gold3));
    let platinum = next_version(&gold3, |s| s.name = "Platinum".into());
    store.replace_segment(&gold3, &platinum).await.expect("a rename to a free name succeeds");
    assert_eq!(stored_segment(store, &mandator, gold.id).await.as_ref(), Some(&platinum));
    let clash = segment(&mandator, None, "Platinum", at("2024-03-01T10:11:00Z"));
    assert!(matches!(store.create_segment(&clash).await, Err(StoreError::Conflict(_))), "the new name is held");
    let new_gold = segment(&mandator, None, "Gold", at("2024-03-01T10:12:00Z"));
    store.create_segment(&new_gold).await.expect("the old name is free again");

    // A delete keeps the segment readable, drops it from lists and frees its name.
    let deleted = next_version(&platinum, |s| s.deleted_at = Some(at("2024-03-02T00:00:00Z")));
    store.replace_segment(&platinum, &deleted).await.expect("a delete succeeds");
    assert_eq!(stored_segment(store, &mandator, gold.id).await.as_ref(), Some(&deleted), "deleted, still readable");
    let new_platinum = segment(&mandator, None, "Platinum", at("2024-03-01T10:13:00Z"));
    store.create_segment(&new_platinum).await.expect("a deleted segment's name is free");

    // Lists: the live segments of one scope, oldest or newest first.
    let org = SegmentQuery::scope(Scope::Organization);
    let listed = store.list_segments(&mandator, &org).await.expect("list succeeds");
    let expected = [&lower, &spaced, &race, &new_gold, &new_platinum];
    assert_eq!(ids(&listed), ids(&expected.map(Clone::clone)), "live organization segments, oldest first");
    assert_eq!(listed[0], lower, "listed segments are whole");
    let newest = store.list_segments(&mandator, &SegmentQuery { newest_first: true, ..org.clone() }).await;
    let mut reversed = expected.map(Clone::clone).to_vec();
    reversed.reverse();
    assert_eq!(ids(&newest.expect("list succeeds")), ids(&reversed));
    let in_ledger = store.list_segments(&mandator, &SegmentQuery::scope(Scope::Ledger(l1.clone()))).await;
    assert_eq!(in_ledger.expect("list succeeds"), std::slice::from_ref(&in_l1), "one ledger's segments only");
    let none = store.list_segments(&mandator, &SegmentQuery::scope(Scope::Ledger(ledger("ledger-3")))).await;
    assert_eq!(none.expect("list succeeds"), []);
    assert_eq!(
        ids(&store.list_segments(&other, &org).await.expect("list succeeds")),
        ids(std::slice::from_ref(&foreign))
    );
    assert_eq!(
        ids(&store.list_segments(&longer, &org).await.expect("list succeeds")),
        ids(std::slice::from_ref(&foreign_longer))
    );

    // A creation period [from, to): both ends exactly, equal times ordered by id.
    let periodic = ledger("periods");
    let times = ["09:59:59", "10:00:00", "10:00:30", "10:00:30", "10:00:30", "10:00:59", "10:01:00", "10:02:00"];
    let mut period_segments = Vec::new();
    for (i, time) in times.iter().enumerate() {
        let s = segment(&mandator, Some(&periodic), &format!("p{i}"), at(&format!("2024-04-01T{time}Z")));
        store.create_segment(&s).await.expect("create succeeds");
        period_segments.push(s);
    }
    // Created out of id order at one time: (createdAt, id) decides, not insertion order.
    let mut shuffled = segment(&mandator, Some(&periodic), "p-early-id", at("2024-04-01T10:00:30Z"));
    shuffled.id = SegmentId::parse("00000000-0000-7000-8000-000000000000").expect("a valid id");
    store.create_segment(&shuffled).await.expect("create succeeds");
    let query = SegmentQuery {
        scope: Scope::Ledger(periodic.clone()),
        created: Some((at("2024-04-01T10:00:00Z"), at("2024-04-01T10:01:00Z"))),
        newest_first: false,
    };
    let mut expected = vec![period_segments[1].clone(), shuffled.clone()];
    expected.extend(period_segments[2..6].iter().cloned());
    assert_eq!(ids(&store.list_segments(&mandator, &query).await.expect("list succeeds")), ids(&expected));
    expected.reverse();
    let newest = store.list_segments(&mandator, &SegmentQuery { newest_first: true, ..query.clone() }).await;
    assert_eq!(ids(&newest.expect("list succeeds")), ids(&expected));
    // A deleted segment leaves the period's list too.
    let gone = next_version(&period_segments[1], |s| s.deleted_at = Some(at("2024-04-02T00:00:00Z")));
    store.replace_segment(&period_segments[1], &gone).await.expect("a delete succeeds");
    expected.pop();
    expected.reverse();
    assert_eq!(ids(&store.list_segments(&mandator, &query).await.expect("list succeeds")), ids(&expected));
    let empty_period =
        SegmentQuery { created: Some((at("2024-04-01T10:01:01Z"), at("2024-04-01T10:02:00Z"))), ..query };
    assert_eq!(store.list_segments(&mandator, &empty_period).await.expect("list succeeds"), []);

    // Membership: ordered by accountId (byte order), idempotent, per segment.
    let (s1, s2) = (gold.id, lower.id);
    assert_eq!(store.members(&mandator, s1).await.expect("members succeeds"), []);
    assert_eq!(store.member_count(&mandator, s1).await.expect("member_count succeeds"), 0);
    let add = [member("a2", "u2"), member("a1", "u1"), member("a10", "u1"), member("A9", "u3")];
    store.change_members(&mandator, s1, &add, &[]).await.expect("change_members succeeds");
    let all = vec![member("A9", "u3"), member("a1", "u1"), member("a10", "u1"), member("a2", "u2")];
    assert_eq!(store.members(&mandator, s1).await.expect("members succeeds"), all);
    assert_eq!(store.member_count(&mandator, s1).await.expect("member_count succeeds"), 4);
    store
        .change_members(&mandator, s1, &[member("a1", "u1")], &[account_id("nope"), account_id("a")])
        .await
        .expect("adding a member and removing non-members succeeds");
    assert_eq!(store.members(&mandator, s1).await.expect("members succeeds"), all, "changes nothing");
    assert_eq!(store.member_count(&mandator, s1).await.expect("member_count succeeds"), 4);
    store
        .change_members(&mandator, s1, &[member("a1x", "u4")], &[account_id("a10"), account_id("A9")])
        .await
        .expect("change_members succeeds");
    let left = vec![member("a1", "u1"), member("a1x", "u4"), member("a2", "u2")];
    assert_eq!(store.members(&mandator, s1).await.expect("members succeeds"), left);
    assert_eq!(store.member_count(&mandator, s1).await.expect("member_count succeeds"), 3);
    store.change_members(&mandator, s2, &[member("a1", "u1")], &[]).await.expect("change_members succeeds");
    assert_eq!(store.members(&mandator, s2).await.expect("members succeeds"), [member("a1", "u1")]);

    // The segments of an account, with the user recorded when it was tagged.
    let mut both = vec![(s1, user_id("u1")), (s2, user_id("u1"))];
    both.sort();
    assert_eq!(segments_of(store, &mandator, "a1").await, both);
    assert_eq!(segments_of(store, &mandator, "a1x").await, [(s1, user_id("u4"))]);
    assert_eq!(segments_of(store, &mandator, "a10").await, [], "a removed member");
    assert_eq!(segments_of(store, &mandator, "a").await, [], "a prefix of an account id");

    // Another mandator sees none of it, and its changes reach none of it.
    for m in [&other, &longer] {
        assert_eq!(store.members(m, s1).await.expect("members succeeds"), [], "{m}");
        assert_eq!(store.member_count(m, s1).await.expect("member_count succeeds"), 0, "{m}");
        assert_eq!(segments_of(store, m, "a1").await, [], "{m}");
    }
    store
        .change_members(&other, s1, &[member("a1", "u9")], &[account_id("a2"), account_id("a1x")])
        .await
        .expect("change_members succeeds");
    assert_eq!(store.members(&mandator, s1).await.expect("members succeeds"), left, "another mandator's change");
    assert_eq!(segments_of(store, &mandator, "a1").await, both, "another mandator's change");

    // A deleted segment keeps its members and is still among the account's segments.
    let lower_deleted = next_version(&lower, |s| s.deleted_at = Some(at("2024-03-03T00:00:00Z")));
    store.replace_segment(&lower, &lower_deleted).await.expect("a delete succeeds");
    assert_eq!(store.members(&mandator, s2).await.expect("members succeeds"), [member("a1", "u1")]);
    assert_eq!(segments_of(store, &mandator, "a1").await, both, "deleted segments included");
}

// ---------------------------------------------------------------------------------------------
// JobCatalog

fn job_created_at(mandator: &MandatorId, segment_type: SegmentType, created: DateTime<Utc>) -> Job {
    let request = requests().into_iter().find(|(t, _)| *t == segment_type).expect("a request of every type").1;
    Job::new(mandator.clone(), request.as_of, request.params, request.callback_url, 2, created)
}

async fn list(
    catalog: &dyn JobCatalog,
    mandator: &MandatorId,
    segment_type: SegmentType,
    before: Option<JobId>,
    limit: u32,
    now: DateTime<Utc>,
) -> JobPage {
    catalog.list_jobs(mandator, segment_type, before, limit, now).await.expect("list_jobs succeeds")
}

fn page(jobs: &[&Job], more: bool) -> JobPage {
    JobPage { jobs: jobs.iter().map(|j| (*j).clone()).collect(), more }
}

/// `JobCatalog` over the job records of a `JobStore`: a mandator's unexpired jobs of one type,
/// newest first, whole and current, paged with `before` and `more`; expired jobs are neither
/// listed nor counted for `more`; nothing of another mandator or type, nor the idempotency keys
/// and usage counters kept beside the jobs, is listed.
pub async fn job_catalog_contract(store: &dyn JobStore, catalog: &dyn JobCatalog) {
    let mandator = unique_mandator("catalog");
    let other = unique_mandator("catalog-other");
    let longer = MandatorId::parse(&format!("{mandator}x")).expect("a valid mandator id");
    let high = SegmentType::HighBalance;
    let low = SegmentType::LowBalance;
    let now = now();
    let days = chrono::Duration::days;

    // Created in this order (job ids are UUIDv7: the order of their keys).
    let old = job_created_at(&mandator, high, now - days(10)); // expires in 4 days
    let h1 = job_created_at(&mandator, high, now);
    let l1 = job_created_at(&mandator, low, now);
    let h2 = job_created_at(&mandator, high, now);
    let o1 = job_created_at(&other, high, now);
    let h3 = job_created_at(&mandator, high, now);
    let mid = job_created_at(&mandator, high, now - days(12)); // expires in 2 days
    let h4 = job_created_at(&mandator, high, now);
    let l2 = job_created_at(&mandator, low, now);
    let x1 = job_created_at(&longer, high, now);
    let all = [&old, &h1, &l1, &h2, &o1, &h3, &mid, &h4, &l2, &x1];
    assert!(all.windows(2).all(|w| w[0].job_id < w[1].job_id), "job ids follow creation");

    assert_eq!(list(catalog, &mandator, high, None, 10, now).await, page(&[], false), "no jobs yet");
    for job in all {
        if job.job_id == h2.job_id {
            // Beside it: an idempotency key.
            let key = IdempotencyKey::parse("catalog-1").expect("a valid key");
            let claim = store.create_with_key(job, &key, "hash", now).await.expect("claim succeeds");
            assert_eq!(claim, KeyClaim::Created);
        } else {
            store.create(job).await.expect("create succeeds");
        }
    }
    // The listed jobs are the stored ones as they are now: h2 completed (a usage counter is kept
    // beside the jobs), h1 failed.
    let summary = ResultSummary { total_elements: 3, chunk_size: 1000, chunk_count: 1 };
    assert!(store.complete(&h2, summary).await.expect("complete succeeds"));
    assert!(store.fail(&mandator, h1.job_id, "boom").await.expect("fail succeeds"));
    let h1 = stored_job(store, &mandator, h1.job_id).await;
    let h2 = stored_job(store, &mandator, h2.job_id).await;
    assert_eq!((h1.status, h2.status), (JobStatus::Failed, JobStatus::Completed));

    // Everything unexpired now, newest first.
    let live = [&h4, &mid, &h3, &h2, &h1, &old];
    assert_eq!(list(catalog, &mandator, high, None, 10, now).await, page(&live, false));
    assert_eq!(list(catalog, &mandator, high, None, 6, now).await, page(&live, false), "a page just large enough");
    assert_eq!(list(catalog, &mandator, high, None, 5, now).await, page(&live[..5], true));
    assert_eq!(list(catalog, &mandator, low, None, 10, now).await, page(&[&l2, &l1], false), "one type only");
    assert_eq!(list(catalog, &mandator, SegmentType::InsuranceSpending, None, 10, now).await, page(&[], false));

    // Paging with `before`: each page starts after the last one's last job.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let p = list(catalog, &mandator, high, before, 2, now).await;
        assert!(p.jobs.len() <= 2, "at most the limit");
        before = p.jobs.last().map(|j| j.job_id);
        let more = p.more;
        pages.push(p);
        if !more {
            break;
        }
        assert!(pages.len() < 10, "paging ends");
    }
    assert_eq!(pages, [page(&live[..2], true), page(&live[2..4], true), page(&live[4..], false)]);

    // `before` is a position in the mandator's own keys: a job of another type, of another
    // mandator, or no job at all.
    assert_eq!(list(catalog, &mandator, high, Some(l2.job_id), 1, now).await, page(&[&h4], true));
    assert_eq!(list(catalog, &mandator, high, Some(o1.job_id), 10, now).await, page(&[&h2, &h1, &old], false));
    assert_eq!(list(catalog, &mandator, low, Some(o1.job_id), 10, now).await, page(&[&l1], false));
    assert_eq!(list(catalog, &mandator, high, Some(JobId::new()), 3, now).await, page(&live[..3], true));
    assert_eq!(list(catalog, &mandator, high, Some(old.job_id), 10, now).await, page(&[], false), "nothing older");

    // Expired jobs are neither listed nor counted for `more`; the expiry itself is the first
    // instant a job is expired.
    let later = now + days(5);
    let unexpired = [&h4, &h3, &h2, &h1];
    assert_eq!(list(catalog, &mandator, high, None, 10, later).await, page(&unexpired, false));
    assert_eq!(list(catalog, &mandator, high, None, 4, later).await, page(&unexpired, false), "old is not more");
    assert_eq!(list(catalog, &mandator, high, Some(h4.job_id), 1, later).await, page(&[&h3], true), "mid skipped");
    assert_eq!(list(catalog, &mandator, high, Some(mid.job_id), 10, later).await, page(&[&h3, &h2, &h1], false));
    let at_expiry = mid.expires_at;
    let just_before = at_expiry - chrono::Duration::seconds(1);
    assert_eq!(list(catalog, &mandator, high, None, 10, just_before).await, page(&live, false));
    assert_eq!(list(catalog, &mandator, high, None, 10, at_expiry).await, page(&[&h4, &h3, &h2, &h1, &old], false));
    assert_eq!(list(catalog, &mandator, high, None, 10, now + days(15)).await, page(&[], false), "all expired");

    // Another mandator lists only its own: also a mandator whose id extends this one.
    assert_eq!(list(catalog, &other, high, None, 10, now).await, page(&[&o1], false));
    assert_eq!(list(catalog, &other, high, Some(h4.job_id), 10, now).await, page(&[&o1], false));
    assert_eq!(list(catalog, &other, low, None, 10, now).await, page(&[], false));
    assert_eq!(list(catalog, &longer, high, None, 10, now).await, page(&[&x1], false));
    let stranger = unique_mandator("catalog-none");
    assert_eq!(list(catalog, &stranger, high, Some(h3.job_id), 10, now).await, page(&[], false));
}

// ---------------------------------------------------------------------------------------------
// ResultLinks

/// Whoever holds a link: GETs what it names.
#[async_trait::async_trait]
pub trait LinkOpener: Send + Sync {
    /// The bytes the link serves, or why it served none.
    async fn open(&self, link: &str) -> Result<Vec<u8>, String>;
}

/// `ResultLinks` over the objects of a `ResultStore`: a link for each existing object (empty
/// ones included) that serves exactly that object, and `None` for a key that names no object
/// (missing, a prefix or an extension of a key, another mandator's).
pub async fn result_links_contract(store: &dyn ResultStore, links: &dyn ResultLinks, opener: &dyn LinkOpener) {
    let ttl = std::time::Duration::from_secs(120);
    // Identifier characters that URLs encode.
    let mandator = unique_mandator("links+a:b=c@d_e.f");
    let prefix = format!("results/{mandator}/highBalance/{}/", JobId::new());
    let export = format!("{prefix}export.ndjson");
    let manifest = format!("{prefix}manifest.json");
    let empty = format!("{prefix}chunks/000000.ndjson");

    assert_eq!(links.link(&export, ttl).await.expect("link succeeds"), None, "no link before the object exists");

    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    store.put(&export, body.clone().into()).await.expect("put succeeds");
    store.put(&manifest, b"{\"chunks\":0}".to_vec().into()).await.expect("put succeeds");
    store.put(&empty, Vec::new().into()).await.expect("put succeeds");

    for (key, bytes) in [(&export, &body[..]), (&manifest, &b"{\"chunks\":0}"[..]), (&empty, &[][..])] {
        let link = links.link(key, ttl).await.expect("link succeeds").unwrap_or_else(|| panic!("a link to {key}"));
        assert!(!link.contains(' '), "a link is a URL: {link}");
        let served = opener.open(&link).await.unwrap_or_else(|e| panic!("the link to {key} opens: {e}"));
        assert!(
            served == bytes,
            "the link to {key} serves it exactly ({} bytes, {} expected)",
            served.len(),
            bytes.len()
        );
    }

    // Keys are exact.
    for key in [
        prefix.clone(),
        format!("{export}x"),
        export.trim_end_matches(".ndjson").to_owned(),
        format!("results/{}/highBalance/{}/export.ndjson", unique_mandator("links-other"), JobId::new()),
    ] {
        assert_eq!(links.link(&key, ttl).await.expect("link succeeds"), None, "{key}");
    }
}

// ---------------------------------------------------------------------------------------------
// CallbackSecrets

/// `CallbackSecrets`: one secret per mandator, created on first use and the same on every later
/// use, also through another adapter over the same store; concurrent first uses agree; mandators
/// never share one. `same_store` is a second adapter over the store `secrets` uses.
pub async fn callback_secrets_contract(secrets: &dyn CallbackSecrets, same_store: &dyn CallbackSecrets) {
    let mandator = unique_mandator("secrets");
    let other = unique_mandator("secrets-other");
    let longer = MandatorId::parse(&format!("{mandator}x")).expect("a valid mandator id");

    let first = secrets.secret(&mandator).await.expect("secret succeeds");
    assert_ne!(first.as_bytes(), &[0u8; 32], "32 random bytes, not a placeholder");
    assert_eq!(first.to_hex().len(), 64);
    assert_eq!(secrets.secret(&mandator).await.expect("secret succeeds"), first, "stable once created");
    assert_eq!(same_store.secret(&mandator).await.expect("secret succeeds"), first, "stored, not per adapter");

    let others = [
        secrets.secret(&other).await.expect("secret succeeds"),
        secrets.secret(&longer).await.expect("secret succeeds"),
    ];
    for s in &others {
        assert_ne!(s, &first, "mandators do not share a secret");
    }
    assert_ne!(others[0], others[1]);
    assert_eq!(secrets.secret(&mandator).await.expect("secret succeeds"), first, "others' first uses change nothing");

    // Concurrent first uses, through both adapters, agree on one secret.
    let racing = unique_mandator("secrets-race");
    let results = futures::future::join_all(
        (0..8).map(|i| if i % 2 == 0 { secrets.secret(&racing) } else { same_store.secret(&racing) }),
    )
    .await;
    let results: Vec<_> = results.into_iter().map(|r| r.expect("secret succeeds")).collect();
    assert!(results.iter().all(|s| *s == results[0]), "concurrent first uses agree");
    assert_eq!(secrets.secret(&racing).await.expect("secret succeeds"), results[0], "the agreed secret is kept");
    assert!(![&first, &others[0], &others[1]].contains(&&results[0]));
}

// ---------------------------------------------------------------------------------------------
// AccountDirectory

async fn users_of(
    directory: &dyn AccountDirectory,
    mandator: &MandatorId,
    accounts: &[AccountId],
) -> BTreeMap<AccountId, UserId> {
    directory.account_users(mandator, accounts).await.expect("account_users succeeds")
}

/// `AccountDirectory` as a `UserStore` fills it: known accounts map to their users, unknown ones
/// are absent, lookups of any size (more than one DynamoDB batch, duplicates included) answer
/// every id, an account moves to another user once its user dropped it, and each mandator has
/// its own.
pub async fn account_directory_contract(store: &dyn UserStore) {
    const SHARDS: u32 = 3;
    let mandator = unique_mandator("directory");
    let other = unique_mandator("directory-other");
    let longer = MandatorId::parse(&format!("{mandator}x")).expect("a valid mandator id");

    // 150 accounts of 30 users, some with transactions (they name no account of their own).
    let mut expected = BTreeMap::new();
    let mut data = Data::new();
    for u in 0..30 {
        let user = user_id(&format!("user-{u:02}"));
        let mut accounts = Accounts::new();
        for a in 0..5 {
            let acc = account(&user, &format!("acc-{}", u * 5 + a), "EUR", "1.00");
            let transactions = if a == 0 { vec![transaction("t1", "2024-05-01", "-1.00", "EUR")] } else { Vec::new() };
            expected.insert(acc.account_id.clone(), user.clone());
            accounts.insert(acc.account_id.clone(), (acc, transactions));
        }
        data.insert(user, accounts);
    }
    let known: Vec<AccountId> = expected.keys().cloned().collect();
    assert!(known.len() > 100, "more than one BatchGetItem");

    // Nothing is known before it is written.
    assert_eq!(users_of(store, &mandator, &known).await, BTreeMap::new());
    assert_eq!(users_of(store, &mandator, &[]).await, BTreeMap::new(), "an empty lookup");

    store.ensure_shard_count(&mandator, SHARDS).await.expect("the shard count is recorded");
    let versions = put_new(store, &mandator, SHARDS, &data).await;
    // Another mandator holds some of the same ids for its own user, and one of its own.
    let theirs = [("acc-0", "their-user"), ("acc-149", "their-user"), ("only-theirs", "their-user")];
    let their_user = user_id("their-user");
    let their_accounts: Accounts = theirs
        .iter()
        .map(|(a, _)| {
            let acc = account(&their_user, a, "EUR", "2.00");
            (acc.account_id.clone(), (acc, vec![]))
        })
        .collect();
    store.ensure_shard_count(&other, 1).await.expect("the shard count is recorded");
    put_new(store, &other, 1, &BTreeMap::from([(their_user.clone(), their_accounts)])).await;

    // Every known id maps to its user, in one lookup of every id, with unknown ones and
    // duplicates mixed in.
    let mut lookup: Vec<AccountId> = known.iter().rev().cloned().collect();
    for unknown in ["acc", "acc-1x", "acc-150", "ACC-1", "only-theirs", "t1"] {
        lookup.insert(lookup.len() / 2, account_id(unknown));
    }
    lookup.extend(known[..20].iter().cloned());
    assert_eq!(users_of(store, &mandator, &lookup).await, expected);
    // A few, and one.
    let some = [account_id("acc-7"), account_id("nope"), account_id("acc-120")];
    let found = users_of(store, &mandator, &some).await;
    assert_eq!(
        found,
        BTreeMap::from([(account_id("acc-7"), user_id("user-01")), (account_id("acc-120"), user_id("user-24"))])
    );
    assert_eq!(users_of(store, &mandator, &[account_id("nope")]).await, BTreeMap::new(), "an unknown id");

    // Each mandator its own: ids only another mandator holds are absent, shared ids map to each
    // mandator's own user.
    let their_answer = users_of(store, &other, &lookup).await;
    let their_expected: BTreeMap<_, _> = theirs.iter().map(|(a, u)| (account_id(a), user_id(u))).collect();
    assert_eq!(their_answer, their_expected);
    assert_eq!(users_of(store, &longer, &lookup).await, BTreeMap::new(), "a mandator id extending this one");
    assert_eq!(
        users_of(store, &mandator, &[account_id("acc-0"), account_id("only-theirs")]).await,
        BTreeMap::from([(account_id("acc-0"), user_id("user-00"))])
    );

    // An account moves to another user once its user dropped it.
    let (from, to) = (user_id("user-00"), user_id("user-29"));
    let mut gaining = data[&to].clone();
    gaining.insert(account_id("acc-0"), (account(&to, "acc-0", "EUR", "3.00"), vec![]));
    let put = store.put_user(&mandator, SHARDS, &written_form(&to, &gaining), Some(versions[&to])).await;
    assert!(matches!(put, Err(UserWriteError::AccountHeld { .. })), "still held: {put:?}");
    let mut losing = data[&from].clone();
    losing.remove(&account_id("acc-0"));
    store.put_user(&mandator, SHARDS, &written_form(&from, &losing), Some(versions[&from])).await.expect("dropped");
    store.put_user(&mandator, SHARDS, &written_form(&to, &gaining), Some(versions[&to])).await.expect("taken");
    let mut after = expected.clone();
    after.insert(account_id("acc-0"), to.clone());
    assert_eq!(users_of(store, &mandator, &known).await, after);
    assert_eq!(
        users_of(store, &other, &[account_id("acc-0")]).await,
        BTreeMap::from([(account_id("acc-0"), their_user)]),
        "another mandator's account did not move"
    );
}

/// `ImportStore`: a record is created once and reads back exactly, another mandator's is not
/// found; updates replace it until it is final, and never bring back one that does not exist. The
/// mandator's import lock is held by one import at a time: taken again by the same import it
/// renews, and it is free again once its lease has run out or its holder released it.
pub async fn import_store_contract(store: &dyn segments_core::ports::ImportStore) {
    use chrono::Duration;
    use segments_core::imports::{ImportCounts, ImportId, ImportMode, ImportRecord, ImportStatus};

    let (mandator, other) = (unique_mandator("imports"), unique_mandator("imports-other"));
    let t0 = now();
    let record = ImportRecord::new(mandator.clone(), ImportMode::ReplaceMandator, t0);
    store.create_import(&record).await.expect("a new import is created");
    let read = |id| store.get_import(&mandator, id);
    assert_eq!(read(record.import_id).await.unwrap(), Some(record.clone()));
    assert!(matches!(store.create_import(&record).await, Err(StoreError::Conflict(_))), "created twice");
    assert_eq!(store.get_import(&other, record.import_id).await.unwrap(), None, "another mandator's import");
    assert_eq!(read(ImportId::new()).await.unwrap(), None);

    let counts = ImportCounts { users: 3, accounts: 5, transactions: 7, erased_users: 1 };
    let applying = ImportRecord {
        status: ImportStatus::Applying,
        updated_at: t0 + Duration::seconds(1),
        counts,
        ..record.clone()
    };
    assert!(store.update_import(&applying).await.unwrap());
    assert_eq!(read(record.import_id).await.unwrap(), Some(applying.clone()));
    // As many bad lines as a record keeps, each as long as one may be: it still fits an item.
    let failed = ImportRecord {
        status: ImportStatus::Failed,
        errors: (1..=100).map(|i| format!("accounts.ndjson:{i}: {}", "x".repeat(900))).collect(),
        more_errors: 12,
        failure: Some("the store went away".to_owned()),
        ..applying.clone()
    };
    assert!(store.update_import(&failed).await.unwrap());
    assert_eq!(read(record.import_id).await.unwrap(), Some(failed.clone()));
    let completed = ImportRecord { status: ImportStatus::Completed, ..failed.clone() };
    assert!(!store.update_import(&completed).await.unwrap(), "a final record is not changed");
    assert_eq!(read(record.import_id).await.unwrap(), Some(failed));
    let never_created = ImportRecord::new(mandator.clone(), ImportMode::UpsertUsers, t0);
    assert!(!store.update_import(&never_created).await.unwrap());
    assert_eq!(read(never_created.import_id).await.unwrap(), None, "an update creates nothing");

    let (a, b) = (ImportId::new(), ImportId::new());
    let lease = Duration::minutes(20);
    let at = |minutes| t0 + Duration::minutes(minutes);
    let holder = |now| store.lock_holder(&mandator, now);
    assert_eq!(holder(t0).await.unwrap(), None);
    store.lock_mandator(&mandator, a, t0, t0 + lease).await.expect("a free lock is taken");
    assert_eq!(holder(at(1)).await.unwrap(), Some(a));
    let taken = store.lock_mandator(&mandator, b, at(1), at(1) + lease).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "held by another import: {taken:?}");
    store.lock_mandator(&other, b, at(1), at(60)).await.expect("another mandator's lock is its own");
    store.lock_mandator(&mandator, a, at(10), at(10) + lease).await.expect("the holder renews");
    let taken = store.lock_mandator(&mandator, b, at(25), at(25) + lease).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "the renewed lease runs to minute 30: {taken:?}");
    assert_eq!(holder(at(30)).await.unwrap(), None, "the lease ran out");
    store.lock_mandator(&mandator, b, at(30), at(30) + lease).await.expect("a lock whose lease ran out is taken");
    assert_eq!(holder(at(31)).await.unwrap(), Some(b));
    store.unlock_mandator(&mandator, a).await.expect("releasing a lock one does not hold changes nothing");
    assert_eq!(holder(at(31)).await.unwrap(), Some(b));
    store.unlock_mandator(&mandator, b).await.expect("released");
    assert_eq!(holder(at(31)).await.unwrap(), None);
    store.unlock_mandator(&mandator, b).await.expect("releasing a free lock changes nothing");
    store.lock_mandator(&mandator, a, at(31), at(31) + lease).await.expect("a released lock is taken");
    assert_eq!(store.lock_holder(&other, at(31)).await.unwrap(), Some(b));
}
