//! Handler tests over the embedded store, from the recorded API Gateway v2 event.

use super::*;
use segments_core::http::testing::{ApiRequest, status_and_json};
use segments_embedded::EmbeddedStore;
use serde_json::{Value, json};

const RW: &[&str] = &[READ_SCOPE, WRITE_SCOPE];

fn context() -> (tempfile::TempDir, AccountData, ServiceConfig) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    (dir, segments_embedded::wiring::account_data(store), ServiceConfig::default())
}

fn request(method: &str, user: &str, body: Option<&Value>, mandator: Option<&str>, scopes: &[&str]) -> Request {
    ApiRequest {
        method,
        path: format!("/data/users/{user}"),
        route_key: match method {
            "PUT" => "PUT /data/users/{userId}",
            "PATCH" => "PATCH /data/users/{userId}",
            "DELETE" => "DELETE /data/users/{userId}",
            _ => "GET /data/users/{userId}",
        },
        path_params: vec![("userId", user.to_owned())],
        body: body.map(Value::to_string),
        mandator,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
    .build()
}

async fn call(
    data: &AccountData,
    config: &ServiceConfig,
    method: &str,
    user: &str,
    body: Option<&Value>,
    scopes: &[&str],
) -> (u16, Value) {
    status_and_json(handle(data, config, request(method, user, body, Some("bank-1"), scopes)).await.unwrap())
}

fn user_body(accounts: &[&str]) -> Value {
    let accounts: Vec<Value> = accounts
        .iter()
        .map(|id| {
            json!({"accountId": id, "accountType": "checking", "currency": "EUR", "balance": 100,
                   "balanceDate": "2024-05-31", "transactions": [
                       {"transactionId": "t-1", "bookingDate": "2024-05-02", "amount": -9.5, "purpose": "rent"},
                       {"transactionId": "t-2", "bookingDate": "2024-05-03", "amount": 20, "labels": ["SALARY"]}]})
        })
        .collect();
    json!({ "accounts": accounts })
}

#[tokio::test]
async fn a_user_put_is_read_back_patched_and_erased() {
    let (_dir, data, config) = context();
    let (status, written) = call(&data, &config, "PUT", "u-1", Some(&user_body(&["a-1", "a-2"])), RW).await;
    assert_eq!((status, written), (200, json!({"userId": "u-1", "accounts": 2, "transactions": 4})));

    let (status, user) = call(&data, &config, "GET", "u-1", None, &[READ_SCOPE]).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["userId"], "u-1");
    assert_eq!(user["accounts"][1]["accountId"], "a-2");
    let t = &user["accounts"][0]["transactions"][0];
    let expected =
        r#"{"transactionId":"t-1","bookingDate":"2024-05-02","amount":-9.50,"counterpartName":"","labels":[]}"#;
    assert_eq!(t, &serde_json::from_str::<Value>(expected).unwrap(), "purpose is not stored, amounts have cents");

    let patch = json!({
        "accounts": [{"accountId": "a-1", "balance": 90.5, "balanceDate": "2024-06-01",
                      "upsertTransactions": [{"transactionId": "t-1", "bookingDate": "2024-05-20", "amount": -9.5}],
                      "deleteTransactions": ["t-2", "t-unknown"]}],
        "deleteAccounts": ["a-2", "a-unknown"]
    });
    let (status, written) = call(&data, &config, "PATCH", "u-1", Some(&patch), &[WRITE_SCOPE]).await;
    assert_eq!((status, written), (200, json!({"userId": "u-1", "accounts": 1, "transactions": 1})));
    let (_, user) = call(&data, &config, "GET", "u-1", None, RW).await;
    assert_eq!(user["accounts"].as_array().unwrap().len(), 1);
    assert_eq!(user["accounts"][0]["balance"].to_string(), "90.50");
    assert_eq!(user["accounts"][0]["transactions"][0]["bookingDate"], "2024-05-20");

    let (status, _) = call(&data, &config, "DELETE", "u-1", None, &[WRITE_SCOPE]).await;
    assert_eq!(status, 204);
    for method in ["GET", "DELETE", "PATCH"] {
        let (status, problem) = call(&data, &config, method, "u-1", Some(&patch), RW).await;
        assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")), "{method}: {problem}");
    }
}

#[tokio::test]
async fn a_patch_removing_every_account_erases_the_user() {
    let (_dir, data, config) = context();
    call(&data, &config, "PUT", "u-1", Some(&user_body(&["a-1"])), RW).await;
    let (status, written) = call(&data, &config, "PATCH", "u-1", Some(&json!({"deleteAccounts": ["a-1"]})), RW).await;
    assert_eq!((status, written), (200, json!({"userId": "u-1", "accounts": 0, "transactions": 0})));
    assert_eq!(call(&data, &config, "GET", "u-1", None, RW).await.0, 404);
}

#[tokio::test]
async fn an_account_held_by_another_user_is_a_conflict_naming_it() {
    let (_dir, data, config) = context();
    call(&data, &config, "PUT", "u-1", Some(&user_body(&["a-1"])), RW).await;
    let (status, problem) = call(&data, &config, "PUT", "u-2", Some(&user_body(&["a-2", "a-1"])), RW).await;
    assert_eq!(
        (status, problem["code"].as_str(), problem["field"].as_str()),
        (409, Some("account_held"), Some("/accounts/1/accountId")),
        "{problem}"
    );
    call(&data, &config, "PUT", "u-2", Some(&user_body(&["a-2"])), RW).await;
    let patch = json!({"accounts": [{"accountId": "a-1", "balance": 1, "balanceDate": "2024-06-01",
                                     "accountType": "savings", "currency": "EUR"}]});
    let (status, problem) = call(&data, &config, "PATCH", "u-2", Some(&patch), RW).await;
    assert_eq!((status, problem["field"].as_str()), (409, Some("/accounts/0/accountId")), "{problem}");
    let (_, user) = call(&data, &config, "GET", "u-2", None, RW).await;
    assert_eq!(user["accounts"].as_array().unwrap().len(), 1, "nothing was written: {user}");
}

/// `(method, userId, body, scopes, status, code, field)`.
type Case<'a> = (&'a str, &'a str, Option<Value>, &'a [&'a str], u16, &'a str, Option<&'a str>);

#[tokio::test]
async fn refusals_are_problems_naming_the_field() {
    let (_dir, data, config) = context();
    call(&data, &config, "PUT", "u-1", Some(&user_body(&["a-1"])), RW).await;
    let mut bad_amount = user_body(&["a-1"]);
    bad_amount["accounts"][0]["transactions"][1]["amount"] = json!("20.00");
    let new_account = json!({"accounts": [{"accountId": "a-9", "balance": 1, "balanceDate": "2024-06-01"}]});
    let other_currency =
        json!({"accounts": [{"accountId": "a-1", "balance": 1, "balanceDate": "2024-06-01", "currency": "CHF"}]});
    let cases: Vec<Case> = vec![
        ("PUT", "u-1", Some(bad_amount), RW, 400, "invalid_field", Some("/accounts/0/transactions/1/amount")),
        ("PUT", "u 1", Some(user_body(&["a-1"])), RW, 400, "invalid_parameter", Some("userId")),
        ("GET", "u#1", None, RW, 400, "invalid_parameter", Some("userId")),
        ("PATCH", "u-1", Some(new_account), RW, 400, "invalid_field", Some("/accounts/0/accountType")),
        ("PATCH", "u-1", Some(other_currency), RW, 400, "invalid_field", Some("/accounts/0/currency")),
        ("PUT", "u-1", Some(user_body(&["a-1"])), &[READ_SCOPE], 403, "insufficient_scope", None),
        ("PATCH", "u-1", Some(json!({"deleteAccounts": ["a-1"]})), &[READ_SCOPE], 403, "insufficient_scope", None),
        ("DELETE", "u-1", None, &[READ_SCOPE], 403, "insufficient_scope", None),
        ("GET", "u-1", None, &[WRITE_SCOPE], 403, "insufficient_scope", None),
        ("POST", "u-1", None, RW, 405, "method_not_allowed", None),
    ];
    for (method, user, body, scopes, status, code, field) in cases {
        let (got, problem) = call(&data, &config, method, user, body.as_ref(), scopes).await;
        assert_eq!(
            (got, problem["code"].as_str(), problem["field"].as_str()),
            (status, Some(code), field),
            "{method} {user}: {problem}"
        );
    }

    let anonymous = request("GET", "u-1", None, None, RW);
    assert_eq!(status_and_json(handle(&data, &config, anonymous).await.unwrap()).0, 401);
    let mut text = request("PUT", "u-1", Some(&user_body(&["a-1"])), Some("bank-1"), RW);
    text.headers_mut().insert(lambda_http::http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
    assert_eq!(status_and_json(handle(&data, &config, text).await.unwrap()).0, 415);
    let mut huge = request("PUT", "u-1", None, Some("bank-1"), RW);
    *huge.body_mut() = Body::Text(format!(r#"{{"accounts":[],"pad":"{}"}}"#, "x".repeat(MAX_BODY_BYTES)));
    let (status, problem) = status_and_json(handle(&data, &config, huge).await.unwrap());
    assert_eq!((status, problem["code"].as_str()), (413, Some("body_too_large")));
    let mut malformed = request("PUT", "u-1", None, Some("bank-1"), RW);
    *malformed.body_mut() = Body::Text("{\"accounts\":".into());
    let (status, problem) = status_and_json(handle(&data, &config, malformed).await.unwrap());
    assert_eq!((status, problem["code"].as_str()), (400, Some("malformed_body")));

    let other_mandator = request("GET", "u-1", None, Some("bank-2"), RW);
    assert_eq!(status_and_json(handle(&data, &config, other_mandator).await.unwrap()).0, 404, "mandators are apart");
}

#[tokio::test]
async fn the_recorded_event_stores_the_user_it_names() {
    let (_dir, data, config) = context();
    let put = lambda_http::request::from_str(include_str!("../../../events/data-put-user.json")).unwrap();
    let (status, written) = status_and_json(handle(&data, &config, put).await.unwrap());
    assert_eq!((status, written), (200, json!({"userId": "user-0000007", "accounts": 1, "transactions": 2})));
}
