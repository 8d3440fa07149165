//! The whole highBalance pipeline — import, create-job, worker, get-result — through the AWS
//! adapters against a local moto server (real SDK clients over HTTP) and through the embedded
//! store, on the same generated data: both must match an independent reference and each other.

mod support;

use std::path::Path;

use chrono::{Days, NaiveDate, Utc};
use segments_core::adapters::aws::{DynamoAccounts, SqsQueue, provision};
use segments_core::adapters::{aws_services, embedded::EmbeddedStore, embedded_services};
use segments_core::app::Services;
use segments_core::config::ServiceConfig;
use segments_core::domain::{MandatorId, SegmentType};
use segments_core::generate::{self, GenerateConfig};
use segments_core::import::{ImportOptions, import_files};
use segments_core::ports::AccountSink;
use segments_core::worker::{Disposition, process_message};
use serde_json::Value;
use support::flows::{all_users, as_reference, get_page, post_job, reference_high_balance};
use support::moto::MotoServer;

const MANDATOR: &str = "bank-pipeline";

/// Generated data in `dir`: 80 users with four months of history ending today. Small on purpose:
/// moto is slow (thousands of items per second), and highBalance only looks at the last days.
fn generate_data(dir: &Path) -> NaiveDate {
    let end = Utc::now().date_naive();
    let config =
        GenerateConfig { mandator: MandatorId::parse(MANDATOR).unwrap(), months: 4, ..GenerateConfig::new(80, end) };
    let accounts = std::fs::File::create(dir.join("accounts.ndjson")).unwrap();
    let transactions = std::fs::File::create(dir.join("transactions.ndjson")).unwrap();
    generate::write_ndjson(&config, accounts, transactions, |_| {}).unwrap();
    end
}

async fn import(sink: &dyn AccountSink, dir: &Path) {
    let options = ImportOptions { mandator: Some(MandatorId::parse(MANDATOR).unwrap()), shard_count: 4 };
    import_files(sink, &dir.join("accounts.ndjson"), &dir.join("transactions.ndjson"), options, |_| {}).await.unwrap();
}

/// Two jobs (as of today, and as of ten days ago so later transactions are undone); returns all
/// users of both results. `drain` runs the worker for whatever is queued.
async fn run_jobs<F, Fut>(s: &Services, as_of_past: NaiveDate, mut drain: F) -> (Vec<Value>, Vec<Value>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let today = post_job(s, MANDATOR, r#"{"accountType":"checking","threshold":5000}"#).await;
    let body = format!(r#"{{"accountType":"checking","threshold":1000.5,"currency":"EUR","asOf":"{as_of_past}"}}"#);
    let past = post_job(s, MANDATOR, &body).await;

    let (status, not_ready) = get_page(s, MANDATOR, &today, 1, 20).await;
    assert_eq!(status, 404, "{not_ready}");
    assert_eq!(not_ready["status"], "QUEUED");
    assert_eq!(not_ready["progress"]["shardsTotal"], 4);

    assert_eq!(drain().await, 2, "one message per job");
    (all_users(s, MANDATOR, &today, 7).await, all_users(s, MANDATOR, &past, 500).await)
}

fn check_against_reference(dir: &Path, end: NaiveDate, past: NaiveDate, users: &(Vec<Value>, Vec<Value>)) {
    let today = reference_high_balance(dir, MANDATOR, "checking", "5000", end);
    assert!(!today.is_empty(), "the data must have users above the threshold");
    assert_eq!(as_reference(&users.0), today);
    let mut earlier = reference_high_balance(dir, MANDATOR, "checking", "1000.5", past);
    // The reference knows nothing of currencies: keep only EUR accounts, as the job asked.
    let eur = eur_accounts(dir);
    for accounts in earlier.values_mut() {
        accounts.retain(|(a, _)| eur.contains(a));
    }
    earlier.retain(|_, a| !a.is_empty());
    assert_eq!(as_reference(&users.1), earlier);
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

async fn through_embedded(dir: &Path, past: NaiveDate) -> (Vec<Value>, Vec<Value>) {
    let store_dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(store_dir.path()).unwrap();
    import(&store, dir).await;
    let (s, mut rx) = embedded_services(store, ServiceConfig::default());
    let s2 = s.clone();
    run_jobs(&s, past, move || {
        let mut drained = Vec::new();
        while let Ok(m) = rx.try_recv() {
            drained.push(m);
        }
        let s = s2.clone();
        async move {
            for m in &drained {
                let body = serde_json::to_string(m).unwrap();
                assert_eq!(process_message(&s, SegmentType::HighBalance, &body, 1, Utc::now()).await, Disposition::Ack);
            }
            drained.len()
        }
    })
    .await
}

async fn moto_services(moto: &MotoServer) -> (Services, SqsQueue, DynamoAccounts) {
    let clients = moto.clients().await;
    let resources = provision::provision_all(&clients, "pipeline", 5).await.unwrap();
    let s = aws_services(&clients, &resources, ServiceConfig::default());
    let queue = SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone());
    let sink = DynamoAccounts::new(clients.dynamodb.clone(), resources.account_table.clone());
    (s, queue, sink)
}

/// Receives what the queue holds and runs it through the Lambda's SQS batch handler, deleting
/// what the handler acknowledged — what the Lambda event source mapping does.
async fn drain_sqs(s: &Services, queue: &SqsQueue, redeliver: bool) -> usize {
    let mut handled = 0;
    loop {
        let messages = queue.receive(SegmentType::HighBalance, 10, 1).await.unwrap();
        if messages.is_empty() {
            return handled;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                serde_json::json!({
                    "messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                    "attributes": {"ApproximateReceiveCount": m.receive_count.to_string()},
                    "messageAttributes": {}, "eventSource": "aws:sqs", "awsRegion": "eu-central-1"
                })
            })
            .collect();
        let event = serde_json::from_value(serde_json::json!({ "Records": records })).unwrap();
        let response = segments_core::worker::handle_sqs_batch(s, SegmentType::HighBalance, event).await;
        assert!(response.batch_item_failures.is_empty());
        if redeliver {
            // At-least-once delivery: the same messages once more, after their work is done.
            let again = serde_json::from_value(serde_json::json!({ "Records": records })).unwrap();
            let response = segments_core::worker::handle_sqs_batch(s, SegmentType::HighBalance, again).await;
            assert!(response.batch_item_failures.is_empty());
        }
        for m in &messages {
            queue.delete(SegmentType::HighBalance, &m.receipt_handle).await.unwrap();
        }
        handled += messages.len();
    }
}

async fn through_moto(dir: &Path, past: NaiveDate, redeliver: bool) -> (Vec<Value>, Vec<Value>) {
    let moto = MotoServer::start();
    let (s, queue, sink) = moto_services(&moto).await;
    import(&sink, dir).await;
    let s2 = s.clone();
    let queue = std::sync::Arc::new(queue);
    run_jobs(&s, past, move || {
        let s = s2.clone();
        let queue = queue.clone();
        async move { drain_sqs(&s, &queue, redeliver).await }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn high_balance_is_identical_through_moto_and_the_embedded_store_and_matches_the_reference() {
    let data = tempfile::tempdir().unwrap();
    let end = generate_data(data.path());
    let past = end.checked_sub_days(Days::new(10)).unwrap();

    let embedded = through_embedded(data.path(), past).await;
    check_against_reference(data.path(), end, past, &embedded);

    let aws = through_moto(data.path(), past, true).await;
    check_against_reference(data.path(), end, past, &aws);
    assert_eq!(aws, embedded, "AWS and embedded adapters must give byte-identical users");
}
