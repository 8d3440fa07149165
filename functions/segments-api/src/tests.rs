//! Handler tests over the embedded store, from recorded API Gateway v2 events.

use super::*;
use segments_core::config::ServiceConfig;
use segments_core::http::testing::{ApiRequest, status_and_json};
use segments_embedded::EmbeddedStore;
use segments_embedded::wiring::{segments_api as embedded_segments_services, services as embedded_services};

/// `(method, body, mandator, scopes, status, code)`.
type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [&'a str], u16, &'a str);

const RW: &[&str] = &["segments/definitions.read", "segments/definitions.write"];

fn services() -> (tempfile::TempDir, SegmentsServices) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (core, _rx) = embedded_services(store.clone(), ServiceConfig::default());
    (dir, embedded_segments_services(store, &core))
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
    // A malformed segment id is a bad parameter; another organization's path answers 404 before
    // its segment id is looked at.
    for (organization, expected) in
        [("bank-1", (400, Some("invalid_parameter"), Some("segmentId"))), ("bank-2", (404, Some("not_found"), None))]
    {
        let path = format!("/v1/organizations/{organization}/segments/not-a-uuid");
        let params = [("organizationId", organization), ("segmentId", "not-a-uuid")];
        let (status, problem) = call(&s, "GET", &path, &params, None, Some("bank-1"), RW).await;
        assert_eq!((status, problem["code"].as_str(), problem["field"].as_str()), expected, "{path}");
    }
}

/// Stores a user of the demo mandator with one checking account.
async fn store_user(store: &EmbeddedStore, user: &str, account: &str) {
    use segments_core::domain::{Account, AccountHistory, AccountId, AccountType, Currency, Money, UserData, UserId};
    use segments_core::ports::UserStore;
    let mandator = segments_core::domain::MandatorId::parse("demo-bank").unwrap();
    let data = UserData {
        user_id: UserId::parse(user).unwrap(),
        accounts: vec![AccountHistory {
            account: Account {
                user_id: UserId::parse(user).unwrap(),
                account_id: AccountId::parse(account).unwrap(),
                account_type: AccountType::Checking,
                currency: Currency::parse("EUR").unwrap(),
                balance: Money::parse("10").unwrap(),
                balance_date: chrono::Utc::now().date_naive(),
            },
            transactions: vec![],
        }],
    };
    store.ensure_shard_count(&mandator, 4).await.unwrap();
    store.put_user(&mandator, 4, &data, None).await.unwrap();
}

#[tokio::test]
async fn the_recorded_events_create_a_dynamic_segment_and_tag_accounts_by_id() {
    use segments_core::domain::segment::{Segment, SegmentId, Status};
    use segments_core::ports::SegmentStore;

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (core, _rx) = embedded_services(store.clone(), ServiceConfig::default());
    let s = embedded_segments_services(store.clone(), &core);

    let create = lambda_http::request::from_str(include_str!("../../../events/segments-create-dynamic.json")).unwrap();
    let (status, created) = status_and_json(handle(&s, create).await.unwrap());
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["rule"]["segmentType"], "insuranceSpending");
    assert_eq!(created["organizationId"], "demo-bank");

    // The segment the recorded PUT names, and the accounts of the demo mandator.
    let mandator = segments_core::domain::MandatorId::parse("demo-bank").unwrap();
    let now = chrono::Utc::now();
    let segment = Segment {
        id: SegmentId::parse("0193a7c2-5b1e-7c3d-9f00-5e6f7a8b9c0d").unwrap(),
        mandator: mandator.clone(),
        ledger_id: None,
        name: "Recorded".into(),
        status: Status::default(),
        metadata: Default::default(),
        rule: None,
        refresh: None,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        version: 1,
    };
    store.create_segment(&segment).await.unwrap();
    let put = include_str!("../../../events/segments-change-accounts.json");

    // acc-0000042-02 is not in the data yet: refused, naming it.
    store_user(&store, "user-0000007", "acc-0000007-01").await;
    let (status, problem) = status_and_json(handle(&s, lambda_http::request::from_str(put).unwrap()).await.unwrap());
    assert_eq!(
        (status, problem["code"].as_str(), problem["field"].as_str()),
        (422, Some("unknown_accounts"), Some("add"))
    );
    assert!(problem["detail"].as_str().unwrap().ends_with(": acc-0000042-02"), "{problem}");

    store_user(&store, "user-0000042", "acc-0000042-02").await;
    let (status, tagged) = status_and_json(handle(&s, lambda_http::request::from_str(put).unwrap()).await.unwrap());
    assert_eq!((status, tagged["memberCount"].as_u64()), (200, Some(2)), "{tagged}");
    let members = store.members(&mandator, segment.id).await.unwrap();
    let members: Vec<(&str, &str)> = members.iter().map(|m| (m.account_id.as_str(), m.user_id.as_str())).collect();
    assert_eq!(members, [("acc-0000007-01", "user-0000007"), ("acc-0000042-02", "user-0000042")]);
}
