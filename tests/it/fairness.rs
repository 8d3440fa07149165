//! Sharing the service between mandators, and metering it: many completions of one mandator at
//! once are each metered exactly once without redoing a merge, and a mandator's live jobs are
//! limited (429 with `Retry-After` beyond the limit), on both backends. The work messages are
//! dispatched fairly between mandators: the local runner takes them round-robin by mandator, and
//! on SQS every message is sent in its mandator's message group (fair queues).

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use segments_core::config::ServiceConfig;
use segments_core::domain::{MandatorId, SegmentType};
use segments_core::http::problem_response;
use segments_core::jobs::{IdempotencyKey, Job, JobStatus, ResultSummary};
use segments_core::ports::AccountSource;
use segments_core::rules::SegmentRequest;
use segments_core::usecases::callbacks::{CallbackPolicy, Callbacks};
use segments_core::usecases::create_job::{
    JobIntake, TOO_MANY_JOBS_RETRY_AFTER_SECONDS, create_job, create_job_with_key,
};
use segments_core::usecases::finalize::finalize;
use segments_core::usecases::run_shard::{RunOutcome, ShardRunner};
use segments_core::usecases::{AppError, Caller};

use crate::support::backend::Backend;
use crate::support::contract::unique_mandator;

on_both_backends!(fifty_concurrent_completions_are_metered_exactly_once_each_at_the_first_attempt, |b| {
    concurrent_completions(b)
});
on_both_backends!(a_mandator_beyond_its_live_job_limit_gets_429_until_a_job_ends, |b| live_job_limit(b));

const COMPLETIONS: usize = 50;

fn callbacks(b: &Backend) -> Callbacks {
    Callbacks::http(b.secrets.clone(), CallbackPolicy::strict())
}

fn caller(mandator: &MandatorId) -> Caller {
    Caller { mandator: mandator.clone(), scopes: Default::default() }
}

/// Fifty one-shard jobs of one mandator and type, every part written and recorded, finalized all
/// at once: each finalize completes its job on its first run (none has to run, and merge, again),
/// and the usage of the month and type is exactly fifty.
async fn concurrent_completions(b: Backend) {
    let mandator = unique_mandator("meter");
    let segment_type = SegmentType::HighBalance;
    let today = Utc::now().date_naive();
    let body = br#"{"accountType":"checking","threshold":5000,"currency":"EUR"}"#;
    let request = SegmentRequest::parse(segment_type, body, today).expect("a valid request");
    let mut jobs = Vec::with_capacity(COMPLETIONS);
    for i in 0..COMPLETIONS {
        let job = Job::new(mandator.clone(), request.as_of, request.params.clone(), None, 1, Utc::now());
        b.jobs.create(&job).await.expect("create succeeds");
        let part = format!("{{\"userId\":\"u{i:03}\"}}\n");
        b.results.put(&job.layout().part(0), Bytes::from(part)).await.expect("the part is written");
        let recorded = b.jobs.record_shard(&mandator, job.job_id, 0).await.expect("record_shard succeeds");
        let recorded = recorded.expect("the job exists");
        assert!(recorded.all_shards_done());
        jobs.push(recorded);
    }
    let accounts: Arc<dyn AccountSource> = b.users.clone();
    let runner = ShardRunner {
        accounts,
        jobs: b.jobs.clone(),
        results: b.results.clone(),
        callbacks: callbacks(&b),
        config: ServiceConfig::default(),
    };
    // A finalize that lost its completion to another job's would answer a transient error, and
    // its message would be delivered again to merge once more: every first run must complete.
    let runs = futures::future::join_all(jobs.iter().map(|job| finalize(&runner, job))).await;
    for (job, run) in jobs.iter().zip(runs) {
        match run {
            Ok(RunOutcome::Completed { total_elements: 1 }) => {}
            other => panic!("job {}: the first finalize must complete it, got {other:?}", job.job_id),
        }
    }
    let month = jobs[0].usage_month();
    assert_eq!(b.jobs.usage(&mandator, month, segment_type).await.expect("usage succeeds"), COMPLETIONS as u64);
    for job in &jobs {
        let stored = b.jobs.get(&mandator, job.job_id).await.expect("get succeeds").expect("the job exists");
        assert_eq!(stored.status, JobStatus::Completed, "job {}", job.job_id);
    }
    // A redelivered finalize of every job finds it final and meters nothing again.
    let again = futures::future::join_all(jobs.iter().map(|job| finalize(&runner, job))).await;
    assert!(again.iter().all(|r| r.is_ok()), "{again:?}");
    assert_eq!(b.jobs.usage(&mandator, month, segment_type).await.expect("usage succeeds"), COMPLETIONS as u64);
    assert_eq!(b.jobs.live_jobs(&mandator, 100).await.expect("live_jobs succeeds"), 0, "no job is live any more");
}

/// The default limit (20) counts live jobs of every type together: the 21st is refused with 429,
/// `Retry-After` and the `too_many_jobs` problem; a replay of an existing job under its key is
/// still answered; once a job ends, a new one is accepted.
async fn live_job_limit(b: Backend) {
    let config = ServiceConfig::default();
    let limit = config.max_live_jobs_per_mandator;
    assert_eq!(limit, 20, "the default limit");
    let accounts: Arc<dyn AccountSource> = b.users.clone();
    let intake = JobIntake { accounts, jobs: b.jobs.clone(), queue: b.queue.clone(), callbacks: callbacks(&b), config };
    let mandator = unique_mandator("limit");
    let who = caller(&mandator);
    let now = Utc::now();
    let high = br#"{"accountType":"checking","threshold":5000,"currency":"EUR"}"#.as_slice();
    let low = br#"{"threshold":0,"durationInMonth":3}"#.as_slice();
    let key = IdempotencyKey::parse("limit-order-1").expect("a valid key");

    // Twenty live jobs of two types, the first under an idempotency key.
    let keyed = create_job_with_key(&intake, &who, SegmentType::HighBalance, high, Some(&key), now)
        .await
        .expect("the first job is accepted");
    let mut created = vec![keyed.clone()];
    for i in 1..limit {
        let (segment_type, body) =
            if i % 2 == 0 { (SegmentType::HighBalance, high) } else { (SegmentType::LowBalance, low) };
        let job = create_job(&intake, &who, segment_type, body, now).await.unwrap_or_else(|e| panic!("job {i}: {e}"));
        created.push(job);
    }

    // The 21st, of either type, is refused: 429, Retry-After in seconds, the problem.
    for (segment_type, body) in [(SegmentType::LowBalance, low), (SegmentType::HighBalance, high)] {
        let refused = create_job(&intake, &who, segment_type, body, now).await.expect_err("beyond the limit");
        assert!(
            matches!(
                refused,
                AppError::TooManyJobs { limit: 20, retry_after_seconds: TOO_MANY_JOBS_RETRY_AFTER_SECONDS }
            ),
            "{refused:?}"
        );
        let response = problem_response(&refused);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], TOO_MANY_JOBS_RETRY_AFTER_SECONDS.to_string());
        let lambda_http::Body::Text(problem) = response.body() else { panic!("a problem body") };
        let problem: serde_json::Value = serde_json::from_str(problem).expect("a JSON problem");
        assert_eq!(problem["code"], "too_many_jobs", "{problem}");
        assert_eq!(problem["status"], 429, "{problem}");
    }
    assert_eq!(b.jobs.live_jobs(&mandator, 100).await.expect("live_jobs succeeds"), limit, "nothing was stored");

    // A replay of the keyed job is answered with it; another body under its key is still a 409; a
    // new key is a new job, refused.
    let replay = create_job_with_key(&intake, &who, SegmentType::HighBalance, high, Some(&key), now)
        .await
        .expect("a replay is never refused by the limit");
    assert_eq!(replay.job_id, keyed.job_id);
    let reused = create_job_with_key(&intake, &who, SegmentType::LowBalance, low, Some(&key), now).await;
    assert!(matches!(reused, Err(AppError::IdempotencyKeyReused)), "{reused:?}");
    let fresh = IdempotencyKey::parse("limit-order-2").expect("a valid key");
    let refused = create_job_with_key(&intake, &who, SegmentType::HighBalance, high, Some(&fresh), now).await;
    assert!(matches!(refused, Err(AppError::TooManyJobs { .. })), "{refused:?}");

    // Another mandator is not limited by this one's jobs.
    let other = unique_mandator("limit-other");
    create_job(&intake, &caller(&other), SegmentType::HighBalance, high, now).await.expect("another mandator");

    // One job completes: one new job is accepted, the next is refused again.
    let summary = ResultSummary { total_elements: 0, chunk_size: 1000, chunk_count: 0 };
    assert!(b.jobs.complete(&created[1], summary).await.expect("complete succeeds"));
    create_job(&intake, &who, SegmentType::LowBalance, low, now).await.expect("a slot was freed by a completion");
    let refused = create_job(&intake, &who, SegmentType::LowBalance, low, now).await;
    assert!(matches!(refused, Err(AppError::TooManyJobs { .. })), "{refused:?}");

    // One job fails: its slot frees too.
    assert!(b.jobs.fail(&mandator, created[2].job_id, "unreadable data").await.expect("fail succeeds"));
    create_job(&intake, &who, SegmentType::HighBalance, high, now).await.expect("a slot was freed by a failure");
    let refused = create_job(&intake, &who, SegmentType::HighBalance, high, now).await;
    assert!(matches!(refused, Err(AppError::TooManyJobs { .. })), "{refused:?}");

    // The keyed job completes: its replay still answers it, at the limit or not.
    assert!(b.jobs.complete(&keyed, summary).await.expect("complete succeeds"));
    let replay = create_job_with_key(&intake, &who, SegmentType::HighBalance, high, Some(&key), now)
        .await
        .expect("a replay of a completed job");
    assert_eq!((replay.job_id, replay.status), (keyed.job_id, JobStatus::Completed));
}

/// On DynamoDB, concurrent completions write no common item: each job's usage is an item of its
/// own (a shared counter made two completions' transactions conflict, which moto does not
/// emulate, so the layout is asserted), and a counter written before per-job records still counts.
#[tokio::test(flavor = "multi_thread")]
async fn moto_completions_write_one_usage_item_each_and_old_counters_still_count() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use segments_aws::DynamoJobs;
    use segments_core::ports::JobStore;

    let server = crate::support::moto::MotoServer::start();
    let clients = server.clients().await;
    let resources = segments_aws::provision::provision_all(&clients, "fairness", 5).await.expect("provisioned");
    let store = DynamoJobs::new(clients.dynamodb.clone(), resources.jobs_table.clone());
    let mandator = unique_mandator("meter-layout");
    let segment_type = SegmentType::HighBalance;
    let body = br#"{"accountType":"checking","threshold":5000,"currency":"EUR"}"#;
    let request = SegmentRequest::parse(segment_type, body, Utc::now().date_naive()).expect("a valid request");
    let mut jobs = Vec::new();
    for _ in 0..COMPLETIONS {
        let job = Job::new(mandator.clone(), request.as_of, request.params.clone(), None, 1, Utc::now());
        store.create(&job).await.expect("create succeeds");
        jobs.push(job);
    }
    let summary = ResultSummary { total_elements: 1, chunk_size: 1000, chunk_count: 1 };
    let completed = futures::future::join_all(jobs.iter().map(|job| store.complete(job, summary))).await;
    assert!(completed.iter().all(|c| matches!(c, Ok(true))), "{completed:?}");

    let month = jobs[0].usage_month();
    let usage_items = clients
        .dynamodb
        .query()
        .table_name(&resources.jobs_table)
        .consistent_read(true)
        .key_condition_expression("pk = :pk AND begins_with(sk, :usage)")
        .expression_attribute_values(":pk", AttributeValue::S(format!("M#{mandator}")))
        .expression_attribute_values(":usage", AttributeValue::S("USAGE#".to_owned()))
        .send()
        .await
        .expect("the query succeeds")
        .items
        .unwrap_or_default();
    let mut sort_keys: Vec<String> =
        usage_items.iter().filter_map(|i| i.get("sk").and_then(|v| v.as_s().ok()).cloned()).collect();
    sort_keys.sort();
    let mut expected: Vec<String> = jobs.iter().map(|j| format!("USAGE#{month}#{segment_type}#{}", j.job_id)).collect();
    expected.sort();
    assert_eq!(sort_keys, expected, "one usage item per job, and no item shared by two completions");

    // A deployed table holds counters from before per-job records: they are added.
    clients
        .dynamodb
        .put_item()
        .table_name(&resources.jobs_table)
        .item("pk", AttributeValue::S(format!("M#{mandator}")))
        .item("sk", AttributeValue::S(format!("USAGE#{month}#{segment_type}")))
        .item("jobs", AttributeValue::N("7".to_owned()))
        .send()
        .await
        .expect("an old counter is written");
    assert_eq!(store.usage(&mandator, month, segment_type).await.expect("usage succeeds"), COMPLETIONS as u64 + 7);
    assert_eq!(store.usage(&mandator, month, SegmentType::LowBalance).await.expect("usage succeeds"), 0);
}

/// Account data of `users` users with balances of 0 to `users - 1` thousand euros, in `shards`
/// shards.
async fn mandator_with_accounts(
    store: &dyn segments_core::ports::UserStore,
    label: &str,
    users: i64,
    shards: u32,
) -> MandatorId {
    use segments_core::domain::records::AccountItem;
    use segments_core::domain::{Account, AccountId, AccountType, Currency, Money, UserId};

    let mandator = unique_mandator(label);
    let items: Vec<AccountItem> = (0..users)
        .map(|i| {
            AccountItem::Account(Account {
                user_id: UserId::parse(&format!("u{i:04}")).expect("a valid user id"),
                account_id: AccountId::parse(&format!("a{i:04}")).expect("a valid account id"),
                account_type: AccountType::Checking,
                currency: Currency::parse("EUR").expect("a valid currency"),
                balance: Money::from_cents(i * 100_000),
                balance_date: chrono::NaiveDate::from_ymd_opt(2024, 1, 31).expect("a valid date"),
            })
        })
        .collect();
    crate::support::users::put_items(store, &mandator, shards, &items).await;
    mandator
}

const FAIR_BODY: &str = r#"{"accountType":"checking","threshold":5000,"currency":"EUR"}"#;

/// The backlog of the first mandator: one job of this many shards, one message each.
const BACKLOG_SHARDS: u32 = 200;

/// One local worker, mandator A's job of 200 shards queued, then mandator B's job of one shard:
/// B's job completes while A's job still has shards to run, because the runner takes the next
/// message of the next mandator in turn, not the oldest message. Once all is done, both jobs
/// have every shard recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shard_job_completes_while_another_mandators_backlog_waits() {
    use std::time::{Duration, Instant};

    use financial_segments::workers::spawn_embedded_pool;
    use segments_core::domain::JobId;
    use segments_core::usecases::run_shard::RetrySchedule;
    use segments_embedded::EmbeddedStore;
    use segments_embedded::wiring::services as embedded_services;

    use crate::support::flows::post_job;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open(dir.path()).expect("the store opens");
    let (s, fresh) = embedded_services(store.clone(), ServiceConfig::default());
    let noisy = mandator_with_accounts(&store, "backlog", 400, BACKLOG_SHARDS).await;
    let quiet = mandator_with_accounts(&store, "quiet", 3, 1).await;
    spawn_embedded_pool(s.runner(), fresh, 1, RetrySchedule::default());

    let backlog = JobId::parse(&post_job(&s, noisy.as_str(), "highBalance", FAIR_BODY).await).expect("a job id");
    let single = JobId::parse(&post_job(&s, quiet.as_str(), "highBalance", FAIR_BODY).await).expect("a job id");

    let deadline = Instant::now() + Duration::from_secs(120);
    let backlog_when_single_completed = loop {
        let job = s.jobs.get(&quiet, single).await.expect("get succeeds").expect("the job exists");
        assert_ne!(job.status, JobStatus::Failed, "{job:?}");
        if job.status == JobStatus::Completed {
            break s.jobs.get(&noisy, backlog).await.expect("get succeeds").expect("the job exists");
        }
        assert!(Instant::now() < deadline, "the one-shard job did not complete: {job:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_eq!(backlog_when_single_completed.shards_total, BACKLOG_SHARDS);
    assert!(
        backlog_when_single_completed.shards_done < backlog_when_single_completed.shards_total,
        "the one-shard job waited for the whole backlog: {} of {} shards were done when it completed",
        backlog_when_single_completed.shards_done,
        backlog_when_single_completed.shards_total
    );
    assert!(!backlog_when_single_completed.status.is_final(), "{backlog_when_single_completed:?}");

    // The backlog is delayed, not dropped: it completes with every shard.
    let backlog_job = loop {
        let job = s.jobs.get(&noisy, backlog).await.expect("get succeeds").expect("the job exists");
        if job.status.is_final() {
            break job;
        }
        assert!(Instant::now() < deadline, "the backlog did not complete: {} shards done", job.shards_done);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((backlog_job.status, backlog_job.shards_done), (JobStatus::Completed, BACKLOG_SHARDS));
    let summary = backlog_job.result.expect("a completed job has a summary");
    assert_eq!(summary.total_elements, 394, "u0006 to u0399 hold more than 5000 EUR");
}

/// A job created through the create-job use case on SQS: each of its shard messages (two send
/// batches) carries its mandator as `MessageGroupId`, as does a message enqueued alone, so the
/// fair queues of SQS tell the mandators apart.
#[tokio::test(flavor = "multi_thread")]
async fn moto_work_messages_carry_their_mandator_as_message_group() {
    use std::collections::BTreeMap;

    use aws_sdk_sqs::types::MessageSystemAttributeName;
    use segments_aws::{DynamoAccounts, SqsQueue, services as aws_services};
    use segments_core::domain::JobId;
    use segments_core::jobs::JobMessage;
    use segments_core::ports::JobQueue;

    use crate::support::flows::post_job;

    const SHARDS: u32 = 12;
    let server = crate::support::moto::MotoServer::start();
    let clients = server.clients().await;
    let resources = segments_aws::provision::provision_all(&clients, "fair-groups", 5).await.expect("provisioned");
    let s = aws_services(&clients, &resources, ServiceConfig::default());
    let accounts = DynamoAccounts::new(clients.dynamodb.clone(), resources.account_table.clone());
    let sharded = mandator_with_accounts(&accounts, "grouped", 20, SHARDS).await;
    let job_id = JobId::parse(&post_job(&s, sharded.as_str(), "highBalance", FAIR_BODY).await).expect("a job id");

    // A message sent alone (SendMessage) goes in its mandator's group too.
    let alone = unique_mandator("alone");
    let queue = SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone());
    let lone_message = JobMessage {
        mandator_id: alone.clone(),
        job_id: JobId::new(),
        segment_type: SegmentType::HighBalance,
        shard: 0,
    };
    queue.enqueue(&lone_message).await.expect("enqueued");

    let url = &resources.queue_urls[&SegmentType::HighBalance];
    let mut groups_by_message: BTreeMap<(String, u32), Option<String>> = BTreeMap::new();
    loop {
        let received = clients
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive succeeds");
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let body: JobMessage = serde_json::from_str(m.body().expect("a body")).expect("a work message");
            let group = m.attributes().and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId)).cloned();
            groups_by_message.insert((body.mandator_id.to_string(), body.shard), group);
            assert!(body.job_id == job_id || body == lone_message, "an unexpected message {body:?}");
            clients
                .sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().expect("a receipt handle"))
                .send()
                .await
                .expect("deleted");
        }
    }
    let mut expected: BTreeMap<(String, u32), Option<String>> =
        (0..SHARDS).map(|shard| ((sharded.to_string(), shard), Some(sharded.to_string()))).collect();
    expected.insert((alone.to_string(), 0), Some(alone.to_string()));
    assert_eq!(groups_by_message, expected, "every message in its mandator's group, each shard once");
}
