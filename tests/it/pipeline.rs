//! The whole pipeline — import, create-job, worker, get-result — for all five segment types,
//! through the AWS adapters against a local moto server (real SDK clients over HTTP) and through
//! the embedded store, on the same generated data. Results must be identical between the two, and
//! highBalance must match an independent reference computed from the files.

use std::path::Path;
use std::sync::Arc;

use crate::support::flows::{all_users, as_reference, get_page, post_job, reference_high_balance};
use crate::support::moto::MotoServer;
use crate::support::queues::{Record, sqs_event};
use crate::support::users::{aws_importer, embedded_importer, import_dir};
use chrono::{Days, NaiveDate, Utc};
use financial_segments::generate::{self, GenerateConfig};
use segments_aws::services as aws_services;
use segments_aws::{SqsQueue, provision};
use segments_core::config::ServiceConfig;
use segments_core::domain::{MandatorId, SegmentType};
use segments_core::imports::ImportMode;
use segments_core::usecases::Services;
use segments_core::usecases::import::Importer;
use segments_core::usecases::run_shard::{Disposition, ShardRunner, process_message};
use segments_embedded::EmbeddedStore;
use segments_embedded::wiring::services as embedded_services;
use serde_json::Value;

const MANDATOR: &str = "bank-pipeline";

/// Generated data in `dir`: `users` users with 14 months of history ending today.
fn generate_data(dir: &Path, users: u64) -> NaiveDate {
    let end = Utc::now().date_naive();
    let config = GenerateConfig {
        mandator: MandatorId::parse(MANDATOR).unwrap(),
        months: 14,
        ..GenerateConfig::new(users, end)
    };
    let accounts = std::fs::File::create(dir.join("accounts.ndjson")).unwrap();
    let transactions = std::fs::File::create(dir.join("transactions.ndjson")).unwrap();
    generate::write_ndjson(&config, accounts, transactions, |_| {}).unwrap();
    end
}

async fn import(importer: &Importer, dir: &Path, shards: u32) {
    let mandator = MandatorId::parse(MANDATOR).unwrap();
    import_dir(importer, &mandator, ImportMode::UpsertUsers, dir, Some(shards)).await.unwrap();
}

/// The jobs of the scenario: every type, highBalance twice (today, and ten days ago so later
/// transactions are undone).
fn jobs(end: NaiveDate) -> Vec<(&'static str, String)> {
    let past = end - Days::new(10);
    let from = end - Days::new(120);
    vec![
        ("highBalance", r#"{"accountType":"checking","threshold":5000}"#.to_owned()),
        ("highBalance", format!(r#"{{"accountType":"checking","threshold":1000.5,"currency":"EUR","asOf":"{past}"}}"#)),
        ("lowBalance", r#"{"threshold":100,"durationInMonth":3}"#.to_owned()),
        ("incomeSpendingSummary", format!(r#"{{"dateFrom":"{from}","dateTo":"{end}"}}"#)),
        ("insuranceSpending", r#"{"durationInMonth":12}"#.to_owned()),
        (
            "financialBreakdown",
            r#"{"durationInMonth":6,"labelGroups":["RENT","SALARY",{"alias":"food","includeLabels":["GROCERIES","RESTAURANT"],"excludeLabels":["REFUND"]}]}"#
                .to_owned(),
        ),
    ]
}

/// Posts every job, checks they are not ready before a worker ran, lets `drain` run the workers
/// and returns every job's users.
async fn run_jobs<F, Fut>(s: &Services, end: NaiveDate, shards: u32, drain: F) -> Vec<(String, Vec<Value>)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut posted = Vec::new();
    for (t, body) in jobs(end) {
        posted.push((t, post_job(s, MANDATOR, t, &body).await));
    }
    let (t, first) = &posted[0];
    let (status, not_ready) = get_page(s, MANDATOR, t, first, 1, 20).await;
    assert_eq!(status, 404, "{not_ready}");
    assert_eq!(not_ready["status"], "QUEUED");
    assert_eq!(not_ready["progress"]["shardsTotal"], shards);

    assert_eq!(drain().await, posted.len() * shards as usize, "one message per shard of every job");
    let mut results = Vec::new();
    for (t, job_id) in posted {
        let (_, first_page) = get_page(s, MANDATOR, t, &job_id, 1, 1).await;
        assert_eq!(first_page["segmentType"], t);
        results.push((t.to_owned(), all_users(s, MANDATOR, t, &job_id, 7).await));
    }
    results
}

fn check_high_balance_against_reference(dir: &Path, end: NaiveDate, results: &[(String, Vec<Value>)]) {
    let today = reference_high_balance(dir, MANDATOR, "checking", "5000", end);
    assert!(!today.is_empty(), "the data must have users above the threshold");
    assert_eq!(as_reference(&results[0].1), today);
    let mut earlier = reference_high_balance(dir, MANDATOR, "checking", "1000.5", end - Days::new(10));
    // The reference knows nothing of currencies: keep only EUR accounts, as the job asked.
    let eur = eur_accounts(dir);
    for accounts in earlier.values_mut() {
        accounts.retain(|(a, _)| eur.contains(a));
    }
    earlier.retain(|_, a| !a.is_empty());
    assert_eq!(as_reference(&results[1].1), earlier);
}

fn eur_accounts(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(dir.join("accounts.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|a| a["currency"] == "EUR")
        .map(|a| a["accountId"].as_str().unwrap().to_owned())
        .collect()
}

async fn through_embedded(dir: &Path, end: NaiveDate, shards: u32) -> Vec<(String, Vec<Value>)> {
    let store_dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(store_dir.path()).unwrap();
    import(&embedded_importer(&store), dir, shards).await;
    let (s, mut rx) = embedded_services(store, ServiceConfig::default());
    let worker = s.runner();
    run_jobs(&s, end, shards, move || async move {
        let mut handled = 0;
        while let Ok(m) = rx.try_recv() {
            let body = serde_json::to_string(&m).unwrap();
            assert_eq!(process_message(&worker, m.segment_type, &body, 1, Utc::now()).await, Disposition::Ack);
            handled += 1;
        }
        handled
    })
    .await
}

/// Receives what a type's queue holds and runs it through the Lambda's SQS batch handler,
/// deleting what the handler acknowledged — what the Lambda event source mapping does. With
/// `redeliver`, every batch is handled twice (SQS delivers at least once).
async fn drain_sqs(s: &ShardRunner, queue: &SqsQueue, redeliver: bool) -> usize {
    let mut handled = 0;
    for &t in SegmentType::ALL {
        loop {
            let messages = queue.receive(t, 10, 0).await.unwrap();
            if messages.is_empty() {
                break;
            }
            for _ in 0..if redeliver { 2 } else { 1 } {
                let event = sqs_event(messages.iter().map(|m| Record {
                    message_id: &m.message_id,
                    receipt_handle: &m.receipt_handle,
                    body: &m.body,
                    receive_count: m.receive_count,
                }));
                let response = segments_core::sqs::handle_sqs_batch(s, t, event).await;
                assert!(response.batch_item_failures.is_empty(), "{t}");
            }
            for m in &messages {
                queue.delete(t, &m.receipt_handle).await.unwrap();
            }
            handled += messages.len();
        }
    }
    handled
}

async fn through_moto(dir: &Path, end: NaiveDate, shards: u32, redeliver: bool) -> Vec<(String, Vec<Value>)> {
    let moto = MotoServer::start();
    let clients = moto.clients().await;
    let resources = provision::provision_all(&clients, "pipeline", 5).await.unwrap();
    let s = aws_services(&clients, &resources, ServiceConfig::default());
    let queue = Arc::new(SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone()));
    import(&aws_importer(&clients, &resources, "pipeline").await, dir, shards).await;
    let worker = s.runner();
    run_jobs(&s, end, shards, move || async move { drain_sqs(&worker, &queue, redeliver).await }).await
}

/// 60 users: small on purpose, moto writes a few thousand items per second and queries slowly.
#[tokio::test(flavor = "multi_thread")]
async fn all_five_types_are_identical_through_moto_and_the_embedded_store() {
    compare_adapters(60, 4, true).await;
}

/// The same comparison on 5,000 users (about 820,000 items over 64 shards; each SQS batch handled
/// once). It passes, and takes about 55 minutes on two cores, almost all of it moto: the import
/// (~20 min, moto stores ~700 items a second) and 384 shard Queries of ~12,800 items each
/// (~5 s each even with the launcher's fast path). That is more than a CI run should spend, so
/// it runs on demand: `tests/run.sh -- --ignored` (the only ignored test).
#[ignore = "runs for many minutes against moto; run on demand"]
#[tokio::test(flavor = "multi_thread")]
async fn all_five_types_are_identical_on_five_thousand_users() {
    compare_adapters(5_000, 64, false).await;
}

/// `shards` spreads the data; with `redeliver`, every SQS batch is handled twice.
async fn compare_adapters(users: u64, shards: u32, redeliver: bool) {
    let data = tempfile::tempdir().unwrap();
    let end = generate_data(data.path(), users);

    let embedded = through_embedded(data.path(), end, shards).await;
    check_high_balance_against_reference(data.path(), end, &embedded);
    for (t, users) in &embedded {
        assert!(!users.is_empty(), "{t}: the generated data must put some users in every segment");
    }

    let aws = through_moto(data.path(), end, shards, redeliver).await;
    for ((t, a), (_, e)) in aws.iter().zip(&embedded) {
        assert_eq!(a, e, "{t}: AWS and embedded adapters must give identical users");
    }
}
