//! Telemetry end to end on the embedded store: every metric of the operations contract reaches the
//! EMF lines with plausible values when jobs of every type run, fail and call back and imports
//! complete and fail; a problem names the request it answers; a log line inside a handler carries
//! the request id and the mandator.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use chrono::{Days, NaiveDate, Utc};
use lambda_http::request::RequestContext;
use lambda_http::{Body, RequestExt};
use segments_core::domain::{MandatorId, SegmentType};
use segments_core::http::testing::create_job_request;
use segments_core::imports::ImportMode;
use segments_core::telemetry;
use segments_core::usecases::callbacks::CallbackPolicy;
use segments_core::usecases::dead_letter::dead_letter;
use segments_core::usecases::run_shard::{Disposition, process_message};
use segments_embedded::EmbeddedStore;
use segments_embedded::wiring::{callbacks, services as embedded_services};
use serde_json::Value;

use crate::support::contract::unique_mandator;
use crate::support::flows::{ALL_TYPE_SCOPES, post_job};
use crate::support::users::{embedded_importer, import_dir};
use financial_segments::generate::{self, GenerateConfig};

/// A callback receiver on 127.0.0.1 that answers every POST with `status`; its hook URL.
async fn receiver(status: StatusCode) -> String {
    let app = Router::new().route("/hook", post(move || async move { status }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Generated account data of `mandator` in `dir`, ending today.
fn generate_data(dir: &Path, mandator: &MandatorId, users: u64) -> NaiveDate {
    let end = Utc::now().date_naive();
    let config = GenerateConfig { mandator: mandator.clone(), months: 14, ..GenerateConfig::new(users, end) };
    let accounts = std::fs::File::create(dir.join("accounts.ndjson")).unwrap();
    let transactions = std::fs::File::create(dir.join("transactions.ndjson")).unwrap();
    generate::write_ndjson(&config, accounts, transactions, |_| {}).unwrap();
    end
}

/// The captured documents that carry `property` = `value`, parsed, each checked to be valid EMF:
/// the namespace, one dimension set, and every dimension and metric it names a top-level member.
fn documents(capture: &telemetry::Capture, property: &str, value: &str) -> Vec<Value> {
    let docs: Vec<Value> = capture
        .lines()
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).expect("a document is one JSON object"))
        .filter(|doc| doc[property] == value)
        .collect();
    for doc in &docs {
        assert!(doc["_aws"]["Timestamp"].as_i64().is_some_and(|t| t > 0), "{doc}");
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], telemetry::NAMESPACE, "{doc}");
        let sets = directive["Dimensions"].as_array().expect("dimension sets");
        assert_eq!(sets.len(), 1, "{doc}");
        for dimension in sets[0].as_array().expect("a dimension set") {
            assert!(doc[dimension.as_str().unwrap()].is_string(), "dimension {dimension} has a value: {doc}");
        }
        for metric in directive["Metrics"].as_array().expect("metrics") {
            assert!(metric["Unit"].is_string(), "{doc}");
            assert!(doc[metric["Name"].as_str().unwrap()].is_u64(), "metric {metric} has a value: {doc}");
        }
    }
    docs
}

/// Every value of `metric` in `docs`, with the documents' dimension set.
fn values(docs: &[Value], metric: &str) -> Vec<(u64, Value)> {
    docs.iter()
        .filter(|doc| {
            doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap().iter().any(|m| m["Name"] == metric)
        })
        .map(|doc| (doc[metric].as_u64().unwrap(), doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"].clone()))
        .collect()
}

fn unit_of(docs: &[Value], metric: &str) -> String {
    docs.iter()
        .flat_map(|doc| doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap().clone())
        .find(|m| m["Name"] == metric)
        .map(|m| m["Unit"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no {metric}"))
}

#[tokio::test]
async fn every_metric_of_the_contract_is_emitted_as_emf_with_plausible_values() {
    let capture = telemetry::capture();
    let data = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(store_dir.path()).unwrap();
    let mandator = unique_mandator("telemetry");
    let end = generate_data(data.path(), &mandator, 20);
    let importer = embedded_importer(&store);
    import_dir(&importer, &mandator, ImportMode::UpsertUsers, data.path(), Some(2)).await.unwrap();
    // An import with a line that is no JSON fails.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("accounts.ndjson"), "not json\n").unwrap();
    std::fs::write(bad.path().join("transactions.ndjson"), "").unwrap();
    assert!(import_dir(&importer, &mandator, ImportMode::UpsertUsers, bad.path(), None).await.is_err());

    let (mut s, mut rx) = embedded_services(store.clone(), segments_core::config::ServiceConfig::default());
    s.callbacks = callbacks(store.clone(), CallbackPolicy::allow_insecure_loopback_for_tests());
    let (accepting, refusing) = (receiver(StatusCode::OK).await, receiver(StatusCode::BAD_REQUEST).await);
    let from = end - Days::new(120);
    let jobs = [
        ("highBalance", format!(r#"{{"accountType":"checking","threshold":10,"callbackURL":"{accepting}"}}"#)),
        ("highBalance", format!(r#"{{"accountType":"checking","threshold":10,"callbackURL":"{refusing}"}}"#)),
        ("lowBalance", r#"{"threshold":100,"durationInMonth":3}"#.to_owned()),
        ("incomeSpendingSummary", format!(r#"{{"dateFrom":"{from}","dateTo":"{end}"}}"#)),
        ("insuranceSpending", r#"{"durationInMonth":12}"#.to_owned()),
        ("financialBreakdown", r#"{"durationInMonth":6,"labelGroups":["RENT","SALARY"]}"#.to_owned()),
        // These two fail: one reaches the wrong worker, one is dead-lettered.
        ("lowBalance", r#"{"threshold":100,"durationInMonth":3}"#.to_owned()),
        ("insuranceSpending", r#"{"durationInMonth":12}"#.to_owned()),
    ];
    let mut job_ids = Vec::new();
    for (t, body) in &jobs {
        job_ids.push(post_job(&s, mandator.as_str(), t, body).await);
    }
    let (misrouted, dead) = (job_ids[6].clone(), job_ids[7].clone());
    let runner = s.runner();
    while let Ok(message) = rx.try_recv() {
        let body = serde_json::to_string(&message).unwrap();
        let id = message.job_id.to_string();
        if id == dead {
            assert_eq!(dead_letter(s.jobs.as_ref(), &s.callbacks, &body).await, Disposition::Ack);
        } else if id == misrouted {
            process_message(&runner, SegmentType::HighBalance, &body, 1, Utc::now()).await;
        } else {
            assert_eq!(process_message(&runner, message.segment_type, &body, 1, Utc::now()).await, Disposition::Ack);
        }
    }

    let docs = documents(&capture, "mandator", mandator.as_str());
    let by_type = |metric: &str| -> Vec<u64> { values(&docs, metric).into_iter().map(|(v, _)| v).collect() };
    let with_type = serde_json::json!([["SegmentType"]]);
    for metric in
        ["JobsCreated", "JobsCompleted", "JobsFailed", "JobDuration", "ShardDuration", "ItemsRead", "BytesRead"]
    {
        assert!(values(&docs, metric).iter().all(|(_, dims)| *dims == with_type), "{metric} is per SegmentType");
    }
    assert_eq!(by_type("JobsCreated").iter().sum::<u64>(), jobs.len() as u64);
    assert_eq!(by_type("JobsCompleted").iter().sum::<u64>(), 6);
    assert_eq!(by_type("JobsFailed").iter().sum::<u64>(), 2);
    assert_eq!(by_type("JobDuration").len(), 6, "one duration per completed job");
    let created_types: std::collections::BTreeSet<&str> =
        docs.iter().filter(|d| d["JobsCreated"].is_u64()).map(|d| d["SegmentType"].as_str().unwrap()).collect();
    assert_eq!(created_types.len(), SegmentType::ALL.len(), "every type: {created_types:?}");
    // Two shards of each of the six jobs that ran (the dead-lettered one never ran).
    let items = by_type("ItemsRead");
    assert_eq!((items.len(), by_type("ShardDuration").len()), (12, 12));
    assert!(items.iter().all(|&n| n > 0), "every shard reads users: {items:?}");
    assert_eq!(items.iter().sum::<u64>(), 6 * 20, "each of the 20 users once per job");
    assert!(by_type("BytesRead").iter().all(|&n| n > 0));
    assert_eq!(
        [unit_of(&docs, "JobDuration"), unit_of(&docs, "ShardDuration"), unit_of(&docs, "BytesRead")],
        ["Milliseconds", "Milliseconds", "Bytes"]
    );
    assert_eq!(unit_of(&docs, "ItemsRead"), "Count");

    // Imports: one completed with the 20 users, one failed before writing any.
    let no_dimension = serde_json::json!([[]]);
    assert_eq!(values(&docs, "ImportsCompleted"), [(1, no_dimension.clone())]);
    assert_eq!(values(&docs, "ImportsFailed"), [(1, no_dimension.clone())]);
    let imported: Vec<u64> = by_type("ImportedUsers");
    assert_eq!(imported, [20, 0]);

    // Callbacks: the accepting receiver's job delivered, the refusing one's failed.
    let delivered = documents(&capture, "jobId", &job_ids[0]);
    assert_eq!(values(&delivered, "CallbacksDelivered"), [(1, no_dimension.clone())]);
    let failed = documents(&capture, "jobId", &job_ids[1]);
    assert_eq!(values(&failed, "CallbacksFailed"), [(1, no_dimension)]);
}

/// Log lines as the JSON subscriber of the Lambda functions writes them.
#[derive(Clone, Default)]
struct LogLines(Arc<Mutex<Vec<u8>>>);

impl Write for LogLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogLines {
    fn parsed(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// A create-job request by `mandator` with API Gateway's request id `request_id`.
fn request_with_id(body: &str, mandator: &str, request_id: &str) -> lambda_http::Request {
    let req = create_job_request("highBalance", body, Some(mandator), ALL_TYPE_SCOPES);
    let Some(RequestContext::ApiGatewayV2(mut context)) = req.request_context_ref().cloned() else {
        panic!("an API Gateway v2 request")
    };
    context.request_id = Some(request_id.to_owned());
    req.with_request_context(RequestContext::ApiGatewayV2(context))
}

#[tokio::test]
async fn answers_and_log_lines_name_the_request_and_the_mandator() {
    let logs = LogLines::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().json().with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let store_dir = tempfile::tempdir().unwrap();
    let (s, _rx) = embedded_services(
        EmbeddedStore::open(store_dir.path()).unwrap(),
        segments_core::config::ServiceConfig::default(),
    );
    let mandator = unique_mandator("traced");
    let request_id = format!("req-{}", uuid::Uuid::new_v4().simple());

    // A refused request: the problem's instance and the header name the request.
    let refused = request_with_id(r#"{"accountType":"checking"}"#, mandator.as_str(), &request_id);
    let response = create_job::handle(&s.intake(), refused).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()[segments_core::http::REQUEST_ID_HEADER], request_id.as_str());
    let Body::Text(text) = response.body() else { panic!("a problem body") };
    let problem: Value = serde_json::from_str(text).unwrap();
    assert_eq!(problem["instance"], format!("urn:financial-segments:request:{request_id}"), "{problem}");

    // An accepted one: the header again, and the handler's log line carries both fields.
    let accepted_id = format!("{request_id}-2");
    let accepted = request_with_id(r#"{"accountType":"checking","threshold":1}"#, mandator.as_str(), &accepted_id);
    let response = create_job::handle(&s.intake(), accepted).await.unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()[segments_core::http::REQUEST_ID_HEADER], accepted_id.as_str());
    let lines = logs.parsed();
    let queued = lines
        .iter()
        .find(|l| l["fields"]["message"] == "job queued")
        .unwrap_or_else(|| panic!("the handler logs the queued job: {lines:?}"));
    let request = queued["spans"]
        .as_array()
        .expect("the line lists its spans")
        .iter()
        .find(|span| span["name"] == "request")
        .unwrap_or_else(|| panic!("inside the request span: {queued}"));
    assert_eq!(request["requestId"], accepted_id.as_str(), "{queued}");
    assert_eq!(request["mandator"], mandator.as_str(), "{queued}");
}
