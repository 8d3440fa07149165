//! Routing and the edge of the handler. The endpoints' behaviour against both stores is tested in
//! the workspace's `tests/it/job_endpoints.rs`.

use super::*;
use segments_core::config::ServiceConfig;
use segments_core::http::testing::{ApiRequest, status_and_json};
use segments_embedded::wiring::{jobs_api as embedded_jobs_api_services, services as embedded_services};
use segments_embedded::{EmbeddedStore, LocalLinks};
use std::sync::Arc;

fn services() -> (tempfile::TempDir, JobsApiServices) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (core, _rx) = embedded_services(store.clone(), ServiceConfig::default());
    let links = Arc::new(LocalLinks::new(store.clone(), "http://127.0.0.1:1"));
    (dir, embedded_jobs_api_services(store, &core, links))
}

fn request(method: &'static str, path: &str, query: Vec<(&'static str, &'static str)>, scopes: &[&str]) -> Request {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut path_params = Vec::new();
    if parts.first() == Some(&"segments") {
        for (name, value) in ["segmentType", "jobId"].into_iter().zip(parts.iter().skip(1)) {
            path_params.push((name, (*value).to_owned()));
        }
    }
    ApiRequest {
        method,
        path: path.to_owned(),
        route_key: "GET /segments/{segmentType}",
        path_params,
        query,
        body: None,
        mandator: Some("bank-1"),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    }
    .build()
}

#[test]
fn paths_name_their_endpoint_also_behind_a_stage_prefix() {
    let r = |path: &str| endpoint(&request("GET", path, vec![], &[]));
    assert_eq!(r("/segments/highBalance"), Some(Endpoint::List));
    assert_eq!(r("/dev/segments/highBalance"), Some(Endpoint::List));
    assert_eq!(r("/segments/highBalance/abc/export"), Some(Endpoint::Export { job_id: "abc".into() }));
    assert_eq!(r("/usage"), Some(Endpoint::Usage));
    assert_eq!(r("/dev/usage"), Some(Endpoint::Usage));
    assert_eq!(r("/segments/highBalance/abc"), None);
    assert_eq!(r("/segments"), None);
}

#[tokio::test]
async fn bad_parameters_scopes_and_methods_are_problems() {
    let (_dir, s) = services();
    let hb = &["segments/highBalance", "segments/usage.read"];
    // (method, path, query, scopes, status, code, field)
    type Case =
        (&'static str, &'static str, Vec<(&'static str, &'static str)>, u16, &'static str, Option<&'static str>);
    let cases: Vec<Case> = vec![
        ("GET", "/segments/highBalance", vec![("limit", "0")], 400, "invalid_parameter", Some("limit")),
        ("GET", "/segments/highBalance", vec![("limit", "101")], 400, "invalid_parameter", Some("limit")),
        ("GET", "/segments/highBalance", vec![("limit", "x")], 400, "invalid_parameter", Some("limit")),
        ("GET", "/segments/highBalance", vec![("cursor", "bm9wZQ")], 400, "invalid_parameter", Some("cursor")),
        ("GET", "/segments/highbalance", vec![], 400, "unknown_segment_type", Some("segmentType")),
        ("GET", "/segments/lowBalance", vec![], 403, "insufficient_scope", None),
        ("GET", "/segments/highBalance/not-a-job/export", vec![], 400, "unknown_job", None),
        ("GET", "/usage", vec![], 400, "invalid_parameter", Some("month")),
        ("GET", "/usage", vec![("month", "2026-13")], 400, "invalid_parameter", Some("month")),
        ("POST", "/usage", vec![("month", "2026-11")], 405, "method_not_allowed", None),
    ];
    for (method, path, query, status, code, field) in cases {
        let (got, problem) = status_and_json(handle(&s, request(method, path, query.clone(), hb)).await.unwrap());
        assert_eq!((got, problem["code"].as_str()), (status, Some(code)), "{method} {path} {query:?}: {problem}");
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{problem}");
        }
    }
    let req = request("GET", "/usage", vec![("month", "2026-11")], &["segments/highBalance"]);
    let (status, problem) = status_and_json(handle(&s, req).await.unwrap());
    assert_eq!((status, problem["code"].as_str()), (403, Some("insufficient_scope")));
}

#[tokio::test]
async fn an_empty_list_and_an_unused_month_are_200() {
    let (_dir, s) = services();
    let (status, body) = status_and_json(
        handle(&s, request("GET", "/segments/highBalance", vec![], &["segments/highBalance"])).await.unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"jobs": [], "nextCursor": null}));
    let req = request("GET", "/usage", vec![("month", "2026-11")], &["segments/usage.read"]);
    let (status, body) = status_and_json(handle(&s, req).await.unwrap());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["month"], "2026-11");
    assert_eq!(body["usage"].as_array().unwrap().len(), segments_core::domain::SegmentType::ALL.len());
    assert!(body["usage"].as_array().unwrap().iter().all(|u| u["jobs"] == 0));
}

#[tokio::test]
async fn the_recorded_events_of_every_route_are_understood() {
    let (_dir, s) = services();
    let lists = [
        include_str!("../../../events/list-jobs-high-balance.json"),
        include_str!("../../../events/list-jobs-low-balance.json"),
        include_str!("../../../events/list-jobs-income-spending-summary.json"),
        include_str!("../../../events/list-jobs-insurance-spending.json"),
        include_str!("../../../events/list-jobs-financial-breakdown.json"),
    ];
    for event in lists {
        let (status, body) = status_and_json(handle(&s, lambda_http::request::from_str(event).unwrap()).await.unwrap());
        assert_eq!((status, &body["jobs"]), (200, &serde_json::json!([])), "{body}");
    }
    let exports = [
        include_str!("../../../events/export-high-balance.json"),
        include_str!("../../../events/export-low-balance.json"),
        include_str!("../../../events/export-income-spending-summary.json"),
        include_str!("../../../events/export-insurance-spending.json"),
        include_str!("../../../events/export-financial-breakdown.json"),
    ];
    for event in exports {
        let (status, problem) =
            status_and_json(handle(&s, lambda_http::request::from_str(event).unwrap()).await.unwrap());
        // The recorded job does not exist here: the type and job were understood, the job is unknown.
        assert_eq!((status, problem["code"].as_str()), (400, Some("unknown_job")), "{problem}");
    }
    let usage = lambda_http::request::from_str(include_str!("../../../events/usage.json")).unwrap();
    let (status, body) = status_and_json(handle(&s, usage).await.unwrap());
    assert_eq!((status, body["month"].as_str()), (200, Some("2026-11")), "{body}");
}
