//! The local runner's worker pool over the embedded store: a job's shards run in parallel, a
//! failing delivery comes back with a higher receive count, and after the last one the job takes
//! the dead-letter path of the Lambdas (FAILED, 422).

use std::time::{Duration, Instant};

use crate::support::contract::unique_mandator;
use crate::support::faults::{CrashPoint, FaultPlan, with_faults};
use crate::support::flows::{all_users, get_page, post_job};
use crate::support::users::put_items;
use chrono::NaiveDate;
use financial_segments::workers::spawn_embedded_pool;
use segments_core::config::ServiceConfig;
use segments_core::domain::records::AccountItem;
use segments_core::domain::{Account, AccountId, AccountType, Currency, JobId, MandatorId, Money, UserId};
use segments_core::jobs::{Job, JobStatus};
use segments_core::usecases::Services;
use segments_core::usecases::run_shard::RetrySchedule;
use segments_embedded::EmbeddedStore;
use segments_embedded::wiring::services as embedded_services;

const BODY: &str = r#"{"accountType":"checking","threshold":100}"#;

async fn mandator_with_data(store: &EmbeddedStore, shards: u32) -> MandatorId {
    let mandator = unique_mandator("pool");
    let items: Vec<AccountItem> = (0..30)
        .map(|i| {
            AccountItem::Account(Account {
                user_id: UserId::parse(&format!("u{i:02}")).unwrap(),
                account_id: AccountId::parse(&format!("a{i:02}")).unwrap(),
                account_type: AccountType::Checking,
                currency: Currency::parse("EUR").unwrap(),
                balance: Money::from_cents(i * 1000),
                balance_date: NaiveDate::from_ymd_opt(2024, 1, 31).unwrap(),
            })
        })
        .collect();
    put_items(store, &mandator, shards, &items).await;
    mandator
}

/// Waits until the job is final (the pool works in the background).
async fn final_job(s: &Services, mandator: &MandatorId, job_id: &str) -> Job {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = s.jobs.get(mandator, JobId::parse(job_id).unwrap()).await.unwrap().unwrap();
        if job.status.is_final() {
            return job;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {job:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pool_runs_every_shard_retries_a_crash_and_dead_letters_what_keeps_failing() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let config = ServiceConfig { max_receive_count: 2, ..ServiceConfig::default() };
    let (s, rx) = embedded_services(store.clone(), config);
    let faults = FaultPlan::default();
    let s = with_faults(s, &faults);
    // The Lambdas' schedule scaled down to milliseconds: the retries below are the point, not
    // their pace.
    let schedule = RetrySchedule {
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        heartbeat_every: Duration::from_secs(60),
        heartbeat_hold: Duration::from_secs(180),
    };
    spawn_embedded_pool(s.runner(), rx, 4, schedule);

    // Sixteen shards in parallel: the users above the threshold, in order, metered once.
    let sixteen = mandator_with_data(&store, 16).await;
    let job_id = post_job(&s, sixteen.as_str(), "highBalance", BODY).await;
    let job = final_job(&s, &sixteen, &job_id).await;
    assert_eq!((job.status, job.shards_done), (JobStatus::Completed, 16));
    let users = all_users(&s, sixteen.as_str(), "highBalance", &job_id, 500).await;
    let ids: Vec<&str> = users.iter().map(|u| u["userId"].as_str().unwrap()).collect();
    let expected: Vec<String> = (11..30).map(|i| format!("u{i:02}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(s.jobs.usage(&sixteen, job.usage_month(), job.segment_type).await.unwrap(), 1);

    // A crash is delivered again and the job completes with the same users.
    let again = mandator_with_data(&store, 16).await;
    faults.crash_once(CrashPoint::MidFinalize);
    let job_id = post_job(&s, again.as_str(), "highBalance", BODY).await;
    let job = final_job(&s, &again, &job_id).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert!(faults.all_fired());
    assert_eq!(all_users(&s, again.as_str(), "highBalance", &job_id, 500).await, users);
    assert_eq!(s.jobs.usage(&again, job.usage_month(), job.segment_type).await.unwrap(), 1);

    // A shard that fails on every delivery fails its job after the last one: 422 with the reason.
    let failing = mandator_with_data(&store, 1).await;
    faults.crash_once(CrashPoint::AfterPartWrite);
    faults.crash_once(CrashPoint::AfterPartWrite);
    let job_id = post_job(&s, failing.as_str(), "highBalance", BODY).await;
    let job = final_job(&s, &failing, &job_id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.error.as_deref().unwrap_or_default().contains("failed 2 times"), "{job:?}");
    let (status, problem) = get_page(&s, failing.as_str(), "highBalance", &job_id, 1, 20).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("job_failed")), "{problem}");
    assert_eq!(s.jobs.usage(&failing, job.usage_month(), job.segment_type).await.unwrap(), 0);
}
