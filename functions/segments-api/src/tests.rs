//! Handler tests over the embedded store, from recorded API Gateway v2 events.

use super::*;
use segments_core::adapters::{embedded::EmbeddedStore, embedded_segments_services, embedded_services};
use segments_core::config::ServiceConfig;
use segments_core::testing::{ApiRequest, status_and_json};

/// `(method, body, mandator, scopes, status, code)`.
type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [&'a str], u16, &'a str);

const RW: &[&str] = &["segments/definitions.read", "segments/definitions.write"];

fn services() -> (tempfile::TempDir, SegmentsServices) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (core, _rx) = embedded_services(store.clone(), ServiceConfig::default());
    (dir, embedded_segments_services(store, core))
}

async fn call(
    s: &SegmentsServices,
    method: &str,
    path: &str,
    params: &[(&'static str, &str)],
    body: Option<&str>,
    mandator: Option<&str>,
    scopes: &[&str],
) -> (u16, serde_json::Value) {
    let request = ApiRequest {
        method,
        path: path.to_owned(),
        route_key: "ANY /v1/{proxy+}",
        path_params: params.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        body: body.map(str::to_owned),
        mandator,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
    .build();
    status_and_json(handle(s, request).await.unwrap())
}

#[tokio::test]
async fn given_a_valid_body_when_posted_then_201_with_location_and_readable() {
    let (_dir, s) = services();
    let org = [("organizationId", "bank-1")];
    let (status, created) =
        call(&s, "POST", "/v1/organizations/bank-1/segments", &org, Some(r#"{"name":"Gold"}"#), Some("bank-1"), RW)
            .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/organizations/bank-1/segments/{id}");
    let (status, got) =
        call(&s, "GET", &path, &[("organizationId", "bank-1"), ("segmentId", id)], None, Some("bank-1"), RW).await;
    assert_eq!((status, got["name"].as_str()), (200, Some("Gold")));
}

#[tokio::test]
async fn refusals_are_problems_with_stable_codes() {
    let (_dir, s) = services();
    let org = [("organizationId", "bank-1")];
    let base = "/v1/organizations/bank-1/segments";
    let cases: &[Case] = &[
        ("POST", Some(r#"{"name":"a"}"#), None, RW, 401, "unauthenticated"),
        ("POST", Some(r#"{"name":"a"}"#), Some("bank-1"), &["segments/definitions.read"], 403, "insufficient_scope"),
        ("GET", None, Some("bank-1"), &["segments/definitions.write"], 403, "insufficient_scope"),
        ("POST", Some(r#"{"name":"a"}"#), Some("bank-2"), RW, 404, "not_found"),
        ("POST", Some(r#"{"name":""}"#), Some("bank-1"), RW, 400, "invalid_field"),
        ("POST", Some("{"), Some("bank-1"), RW, 400, "malformed_body"),
        ("DELETE", None, Some("bank-1"), RW, 405, "method_not_allowed"),
    ];
    for (method, body, mandator, scopes, status, code) in cases {
        let (got, problem) = call(&s, method, base, &org, *body, *mandator, scopes).await;
        assert_eq!((got, problem["code"].as_str()), (*status, Some(*code)), "{method} {body:?}: {problem}");
    }
    let (status, problem) = call(
        &s,
        "GET",
        "/v1/organizations/bank-1/segments/not-a-uuid",
        &[("organizationId", "bank-1"), ("segmentId", "not-a-uuid")],
        None,
        Some("bank-1"),
        RW,
    )
    .await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")));
}
