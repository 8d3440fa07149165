//! Callbacks over real HTTP to a receiver on 127.0.0.1 (allowed only by the test policy): the
//! signature a receiver verifies, retries on server errors, no redirects, the URL policy at job
//! creation, and the per-mandator secrets on both stores.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::contract::unique_mandator;
use crate::support::moto::MotoServer;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{NaiveDate, Utc};
use segments_aws::{DynamoCallbackSecrets, provision};
use segments_core::domain::{AccountType, MandatorId, Money};
use segments_core::http::problem_response;
use segments_core::http::testing::status_and_json;
use segments_core::jobs::{Job, JobStatus, ResultSummary};
use segments_core::ports::CallbackSecrets;
use segments_core::rules::SegmentParams;
use segments_core::rules::params::HighBalanceParams;
use segments_core::usecases::callbacks::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};
use segments_core::usecases::callbacks::{
    CallbackPolicy, CallbackSecret, DeliverySettings, HttpNotifier, Notifier, NotifyError, notify_job_final,
    validate_callback_url,
};
use segments_embedded::EmbeddedStore;
use serde_json::Value;

/// What the receiver got, and what it answers next.
#[derive(Default)]
struct Receiver {
    deliveries: Vec<(HeaderMap, Bytes)>,
    /// Statuses to answer, in order; 200 once they are used up.
    script: Vec<u16>,
    followed_redirect: bool,
}

type Shared = Arc<Mutex<Receiver>>;

async fn hook(State(r): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut r = r.lock().unwrap();
    r.deliveries.push((headers, body));
    let status = if r.script.is_empty() { 200 } else { r.script.remove(0) };
    StatusCode::from_u16(status).unwrap()
}

async fn redirect() -> (StatusCode, [(&'static str, &'static str); 1]) {
    (StatusCode::TEMPORARY_REDIRECT, [("location", "/elsewhere")])
}

async fn elsewhere(State(r): State<Shared>) -> StatusCode {
    r.lock().unwrap().followed_redirect = true;
    StatusCode::OK
}

/// A receiver on a free port of 127.0.0.1; its base URL.
async fn receiver(script: Vec<u16>) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Receiver { script, ..Receiver::default() }));
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/redirect", post(redirect))
        .route("/elsewhere", post(elsewhere))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, shared)
}

fn notifier(policy: CallbackPolicy) -> HttpNotifier {
    HttpNotifier::new(
        policy,
        DeliverySettings {
            attempts: 5,
            first_backoff: Duration::from_millis(10),
            connect_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(5),
        },
    )
}

fn completed_job(mandator: &MandatorId, callback: &str) -> Job {
    let params = SegmentParams::HighBalance(HighBalanceParams {
        account_type: AccountType::Checking,
        threshold: Money::from_cents(100),
        currency: None,
    });
    let mut job = Job::new(
        mandator.clone(),
        NaiveDate::from_ymd_opt(2026, 6, 30).unwrap(),
        params,
        Some(callback.to_owned()),
        4,
        Utc::now(),
    );
    job.status = JobStatus::Completed;
    job.result = Some(ResultSummary { total_elements: 42, chunk_size: 1000, chunk_count: 1 });
    job
}

#[tokio::test]
async fn a_final_job_is_delivered_signed_and_retried_after_a_server_error() {
    let (url, received) = receiver(vec![500, 503]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mandator = unique_mandator("callback");
    let job = completed_job(&mandator, &format!("{url}/hook"));

    let delivered = notify_job_final(&store, &notifier(CallbackPolicy::allow_insecure_loopback_for_tests()), &job)
        .await
        .expect("delivered on the third attempt");
    assert!(delivered);

    let secret = store.secret(&mandator).await.unwrap();
    let r = received.lock().unwrap();
    assert_eq!(r.deliveries.len(), 3, "two server errors, then success");
    let now = Utc::now().timestamp();
    for (headers, body) in &r.deliveries {
        let timestamp = headers[TIMESTAMP_HEADER].to_str().unwrap();
        let signature = headers[SIGNATURE_HEADER].to_str().unwrap();
        assert!(signature.starts_with("sha256="), "{signature}");
        verify(&secret, timestamp, signature, body, now, 60).expect("the receiver verifies every attempt");
        assert_eq!(headers["content-type"], "application/json");
        let body: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "jobId": job.job_id.to_string(), "segmentType": "highBalance",
                "status": "COMPLETED", "totalElements": 42
            })
        );
    }
    // Another mandator's secret does not verify it.
    let (headers, body) = &r.deliveries[2];
    let other = CallbackSecret::generate();
    assert!(
        verify(
            &other,
            headers[TIMESTAMP_HEADER].to_str().unwrap(),
            headers[SIGNATURE_HEADER].to_str().unwrap(),
            body,
            now,
            60
        )
        .is_err()
    );
}

#[tokio::test]
async fn a_failed_job_reports_its_status_and_no_total() {
    let (url, received) = receiver(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut job = completed_job(&unique_mandator("callback"), &format!("{url}/hook"));
    job.status = JobStatus::Failed;
    job.result = None;
    assert!(
        notify_job_final(&store, &notifier(CallbackPolicy::allow_insecure_loopback_for_tests()), &job).await.unwrap()
    );
    let r = received.lock().unwrap();
    let body: Value = serde_json::from_slice(&r.deliveries[0].1).unwrap();
    assert_eq!((body["status"].as_str(), &body["totalElements"]), (Some("FAILED"), &Value::Null));
}

#[tokio::test]
async fn nothing_is_sent_for_jobs_without_callback_or_not_final() {
    let (url, received) = receiver(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let n = notifier(CallbackPolicy::allow_insecure_loopback_for_tests());
    let mut running = completed_job(&unique_mandator("callback"), &format!("{url}/hook"));
    running.status = JobStatus::Running;
    assert!(!notify_job_final(&store, &n, &running).await.unwrap());
    let mut silent = completed_job(&unique_mandator("callback"), &format!("{url}/hook"));
    silent.callback_url = None;
    assert!(!notify_job_final(&store, &n, &silent).await.unwrap());
    assert!(received.lock().unwrap().deliveries.is_empty());
}

#[tokio::test]
async fn delivery_gives_up_after_the_last_attempt_and_stops_at_a_client_error() {
    let (url, received) = receiver(vec![500; 10]).await;
    let secret = CallbackSecret::generate();
    let n = notifier(CallbackPolicy::allow_insecure_loopback_for_tests());
    let e = n.deliver(&format!("{url}/hook"), &secret, b"{}").await.unwrap_err();
    assert!(matches!(e, NotifyError::GaveUp { attempts: 5, .. }), "{e}");
    assert_eq!(received.lock().unwrap().deliveries.len(), 5);

    let (url, received) = receiver(vec![410]).await;
    let e = n.deliver(&format!("{url}/hook"), &secret, b"{}").await.unwrap_err();
    assert!(matches!(e, NotifyError::Rejected(410)), "{e}");
    assert_eq!(received.lock().unwrap().deliveries.len(), 1, "a 4xx answer is not retried");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (url, received) = receiver(vec![]).await;
    let n = notifier(CallbackPolicy::allow_insecure_loopback_for_tests());
    let e = n.deliver(&format!("{url}/redirect"), &CallbackSecret::generate(), b"{}").await.unwrap_err();
    assert!(matches!(e, NotifyError::Rejected(307)), "{e}");
    assert!(!received.lock().unwrap().followed_redirect);
}

#[tokio::test]
async fn the_production_policy_never_calls_a_loopback_receiver() {
    let (url, received) = receiver(vec![]).await;
    let https = url.replace("http://", "https://");
    let n = notifier(CallbackPolicy::strict());
    for target in [format!("{url}/hook"), format!("{https}/hook")] {
        let e = n.deliver(&target, &CallbackSecret::generate(), b"{}").await.unwrap_err();
        assert!(matches!(e, NotifyError::Refused(_)), "{target}: {e}");
    }
    assert!(received.lock().unwrap().deliveries.is_empty());
}

#[tokio::test]
async fn a_private_callback_url_is_a_400_problem_naming_the_field() {
    let policy = CallbackPolicy::strict();
    for url in [
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://[fd00::1]/hook",
        "https://169.254.169.254/latest",
        "https://localhost/hook",
        "http://bank.example/hook",
        "https://user:pw@bank.example/hook",
    ] {
        let error = validate_callback_url(&policy, url).await.unwrap_err();
        let (status, problem) = status_and_json(problem_response(&error));
        assert_eq!(status, 400, "{url}");
        assert_eq!(problem["code"], "invalid_field");
        assert_eq!(problem["field"], "callbackURL", "{url}: {problem}");
    }
    assert!(validate_callback_url(&policy, "https://8.8.8.8/hook").await.is_ok());
}

/// The secret contract, for any store: created once, stable, per mandator, agreed by concurrent
/// first uses.
async fn secrets_contract(secrets: &dyn CallbackSecrets) {
    let a = unique_mandator("secret");
    let b = unique_mandator("secret");
    let (first, concurrent) = futures::join!(secrets.secret(&a), secrets.secret(&a));
    let first = first.unwrap();
    assert_eq!(first, concurrent.unwrap(), "concurrent first uses agree");
    assert_eq!(secrets.secret(&a).await.unwrap(), first, "the secret is stable");
    assert_ne!(secrets.secret(&b).await.unwrap(), first, "each mandator has its own");
    assert_eq!(first.to_hex().len(), 64);
    assert_eq!(format!("{first:?}"), "CallbackSecret(..)", "never printed");
}

#[tokio::test]
async fn embedded_callback_secrets() {
    let dir = tempfile::tempdir().unwrap();
    secrets_contract(&EmbeddedStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn moto_callback_secrets_live_beside_the_jobs() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    provision::create_jobs_table(&clients.dynamodb, "jobs").await.unwrap();
    let secrets = DynamoCallbackSecrets::new(clients.dynamodb.clone(), "jobs");
    secrets_contract(&secrets).await;
    let m = unique_mandator("secret-layout");
    let secret = secrets.secret(&m).await.unwrap();
    let item = clients
        .dynamodb
        .get_item()
        .table_name("jobs")
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("M#{m}")))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("CALLBACK_SECRET".into()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the secret item");
    assert_eq!(item["secret"].as_b().unwrap().as_ref(), secret.as_bytes());
}

#[tokio::test]
async fn the_callbacks_of_a_store_check_urls_and_deliver_with_the_mandator_secret() {
    let (url, received) = receiver(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mandator = unique_mandator("bundle");
    let callbacks =
        segments_embedded::wiring::callbacks(store.clone(), CallbackPolicy::allow_insecure_loopback_for_tests());
    callbacks.validate(&format!("{url}/hook")).await.expect("the test policy allows the receiver");
    assert!(callbacks.validate("http://10.0.0.1/hook").await.is_err());
    assert!(callbacks.job_final(&completed_job(&mandator, &format!("{url}/hook"))).await.unwrap());

    let strict = segments_embedded::wiring::callbacks(store.clone(), CallbackPolicy::strict());
    assert!(strict.validate(&format!("{url}/hook")).await.is_err(), "production refuses plain http to loopback");

    let secret = store.secret(&mandator).await.unwrap();
    let r = received.lock().unwrap();
    let (headers, body) = &r.deliveries[0];
    let now = Utc::now().timestamp();
    verify(
        &secret,
        headers[TIMESTAMP_HEADER].to_str().unwrap(),
        headers[SIGNATURE_HEADER].to_str().unwrap(),
        body,
        now,
        60,
    )
    .expect("signed with the mandator's stored secret");
}

#[test]
fn the_cli_prints_the_same_secret_each_time_and_refuses_a_bad_mandator() {
    let dir = tempfile::tempdir().unwrap();
    let secret = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_segments"))
            .args(["callback-secret", "--mandator", "bank-1", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .output()
            .expect("segments runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let first = secret(&[]);
    assert_eq!(first.len(), 64);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{first}");
    assert_eq!(secret(&[]), first);
    let json: Value = serde_json::from_str(&secret(&["--json"])).unwrap();
    assert_eq!(json, serde_json::json!({"mandator": "bank-1", "secret": first}));

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_segments"))
        .args(["callback-secret", "--mandator", "a#b", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--mandator"));
}

#[tokio::test]
async fn a_post_with_a_private_callback_url_is_a_400_naming_the_field_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (s, mut rx) = segments_embedded::wiring::services(store, segments_core::config::ServiceConfig::default());
    let post = |url: &str| {
        let body = format!(r#"{{"accountType":"checking","threshold":5000,"callbackURL":"{url}"}}"#);
        segments_core::http::testing::create_job_request(
            "highBalance",
            &body,
            Some("bank-1"),
            &["segments/highBalance"],
        )
    };
    for url in
        ["https://10.0.0.7/hook", "https://[fe80::1]/hook", "https://169.254.169.254/latest", "http://8.8.8.8/hook"]
    {
        let (status, problem) = status_and_json(create_job::handle(&s.intake(), post(url)).await.unwrap());
        assert_eq!((status, problem["field"].as_str()), (400, Some("callbackURL")), "{url}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("not a public address") || detail.contains("must use https"), "{url}: {detail}");
        assert!(!detail.contains("not supported"), "the policy names the reason: {detail}");
    }
    assert!(rx.try_recv().is_err(), "nothing is enqueued for a refused callback URL");
}
