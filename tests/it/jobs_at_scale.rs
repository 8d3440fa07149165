//! Jobs at scale (docs/architecture.md, docs/storage.md, docs/jobs.md): one message per shard, parts merged by the last shard,
//! redeliveries in any order and crashes at every recovery point finishing with the same result,
//! usage metered exactly once, dead letters failing their job, expiry and idempotency keys.
//!
//! Every scenario is one body run twice: against the embedded store, and against DynamoDB, S3
//! and SQS on a local moto server (real SDK clients over HTTP). They assert on what is stored:
//! the job record, the usage counter and the result objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::support::contract::unique_mandator;
use crate::support::faults::{CrashPoint, FaultPlan, with_faults};
use crate::support::flows::{ALL_TYPE_SCOPES, all_users, get_page};
use crate::support::moto::MotoServer;
use crate::support::queues::{self, Record, take_bodies};
use crate::support::users::put_items;
use chrono::{Duration, NaiveDate, Utc};
use segments_aws::services as aws_services;
use segments_aws::{DynamoAccounts, SqsQueue, provision};
use segments_core::config::ServiceConfig;
use segments_core::domain::records::AccountItem;
use segments_core::domain::{Account, AccountId, AccountType, Currency, JobId, MandatorId, Money, SegmentType, UserId};
use segments_core::http::testing::{create_job_request, status_and_json};
use segments_core::jobs::{Job, JobMessage, JobStatus};
use segments_core::ports::UserStore;
use segments_core::sqs::{handle_dead_letters, handle_sqs_batch};
use segments_core::usecases::Services;
use segments_core::usecases::run_shard::{Disposition, process_message};
use segments_embedded::EmbeddedStore;
use segments_embedded::wiring::services as embedded_services;
use serde_json::Value;
use tokio::sync::Mutex;

const HIGH_BALANCE: &str = "highBalance";
const BODY: &str = r#"{"accountType":"checking","threshold":100}"#;
/// Users of the sample data: enough to spread over 16 shards, few enough for moto.
const USERS: usize = 40;
/// Deliveries before a message moves to the dead-letter queue.
const MAX_RECEIVES: u32 = 3;

/// Where queued messages are, per store.
enum Queue {
    Embedded(Mutex<tokio::sync::mpsc::UnboundedReceiver<JobMessage>>),
    Sqs { queue: SqsQueue, client: aws_sdk_sqs::Client, dlq_url: String, queue_url: String },
}

struct Env {
    s: Services,
    faults: FaultPlan,
    users: Arc<dyn UserStore>,
    queue: Queue,
    _dir: Option<tempfile::TempDir>,
    _moto: Option<MotoServer>,
}

impl Env {
    fn config() -> ServiceConfig {
        ServiceConfig { max_receive_count: MAX_RECEIVES, chunk_size: 500, ..ServiceConfig::default() }
    }

    async fn embedded() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let users = Arc::new(store.clone());
        let (s, rx) = embedded_services(store, Self::config());
        let faults = FaultPlan::default();
        let s = with_faults(s, &faults);
        Env { s, faults, users, queue: Queue::Embedded(Mutex::new(rx)), _dir: Some(dir), _moto: None }
    }

    async fn moto() -> Env {
        let moto = MotoServer::start();
        let clients = moto.clients().await;
        let resources = provision::provision_all(&clients, "scale", MAX_RECEIVES).await.unwrap();
        let faults = FaultPlan::default();
        let s = with_faults(aws_services(&clients, &resources, Self::config()), &faults);
        let queue_url = resources.queue_urls[&SegmentType::HighBalance].clone();
        let dlq_name = provision::dead_letter_queue_name(&provision::queue_name("scale", SegmentType::HighBalance));
        let dlq_url = clients.sqs.get_queue_url().queue_name(dlq_name).send().await.unwrap().queue_url.unwrap();
        let queue = SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone());
        Env {
            s,
            faults,
            users: Arc::new(DynamoAccounts::new(clients.dynamodb.clone(), resources.account_table.clone())),
            queue: Queue::Sqs { queue, client: clients.sqs.clone(), dlq_url, queue_url },
            _dir: None,
            _moto: Some(moto),
        }
    }

    /// Takes every queued highBalance message body off the queue (as a worker receives them);
    /// the test then delivers them as it likes.
    async fn take_messages(&self) -> Vec<String> {
        match &self.queue {
            Queue::Embedded(rx) => {
                let mut rx = rx.lock().await;
                let mut out = Vec::new();
                while let Ok(m) = rx.try_recv() {
                    out.push(serde_json::to_string(&m).unwrap());
                }
                out
            }
            Queue::Sqs { queue, .. } => take_bodies(queue, SegmentType::HighBalance).await,
        }
    }

    async fn deliver(&self, body: &str, receive_count: u32) -> Disposition {
        process_message(&self.s.runner(), SegmentType::HighBalance, body, receive_count, Utc::now()).await
    }

    async fn job(&self, mandator: &MandatorId, job_id: &str) -> Job {
        self.s.jobs.get(mandator, JobId::parse(job_id).unwrap()).await.unwrap().expect("the job exists")
    }

    async fn usage(&self, job: &Job) -> u64 {
        self.s.jobs.usage(&job.mandator_id, job.usage_month(), job.segment_type).await.unwrap()
    }

    async fn object(&self, key: &str) -> Option<String> {
        self.s.results.get(key).await.unwrap().map(|b| String::from_utf8(b.to_vec()).unwrap())
    }
}

/// The same accounts for every mandator: user `i` has a checking account with balance
/// `i * 7.31` (half of them above 100), and a savings account that never counts.
fn items() -> Vec<AccountItem> {
    let mut items = Vec::new();
    for i in 0..USERS {
        let user = UserId::parse(&format!("user-{i:03}")).unwrap();
        for (suffix, account_type, cents) in
            [("c", AccountType::Checking, i as i64 * 731), ("s", AccountType::Savings, 1_000_000)]
        {
            items.push(AccountItem::Account(Account {
                user_id: user.clone(),
                account_id: AccountId::parse(&format!("acc-{i:03}-{suffix}")).unwrap(),
                account_type,
                currency: Currency::parse("EUR").unwrap(),
                balance: Money::from_cents(cents),
                balance_date: NaiveDate::from_ymd_opt(2024, 1, 31).unwrap(),
            }));
        }
    }
    items
}

async fn post(env: &Env, mandator: &MandatorId, body: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = create_job_request(HIGH_BALANCE, body, Some(mandator.as_str()), ALL_TYPE_SCOPES);
    if let Some(key) = key {
        req.headers_mut().insert("Idempotency-Key", key.parse().unwrap());
    }
    status_and_json(create_job::handle(&env.s.intake(), req).await.unwrap())
}

async fn post_job(env: &Env, mandator: &MandatorId) -> String {
    let (status, body) = post(env, mandator, BODY, None).await;
    assert_eq!(status, 202, "{body}");
    body["jobId"].as_str().unwrap().to_owned()
}

/// Delivers every body once, in order; all must be acknowledged.
async fn deliver_all(env: &Env, bodies: &[String]) {
    for body in bodies {
        assert_eq!(env.deliver(body, 1).await, Disposition::Ack, "{body}");
    }
}

/// What a completed job stored, in the terms the tests compare: the users of every page, the
/// export, and the usage count.
async fn completed_result(env: &Env, mandator: &MandatorId, job_id: &str) -> Vec<Value> {
    let job = env.job(mandator, job_id).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(env.usage(&job).await, 1, "a completed job is metered exactly once");
    let users = all_users(&env.s, mandator.as_str(), HIGH_BALANCE, job_id, 7).await;
    let export = env.object(&job.layout().export_key()).await.expect("the export is written");
    let exported: Vec<Value> = export.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(exported, users, "the export is the whole result, in order");
    users
}

/// The users the sample data must give for [`BODY`]: balance above 100.
fn expected_user_ids() -> Vec<String> {
    (0..USERS).filter(|i| *i as i64 * 731 > 10_000).map(|i| format!("user-{i:03}")).collect()
}

fn user_ids(users: &[Value]) -> Vec<String> {
    users.iter().map(|u| u["userId"].as_str().unwrap().to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// 16 shards give exactly the users one shard gives; each shard has its part; the job counts
/// its shards and is metered once.
async fn sixteen_shards_equal_one(env: &Env, one: &MandatorId, sixteen: &MandatorId) {
    let single = post_job(env, one).await;
    let sharded = post_job(env, sixteen).await;
    let messages = env.take_messages().await;
    assert_eq!(messages.len(), 17, "one message per shard");
    let job = env.job(sixteen, &sharded).await;
    assert_eq!((job.shards_total, job.status), (16, JobStatus::Queued));
    let (status, progress) = get_page(&env.s, sixteen.as_str(), HIGH_BALANCE, &sharded, 1, 20).await;
    assert_eq!((status, &progress["progress"]), (404, &serde_json::json!({"shardsDone": 0, "shardsTotal": 16})));

    deliver_all(env, &messages).await;
    let from_one = completed_result(env, one, &single).await;
    let from_sixteen = completed_result(env, sixteen, &sharded).await;
    assert_eq!(from_sixteen, from_one);
    assert_eq!(user_ids(&from_sixteen), expected_user_ids());

    let job = env.job(sixteen, &sharded).await;
    assert_eq!(job.shards_done, 16);
    assert_eq!(job.done_shards.len(), 16);
    let mut in_parts = Vec::new();
    for shard in 0..16 {
        let part = env.object(&job.layout().part(shard)).await.expect("every shard has its part");
        let ids: Vec<String> =
            part.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["userId"].to_string()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "a part is sorted by userId");
        in_parts.extend(ids);
    }
    assert_eq!(in_parts.len(), from_sixteen.len(), "the parts hold every user once");
}

/// Every message delivered twice, shards completing in reverse order, and a duplicate arriving
/// after completion: the same result, metered once.
async fn redelivered_and_reversed(env: &Env, one: &MandatorId, sixteen: &MandatorId) {
    let single = post_job(env, one).await;
    deliver_all(env, &env.take_messages().await).await;
    let reference = completed_result(env, one, &single).await;

    let job_id = post_job(env, sixteen).await;
    let mut messages = env.take_messages().await;
    messages.reverse();
    for (i, body) in messages.iter().enumerate() {
        assert_eq!(env.deliver(body, 1).await, Disposition::Ack);
        assert_eq!(env.deliver(body, 2).await, Disposition::Ack, "a redelivery is acknowledged");
        let job = env.job(sixteen, &job_id).await;
        if i + 1 < messages.len() {
            assert_eq!(job.shards_done as usize, i + 1, "a redelivery does not count twice");
            assert_eq!(job.status, JobStatus::Running);
        }
    }
    for body in &messages {
        assert_eq!(env.deliver(body, 3).await, Disposition::Ack);
    }
    assert_eq!(completed_result(env, sixteen, &job_id).await, reference);
}

/// A crash at `point` while the last shard runs leaves the job unfinished; the redelivery of
/// that message finishes it with the same result, metered once.
async fn crash_is_recovered_by_redelivery(env: &Env, one: &MandatorId, sixteen: &MandatorId, point: CrashPoint) {
    let single = post_job(env, one).await;
    deliver_all(env, &env.take_messages().await).await;
    let reference = completed_result(env, one, &single).await;

    let job_id = post_job(env, sixteen).await;
    let messages = env.take_messages().await;
    let (last, first) = messages.split_last().unwrap();
    deliver_all(env, first).await;
    env.faults.crash_once(point);
    assert_eq!(env.deliver(last, 1).await, Disposition::Retry, "a crashed run is not acknowledged");
    assert!(env.faults.all_fired());

    let job = env.job(sixteen, &job_id).await;
    assert_eq!(job.status, JobStatus::Running, "{point:?}: the job is not final after the crash");
    assert_eq!(env.usage(&job).await, 0, "{point:?}: nothing is metered before completion");
    let last_shard: JobMessage = serde_json::from_str(last).unwrap();
    let part = env.object(&job.layout().part(last_shard.shard)).await;
    match point {
        CrashPoint::AfterPartWrite => {
            assert!(part.is_some(), "the part is written");
            assert_eq!(job.shards_done, 15, "but the shard is not recorded");
        }
        CrashPoint::AfterShardRecord => {
            assert_eq!(job.shards_done, 16, "the shard is recorded");
            assert_eq!(env.object(&job.layout().manifest()).await, None, "finalize has not begun");
        }
        CrashPoint::MidFinalize => {
            assert_eq!(job.shards_done, 16);
            assert!(env.object(&job.layout().chunk(0)).await.is_some(), "finalize wrote chunks");
            assert_eq!(env.object(&job.layout().manifest()).await, None, "but not the manifest");
        }
        CrashPoint::CorruptShardRecord => panic!("a corrupt record is a permanent fault, not a crash to recover from"),
    }
    let (status, _) = get_page(&env.s, sixteen.as_str(), HIGH_BALANCE, &job_id, 1, 20).await;
    assert_eq!(status, 404, "not ready while unfinished");

    assert_eq!(env.deliver(last, 2).await, Disposition::Ack, "{point:?}: the redelivery finishes the job");
    assert_eq!(completed_result(env, sixteen, &job_id).await, reference);
    // A later duplicate of any message changes nothing.
    assert_eq!(env.deliver(&first[0], 2).await, Disposition::Ack);
    assert_eq!(env.usage(&env.job(sixteen, &job_id).await).await, 1);
}

/// Pages of 1, 7 and 500 users concatenate to the export, in userId order.
async fn pages_concatenate_to_the_export(env: &Env, sixteen: &MandatorId) {
    let job_id = post_job(env, sixteen).await;
    deliver_all(env, &env.take_messages().await).await;
    let job = env.job(sixteen, &job_id).await;
    let export = env.object(&job.layout().export_key()).await.unwrap();
    let exported: Vec<Value> = export.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(user_ids(&exported), expected_user_ids());
    for per_page in [1, 7, 500] {
        assert_eq!(all_users(&env.s, sixteen.as_str(), HIGH_BALANCE, &job_id, per_page).await, exported, "{per_page}");
    }
    let manifest: Value = serde_json::from_str(&env.object(&job.layout().manifest()).await.unwrap()).unwrap();
    assert_eq!(manifest["totalElements"], exported.len());
    assert_eq!(manifest["export"], job.layout().export_key());
}

/// A mandator without account data gets a job of one empty shard that completes with no users.
async fn no_data_completes_empty(env: &Env) {
    let mandator = unique_mandator("empty");
    let job_id = post_job(env, &mandator).await;
    let messages = env.take_messages().await;
    assert_eq!(messages.len(), 1);
    deliver_all(env, &messages).await;
    assert!(completed_result(env, &mandator, &job_id).await.is_empty());
    let (status, page) = get_page(&env.s, mandator.as_str(), HIGH_BALANCE, &job_id, 1, 20).await;
    assert_eq!((status, page["totalElements"].as_u64()), (200, Some(0)));
}

/// An expired job is unknown (400), though its record and result are still stored.
async fn expired_job_is_400(env: &Env, sixteen: &MandatorId) {
    let request =
        segments_core::rules::SegmentRequest::parse(SegmentType::HighBalance, BODY.as_bytes(), Utc::now().date_naive())
            .unwrap();
    let created = Utc::now() - Duration::days(14) - Duration::seconds(5);
    let job = Job::new(sixteen.clone(), request.as_of, request.params, None, 1, created);
    env.s.jobs.create(&job).await.unwrap();
    let summary =
        segments_core::usecases::read_result::write_result(env.s.results.as_ref(), &job, &[], 500).await.unwrap();
    assert!(env.s.jobs.complete(&job, summary).await.unwrap());
    let (status, problem) = get_page(&env.s, sixteen.as_str(), HIGH_BALANCE, &job.job_id.to_string(), 1, 20).await;
    assert_eq!((status, problem["code"].as_str()), (400, Some("unknown_job")), "{problem}");
    // A message of the expired job is acknowledged without work.
    let message = serde_json::to_string(&job.messages()[0]).unwrap();
    assert_eq!(env.deliver(&message, 1).await, Disposition::Ack);
}

/// Idempotency-Key: a replay answers the same job and enqueues nothing; another body under the
/// key is 409; two concurrent POSTs with one key create one job; keys are per mandator.
async fn idempotency_keys(env: &Env, sixteen: &MandatorId, other: &MandatorId) {
    let (status, first) = post(env, sixteen, BODY, Some("order-42")).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(env.take_messages().await.len(), 16);
    // The same request, written differently (field order, a decimal of the same value).
    let same = r#"{"threshold":100.00,"accountType":"checking"}"#;
    let (status, replay) = post(env, sixteen, same, Some("order-42")).await;
    assert_eq!((status, &replay["jobId"]), (202, &first["jobId"]), "{replay}");
    assert_eq!(replay["expiresAt"], first["expiresAt"]);
    assert!(env.take_messages().await.is_empty(), "a replay enqueues nothing");

    // The messages taken above are lost (as if the first request had died before enqueueing).
    // A replay well after the job's creation still sends nothing, however often it comes; the
    // sweeper, a progress deadline later, sends every shard again, and the job completes.
    let caller = segments_core::usecases::Caller {
        mandator: sixteen.clone(),
        scopes: ALL_TYPE_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
    };
    let key = segments_core::jobs::IdempotencyKey::parse("order-42").unwrap();
    let sweeps = segments_core::usecases::sweep::SweepConfig::default();
    let later = Utc::now() + sweeps.progress_deadline + Duration::seconds(1);
    for _ in 0..3 {
        let replayed = segments_core::usecases::create_job::create_job_with_key(
            &env.s.intake(),
            &caller,
            SegmentType::HighBalance,
            same.as_bytes(),
            Some(&key),
            later,
        )
        .await
        .unwrap();
        assert_eq!(replayed.job_id.to_string(), first["jobId"].as_str().unwrap());
    }
    assert!(env.take_messages().await.is_empty(), "replays send nothing");
    let report = segments_core::usecases::sweep::sweep(&env.s.sweeper(sweeps), later).await.unwrap();
    assert!(report.resent >= 1, "{report:?}");
    // The sweep sends the unfinished shards of every stalled job of the store; this job's are
    // all sixteen.
    let again = env.take_messages().await;
    let job_id = first["jobId"].as_str().unwrap();
    let of_job = again.iter().filter(|m| serde_json::from_str::<JobMessage>(m).unwrap().job_id.to_string() == job_id);
    assert_eq!(of_job.count(), 16, "every shard of the stalled job is enqueued again");
    deliver_all(env, &again).await;
    assert_eq!(env.job(sixteen, job_id).await.status, JobStatus::Completed);
    assert_eq!(user_ids(&all_users(&env.s, sixteen.as_str(), HIGH_BALANCE, job_id, 7).await), expected_user_ids());

    let (status, problem) = post(env, sixteen, r#"{"accountType":"checking","threshold":101}"#, Some("order-42")).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("idempotency_key_reused")), "{problem}");
    assert_eq!(problem["field"], "Idempotency-Key");

    let (status, foreign) = post(env, other, BODY, Some("order-42")).await;
    assert_eq!(status, 202);
    assert_ne!(foreign["jobId"], first["jobId"], "keys are per mandator");

    let (a, b) = futures::join!(post(env, sixteen, BODY, Some("order-43")), post(env, sixteen, BODY, Some("order-43")));
    assert_eq!((a.0, b.0), (202, 202), "{a:?} {b:?}");
    assert_eq!(a.1["jobId"], b.1["jobId"], "two concurrent POSTs with one key create one job");
    let queued: Vec<JobMessage> = env.take_messages().await.iter().map(|m| serde_json::from_str(m).unwrap()).collect();
    let jobs: BTreeMap<JobId, usize> = queued.iter().fold(BTreeMap::new(), |mut m, q| {
        *m.entry(q.job_id).or_default() += 1;
        m
    });
    assert_eq!(jobs.len(), 2, "the foreign job and one job of order-43: {jobs:?}");

    for bad in ["k".repeat(256), "has space".to_owned()] {
        let (status, problem) = post(env, sixteen, BODY, Some(&bad)).await;
        assert_eq!((status, problem["field"].as_str()), (400, Some("Idempotency-Key")), "{problem}");
    }
    assert!(env.take_messages().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Both stores

/// Two fresh mandators with the sample data: on one shard and on sixteen. Usage counts every
/// completed job of a mandator, month and type, so each scenario has its own.
async fn mandators(env: &Env) -> (MandatorId, MandatorId) {
    let items = items();
    let (one, sixteen) = (unique_mandator("one"), unique_mandator("sixteen"));
    for (m, shards) in [(&one, 1), (&sixteen, 16)] {
        put_items(env.users.as_ref(), m, shards, &items).await;
    }
    (one, sixteen)
}

/// A poison message — its job readable, the rest not — next to a valid message and a body that
/// names no job: the batch reports only the two bad ones; the poison one fails its job at once
/// (422 with the reason), and after the last receive both end in the dead-letter queue (moto
/// moves them), whose handler fails the job too (a no-op here) and drops what names no job.
async fn poison_message_ends_in_the_dlq_and_fails_its_job(env: &Env, sixteen: &MandatorId) {
    let job_id = post_job(env, sixteen).await;
    let valid = env.take_messages().await;
    let poisoned = {
        let request = segments_core::rules::SegmentRequest::parse(
            SegmentType::HighBalance,
            BODY.as_bytes(),
            Utc::now().date_naive(),
        )
        .unwrap();
        let job = Job::new(sixteen.clone(), request.as_of, request.params, None, 2, Utc::now());
        env.s.jobs.create(&job).await.unwrap();
        job
    };
    let poison = format!(
        r#"{{"mandatorId":"{}","jobId":"{}","segmentType":"highBalance","shard":"zero"}}"#,
        poisoned.mandator_id, poisoned.job_id
    );
    let garbage = "not a message".to_owned();
    let batch = [valid[0].clone(), poison.clone(), garbage.clone()];

    match &env.queue {
        Queue::Embedded(_) => {
            for receive in 1..=MAX_RECEIVES {
                let event = sqs_event(
                    &batch.iter().enumerate().map(|(i, b)| (i.to_string(), b.clone(), receive)).collect::<Vec<_>>(),
                );
                let failures: Vec<String> = handle_sqs_batch(&env.s.runner(), SegmentType::HighBalance, event)
                    .await
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect();
                assert_eq!(failures, ["1", "2"], "only the bad messages fail, on every receive");
            }
            // The local runner's dead-letter path: the same handler as the DLQ Lambda.
            let dead =
                sqs_event(&[("p".into(), poison.clone(), MAX_RECEIVES), ("g".into(), garbage.clone(), MAX_RECEIVES)]);
            assert!(
                handle_dead_letters(env.s.jobs.as_ref(), &env.s.callbacks, dead).await.batch_item_failures.is_empty()
            );
        }
        Queue::Sqs { client, queue_url, dlq_url, .. } => {
            for body in &batch {
                client.send_message().queue_url(queue_url).message_body(body).send().await.unwrap();
            }
            let mut receives = 0;
            loop {
                let received = client
                    .receive_message()
                    .queue_url(queue_url)
                    .max_number_of_messages(10)
                    .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                    .send()
                    .await
                    .unwrap()
                    .messages
                    .unwrap_or_default();
                if received.is_empty() {
                    break;
                }
                receives += 1;
                assert!(receives <= MAX_RECEIVES as usize + 1, "messages must leave the queue");
                let records: Vec<(String, String, u32)> = received
                    .iter()
                    .map(|m| {
                        let count = m
                            .attributes()
                            .and_then(|a| {
                                a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                            })
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(1);
                        (m.message_id().unwrap().to_owned(), m.body().unwrap().to_owned(), count)
                    })
                    .collect();
                let response = handle_sqs_batch(&env.s.runner(), SegmentType::HighBalance, sqs_event(&records)).await;
                let failed: Vec<&str> =
                    response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
                // What the event source mapping does: delete the successes, release the failures.
                for m in &received {
                    let id = m.message_id().unwrap();
                    let handle = m.receipt_handle().unwrap();
                    if failed.contains(&id) {
                        let body = m.body().unwrap();
                        assert!(body == poison || body == garbage, "only bad messages fail: {body}");
                        client
                            .change_message_visibility()
                            .queue_url(queue_url)
                            .receipt_handle(handle)
                            .visibility_timeout(0)
                            .send()
                            .await
                            .unwrap();
                    } else {
                        client.delete_message().queue_url(queue_url).receipt_handle(handle).send().await.unwrap();
                    }
                }
            }
            let dead = client
                .receive_message()
                .queue_url(dlq_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap()
                .messages
                .unwrap_or_default();
            let mut bodies: Vec<&str> = dead.iter().filter_map(|m| m.body()).collect();
            bodies.sort_unstable();
            let mut expected = [poison.as_str(), garbage.as_str()];
            expected.sort_unstable();
            assert_eq!(bodies, expected, "both bad messages are in the dead-letter queue");
            let records: Vec<(String, String, u32)> = dead
                .iter()
                .map(|m| (m.message_id().unwrap().to_owned(), m.body().unwrap().to_owned(), MAX_RECEIVES))
                .collect();
            assert!(
                handle_dead_letters(env.s.jobs.as_ref(), &env.s.callbacks, sqs_event(&records))
                    .await
                    .batch_item_failures
                    .is_empty()
            );
        }
    }
    let failed = env.s.jobs.get(sixteen, poisoned.job_id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    let (status, problem) = get_page(&env.s, sixteen.as_str(), HIGH_BALANCE, &poisoned.job_id.to_string(), 1, 20).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("job_failed")), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("cannot be decoded"), "{problem}");
    // The valid message's job went on.
    let job = env.job(sixteen, &job_id).await;
    assert_eq!(job.shards_done, 1);
    assert_eq!(job.status, JobStatus::Running);
}

/// A dead letter of a job that is still running marks it FAILED with the reason.
async fn dead_letter_fails_a_running_job(env: &Env, sixteen: &MandatorId) {
    let job_id = post_job(env, sixteen).await;
    let messages = env.take_messages().await;
    deliver_all(env, &messages[..3]).await;
    let event = sqs_event(&[("d".into(), messages[5].clone(), MAX_RECEIVES)]);
    assert!(handle_dead_letters(env.s.jobs.as_ref(), &env.s.callbacks, event).await.batch_item_failures.is_empty());
    let job = env.job(sixteen, &job_id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.as_deref(), Some(segments_core::usecases::dead_letter::DEAD_LETTER_REASON));
    let (status, problem) = get_page(&env.s, sixteen.as_str(), HIGH_BALANCE, &job_id, 1, 20).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("job_failed")));
    // The other shards finish without effect: a failed job stays failed, nothing is metered.
    deliver_all(env, &messages).await;
    let job = env.job(sixteen, &job_id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(env.usage(&job).await, 0);
}

fn sqs_event(records: &[(String, String, u32)]) -> lambda_http::aws_lambda_events::event::sqs::SqsEvent {
    let handles: Vec<String> = records.iter().map(|(id, _, _)| format!("rh-{id}")).collect();
    queues::sqs_event(records.iter().zip(&handles).map(|((id, body, count), handle)| Record {
        message_id: id,
        receipt_handle: handle,
        body,
        receive_count: *count,
    }))
}

/// Every scenario, on one store, each with its own mandators.
async fn all_scenarios(env: Env) {
    // Warnings (a transient failure and its cause) show in the output of a failing test.
    let _ = tracing_subscriber::fmt().with_env_filter("warn").with_test_writer().try_init();
    let (one, sixteen) = mandators(&env).await;
    sixteen_shards_equal_one(&env, &one, &sixteen).await;
    let (one, sixteen) = mandators(&env).await;
    redelivered_and_reversed(&env, &one, &sixteen).await;
    for point in [CrashPoint::AfterPartWrite, CrashPoint::AfterShardRecord, CrashPoint::MidFinalize] {
        let (one, sixteen) = mandators(&env).await;
        crash_is_recovered_by_redelivery(&env, &one, &sixteen, point).await;
    }
    let (one, sixteen) = mandators(&env).await;
    pages_concatenate_to_the_export(&env, &sixteen).await;
    no_data_completes_empty(&env).await;
    expired_job_is_400(&env, &sixteen).await;
    idempotency_keys(&env, &sixteen, &one).await;
    let (_, sixteen) = mandators(&env).await;
    poison_message_ends_in_the_dlq_and_fails_its_job(&env, &sixteen).await;
    let (_, sixteen) = mandators(&env).await;
    dead_letter_fails_a_running_job(&env, &sixteen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_at_scale_on_the_embedded_store() {
    all_scenarios(Env::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_at_scale_on_dynamodb_s3_and_sqs() {
    all_scenarios(Env::moto().await).await;
}
