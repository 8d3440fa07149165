//! The job endpoints beyond create and read (`GET /segments/{segmentType}`, `…/{jobId}/export`,
//! `GET /usage`), through the `jobs-api` handler, against the embedded store and against DynamoDB
//! and S3 on a local moto server with the real SDK clients. The local runner's own export links
//! are tested over real HTTP.

use std::sync::Arc;

use crate::support::contract::unique_mandator;
use crate::support::moto::MotoServer;
use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use financial_segments::server::{Gateway, router};
use financial_segments::token::{Signer, all_scopes};
use segments_aws::services as aws_services;
use segments_aws::{AwsResources, DynamoCatalog, PARTITION_KEY, S3Links, SORT_KEY, provision};
use segments_core::config::ServiceConfig;
use segments_core::domain::{AccountType, MandatorId, Money, Month, SegmentType};
use segments_core::http::testing::{ApiRequest, status_and_json};
use segments_core::jobs::{Job, ResultSummary, USAGE_JOBS_ATTRIBUTE, usage_sort_key};
use segments_core::rules::SegmentParams;
use segments_core::rules::params::{HighBalanceParams, InsuranceSpendingParams};
use segments_core::usecases::Services;
use segments_core::usecases::jobs_api::JobsApiServices;
use segments_embedded::wiring::jobs_api as embedded_jobs_api_services;
use segments_embedded::wiring::segments_api as embedded_segments_services;
use segments_embedded::wiring::services as embedded_services;
use segments_embedded::{EmbeddedStore, LocalLinks};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Builders

fn high_balance(mandator: &MandatorId, created: DateTime<Utc>) -> Job {
    let params = SegmentParams::HighBalance(HighBalanceParams {
        account_type: AccountType::Checking,
        threshold: Money::from_cents(500_000),
        currency: None,
    });
    Job::new(mandator.clone(), NaiveDate::from_ymd_opt(2026, 6, 30).unwrap(), params, None, 4, created)
}

fn insurance(mandator: &MandatorId) -> Job {
    let params = SegmentParams::InsuranceSpending(InsuranceSpendingParams { duration_in_month: 6 });
    Job::new(mandator.clone(), NaiveDate::from_ymd_opt(2026, 6, 30).unwrap(), params, None, 4, Utc::now())
}

fn summary(total: u64) -> ResultSummary {
    ResultSummary { total_elements: total, chunk_size: 1000, chunk_count: 1 }
}

/// A GET of the jobs-api function by `mandator` with `scopes`.
fn request<'a>(path: &str, query: &[(&'a str, &'a str)], mandator: &'a str, scopes: &[String]) -> lambda_http::Request {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (route_key, path_params) = match parts.as_slice() {
        ["segments", t] => ("GET /segments/{segmentType}", vec![("segmentType", (*t).to_owned())]),
        ["segments", t, j, "export"] => (
            "GET /segments/{segmentType}/{jobId}/export",
            vec![("segmentType", (*t).to_owned()), ("jobId", (*j).to_owned())],
        ),
        _ => ("GET /usage", vec![]),
    };
    ApiRequest {
        method: "GET",
        path: path.to_owned(),
        route_key,
        path_params,
        query: query.to_vec(),
        body: None,
        mandator: Some(mandator),
        scopes: scopes.to_vec(),
    }
    .build()
}

/// The job endpoints' services, and every port of the same store, with which a test stores the
/// jobs and results the endpoints then find.
#[derive(Clone)]
struct Endpoints {
    api: JobsApiServices,
    core: Services,
}

async fn call(
    s: &Endpoints,
    path: &str,
    query: &[(&'static str, &str)],
    mandator: &MandatorId,
) -> (u16, Value, lambda_http::http::HeaderMap) {
    let response = jobs_api::handle(&s.api, request(path, query, mandator.as_str(), &all_scopes())).await.unwrap();
    let headers = response.headers().clone();
    let (status, body) = status_and_json(response);
    (status, body, headers)
}

fn ids(body: &Value) -> Vec<String> {
    body["jobs"].as_array().expect("a jobs array").iter().map(|j| j["jobId"].as_str().unwrap().to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Scenarios, run against both stores

/// Newest first, paged by cursor, other types, other mandators and expired jobs invisible.
async fn list_scenario(s: &Endpoints) {
    let m = unique_mandator("list");
    let other = unique_mandator("list-other");
    let mut mine = Vec::new();
    for i in 0..5 {
        let job = high_balance(&m, Utc::now());
        s.core.jobs.create(&job).await.unwrap();
        if i == 1 {
            assert!(s.core.jobs.complete(&job, summary(3)).await.unwrap());
        }
        // Another type in between: the filter must not shorten pages.
        s.core.jobs.create(&insurance(&m)).await.unwrap();
        mine.push(job.job_id.to_string());
    }
    // Created (and so keyed) last, but expired: never listed.
    let expired = high_balance(&m, Utc::now() - Duration::days(15));
    s.core.jobs.create(&expired).await.unwrap();
    let theirs = high_balance(&other, Utc::now());
    s.core.jobs.create(&theirs).await.unwrap();
    let newest_first: Vec<String> = mine.iter().rev().cloned().collect();

    // The whole list at the default limit.
    let (status, all, _) = call(s, "/segments/highBalance", &[], &m).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all["nextCursor"], Value::Null);

    // Pages of two, following the cursor.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = vec![("limit", "2".to_owned())];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let query: Vec<(&'static str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, page, _) = call(s, "/segments/highBalance", &query, &m).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        assert!(ids(&page).len() <= 2);
        seen.extend(ids(&page));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
    assert_eq!(pages, 3);

    // An item: the job's fields, progress, and totalElements once completed.
    let completed = all["jobs"].as_array().unwrap().iter().find(|j| j["jobId"] == mine[1].as_str()).unwrap();
    assert_eq!(completed["status"], "COMPLETED");
    assert_eq!(completed["totalElements"], 3);
    assert_eq!(completed["segmentType"], "highBalance");
    assert_eq!(completed["asOf"], "2026-06-30");
    assert_eq!(completed["parameters"].to_string(), r#"{"accountType":"checking","threshold":5000.00}"#);
    assert_eq!(completed["progress"]["shardsTotal"], 4);
    assert!(completed["creationDate"].as_str().unwrap().ends_with('Z'));
    assert!(completed["expiresAt"].as_str().unwrap().ends_with('Z'));
    let queued = &all["jobs"][0];
    assert_eq!(queued["status"], "QUEUED");
    assert!(queued.get("totalElements").is_none(), "{queued}");

    // The other type lists its own jobs only.
    let (_, insurance_list, _) = call(s, "/segments/insuranceSpending", &[], &m).await;
    assert_eq!(ids(&insurance_list).len(), 5);

    // Another mandator sees only its own job, also when it replays this mandator's cursor.
    let (_, theirs_list, _) = call(s, "/segments/highBalance", &[], &other).await;
    assert_eq!(ids(&theirs_list), vec![theirs.job_id.to_string()]);
    let (_, first, _) = call(s, "/segments/highBalance", &[("limit", "1")], &m).await;
    let my_cursor = first["nextCursor"].as_str().expect("more pages").to_owned();
    let (status, replayed, _) = call(s, "/segments/highBalance", &[("cursor", &my_cursor)], &other).await;
    assert_eq!(status, 200);
    assert!(ids(&replayed).iter().all(|id| !mine.contains(id)), "{replayed}");

    // A cursor of another type, or no cursor at all, is refused naming the parameter.
    for bad in [my_cursor.as_str(), "not-a-cursor", "aGlnaEJhbGFuY2UveA"] {
        let (status, problem, _) = call(s, "/segments/insuranceSpending", &[("cursor", bad)], &m).await;
        assert_eq!((status, problem["field"].as_str()), (400, Some("cursor")), "{bad}: {problem}");
    }
}

/// 302 to the export of a completed job; the answers of get-result otherwise. Returns the
/// redirect target and the export's content, for the caller to follow.
async fn export_scenario(s: &Endpoints) -> (String, &'static [u8]) {
    const NDJSON: &[u8] = b"{\"userId\":\"u1\",\"accounts\":[{\"accountId\":\"a\",\"amount\":5000.01}]}\n{\"userId\":\"u2\",\"accounts\":[]}\n";
    let m = unique_mandator("export");
    let other = unique_mandator("export-other");

    let done = high_balance(&m, Utc::now());
    s.core.jobs.create(&done).await.unwrap();
    s.core.results.put(&done.layout().export_key(), Bytes::from_static(NDJSON)).await.unwrap();
    assert!(s.core.jobs.complete(&done, summary(2)).await.unwrap());
    let path = format!("/segments/highBalance/{}/export", done.job_id);
    let (status, _, headers) = call(s, &path, &[], &m).await;
    assert_eq!(status, 302);
    assert_eq!(headers["cache-control"], "no-store");
    let location = headers["location"].to_str().unwrap().to_owned();

    // Not ready: 404 with progress.
    let queued = high_balance(&m, Utc::now());
    s.core.jobs.create(&queued).await.unwrap();
    let (status, body, _) = call(s, &format!("/segments/highBalance/{}/export", queued.job_id), &[], &m).await;
    assert_eq!(status, 404);
    assert_eq!(body, serde_json::json!({"status": "QUEUED", "progress": {"shardsDone": 0, "shardsTotal": 4}}));

    // Failed: 422 with the reason.
    let failed = high_balance(&m, Utc::now());
    s.core.jobs.create(&failed).await.unwrap();
    assert!(s.core.jobs.fail(&m, failed.job_id, "gave up").await.unwrap());
    let (status, problem, _) = call(s, &format!("/segments/highBalance/{}/export", failed.job_id), &[], &m).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("job_failed")));

    // Unknown, another mandator's, another type's, expired: 400 alike.
    let expired = high_balance(&m, Utc::now() - Duration::days(15));
    s.core.jobs.create(&expired).await.unwrap();
    for (path, who) in [
        (format!("/segments/highBalance/{}/export", done.job_id), &other),
        (format!("/segments/lowBalance/{}/export", done.job_id), &m),
        (format!("/segments/highBalance/{}/export", expired.job_id), &m),
        (format!("/segments/highBalance/{}/export", segments_core::domain::JobId::new()), &m),
        ("/segments/highBalance/not-a-job/export".to_owned(), &m),
    ] {
        let (status, problem, _) = call(s, &path, &[], who).await;
        assert_eq!((status, problem["code"].as_str()), (400, Some("unknown_job")), "{path}: {problem}");
    }

    // A completed job whose export is missing is a fault of the service, not of the request.
    let without = high_balance(&m, Utc::now());
    s.core.jobs.create(&without).await.unwrap();
    assert!(s.core.jobs.complete(&without, summary(0)).await.unwrap());
    let (status, problem, _) = call(s, &format!("/segments/highBalance/{}/export", without.job_id), &[], &m).await;
    assert_eq!((status, problem["code"].as_str()), (503, Some("unavailable")));

    (location, NDJSON)
}

/// Completed jobs per type in a month, every type listed, mandators apart.
async fn usage_scenario(s: &Endpoints) {
    let m = unique_mandator("usage");
    let other = unique_mandator("usage-other");
    let complete = |job: Job| async move {
        s.core.jobs.create(&job).await.unwrap();
        assert!(s.core.jobs.complete(&job, summary(1)).await.unwrap());
        // Completing twice meters once.
        assert!(!s.core.jobs.complete(&job, summary(1)).await.unwrap());
        job
    };
    let month = complete(high_balance(&m, Utc::now())).await.usage_month();
    complete(high_balance(&m, Utc::now())).await;
    complete(insurance(&m)).await;
    complete(high_balance(&other, Utc::now())).await;
    // Not completed: not metered.
    s.core.jobs.create(&high_balance(&m, Utc::now())).await.unwrap();

    let expect = |counts: &[(SegmentType, u64)]| -> Value {
        let usage: Vec<Value> = SegmentType::ALL
            .iter()
            .map(|t| {
                let jobs = counts.iter().find(|(c, _)| c == t).map_or(0, |(_, n)| *n);
                serde_json::json!({"segmentType": t.as_str(), "jobs": jobs})
            })
            .collect();
        serde_json::json!({"month": month.to_string(), "usage": usage})
    };
    let month_text = month.to_string();
    let (status, body, _) = call(s, "/usage", &[("month", &month_text)], &m).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, expect(&[(SegmentType::HighBalance, 2), (SegmentType::InsuranceSpending, 1)]));
    let (_, body, _) = call(s, "/usage", &[("month", &month_text)], &other).await;
    assert_eq!(body, expect(&[(SegmentType::HighBalance, 1)]));

    let previous = month.prev().to_string();
    let (_, body, _) = call(s, "/usage", &[("month", &previous)], &m).await;
    assert!(body["usage"].as_array().unwrap().iter().all(|u| u["jobs"] == 0), "{body}");

    for bad in ["2026-13", "2026-1", "26-01", "2026-01-01", ""] {
        let (status, problem, _) = call(s, "/usage", &[("month", bad)], &m).await;
        assert_eq!((status, problem["field"].as_str()), (400, Some("month")), "{bad:?}: {problem}");
    }
    let (status, problem, _) = call(s, "/usage", &[], &m).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("month")));
    let req = request("/usage", &[("month", &month_text)], m.as_str(), &[SegmentType::HighBalance.scope()]);
    let (status, problem) = status_and_json(jobs_api::handle(&s.api, req).await.unwrap());
    assert_eq!((status, problem["code"].as_str()), (403, Some("insufficient_scope")));
}

// ---------------------------------------------------------------------------------------------
// Embedded store

struct Embedded {
    _dir: tempfile::TempDir,
    store: EmbeddedStore,
    s: Endpoints,
    links: Arc<LocalLinks>,
}

fn embedded(base_url: &str) -> Embedded {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (core, _rx) = embedded_services(store.clone(), ServiceConfig::default());
    let links = Arc::new(LocalLinks::new(store.clone(), base_url));
    let s = Endpoints { api: embedded_jobs_api_services(store.clone(), &core, links.clone()), core };
    Embedded { _dir: dir, store, s, links }
}

#[tokio::test]
async fn embedded_list_pages_newest_first_and_hides_others_and_expired() {
    list_scenario(&embedded("http://127.0.0.1:1").s).await;
}

#[tokio::test]
async fn embedded_usage_counts_per_type_and_mandator() {
    usage_scenario(&embedded("http://127.0.0.1:1").s).await;
}

/// The local runner, in process, serving the handlers and its export links over real HTTP.
#[tokio::test]
async fn embedded_export_redirects_to_a_runner_link_that_expires_and_refuses_tampering() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let e = embedded(&url);
    let signer = Signer::load_or_create(e._dir.path()).unwrap();
    let token = signer.mint("client_id", "bank-1", &all_scopes(), 600).unwrap();
    let gateway = Arc::new(Gateway {
        services: e.s.core.clone(),
        segments: embedded_segments_services(
            e.store.clone(),
            &e.s.core,
            Arc::new(segments_embedded::EventFile::in_data_dir(e._dir.path()).unwrap()),
            Arc::new(segments_embedded::refresh_channel().0),
            Default::default(),
        ),
        jobs_api: e.s.api.clone(),
        data: segments_embedded::wiring::account_data(e.store.clone()),
        imports: segments_embedded::wiring::imports_api(e.store.clone(), e.links.clone()).0,
        links: Some(e.links.clone()),
        verifier: signer,
    });
    tokio::spawn(async move { axum::serve(listener, router(gateway)).await });

    let (location, ndjson) = export_scenario(&e.s).await;
    assert!(location.starts_with(&format!("{url}/_export/results/")), "{location}");
    segments_core::usecases::callbacks::install_tls_provider();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // The link works without a token, and serves the NDJSON.
    let response = http.get(&location).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(response.bytes().await.unwrap().as_ref(), ndjson);

    // Tampered: another object, another expiry, another signature.
    let tampered = [
        location.replace("/export.ndjson", "/manifest.json"),
        location.replace("expires=", "expires=1"),
        {
            let (head, signature) = location.rsplit_once("signature=").unwrap();
            let flipped = if signature.starts_with('0') { "1" } else { "0" };
            format!("{head}signature={flipped}{}", &signature[1..])
        },
        location.split('?').next().unwrap().to_owned(),
    ];
    for url in tampered {
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 403, "{url}");
    }
    // Expired: a link signed by this runner whose time has passed.
    let key = location.split("/_export/").nth(1).unwrap().split('?').next().unwrap().to_owned();
    let expired = e.links.sign(&key, Utc::now().timestamp() - 1);
    assert_eq!(http.get(&expired).send().await.unwrap().status(), 403);

    // Through the runner's API routes too: bearer token, 302 to a link of this runner.
    let m = MandatorId::parse("bank-1").unwrap();
    let job = high_balance(&m, Utc::now());
    e.s.core.jobs.create(&job).await.unwrap();
    e.s.core.results.put(&job.layout().export_key(), Bytes::from_static(b"{}\n")).await.unwrap();
    assert!(e.s.core.jobs.complete(&job, summary(1)).await.unwrap());
    let response =
        http.get(format!("{url}/segments/highBalance/{}/export", job.job_id)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 302);
    let link = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(http.get(&link).send().await.unwrap().bytes().await.unwrap().as_ref(), b"{}\n");
    let listed = http.get(format!("{url}/segments/highBalance")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(ids(&listed), vec![job.job_id.to_string()]);
    let month = Month::of(Utc::now().date_naive()).to_string();
    let usage = http.get(format!("{url}/usage?month={month}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(usage.status(), 200);
    let usage: Value = usage.json().await.unwrap();
    assert_eq!(usage["usage"][0], serde_json::json!({"segmentType": "highBalance", "jobs": 1}));
}

// ---------------------------------------------------------------------------------------------
// DynamoDB and S3 on moto

struct Moto {
    _server: MotoServer,
    clients: segments_aws::AwsClients,
    resources: AwsResources,
}

async fn moto() -> Moto {
    let server = MotoServer::start();
    let clients = server.clients().await;
    let resources = AwsResources {
        account_table: "account-data".into(),
        jobs_table: "jobs".into(),
        results_bucket: "results".into(),
        queue_urls: Default::default(),
    };
    provision::create_account_table(&clients.dynamodb, &resources.account_table).await.unwrap();
    provision::create_jobs_table(&clients.dynamodb, &resources.jobs_table).await.unwrap();
    provision::create_results_bucket(&clients.s3, &resources.results_bucket).await.unwrap();
    Moto { _server: server, clients, resources }
}

/// The AWS services with a Query page of two items, so pages are filled across requests.
fn moto_services(m: &Moto) -> Endpoints {
    let core = aws_services(&m.clients, &m.resources, ServiceConfig::default());
    let api = JobsApiServices {
        jobs: core.jobs.clone(),
        catalog: Arc::new(
            DynamoCatalog::new(m.clients.dynamodb.clone(), m.resources.jobs_table.clone()).with_query_page(2),
        ),
        links: Arc::new(S3Links::new(m.clients.s3.clone(), m.resources.results_bucket.clone())),
        config: core.config.clone(),
    };
    Endpoints { api, core }
}

#[tokio::test]
async fn moto_list_pages_newest_first_and_hides_others_and_expired() {
    let m = moto().await;
    list_scenario(&moto_services(&m)).await;
    // With the production page size too.
    let s = Endpoints {
        api: segments_aws::jobs_api(&m.clients, &m.resources, ServiceConfig::default()),
        core: aws_services(&m.clients, &m.resources, ServiceConfig::default()),
    };
    list_scenario(&s).await;
}

#[tokio::test]
async fn moto_export_redirects_to_a_presigned_url_of_the_ndjson() {
    let m = moto().await;
    let s = moto_services(&m);
    let (location, ndjson) = export_scenario(&s).await;
    assert!(location.contains("X-Amz-Signature="), "{location}");
    assert!(location.contains("X-Amz-Expires=300"), "{location}");
    assert!(location.contains("/export.ndjson?"), "{location}");
    segments_core::usecases::callbacks::install_tls_provider();
    let body = reqwest::get(&location).await.unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(body.bytes().await.unwrap().as_ref(), ndjson);
}

#[tokio::test]
async fn moto_usage_counts_per_type_and_mandator_and_reads_the_fixed_layout() {
    let m = moto().await;
    let s = moto_services(&m);
    usage_scenario(&s).await;

    // The layout the completion writes: an item beside the jobs, read back as such.
    let mandator = unique_mandator("usage-layout");
    let month = Month::new(2025, 1).unwrap();
    m.clients
        .dynamodb
        .put_item()
        .table_name(&m.resources.jobs_table)
        .item(PARTITION_KEY, AttributeValue::S(format!("M#{mandator}")))
        .item(SORT_KEY, AttributeValue::S(usage_sort_key(month, SegmentType::FinancialBreakdown)))
        .item(USAGE_JOBS_ATTRIBUTE, AttributeValue::N("7".into()))
        .send()
        .await
        .unwrap();
    let (status, body, _) = call(&s, "/usage", &[("month", "2025-01")], &mandator).await;
    assert_eq!(status, 200, "{body}");
    let entry = body["usage"].as_array().unwrap().iter().find(|u| u["segmentType"] == "financialBreakdown").unwrap();
    assert_eq!(entry["jobs"], 7);
}
