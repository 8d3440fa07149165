//! The data API end to end over HTTP: `segments serve` on a fresh embedded store, tokens from
//! `segments token`, a user's account data replaced, read, patched and erased, the refusals as
//! problems naming the field, and the accounts an erasure removes leaving the segments they were
//! tagged into.

use crate::support::runner::{Runner, cli_token};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const MANDATOR: &str = "bank-data";
const READ: &str = "segments/data.read";
const WRITE: &str = "segments/data.write";

/// A runner with a token of [`MANDATOR`] holding every scope.
struct Api {
    dir: tempfile::TempDir,
    runner: Runner,
    http: reqwest::Client,
    token: String,
}

impl Api {
    fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let runner = Runner::start(dir.path(), false);
        let token = cli_token(dir.path(), MANDATOR, &[]);
        segments_core::usecases::callbacks::install_tls_provider();
        Api { dir, runner, http: reqwest::Client::new(), token }
    }

    fn token_with(&self, scopes: &[&str]) -> String {
        cli_token(self.dir.path(), MANDATOR, scopes)
    }

    /// Status and JSON body (`null` when empty) of a request with `token` (none when `None`).
    async fn send(&self, method: Method, path: &str, body: Option<&Value>, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.runner.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("the runner answers");
        let status = response.status();
        let text = response.text().await.expect("a body");
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("a JSON body") })
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        self.send(method, path, body, Some(&self.token)).await
    }
}

fn account(id: &str, transactions: Value) -> Value {
    json!({"accountId": id, "accountType": "checking", "currency": "EUR", "balance": 1234.56,
           "balanceDate": "2024-05-31", "transactions": transactions})
}

/// Parsed from text, so that amounts keep their literal (`json!` would read them through a float).
fn two_accounts() -> Value {
    serde_json::from_str(
        r#"{"accounts": [
            {"accountId": "acc-1", "accountType": "checking", "currency": "EUR", "balance": 1234.56,
             "balanceDate": "2024-05-31", "transactions": [
                {"transactionId": "t-1", "bookingDate": "2024-05-02", "amount": -950.00,
                 "counterpartName": "ACME Estates", "purpose": "rent May", "labels": ["RENT"]},
                {"transactionId": "t-2", "bookingDate": "2024-05-03", "amount": 12.50}]},
            {"accountId": "acc-2", "accountType": "savings", "currency": "CHF", "balance": 0.00,
             "balanceDate": "2024-05-31", "transactions": []}]}"#,
    )
    .expect("JSON")
}

/// `(transactionId, bookingDate)` of an account of a GET answer.
fn transactions(user: &Value, account: usize) -> Vec<(String, String)> {
    user["accounts"][account]["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .map(|t| (t["transactionId"].as_str().unwrap().to_owned(), t["bookingDate"].as_str().unwrap().to_owned()))
        .collect()
}

fn pair(id: &str, date: &str) -> (String, String) {
    (id.to_owned(), date.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_is_put_read_patched_and_erased() {
    let api = Api::start();
    let (status, written) = api.call(Method::PUT, "/data/users/u-1", Some(&two_accounts())).await;
    assert_eq!((status, written), (StatusCode::OK, json!({"userId": "u-1", "accounts": 2, "transactions": 2})));

    let (status, user) = api.call(Method::GET, "/data/users/u-1", None).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    let mut expected = two_accounts();
    expected["userId"] = json!("u-1");
    let t1 = &mut expected["accounts"][0]["transactions"][0];
    t1.as_object_mut().unwrap().remove("purpose");
    let t2 = &mut expected["accounts"][0]["transactions"][1];
    t2["counterpartName"] = json!("");
    t2["labels"] = json!([]);
    assert_eq!(user, expected, "the PUT shape with the userId, without purpose");

    // An upsert with a changed bookingDate replaces the transaction, wherever it was filed.
    let moved = json!({"accounts": [{"accountId": "acc-1", "balance": 1000, "balanceDate": "2024-06-01",
        "upsertTransactions": [{"transactionId": "t-1", "bookingDate": "2024-05-28", "amount": -950.00}]}]});
    let (status, written) = api.call(Method::PATCH, "/data/users/u-1", Some(&moved)).await;
    assert_eq!((status, written), (StatusCode::OK, json!({"userId": "u-1", "accounts": 2, "transactions": 2})));
    let (_, user) = api.call(Method::GET, "/data/users/u-1", None).await;
    assert_eq!(transactions(&user, 0), [pair("t-2", "2024-05-03"), pair("t-1", "2024-05-28")]);
    assert_eq!(user["accounts"][0]["balanceDate"], "2024-06-01");
    assert_eq!(
        user["accounts"][0]["transactions"][1]["counterpartName"], "",
        "an upsert replaces the whole transaction"
    );

    // Deleting a transaction, and one that is not stored (which changes nothing).
    let delete = json!({"accounts": [{"accountId": "acc-1", "balance": 1000, "balanceDate": "2024-06-01",
        "deleteTransactions": ["t-2", "t-never"]}]});
    let (status, written) = api.call(Method::PATCH, "/data/users/u-1", Some(&delete)).await;
    assert_eq!((status, written["transactions"].as_u64()), (StatusCode::OK, Some(1)));
    let (_, user) = api.call(Method::GET, "/data/users/u-1", None).await;
    assert_eq!(transactions(&user, 0), [pair("t-1", "2024-05-28")]);

    // Deleting an account; a new one needs its type and currency.
    let (status, problem) = api
        .call(
            Method::PATCH,
            "/data/users/u-1",
            Some(&json!({"accounts": [{"accountId": "acc-3", "balance": 0, "balanceDate": "2024-06-01"}]})),
        )
        .await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::BAD_REQUEST, Some("/accounts/0/accountType")));
    let (status, written) =
        api.call(Method::PATCH, "/data/users/u-1", Some(&json!({"deleteAccounts": ["acc-2"]}))).await;
    assert_eq!((status, written["accounts"].as_u64()), (StatusCode::OK, Some(1)));
    let (_, user) = api.call(Method::GET, "/data/users/u-1", None).await;
    let ids: Vec<&str> =
        user["accounts"].as_array().unwrap().iter().map(|a| a["accountId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["acc-1"]);

    let (status, body) = api.call(Method::DELETE, "/data/users/u-1", None).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    for (method, body) in [(Method::GET, None), (Method::DELETE, None), (Method::PATCH, Some(&delete))] {
        let (status, problem) = api.call(method.clone(), "/data/users/u-1", body).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{method}: {problem}"
        );
    }
    let (status, _) = api.call(Method::GET, "/data/users/nobody", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_problems_naming_the_field_as_a_json_pointer() {
    let api = Api::start();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body = two_accounts();
        change(&mut body);
        body
    };
    let cases: Vec<(Method, &str, Value, &str, &str)> = vec![
        (
            Method::PUT,
            "u-1",
            with(&|b| b["accounts"][0]["transactions"][1]["amount"] = json!("12.50")),
            "invalid_field",
            "/accounts/0/transactions/1/amount",
        ),
        (
            Method::PUT,
            "u-1",
            with(&|b| b["accounts"][0]["transactions"][0]["bookingDate"] = json!("2024-02-30")),
            "invalid_field",
            "/accounts/0/transactions/0/bookingDate",
        ),
        (
            Method::PUT,
            "u-1",
            with(&|b| {
                b["accounts"][1]["transactions"] =
                    json!([{"transactionId": "t-9", "bookingDate": "2024-05-01", "amount": 1.001}])
            }),
            "invalid_field",
            "/accounts/1/transactions/0/amount",
        ),
        (
            Method::PUT,
            "u-1",
            with(&|b| b["accounts"][1]["accountType"] = json!("giro")),
            "invalid_field",
            "/accounts/1/accountType",
        ),
        (
            Method::PUT,
            "u-1",
            with(&|b| b["accounts"][1]["accountId"] = json!("acc-1")),
            "invalid_field",
            "/accounts/1/accountId",
        ),
        (
            Method::PUT,
            "u-1",
            with(&|b| b["accounts"][0]["transactions"][1]["transactionId"] = json!("t-1")),
            "invalid_field",
            "/accounts/0/transactions/1/transactionId",
        ),
        (Method::PUT, "u-1", with(&|b| b["accounts"][0]["iban"] = json!("DE00")), "invalid_field", "/accounts/0/iban"),
        (Method::PUT, "u-1", json!({"accounts": []}), "invalid_field", "/accounts"),
        (Method::PUT, "u%231", two_accounts(), "invalid_parameter", "userId"),
        (
            Method::PATCH,
            "u-1",
            json!({"accounts": [{"accountId": "acc-1", "balance": 1, "balanceDate": "2024-06-01"}], "deleteAccounts": ["acc-1"]}),
            "invalid_field",
            "/deleteAccounts/0",
        ),
        (
            Method::PATCH,
            "u-1",
            json!({"accounts": [{"accountId": "acc-1", "balance": 1, "balanceDate": "2024-06-01",
                "upsertTransactions": [{"transactionId": "t-5", "bookingDate": "2024-06-01", "amount": 1}], "deleteTransactions": ["t-5"]}]}),
            "invalid_field",
            "/accounts/0/deleteTransactions/0",
        ),
    ];
    for (method, user, body, code, field) in cases {
        let (status, problem) = api.call(method.clone(), &format!("/data/users/{user}"), Some(&body)).await;
        assert_eq!(
            (status, problem["code"].as_str(), problem["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code), Some(field)),
            "{method} {user}: {problem}"
        );
        assert_eq!(problem["type"], format!("urn:financial-segments:problem:{code}"));
    }
    let (status, _) = api.call(Method::GET, "/data/users/u-1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing refused was stored");

    // Bodies beyond the 64 KiB of the other routes are taken, up to the data API's own limit.
    let many: Vec<Value> = (0..2_000)
        .map(|j| json!({"transactionId": format!("t-{j:05}"), "bookingDate": "2024-05-01", "amount": -1.25, "purpose": "card payment"}))
        .collect();
    let large = json!({"accounts": [account("acc-1", Value::Array(many))]});
    assert!(large.to_string().len() > 64 * 1024);
    let (status, written) = api.call(Method::PUT, "/data/users/u-1", Some(&large)).await;
    assert_eq!((status, written["transactions"].as_u64()), (StatusCode::OK, Some(2_000)), "{written}");
    let padding = "x".repeat(segments_core::usecases::account_data::body::MAX_BODY_BYTES);
    let (status, problem) = api.call(Method::PUT, "/data/users/u-1", Some(&json!({"pad": padding}))).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_route_needs_its_scope_and_a_token() {
    let api = Api::start();
    let body = two_accounts();
    let read_only = api.token_with(&[READ]);
    let write_only = api.token_with(&[WRITE]);
    let segments_only = api.token_with(&["segments/definitions.read", "segments/definitions.write"]);
    let routes =
        [(Method::PUT, Some(&body)), (Method::PATCH, Some(&body)), (Method::GET, None), (Method::DELETE, None)];
    for (method, body) in routes {
        let writes = method != Method::GET;
        let (status, _) = api.send(method.clone(), "/data/users/u-1", body, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} without a token");
        let (status, _) = api.send(method.clone(), "/data/users/u-1", body, Some("not.a.token")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} with a bad token");
        let (status, problem) = api.send(method.clone(), "/data/users/u-1", body, Some(&segments_only)).await;
        assert_eq!((status, problem["code"].as_str()), (StatusCode::FORBIDDEN, Some("insufficient_scope")), "{method}");
        let wrong = if writes { &read_only } else { &write_only };
        let (status, problem) = api.send(method.clone(), "/data/users/u-1", body, Some(wrong)).await;
        assert_eq!((status, problem["code"].as_str()), (StatusCode::FORBIDDEN, Some("insufficient_scope")), "{method}");
    }
    let (status, _) = api.send(Method::PUT, "/data/users/u-1", Some(&body), Some(&write_only)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, user) = api.send(Method::GET, "/data/users/u-1", None, Some(&read_only)).await;
    assert_eq!((status, user["userId"].as_str()), (StatusCode::OK, Some("u-1")));
    let (status, _) = api.send(Method::GET, "/data/users/u-1", None, Some(&api.runner.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another mandator's token sees nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_another_user_holds_is_a_conflict_naming_it() {
    let api = Api::start();
    api.call(Method::PUT, "/data/users/u-1", Some(&two_accounts())).await;
    let other = json!({"accounts": [account("acc-9", json!([])), account("acc-2", json!([]))]});
    let (status, problem) = api.call(Method::PUT, "/data/users/u-2", Some(&other)).await;
    assert_eq!(
        (status, problem["code"].as_str(), problem["field"].as_str()),
        (StatusCode::CONFLICT, Some("account_held"), Some("/accounts/1/accountId")),
        "{problem}"
    );
    let (status, _) = api.call(Method::GET, "/data/users/u-2", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was written");

    // Once the holder no longer has it, it is free.
    api.call(Method::PATCH, "/data/users/u-1", Some(&json!({"deleteAccounts": ["acc-2"]}))).await;
    let (status, written) = api.call(Method::PUT, "/data/users/u-2", Some(&other)).await;
    assert_eq!((status, written["accounts"].as_u64()), (StatusCode::OK, Some(2)), "{written}");
}

#[tokio::test(flavor = "multi_thread")]
async fn removed_accounts_leave_the_segments_they_were_tagged_into() {
    let api = Api::start();
    api.call(Method::PUT, "/data/users/u-1", Some(&two_accounts())).await;
    let org = format!("/v1/organizations/{MANDATOR}");
    let (status, segment) = api.call(Method::POST, &format!("{org}/segments"), Some(&json!({"name": "Premium"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{segment}");
    let members = format!("{org}/segments/{}/accounts", segment["id"].as_str().unwrap());
    let (status, tagged) = api.call(Method::PUT, &members, Some(&json!({"add": ["acc-1", "acc-2"]}))).await;
    assert_eq!((status, tagged["memberCount"].as_u64()), (StatusCode::OK, Some(2)), "{tagged}");
    let member_ids = |list: &Value| -> Vec<String> {
        list["items"].as_array().unwrap().iter().map(|m| m["accountId"].as_str().unwrap().to_owned()).collect()
    };

    api.call(Method::PATCH, "/data/users/u-1", Some(&json!({"deleteAccounts": ["acc-2"]}))).await;
    let (_, list) = api.call(Method::GET, &members, None).await;
    assert_eq!(member_ids(&list), ["acc-1"], "a PATCH's deleted account left the segment");

    let (status, _) = api.call(Method::DELETE, "/data/users/u-1", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.call(Method::GET, "/data/users/u-1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = api.call(Method::GET, &members, None).await;
    assert_eq!(member_ids(&list), Vec::<String>::new(), "the erased user's accounts left the segment");
    let (_, of_account) = api.call(Method::GET, &format!("{org}/accounts/acc-1/segments"), None).await;
    assert_eq!(of_account["totalCount"], 0, "{of_account}");
    let (status, problem) = api.call(Method::PUT, &members, Some(&json!({"add": ["acc-1"]}))).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_accounts")));
}
