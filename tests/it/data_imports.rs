//! Bulk imports through the API, end to end on both backends: on moto (the data API's handler over
//! the real SDK clients, the files PUT to the presigned S3 URLs it answers, the import worker's
//! handler run on the message the start queued) and on the local runner (`segments serve` over
//! HTTP, signed local upload links, the in-process import task).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::StatusCode;
use segments_aws::provision;
use segments_aws::{SqsImportQueue, provision::create_queue_with_dlq};
use segments_core::config::ServiceConfig;
use segments_core::http::testing::{ApiRequest, status_and_json};
use segments_core::imports::{ImportMode, ImportRecord, ImportStatus};
use segments_core::usecases::account_data::AccountData;
use segments_core::usecases::import_worker::ImportWorker;
use segments_core::usecases::imports_api::ImportsApi;
use segments_core::usecases::run_shard::Disposition;
use serde_json::{Value, json};

use crate::support::moto::MotoServer;
use crate::support::queues::{Record, sqs_event};
use crate::support::runner::{Runner, cli_token};

const BANK: &str = "bank-imports";
const OTHER_BANK: &str = "bank-other";
const READ: &str = "segments/data.read";
const WRITE: &str = "segments/data.write";
/// Deliveries of an import message before the worker fails the import (the template's).
const MAX_RECEIVE_COUNT: u32 = 3;

/// One backend behind the API: what a client does, and what runs the started imports.
#[async_trait]
trait Backend: Send + Sync {
    /// Status and JSON body of a request by `mandator` holding both data scopes.
    async fn call(&self, mandator: &str, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value);

    /// Runs what was started until `import_id` is final; its status then.
    async fn finish(&self, mandator: &str, import_id: &str) -> Value;
}

/// A client's PUT of a file to an upload link, as `curl -T` does it.
async fn upload(url: &str, body: &str) -> StatusCode {
    segments_core::usecases::callbacks::install_tls_provider();
    reqwest::Client::new().put(url).body(body.to_owned()).send().await.expect("the upload is answered").status()
}

// ---------------------------------------------------------------------------------------------
// moto: the handlers and the worker over the real SDK clients
// ---------------------------------------------------------------------------------------------

struct Moto {
    data: AccountData,
    imports: ImportsApi,
    worker: ImportWorker,
    queue: SqsImportQueue,
    config: ServiceConfig,
    _scratch: tempfile::TempDir,
    _server: MotoServer,
}

impl Moto {
    async fn start() -> Moto {
        let server = MotoServer::start();
        let clients = server.clients().await;
        let resources = provision::provision_all(&clients, "imports", 5).await.expect("provisioned");
        let segments_table = provision::segments_table_name("imports");
        provision::create_segments_table(&clients.dynamodb, &segments_table).await.expect("segments table");
        let (queue_url, _dlq) =
            create_queue_with_dlq(&clients.sqs, "imports-import", MAX_RECEIVE_COUNT).await.expect("import queue");
        let config = ServiceConfig { max_receive_count: MAX_RECEIVE_COUNT, ..ServiceConfig::default() };
        let scratch = tempfile::tempdir().unwrap();
        Moto {
            data: segments_aws::account_data(&clients, &resources.account_table, &segments_table),
            imports: segments_aws::imports_api(&clients, &resources, &queue_url),
            worker: segments_aws::import_worker(
                &clients,
                &resources,
                &segments_table,
                &config,
                scratch.path().join("imports"),
            ),
            queue: SqsImportQueue::new(clients.sqs.clone(), queue_url),
            config,
            _scratch: scratch,
            _server: server,
        }
    }

    /// Delivers the import queue's messages to the worker's handler, as the event source mapping
    /// does, until the queue is empty; deletes the ones it acknowledged.
    async fn deliver_all(&self) -> usize {
        let mut delivered = 0;
        while let Some(m) = self.queue.receive(1).await.expect("the queue answers") {
            let event = sqs_event([Record {
                message_id: &m.message_id,
                receipt_handle: &m.receipt_handle,
                body: &m.body,
                receive_count: m.receive_count,
            }]);
            let response = import_worker::handle(&self.worker, event, None).await;
            assert!(response.batch_item_failures.is_empty(), "the worker acknowledged {}", m.body);
            self.queue.delete(&m.receipt_handle).await.expect("deleted");
            delivered += 1;
        }
        delivered
    }
}

/// The route key API Gateway names a request by.
fn route_key(method: &str, path: &str) -> &'static str {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("POST", ["data", "imports"]) => "POST /data/imports",
        ("POST", ["data", "imports", _, "start"]) => "POST /data/imports/{importId}/start",
        ("GET", ["data", "imports", _]) => "GET /data/imports/{importId}",
        (_, ["data", "users", _]) => "GET /data/users/{userId}",
        _ => panic!("no route for {method} {path}"),
    }
}

#[async_trait]
impl Backend for Moto {
    async fn call(&self, mandator: &str, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let path_params = match parts.as_slice() {
            ["data", "imports", id, ..] => vec![("importId", (*id).to_owned())],
            ["data", "users", id] => vec![("userId", (*id).to_owned())],
            _ => vec![],
        };
        let request = ApiRequest {
            method,
            path: path.to_owned(),
            route_key: route_key(method, path),
            path_params,
            body: body.map(|b| b.to_string()),
            mandator: Some(mandator),
            scopes: vec![READ.to_owned(), WRITE.to_owned()],
            ..Default::default()
        }
        .build();
        let response = data_api::handle_all(&self.data, &self.imports, &self.config, request).await.expect("answered");
        let (status, body) = status_and_json(response);
        (StatusCode::from_u16(status).unwrap(), body)
    }

    async fn finish(&self, mandator: &str, import_id: &str) -> Value {
        self.deliver_all().await;
        let (status, import) = self.call(mandator, "GET", &format!("/data/imports/{import_id}"), None).await;
        assert_eq!(status, StatusCode::OK, "{import}");
        import
    }
}

// ---------------------------------------------------------------------------------------------
// The local runner over HTTP
// ---------------------------------------------------------------------------------------------

struct Local {
    dir: tempfile::TempDir,
    runner: Runner,
    http: reqwest::Client,
}

impl Local {
    fn start() -> Local {
        let dir = tempfile::tempdir().unwrap();
        let runner = Runner::start(dir.path(), false);
        segments_core::usecases::callbacks::install_tls_provider();
        Local { dir, runner, http: reqwest::Client::new() }
    }
}

#[async_trait]
impl Backend for Local {
    async fn call(&self, mandator: &str, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let token = cli_token(self.dir.path(), mandator, &[READ, WRITE]);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.runner.url)).bearer_auth(token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("the runner answers");
        let status = response.status();
        let text = response.text().await.expect("a body");
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("a JSON body") })
    }

    async fn finish(&self, mandator: &str, import_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, import) = self.call(mandator, "GET", &format!("/data/imports/{import_id}"), None).await;
            assert_eq!(status, StatusCode::OK, "{import}");
            if matches!(import["status"].as_str(), Some("COMPLETED" | "FAILED")) {
                return import;
            }
            assert!(Instant::now() < deadline, "the import did not finish: {import}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The files and the client's steps
// ---------------------------------------------------------------------------------------------

fn account_line(mandator: &str, user: &str, account: &str) -> String {
    json!({"mandatorId": mandator, "userId": user, "accountId": account, "accountType": "checking",
           "currency": "EUR", "balance": 1200.50, "balanceDate": "2024-05-31"})
    .to_string()
}

fn transaction_line(mandator: &str, user: &str, account: &str, id: &str, amount: &str) -> String {
    // The amount as written: money is read from its literal.
    format!(
        r#"{{"mandatorId":"{mandator}","userId":"{user}","accountId":"{account}","transactionId":"{id}","bookingDate":"2024-05-02","amount":{amount},"currency":"EUR","labels":["RENT"]}}"#
    )
}

/// The two files of `users` (each with accounts `{user}-a1`, `{user}-a2`, two transactions each).
fn files(mandator: &str, users: &[&str]) -> (String, String) {
    let mut accounts = String::new();
    let mut transactions = String::new();
    for user in users {
        for account in [format!("{user}-a1"), format!("{user}-a2")] {
            accounts.push_str(&account_line(mandator, user, &account));
            accounts.push('\n');
            for (n, amount) in [(1, "-950.00"), (2, "3200.10")] {
                transactions.push_str(&transaction_line(mandator, user, &account, &format!("t-{n}"), amount));
                transactions.push('\n');
            }
        }
    }
    (accounts, transactions)
}

/// Creates an import: its id and the created answer.
async fn create(api: &dyn Backend, mandator: &str, mode: &str) -> (String, Value) {
    let (status, created) = api.call(mandator, "POST", "/data/imports", Some(json!({"mode": mode}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (created["importId"].as_str().expect("an importId").to_owned(), created)
}

/// Creates an import, uploads both files and starts it; its id.
async fn start_with(api: &dyn Backend, mandator: &str, mode: &str, accounts: &str, transactions: &str) -> String {
    let (id, created) = create(api, mandator, mode).await;
    assert_eq!(upload(created["accountsUploadUrl"].as_str().unwrap(), accounts).await, StatusCode::OK);
    assert_eq!(upload(created["transactionsUploadUrl"].as_str().unwrap(), transactions).await, StatusCode::OK);
    let (status, started) = api.call(mandator, "POST", &format!("/data/imports/{id}/start"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["status"], "VALIDATING");
    id
}

async fn user_status(api: &dyn Backend, mandator: &str, user: &str) -> StatusCode {
    api.call(mandator, "GET", &format!("/data/users/{user}"), None).await.0
}

// ---------------------------------------------------------------------------------------------
// The scenarios, each on both backends
// ---------------------------------------------------------------------------------------------

async fn full_flow(api: &dyn Backend) {
    let (id, created) = create(api, BANK, "upsertUsers").await;
    assert_eq!(created["status"], "AWAITING_UPLOAD");
    for url in ["accountsUploadUrl", "transactionsUploadUrl"] {
        let url = created[url].as_str().expect("an upload URL");
        assert!(url.contains(&format!("imports/{BANK}/{id}/")), "under the mandator's own prefix: {url}");
        assert!(!url.to_ascii_lowercase().contains("x-amz-checksum"), "no checksum of an empty body: {url}");
    }
    assert!(created["expiresAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{created}");
    let (status, waiting) = api.call(BANK, "GET", &format!("/data/imports/{id}"), None).await;
    assert_eq!((status, &waiting["status"]), (StatusCode::OK, &json!("AWAITING_UPLOAD")));

    let (accounts, transactions) = files(BANK, &["u-1", "u-2", "u-3"]);
    assert_eq!(upload(created["accountsUploadUrl"].as_str().unwrap(), &accounts).await, StatusCode::OK);
    assert_eq!(upload(created["transactionsUploadUrl"].as_str().unwrap(), &transactions).await, StatusCode::OK);
    let (status, started) = api.call(BANK, "POST", &format!("/data/imports/{id}/start"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["importId"], json!(id));

    let done = api.finish(BANK, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["mode"], "upsertUsers");
    assert_eq!(done["counts"], json!({"users": 3, "accounts": 6, "transactions": 12, "erasedUsers": 0}));
    assert_eq!(done["errors"], json!([]));
    assert_eq!(user_status(api, BANK, "u-2").await, StatusCode::OK);

    // A final import starts no more.
    let (status, again) = api.call(BANK, "POST", &format!("/data/imports/{id}/start"), None).await;
    assert_eq!((status, &again["code"]), (StatusCode::CONFLICT, &json!("import_conflict")), "{again}");
}

async fn bad_line(api: &dyn Backend) {
    let (accounts, mut transactions) = files(BANK, &["u-1", "u-2"]);
    // Line 3 of the transactions: an amount with three decimals.
    let mut lines: Vec<String> = transactions.lines().map(str::to_owned).collect();
    lines[2] = transaction_line(BANK, "u-1", "u-1-a2", "t-1", "10.005");
    transactions = lines.join("\n") + "\n";
    let id = start_with(api, BANK, "upsertUsers", &accounts, &transactions).await;

    let failed = api.finish(BANK, &id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let errors = failed["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{failed}");
    let error = errors[0].as_str().unwrap();
    assert!(error.starts_with("transactions.ndjson:3: "), "file:line: reason, not {error:?}");
    assert!(error.contains("amount"), "the reason names the field: {error:?}");
    assert_eq!(failed["counts"]["users"], 0);
    for user in ["u-1", "u-2"] {
        assert_eq!(user_status(api, BANK, user).await, StatusCode::NOT_FOUND, "nothing applied");
    }
}

async fn start_before_upload(api: &dyn Backend) {
    let (id, created) = create(api, BANK, "upsertUsers").await;
    let start = format!("/data/imports/{id}/start");
    let (status, problem) = api.call(BANK, "POST", &start, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!((&problem["code"], &problem["field"]), (&json!("upload_missing"), &json!("accounts.ndjson")));

    let (accounts, _) = files(BANK, &["u-1"]);
    assert_eq!(upload(created["accountsUploadUrl"].as_str().unwrap(), &accounts).await, StatusCode::OK);
    let (status, problem) = api.call(BANK, "POST", &start, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["field"], "transactions.ndjson");
    assert!(problem["detail"].as_str().unwrap().contains("transactions.ndjson"), "{problem}");

    let (status, waiting) = api.call(BANK, "GET", &format!("/data/imports/{id}"), None).await;
    assert_eq!((status, &waiting["status"]), (StatusCode::OK, &json!("AWAITING_UPLOAD")), "still startable");
}

async fn replace_mandator(api: &dyn Backend) {
    let (accounts, transactions) = files(BANK, &["u-1", "u-2", "u-3"]);
    let first = start_with(api, BANK, "upsertUsers", &accounts, &transactions).await;
    assert_eq!(api.finish(BANK, &first).await["status"], "COMPLETED");

    let (accounts, transactions) = files(BANK, &["u-2", "u-4"]);
    let second = start_with(api, BANK, "replaceMandator", &accounts, &transactions).await;
    let done = api.finish(BANK, &second).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["mode"], "replaceMandator");
    assert_eq!(done["counts"], json!({"users": 2, "accounts": 4, "transactions": 8, "erasedUsers": 2}));
    for (user, status) in [
        ("u-1", StatusCode::NOT_FOUND),
        ("u-2", StatusCode::OK),
        ("u-3", StatusCode::NOT_FOUND),
        ("u-4", StatusCode::OK),
    ] {
        assert_eq!(user_status(api, BANK, user).await, status, "{user}");
    }
}

async fn other_mandator(api: &dyn Backend) {
    let (accounts, transactions) = files(BANK, &["u-1"]);
    let (id, created) = create(api, BANK, "upsertUsers").await;
    assert_eq!(upload(created["accountsUploadUrl"].as_str().unwrap(), &accounts).await, StatusCode::OK);
    assert_eq!(upload(created["transactionsUploadUrl"].as_str().unwrap(), &transactions).await, StatusCode::OK);
    for (method, path) in [("GET", format!("/data/imports/{id}")), ("POST", format!("/data/imports/{id}/start"))] {
        let (status, problem) = api.call(OTHER_BANK, method, &path, None).await;
        assert_eq!((status, &problem["code"]), (StatusCode::NOT_FOUND, &json!("not_found")), "{method} {path}");
    }
    let (status, problem) = api.call(BANK, "GET", "/data/imports/not-an-id", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    // Untouched by the other mandator's attempts.
    let (status, waiting) = api.call(BANK, "GET", &format!("/data/imports/{id}"), None).await;
    assert_eq!((status, &waiting["status"]), (StatusCode::OK, &json!("AWAITING_UPLOAD")));

    // Lines of another mandator in the files are bad lines: an import never writes elsewhere.
    let (accounts, transactions) = files(OTHER_BANK, &["u-9"]);
    let id = start_with(api, BANK, "upsertUsers", &accounts, &transactions).await;
    let failed = api.finish(BANK, &id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert!(failed["errors"][0].as_str().unwrap().starts_with("accounts.ndjson:1: "), "{failed}");
    assert_eq!(user_status(api, OTHER_BANK, "u-9").await, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_is_created_uploaded_started_and_completes_with_exact_counts() {
    full_flow(&Moto::start().await).await;
    full_flow(&Local::start()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_line_fails_the_import_naming_file_and_line_and_applies_nothing() {
    bad_line(&Moto::start().await).await;
    bad_line(&Local::start()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_before_the_upload_names_the_missing_file() {
    start_before_upload(&Moto::start().await).await;
    start_before_upload(&Local::start()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replace_mandator_erases_the_users_the_files_do_not_contain() {
    replace_mandator(&Moto::start().await).await;
    replace_mandator(&Local::start()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn another_mandators_import_is_not_found() {
    other_mandator(&Moto::start().await).await;
    other_mandator(&Local::start()).await;
}

/// While an import runs (VALIDATING, its message not yet taken by the worker), no other import of
/// the mandator starts; once it is done the other one can. Other mandators are not held up.
#[tokio::test(flavor = "multi_thread")]
async fn a_start_while_another_import_of_the_mandator_runs_is_a_conflict() {
    let api = Moto::start().await;
    let (accounts, transactions) = files(BANK, &["u-1"]);
    let running = start_with(&api, BANK, "upsertUsers", &accounts, &transactions).await;

    let (waiting, created) = create(&api, BANK, "upsertUsers").await;
    assert_eq!(upload(created["accountsUploadUrl"].as_str().unwrap(), &accounts).await, StatusCode::OK);
    assert_eq!(upload(created["transactionsUploadUrl"].as_str().unwrap(), &transactions).await, StatusCode::OK);
    let start = format!("/data/imports/{waiting}/start");
    let (status, problem) = api.call(BANK, "POST", &start, None).await;
    assert_eq!((status, &problem["code"]), (StatusCode::CONFLICT, &json!("import_conflict")), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains(&running), "names the running import: {problem}");
    let (status, _) = api.call(BANK, "POST", &format!("/data/imports/{running}/start"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "an import starts once");

    let (other_accounts, other_transactions) = files(OTHER_BANK, &["u-1"]);
    let other = start_with(&api, OTHER_BANK, "upsertUsers", &other_accounts, &other_transactions).await;

    assert_eq!(api.deliver_all().await, 2);
    assert_eq!(api.finish(BANK, &running).await["status"], "COMPLETED");
    assert_eq!(api.finish(OTHER_BANK, &other).await["status"], "COMPLETED");
    let (status, started) = api.call(BANK, "POST", &start, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(api.finish(BANK, &waiting).await["status"], "COMPLETED");
}

/// A message delivered again after its import finished changes nothing, and one that cannot be
/// read is left for the dead-letter queue.
#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_message_of_a_final_import_does_nothing() {
    let api = Moto::start().await;
    let (accounts, transactions) = files(BANK, &["u-1", "u-2"]);
    let id = start_with(&api, BANK, "upsertUsers", &accounts, &transactions).await;
    let done = api.finish(BANK, &id).await;
    assert_eq!(done["status"], "COMPLETED");

    let body = json!({"mandatorId": BANK, "importId": id}).to_string();
    let event = sqs_event([Record { message_id: "m-1", receipt_handle: "r-1", body: &body, receive_count: 2 }]);
    assert!(import_worker::handle(&api.worker, event, None).await.batch_item_failures.is_empty());
    let (_, after) = api.call(BANK, "GET", &format!("/data/imports/{id}"), None).await;
    assert_eq!(after, done, "unchanged");

    let event = sqs_event([Record { message_id: "m-2", receipt_handle: "r-2", body: "{}", receive_count: 1 }]);
    let failures = import_worker::handle(&api.worker, event, None).await.batch_item_failures;
    assert_eq!(failures.len(), 1, "an unreadable message is retried until the dead-letter queue");
}

/// Another start of the same import on the local runner is refused, whatever state the first
/// one has reached; a second import of the mandator waits for the first to finish.
#[tokio::test(flavor = "multi_thread")]
async fn the_local_runner_starts_an_import_once() {
    let api = Local::start();
    let (accounts, transactions) = files(BANK, &["u-1"]);
    let id = start_with(&api, BANK, "upsertUsers", &accounts, &transactions).await;
    let (status, problem) = api.call(BANK, "POST", &format!("/data/imports/{id}/start"), None).await;
    assert_eq!((status, &problem["code"]), (StatusCode::CONFLICT, &json!("import_conflict")), "{problem}");
    assert_eq!(api.finish(BANK, &id).await["status"], "COMPLETED");

    // An upload link names one object: another key under it is refused.
    let (_, created) = create(&api, BANK, "upsertUsers").await;
    let url = created["accountsUploadUrl"].as_str().unwrap().replace("accounts.ndjson", "transactions.ndjson");
    assert_eq!(upload(&url, &accounts).await, StatusCode::FORBIDDEN);
    // Bodies are streamed to disk, not held to a request body limit.
    let large = account_line(BANK, "u-1", "u-1-a1").repeat(40_000);
    assert!(large.len() > 4 << 20);
    assert_eq!(upload(created["accountsUploadUrl"].as_str().unwrap(), &large).await, StatusCode::OK);
    let stored = api.dir.path().join("objects/imports").join(BANK).join(created["importId"].as_str().unwrap());
    assert_eq!(std::fs::metadata(stored.join("accounts.ndjson")).unwrap().len(), large.len() as u64);
}

// ---------------------------------------------------------------------------------------------
// The worker's own outcomes, on the embedded store
// ---------------------------------------------------------------------------------------------

/// The import API and worker over one embedded store, the files put straight into the store.
struct Embedded {
    store: segments_embedded::EmbeddedStore,
    imports: ImportsApi,
    worker: ImportWorker,
    /// The import queue's receiving end: the tests deliver the messages themselves.
    _started: tokio::sync::mpsc::UnboundedReceiver<segments_core::imports::ImportMessage>,
    _dir: tempfile::TempDir,
}

impl Embedded {
    fn open() -> Embedded {
        let dir = tempfile::tempdir().unwrap();
        let store = segments_embedded::EmbeddedStore::open(&dir.path().join("data")).unwrap();
        let links = std::sync::Arc::new(segments_embedded::LocalLinks::new(store.clone(), "http://127.0.0.1:1"));
        let (imports, started) = segments_embedded::wiring::imports_api(store.clone(), links);
        let config = ServiceConfig { max_receive_count: MAX_RECEIVE_COUNT, ..ServiceConfig::default() };
        let worker = financial_segments::workers::import_worker(&store, dir.path().join("scratch"), &config);
        Embedded { store, imports, worker, _started: started, _dir: dir }
    }

    /// An import of [`BANK`] with both files stored and started; its message body.
    async fn started(&self, users: &[&str]) -> (String, String) {
        use segments_core::ports::ResultStore;
        let mandator = segments_core::domain::MandatorId::parse(BANK).unwrap();
        let created = self.imports.create(&mandator, ImportMode::UpsertUsers, chrono::Utc::now()).await.unwrap();
        let record = self.imports.imports.get_import(&mandator, created.import_id).await.unwrap().unwrap();
        let (accounts, transactions) = files(BANK, users);
        self.store.put(&record.accounts_key(), accounts.into()).await.unwrap();
        self.store.put(&record.transactions_key(), transactions.into()).await.unwrap();
        let id = created.import_id.to_string();
        self.imports.start(&mandator, &id, chrono::Utc::now()).await.unwrap();
        (id.clone(), json!({"mandatorId": BANK, "importId": id}).to_string())
    }

    async fn record(&self, id: &str) -> ImportRecord {
        let mandator = segments_core::domain::MandatorId::parse(BANK).unwrap();
        let id = segments_core::imports::ImportId::parse(id).unwrap();
        self.imports.imports.get_import(&mandator, id).await.unwrap().unwrap()
    }
}

/// An import that cannot finish within a delivery's time fails with that reason at once (running
/// it again would end the same way), frees the mandator's lock and leaves no local files.
#[tokio::test(flavor = "multi_thread")]
async fn an_import_out_of_time_fails_with_the_reason_and_frees_the_mandator() {
    let e = Embedded::open();
    let (id, body) = e.started(&["u-1"]).await;
    let budget = Some(Duration::from_secs(1));
    assert_eq!(e.worker.process(&body, 1, budget).await, Disposition::Ack);
    let failed = e.record(&id).await;
    assert_eq!(failed.status, ImportStatus::Failed);
    assert!(failed.failure.as_deref().unwrap_or_default().contains("did not finish"), "{failed:?}");
    let mandator = segments_core::domain::MandatorId::parse(BANK).unwrap();
    assert_eq!(e.imports.imports.lock_holder(&mandator, chrono::Utc::now()).await.unwrap(), None);
    assert!(!e.worker.scratch.exists(), "the scratch folder is emptied");

    // The next import of the mandator runs.
    let (next, body) = e.started(&["u-1"]).await;
    assert_eq!(e.worker.process(&body, 1, None).await, Disposition::Ack);
    assert_eq!(e.record(&next).await.status, ImportStatus::Completed);
}

/// An import whose lock another import took meanwhile (its lease ran out before the delivery) is
/// delivered again later; on the last delivery it fails with the reason instead of waiting on.
#[tokio::test(flavor = "multi_thread")]
async fn an_import_held_up_by_another_is_retried_then_failed_on_the_last_delivery() {
    let e = Embedded::open();
    let (id, body) = e.started(&["u-1"]).await;
    let mandator = segments_core::domain::MandatorId::parse(BANK).unwrap();
    let other = segments_core::imports::ImportId::new();
    let now = chrono::Utc::now();
    // The started import's lease ran out and another import took the lock.
    e.imports.imports.unlock_mandator(&mandator, e.record(&id).await.import_id).await.unwrap();
    e.imports.imports.lock_mandator(&mandator, other, now, now + chrono::Duration::minutes(5)).await.unwrap();

    assert_eq!(e.worker.process(&body, 1, None).await, Disposition::Retry);
    assert_eq!(e.record(&id).await.status, ImportStatus::Validating, "left to run later");
    assert_eq!(e.worker.process(&body, MAX_RECEIVE_COUNT, None).await, Disposition::Ack);
    let failed = e.record(&id).await;
    assert_eq!(failed.status, ImportStatus::Failed);
    assert!(failed.failure.as_deref().unwrap_or_default().contains("another import"), "{failed:?}");
    assert_eq!(e.imports.imports.lock_holder(&mandator, chrono::Utc::now()).await.unwrap(), Some(other));
}

/// The local runner's import queue lives in memory: a restarted runner finds the imports that were
/// running in the store and hands them to its import task again.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_runner_finds_the_imports_that_were_running() {
    let e = Embedded::open();
    assert!(e.store.running_imports().await.unwrap().is_empty());
    let (id, body) = e.started(&["u-1"]).await;
    let running = e.store.running_imports().await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(serde_json::to_value(&running[0]).unwrap(), serde_json::from_str::<Value>(&body).unwrap());
    assert_eq!(e.worker.process(&body, 1, None).await, Disposition::Ack);
    assert_eq!(e.record(&id).await.status, ImportStatus::Completed);
    assert!(e.store.running_imports().await.unwrap().is_empty());
}

/// POSTs need `segments/data.write`, the GET `segments/data.read`, every route a token.
#[tokio::test(flavor = "multi_thread")]
async fn each_import_route_needs_its_scope() {
    let api = Local::start();
    let (id, _) = create(&api, BANK, "upsertUsers").await;
    let send = |token: Option<String>, method: reqwest::Method, path: String| {
        let mut request = api.http.request(method, format!("{}{path}", api.runner.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.header("content-type", "application/json").body("{\"mode\":\"upsertUsers\"}").send().await }
    };
    let read = cli_token(api.dir.path(), BANK, &[READ]);
    let write = cli_token(api.dir.path(), BANK, &[WRITE]);
    let routes = [
        (reqwest::Method::POST, "/data/imports".to_owned(), &read),
        (reqwest::Method::POST, format!("/data/imports/{id}/start"), &read),
        (reqwest::Method::GET, format!("/data/imports/{id}"), &write),
    ];
    for (method, path, refused) in &routes {
        let response = send(Some((*refused).clone()), method.clone(), path.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method} {path}");
        let response = send(None, method.clone(), path.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let response = send(Some(read.clone()), reqwest::Method::GET, format!("/data/imports/{id}")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(Some(write.clone()), reqwest::Method::POST, "/data/imports".to_owned()).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["cache-control"], "no-store", "the upload links are credentials");
}
