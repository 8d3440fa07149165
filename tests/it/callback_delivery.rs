//! Callbacks end to end (docs/api.md, docs/security.md): a job created with a `callbackURL` is reported once
//! when it completes and once when it fails, signed with the mandator's secret, on the embedded
//! store and through the AWS adapters against moto. The receiver is plain http on 127.0.0.1,
//! which only the explicit test policy allows; the production policy refuses it at POST time.

use std::sync::{Arc, Mutex};

use crate::support::contract::unique_mandator;
use crate::support::flows::ALL_TYPE_SCOPES;
use crate::support::moto::MotoServer;
use crate::support::queues::take_bodies;
use crate::support::users::put_items;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{NaiveDate, Utc};
use segments_aws::services as aws_services;
use segments_aws::{DynamoAccounts, DynamoCallbackSecrets, SqsQueue, provision};
use segments_core::config::ServiceConfig;
use segments_core::domain::records::AccountItem;
use segments_core::domain::{Account, AccountId, AccountType, Currency, JobId, MandatorId, Money, SegmentType, UserId};
use segments_core::http::testing::{create_job_request, status_and_json};
use segments_core::jobs::{JobMessage, JobStatus};
use segments_core::ports::UserStore;
use segments_core::usecases::Services;
use segments_core::usecases::callbacks::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};
use segments_core::usecases::callbacks::{CallbackPolicy, Callbacks};
use segments_core::usecases::dead_letter::dead_letter;
use segments_core::usecases::run_shard::{Disposition, process_message};
use segments_embedded::EmbeddedStore;
use segments_embedded::wiring::callbacks as embedded_callbacks;
use segments_embedded::wiring::services as embedded_services;
use serde_json::{Value, json};

type Deliveries = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn hook(State(d): State<Deliveries>, headers: HeaderMap, body: Bytes) -> StatusCode {
    d.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

/// A receiver on a free port of 127.0.0.1: its hook URL and what it received.
async fn receiver() -> (String, Deliveries) {
    let deliveries = Deliveries::default();
    let app = Router::new().route("/hook", post(hook)).with_state(deliveries.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, deliveries)
}

/// Three users (balances in cents), two with a checking balance above 100.
fn items() -> Vec<AccountItem> {
    [("u-1", 5_000), ("u-2", 15_000), ("u-3", 100_000)]
        .into_iter()
        .map(|(user, cents)| {
            AccountItem::Account(Account {
                user_id: UserId::parse(user).unwrap(),
                account_id: AccountId::parse(&format!("{user}-checking")).unwrap(),
                account_type: AccountType::Checking,
                currency: Currency::parse("EUR").unwrap(),
                balance: Money::from_cents(cents),
                balance_date: NaiveDate::from_ymd_opt(2025, 1, 31).unwrap(),
            })
        })
        .collect()
}

async fn post_job(s: &Services, mandator: &MandatorId, callback: &str) -> (u16, Value) {
    let body = json!({"accountType": "checking", "threshold": 100, "callbackURL": callback}).to_string();
    let req = create_job_request("highBalance", &body, Some(mandator.as_str()), ALL_TYPE_SCOPES);
    status_and_json(create_job::handle(&s.intake(), req).await.unwrap())
}

/// The one delivery received since `seen`, checked against the mandator's secret.
async fn signed_delivery(s: &Services, mandator: &MandatorId, deliveries: &Deliveries, seen: usize) -> Value {
    let (headers, body) = {
        let d = deliveries.lock().unwrap();
        assert_eq!(d.len(), seen + 1, "exactly one new delivery");
        d[seen].clone()
    };
    let verify_with = |secret| {
        verify(
            secret,
            headers[TIMESTAMP_HEADER].to_str().unwrap(),
            headers[SIGNATURE_HEADER].to_str().unwrap(),
            &body,
            Utc::now().timestamp(),
            300,
        )
    };
    let secret = s.callbacks.secrets.secret(mandator).await.unwrap();
    verify_with(&secret).expect("signed with the mandator's secret");
    let other = s.callbacks.secrets.secret(&unique_mandator("other")).await.unwrap();
    assert!(verify_with(&other).is_err(), "another mandator's secret does not verify it");
    serde_json::from_slice(&body).unwrap()
}

/// The scenario, for any store: `take` hands over the queued message bodies.
async fn scenario<F, Fut>(s: &Services, users: &dyn UserStore, take: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let (url, deliveries) = receiver().await;
    let mandator = unique_mandator("callback");
    put_items(users, &mandator, 4, &items()).await;

    // Completed: one callback with the result's size, none for redelivered messages.
    let (status, created) = post_job(s, &mandator, &url).await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["jobId"].as_str().unwrap().to_owned();
    let bodies = take().await;
    assert_eq!(bodies.len(), 4, "one message per shard");
    for body in &bodies {
        assert_eq!(process_message(&s.runner(), SegmentType::HighBalance, body, 1, Utc::now()).await, Disposition::Ack);
    }
    let job = s.jobs.get(&mandator, JobId::parse(&job_id).unwrap()).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(
        signed_delivery(s, &mandator, &deliveries, 0).await,
        json!({"jobId": job_id, "segmentType": "highBalance", "status": "COMPLETED", "totalElements": 2})
    );
    for body in &bodies {
        assert_eq!(process_message(&s.runner(), SegmentType::HighBalance, body, 2, Utc::now()).await, Disposition::Ack);
    }
    assert_eq!(deliveries.lock().unwrap().len(), 1, "a redelivered message does not call back again");

    // Failed: the dead-letter path reports FAILED without a size, once.
    let (status, created) = post_job(s, &mandator, &url).await;
    assert_eq!(status, 202, "{created}");
    let failed_id = created["jobId"].as_str().unwrap().to_owned();
    let bodies = take().await;
    assert_eq!(dead_letter(s.jobs.as_ref(), &s.callbacks, &bodies[0]).await, Disposition::Ack);
    assert_eq!(
        signed_delivery(s, &mandator, &deliveries, 1).await,
        json!({"jobId": failed_id, "segmentType": "highBalance", "status": "FAILED", "totalElements": null})
    );
    assert_eq!(dead_letter(s.jobs.as_ref(), &s.callbacks, &bodies[1]).await, Disposition::Ack);
    assert_eq!(deliveries.lock().unwrap().len(), 2, "a job fails, and is reported, once");

    // A job without a callback URL calls nobody.
    let req = create_job_request(
        "highBalance",
        r#"{"accountType":"checking","threshold":100}"#,
        Some(mandator.as_str()),
        ALL_TYPE_SCOPES,
    );
    assert_eq!(status_and_json(create_job::handle(&s.intake(), req).await.unwrap()).0, 202);
    for body in take().await {
        assert_eq!(
            process_message(&s.runner(), SegmentType::HighBalance, &body, 1, Utc::now()).await,
            Disposition::Ack
        );
    }
    assert_eq!(deliveries.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (mut s, rx) = embedded_services(store.clone(), ServiceConfig::default());

    // The production policy refuses the plain-http loopback receiver at POST time.
    let (url, deliveries) = receiver().await;
    let (status, problem) = post_job(&s, &unique_mandator("strict"), &url).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("callbackURL")), "{problem}");
    assert!(deliveries.lock().unwrap().is_empty());

    s.callbacks = embedded_callbacks(store.clone(), CallbackPolicy::allow_insecure_loopback_for_tests());
    let rx = tokio::sync::Mutex::new(rx);
    scenario(&s, &store, || async {
        let mut rx = rx.lock().await;
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(serde_json::to_string::<JobMessage>(&m).unwrap());
        }
        out
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_through_dynamodb_s3_and_sqs() {
    let moto = MotoServer::start();
    let clients = moto.clients().await;
    let resources = provision::provision_all(&clients, "callbacks", 5).await.unwrap();
    let mut s = aws_services(&clients, &resources, ServiceConfig::default());
    let secrets = DynamoCallbackSecrets::new(clients.dynamodb.clone(), resources.jobs_table.clone());
    s.callbacks = Callbacks::http(Arc::new(secrets), CallbackPolicy::allow_insecure_loopback_for_tests());
    let sink = DynamoAccounts::new(clients.dynamodb.clone(), resources.account_table.clone());
    let queue = SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone());
    scenario(&s, &sink, || take_bodies(&queue, SegmentType::HighBalance)).await;
}
