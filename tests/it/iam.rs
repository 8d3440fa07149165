//! Every function's IAM grants, proven against moto with IAM enforced: each function runs its
//! scenario through the wiring its Lambda `main` uses, with the clients of an IAM user that holds
//! exactly the policy `infra/template.yaml` gives the function's role and the environment the
//! template sets. Each scenario succeeds with those grants; without any one statement of the
//! policy the scenario fails and moto records the refused action of that statement.
//!
//! State a function only reads (a completed job, a started import, a dead letter, a job whose
//! messages were lost) is prepared with the administrator's clients; data stays at a few users
//! (moto is slow).
//!
//! The refresh of a dynamic segment takes three functions, so their scenario is one chain in
//! which each step runs under the role of the function that takes it in production: the segments
//! API creates the segment and starts a refresh, the workers run its job, the refresh scheduler
//! hands it to the applier, the applier applies it and publishes the event, the segments API
//! shows it; then the schedule comes due and the same happens for the scheduled refresh. The
//! function under test runs its steps with the identity given, the others with their own grants.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use lambda_http::{Body, Request};
use segments_aws::{
    AwsClients, AwsResources, DynamoAccounts, DynamoJobs, EVENT_BUS_NAME_VAR, REFRESH_QUEUE_URL_VAR,
    SEGMENTS_TABLE_VAR, SegmentsResources, SqsImportQueue, SqsQueue,
};
use segments_core::config::ServiceConfig;
use segments_core::domain::records::AccountItem;
use segments_core::domain::refresh::RefreshMessage;
use segments_core::domain::{
    Account, AccountId, AccountType, Currency, MandatorId, Money, SegmentType, Transaction, TransactionId, UserId,
};
use segments_core::http::testing::{ApiRequest, create_job_request, get_result_request};
use segments_core::jobs::JobMessage;
use segments_core::ports::JobStore;
use segments_core::usecases::run_shard::RetrySchedule;
use segments_core::usecases::segments::SegmentsServices;
use segments_core::usecases::segments::refresh::{ApplyOutcome, RefreshSettings, apply, tick};
use segments_core::usecases::sweep::{MAX_RESENDS_VAR, PROGRESS_DEADLINE_MINUTES_VAR, SweepConfig, SweepReport, sweep};
use serde_json::{Value, json};

use crate::support::iam::{EventWatch, FunctionRole, IamStack};
use crate::support::queues::{Record, sqs_event};
use crate::support::users::put_items;

const SHARDS: u32 = 2;
const HIGH_BALANCE: &str = r#"{"accountType":"checking","threshold":5000}"#;
const ALL_SCOPES: &[&str] = &[
    "segments/highBalance",
    "segments/financialBreakdown",
    "segments/definitions.read",
    "segments/definitions.write",
    "segments/usage.read",
    "segments/data.read",
    "segments/data.write",
];

/// The functions whose grants are proven, by the template's logical id. The console calls no AWS
/// service (its policy list is empty); the five workers share one definition (a loop of the
/// template), proven on the high-balance worker. The functions of [`REFRESH_CHAIN`] come last:
/// a run of the chain that fails (a statement removed) may leave an unfinished refresh that later
/// ticks hand on, and only later runs of the chain, which take whatever is due, see it.
const FUNCTIONS: &[&str] = &[
    "CreateJobFunction",
    "HighBalanceWorkerFunction",
    "GetResultFunction",
    "JobsApiFunction",
    "DataApiFunction",
    "ImportWorkerFunction",
    "DeadLetterFunction",
    "SweeperFunction",
    "SegmentsApiFunction",
    "RefreshSchedulerFunction",
    "RefreshApplierFunction",
];

/// The functions whose steps make up the refresh of a dynamic segment: each one's scenario is
/// that chain, with its own steps under test.
const REFRESH_CHAIN: &[&str] = &["SegmentsApiFunction", "RefreshSchedulerFunction", "RefreshApplierFunction"];

/// Statements a function needs only on a path its scenario does not take, each with the path:
/// (function, an action of the statement, the template resource whose ARN it names, the path).
/// A statement listed here must indeed not be exercised (the removal test checks it), so the
/// list cannot hide a grant a scenario uses.
const ERROR_PATH_STATEMENTS: &[(&str, &str, &str, &str)] = &[
    ("GetResultFunction", "s3:ListBucket", "ResultsBucket", "a missing result object answers 404, not 403"),
    ("JobsApiFunction", "s3:ListBucket", "ResultsBucket", "a missing export answers 404, not 403"),
    ("DataApiFunction", "s3:ListBucket", "ResultsBucket", "a start before the upload names the missing file"),
    (
        "HighBalanceWorkerFunction",
        "s3:ListBucket",
        "ResultsBucket",
        "a part not written yet reads as missing, not refused",
    ),
    (
        "SweeperFunction",
        "dynamodb:PutItem",
        "JobsTable",
        "a callback of a job it fails gives up and is kept in the outbox",
    ),
    (
        "RefreshApplierFunction",
        "s3:ListBucket",
        "ResultsBucket",
        "a result page gone before its difference was recorded reads as missing, not refused",
    ),
];

type Outcome = Result<(), String>;

/// The status and JSON body of a handler's answer.
fn answer(response: Result<lambda_http::Response<Body>, lambda_http::Error>) -> (u16, Value) {
    let response = response.expect("the handler answers");
    let status = response.status().as_u16();
    let body = match response.body() {
        Body::Text(t) => serde_json::from_str(t).unwrap_or(Value::String(t.clone())),
        _ => Value::Null,
    };
    (status, body)
}

fn expect(step: &str, got: (u16, Value), status: u16) -> Result<Value, String> {
    if got.0 == status { Ok(got.1) } else { Err(format!("{step}: {} {}", got.0, got.1)) }
}

fn api_request(method: &str, path: &str, route_key: &'static str, body: Option<Value>, mandator: &str) -> Request {
    api_request_with_query(method, path, route_key, &[], body, mandator)
}

fn api_request_with_query<'a>(
    method: &'a str,
    path: &str,
    route_key: &'a str,
    query: &[(&'a str, &'a str)],
    body: Option<Value>,
    mandator: &'a str,
) -> Request {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let path_params = match parts.as_slice() {
        ["segments", t] => vec![("segmentType", (*t).to_owned())],
        ["segments", t, j, ..] => vec![("segmentType", (*t).to_owned()), ("jobId", (*j).to_owned())],
        ["data", "users", u] => vec![("userId", (*u).to_owned())],
        ["data", "imports", i, ..] => vec![("importId", (*i).to_owned())],
        _ => vec![],
    };
    ApiRequest {
        method,
        path: path.to_owned(),
        route_key,
        path_params,
        query: query.to_vec(),
        body: body.map(|b| b.to_string()),
        mandator: Some(mandator),
        scopes: ALL_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
    }
    .build()
}

/// The segments API's path parameters, as its routes name them.
fn segments_request(method: &str, path: &str, body: Option<Value>, mandator: &str) -> Request {
    segments_request_with_query(method, path, &[], body, mandator)
}

fn segments_request_with_query<'a>(
    method: &'a str,
    path: &str,
    query: &[(&'a str, &'a str)],
    body: Option<Value>,
    mandator: &'a str,
) -> Request {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut path_params = vec![("organizationId", mandator.to_owned())];
    if let Some(id) = parts.get(4) {
        path_params.push(("segmentId", (*id).to_owned()));
    }
    if let (Some(&"refreshes"), Some(id)) = (parts.get(5), parts.get(6)) {
        path_params.push(("refreshId", (*id).to_owned()));
    }
    ApiRequest {
        method,
        path: path.to_owned(),
        route_key: "ANY /v1/{proxy+}",
        path_params,
        query: query.to_vec(),
        body: body.map(|b| b.to_string()),
        mandator: Some(mandator),
        scopes: ALL_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
    }
    .build()
}

/// Uploads an import's two files (one user) to its upload links, as a client does.
async fn upload_import_files(created: &Value, mandator: &str) -> Outcome {
    let accounts = json!({"mandatorId": mandator, "userId": "imported", "accountId": "imported-a1",
        "accountType": "checking", "currency": "EUR", "balance": 1200.50, "balanceDate": "2024-05-31"});
    for (link, file) in [("accountsUploadUrl", format!("{accounts}\n")), ("transactionsUploadUrl", String::new())] {
        let url = created[link].as_str().ok_or_else(|| format!("no {link} in {created}"))?;
        let status = reqwest::Client::new().put(url).body(file).send().await.map_err(|e| e.to_string())?.status();
        if !status.is_success() {
            return Err(format!("the upload to {link} answered {status}"));
        }
    }
    Ok(())
}

/// The stack and the administrator's view of it: prepares what a scenario only reads.
struct Env {
    stack: IamStack,
    config: ServiceConfig,
    /// Every segment event published to the stack's bus.
    events: EventWatch,
    /// The clients of an identity holding a function's whole policy, by function, made once: the
    /// steps of a chain that are not under test.
    granted: tokio::sync::Mutex<BTreeMap<String, AwsClients>>,
}

impl Env {
    async fn start() -> Env {
        let stack = IamStack::start().await;
        let config = ServiceConfig { max_receive_count: 5, ..ServiceConfig::default() };
        let events = stack.watch_events().await;
        Env { stack, config, events, granted: Default::default() }
    }

    /// The clients `function` runs a step with: `clients` when it is the function under test,
    /// else an identity holding its whole policy.
    async fn clients_of(&self, function: &str, tested: &FunctionRole, clients: &AwsClients) -> AwsClients {
        if function == tested.logical_id {
            return clients.clone();
        }
        let mut granted = self.granted.lock().await;
        if let Some(clients) = granted.get(function) {
            return clients.clone();
        }
        let role = self.stack.role(function);
        let identity = self.stack.identity(&format!("{function}-in-chains"), &role.policy).await;
        granted.insert(function.to_owned(), identity.clients.clone());
        identity.clients
    }

    fn admin(&self) -> segments_core::usecases::Services {
        segments_aws::services(&self.stack.admin, &self.stack.service.resources, self.config.clone())
    }

    /// Three users of `mandator`, two with a checking balance above 5000.
    async fn users(&self, mandator: &str) {
        self.put_accounts(mandator, &[("u1", "a1", "9000"), ("u2", "a2", "100"), ("u3", "a3", "7000")]).await;
    }

    /// A rent payment of 800 from `account` of `user`, booked in the last complete month.
    async fn pay_rent(&self, mandator: &str, user: &str, account: &str) {
        let store =
            DynamoAccounts::new(self.stack.admin.dynamodb.clone(), self.stack.service.resources.account_table.clone());
        let this_month = Utc::now().date_naive().with_day(1).expect("every month has a first day");
        let booked = (this_month - Duration::days(1)).with_day(15).expect("every month has a 15th");
        let rent = AccountItem::Transaction {
            user_id: UserId::parse(user).unwrap(),
            account_id: AccountId::parse(account).unwrap(),
            transaction: Transaction {
                transaction_id: TransactionId::parse("rent").unwrap(),
                booking_date: booked,
                amount: Money::parse("-800").unwrap(),
                currency: Currency::parse("EUR").unwrap(),
                counterpart_name: "Landlord".to_owned(),
                labels: vec!["rent".to_owned()],
            },
        };
        put_items(&store, &MandatorId::parse(mandator).unwrap(), SHARDS, &[rent]).await;
    }

    /// Writes checking accounts `(user, account, balance)` of `mandator`, each replacing the
    /// account of its id.
    async fn put_accounts(&self, mandator: &str, accounts: &[(&str, &str, &str)]) {
        let store =
            DynamoAccounts::new(self.stack.admin.dynamodb.clone(), self.stack.service.resources.account_table.clone());
        let items: Vec<AccountItem> = accounts
            .iter()
            .map(|(u, a, balance)| {
                AccountItem::Account(Account {
                    user_id: UserId::parse(u).unwrap(),
                    account_id: AccountId::parse(a).unwrap(),
                    account_type: AccountType::Checking,
                    currency: Currency::parse("EUR").unwrap(),
                    balance: Money::parse(balance).unwrap(),
                    balance_date: Utc::now().date_naive(),
                })
            })
            .collect();
        put_items(&store, &MandatorId::parse(mandator).unwrap(), SHARDS, &items).await;
    }

    /// A queued high-balance job of `mandator`, created by the administrator: its id.
    async fn queued_job(&self, mandator: &str) -> String {
        self.users(mandator).await;
        crate::support::flows::post_job(&self.admin(), mandator, "highBalance", HIGH_BALANCE).await
    }

    /// The messages of a queue, received and deleted by the administrator.
    async fn take(&self, segment_type: SegmentType) -> Vec<String> {
        let queue = SqsQueue::new(self.stack.admin.sqs.clone(), self.stack.service.resources.queue_urls.clone());
        crate::support::queues::take_bodies(&queue, segment_type).await
    }

    /// A completed high-balance job of `mandator`: its id.
    async fn completed_job(&self, mandator: &str) -> String {
        let job_id = self.queued_job(mandator).await;
        self.run_shards(&self.take(SegmentType::HighBalance).await).await;
        job_id
    }

    /// Runs high-balance shard messages with the administrator's worker.
    async fn run_shards(&self, bodies: &[String]) {
        let runner = self.admin().runner();
        for body in bodies {
            let event = sqs_event([Record { message_id: "m", receipt_handle: "r", body, receive_count: 1 }]);
            let response = segments_core::sqs::handle_sqs_batch(&runner, SegmentType::HighBalance, event).await;
            assert!(response.batch_item_failures.is_empty(), "the administrator's worker ran {body}");
        }
    }

    async fn job_status(&self, mandator: &str, job_id: &str) -> String {
        let jobs = DynamoJobs::new(self.stack.admin.dynamodb.clone(), self.stack.service.resources.jobs_table.clone());
        let job = jobs.get(&MandatorId::parse(mandator).unwrap(), job_id.parse().unwrap()).await.unwrap();
        format!("{:?}", job.expect("the job exists").status)
    }

    /// Runs the scenario of `function` for a new `mandator` with `clients`.
    async fn scenario(&self, function: &FunctionRole, clients: &AwsClients, mandator: &str) -> Outcome {
        let resources = function.resources()?;
        let config = self.config.clone();
        match function.logical_id.as_str() {
            "CreateJobFunction" => {
                self.users(mandator).await;
                let intake = segments_aws::intake(clients, &resources, config);
                let mut request = create_job_request("highBalance", HIGH_BALANCE, Some(mandator), ALL_SCOPES);
                request.headers_mut().insert("idempotency-key", "retry-1".parse().unwrap());
                let created = expect("POST", answer(create_job::handle(&intake, request).await), 202)?;
                let mut again = create_job_request("highBalance", HIGH_BALANCE, Some(mandator), ALL_SCOPES);
                again.headers_mut().insert("idempotency-key", "retry-1".parse().unwrap());
                let replayed = expect("POST again", answer(create_job::handle(&intake, again).await), 202)?;
                if replayed["jobId"] != created["jobId"] {
                    return Err(format!("the replay answered another job: {replayed}"));
                }
                let queued = self.take(SegmentType::HighBalance).await.len();
                if queued != SHARDS as usize {
                    return Err(format!("{queued} messages queued for {SHARDS} shards"));
                }
                Ok(())
            }
            "HighBalanceWorkerFunction" => {
                let job_id = self.queued_job(mandator).await;
                let runner = segments_aws::runner(clients, &resources, config);
                // The event source mapping polls with the function's role.
                let queue = SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone());
                let queue = if resources.queue_urls.is_empty() {
                    SqsQueue::new(clients.sqs.clone(), self.stack.service.resources.queue_urls.clone())
                } else {
                    queue
                };
                let visibility = segments_aws::SqsMessageVisibility::new(
                    clients.sqs.clone(),
                    self.stack.service.resources.queue_urls[&SegmentType::HighBalance].clone(),
                );
                let mut delivered = 0;
                while delivered < SHARDS {
                    let messages =
                        queue.receive(SegmentType::HighBalance, 10, 1).await.map_err(|e| format!("receive: {e}"))?;
                    for m in messages {
                        let event = sqs_event([Record {
                            message_id: &m.message_id,
                            receipt_handle: &m.receipt_handle,
                            body: &m.body,
                            receive_count: m.receive_count,
                        }]);
                        // As the Lambda runs it: holding the message on its own queue.
                        let response = segments_core::sqs::handle_worker_batch(
                            &runner,
                            SegmentType::HighBalance,
                            &visibility,
                            &RetrySchedule::default(),
                            event,
                        )
                        .await;
                        if !response.batch_item_failures.is_empty() {
                            return Err(format!("the worker failed {}", m.body));
                        }
                        queue
                            .delete(SegmentType::HighBalance, &m.receipt_handle)
                            .await
                            .map_err(|e| format!("delete: {e}"))?;
                        delivered += 1;
                    }
                }
                let status = self.job_status(mandator, &job_id).await;
                if status != "Completed" { Err(format!("the job is {status}")) } else { Ok(()) }
            }
            "GetResultFunction" => {
                let job_id = self.completed_job(mandator).await;
                let reader = segments_aws::reader(clients, &resources, config);
                let request =
                    get_result_request("highBalance", &job_id, &[("perPage", "1")], Some(mandator), ALL_SCOPES);
                let page = expect("GET result", answer(get_result::handle(&reader, request).await), 200)?;
                let request = get_result_request(
                    "highBalance",
                    &job_id,
                    &[("page", "2"), ("perPage", "1")],
                    Some(mandator),
                    ALL_SCOPES,
                );
                let second = expect("GET page 2", answer(get_result::handle(&reader, request).await), 200)?;
                if page["users"] == second["users"] {
                    return Err(format!("two pages with the same users: {page}"));
                }
                Ok(())
            }
            "JobsApiFunction" => {
                let job_id = self.completed_job(mandator).await;
                let services = segments_aws::jobs_api(clients, &resources, config);
                let list = api_request("GET", "/segments/highBalance", "GET /segments/{segmentType}", None, mandator);
                let listed = expect("list", answer(jobs_api::handle(&services, list).await), 200)?;
                if !listed.to_string().contains(&job_id) {
                    return Err(format!("the list misses the job: {listed}"));
                }
                let path = format!("/segments/highBalance/{job_id}/export");
                let export = api_request("GET", &path, "GET /segments/{segmentType}/{jobId}/export", None, mandator);
                expect("export", answer(jobs_api::handle(&services, export).await), 302)?;
                let month = Utc::now().format("%Y-%m").to_string();
                let usage = api_request_with_query("GET", "/usage", "GET /usage", &[("month", &month)], None, mandator);
                expect("usage", answer(jobs_api::handle(&services, usage).await), 200)?;
                Ok(())
            }
            chained if REFRESH_CHAIN.contains(&chained) => {
                let mut segment = None;
                let outcome = self.refresh_chain(function, clients, mandator, &mut segment).await;
                // A chain cut short leaves no scheduled segment behind to start refreshes in
                // later runs: the administrator deletes it.
                if let (Err(_), Some(path)) = (&outcome, segment) {
                    self.delete_segment_as_admin(&path, mandator).await;
                }
                outcome
            }
            "DataApiFunction" => {
                let data =
                    segments_aws::account_data(clients, &resources.account_table, &function.var("SEGMENTS_TABLE"));
                let imports = segments_aws::imports_api(clients, &resources, &function.var("IMPORT_QUEUE_URL"));
                let call = |method: &'static str, path: &str, route: &'static str, body: Option<Value>| {
                    let request = api_request(method, path, route, body, mandator);
                    let (data, imports, config) = (&data, &imports, &config);
                    async move { answer(data_api::handle_all(data, imports, config, request).await) }
                };
                let user = "/data/users/u-1";
                let route = "PUT /data/users/{userId}";
                let account = json!({"accountId": "acc-1", "accountType": "checking", "currency": "EUR",
                    "balance": 1234.56, "balanceDate": "2024-05-31", "transactions": [
                        {"transactionId": "t-1", "bookingDate": "2024-05-02", "amount": -950.00}]});
                expect("PUT", call("PUT", user, route, Some(json!({"accounts": [account]}))).await, 200)?;
                let patch = json!({"accounts": [{"accountId": "acc-1", "balance": 1000, "balanceDate": "2024-06-01",
                    "upsertTransactions": [{"transactionId": "t-2", "bookingDate": "2024-05-28", "amount": 12.50}]}]});
                expect("PATCH", call("PATCH", user, "PATCH /data/users/{userId}", Some(patch)).await, 200)?;
                expect("GET", call("GET", user, "GET /data/users/{userId}", None).await, 200)?;
                expect("DELETE", call("DELETE", user, "DELETE /data/users/{userId}", None).await, 204)?;
                let created = expect(
                    "create import",
                    call("POST", "/data/imports", "POST /data/imports", Some(json!({"mode": "upsertUsers"}))).await,
                    201,
                )?;
                upload_import_files(&created, mandator).await?;
                let start = format!("/data/imports/{}/start", created["importId"].as_str().unwrap_or_default());
                expect("start import", call("POST", &start, "POST /data/imports/{importId}/start", None).await, 202)?;
                Ok(())
            }
            "ImportWorkerFunction" => {
                let import_queue = self.stack.service.import_queue_url.clone();
                let admin_imports =
                    segments_aws::imports_api(&self.stack.admin, &self.stack.service.resources, &import_queue);
                let admin_data = segments_aws::account_data(
                    &self.stack.admin,
                    &self.stack.service.resources.account_table,
                    &self.stack.service.segments_table,
                );
                let call = |method: &'static str, path: &str, route: &'static str, body: Option<Value>| {
                    let request = api_request(method, path, route, body, mandator);
                    let (data, imports, config) = (&admin_data, &admin_imports, &config);
                    async move { answer(data_api::handle_all(data, imports, config, request).await) }
                };
                // The imported user exists with an account the import's file does not name: the
                // import takes it away, and it leaves its segments.
                let existing = json!({"accounts": [{"accountId": "imported-a0", "accountType": "checking",
                    "currency": "EUR", "balance": 10, "balanceDate": "2024-05-31", "transactions": []}]});
                let put = call("PUT", "/data/users/imported", "PUT /data/users/{userId}", Some(existing)).await;
                expect("PUT", put, 200).expect("the administrator writes the user");
                let created =
                    call("POST", "/data/imports", "POST /data/imports", Some(json!({"mode": "upsertUsers"}))).await;
                let created = expect("create import", created, 201).expect("the administrator creates an import");
                let id = created["importId"].as_str().expect("an import id").to_owned();
                upload_import_files(&created, mandator).await.expect("the files are uploaded");
                let start = format!("/data/imports/{id}/start");
                expect("start", call("POST", &start, "POST /data/imports/{importId}/start", None).await, 202)
                    .expect("the administrator starts the import");

                let scratch = tempfile::tempdir().unwrap();
                let worker = segments_aws::import_worker(
                    clients,
                    &resources,
                    &function.var("SEGMENTS_TABLE"),
                    &config,
                    scratch.path().join("imports"),
                );
                // The event source mapping polls the import queue with the function's role.
                let queue = SqsImportQueue::new(clients.sqs.clone(), import_queue);
                // Until the queue is empty: a message may hand the import's next step on.
                while let Some(m) = queue.receive(1).await.map_err(|e| format!("receive: {e}"))? {
                    let event = sqs_event([Record {
                        message_id: &m.message_id,
                        receipt_handle: &m.receipt_handle,
                        body: &m.body,
                        receive_count: m.receive_count,
                    }]);
                    let response = import_worker::handle(&worker, event, None).await;
                    if !response.batch_item_failures.is_empty() {
                        return Err(format!("the import worker failed {}", m.body));
                    }
                    queue.delete(&m.receipt_handle).await.map_err(|e| format!("delete: {e}"))?;
                }
                let done = expect(
                    "import",
                    call("GET", &format!("/data/imports/{id}"), "GET /data/imports/{importId}", None).await,
                    200,
                )
                .expect("the administrator reads the import");
                if done["status"] != "COMPLETED" { Err(format!("the import is {done}")) } else { Ok(()) }
            }
            "DeadLetterFunction" => {
                let job_id = self.queued_job(mandator).await;
                let body = self.take(SegmentType::HighBalance).await.into_iter().next().expect("a shard message");
                let dead_letters_url = self.stack.physical_reference("HighBalanceDeadLetterQueue");
                let sent =
                    self.stack.admin.sqs.send_message().queue_url(&dead_letters_url).message_body(&body).send().await;
                sent.expect("the dead letter is sent");
                let dead_letters: std::collections::BTreeMap<SegmentType, String> =
                    [(SegmentType::HighBalance, dead_letters_url)].into();

                let table = function.var("JOBS_TABLE");
                let jobs = DynamoJobs::new(clients.dynamodb.clone(), table.clone());
                let callbacks = segments_aws::callbacks(clients, &table);
                // The event source mappings poll the dead-letter queues with the function's role.
                let queue = SqsQueue::new(clients.sqs.clone(), dead_letters);
                let messages =
                    queue.receive(SegmentType::HighBalance, 1, 1).await.map_err(|e| format!("receive: {e}"))?;
                let m = messages.into_iter().next().ok_or("no dead letter")?;
                let event = sqs_event([Record {
                    message_id: &m.message_id,
                    receipt_handle: &m.receipt_handle,
                    body: &m.body,
                    receive_count: m.receive_count,
                }]);
                let response = segments_core::sqs::handle_dead_letters(&jobs, &callbacks, event).await;
                if !response.batch_item_failures.is_empty() {
                    return Err("the dead-letter handler failed the message".to_owned());
                }
                queue.delete(SegmentType::HighBalance, &m.receipt_handle).await.map_err(|e| format!("delete: {e}"))?;
                let status = self.job_status(mandator, &job_id).await;
                if status != "Failed" { Err(format!("the job is {status}")) } else { Ok(()) }
            }
            "SweeperFunction" => {
                // A job whose shard messages were lost: created by the administrator, its
                // messages taken away before any worker saw them.
                let job_id = self.queued_job(mandator).await;
                self.take(SegmentType::HighBalance).await;
                // As sweeper_from_env reads its environment: every work queue, the deadline and
                // the re-sends the template sets.
                let queue_urls =
                    SegmentType::ALL.iter().map(|&t| (t, function.var(&AwsResources::queue_url_var(t)))).collect();
                let number = |name: &str| function.var(name).parse::<u32>().map_err(|e| format!("{name}: {e}"));
                let config = SweepConfig {
                    progress_deadline: chrono::Duration::minutes(i64::from(number(PROGRESS_DEADLINE_MINUTES_VAR)?)),
                    max_resends: number(MAX_RESENDS_VAR)?,
                    ..SweepConfig::default()
                };
                let sweeper = segments_aws::sweeper(clients, &function.var("JOBS_TABLE"), queue_urls, config);
                // Sweeps a deadline apart, as if that much time had passed each time without a
                // shard done: the job's shards are sent again max_resends times, then it fails.
                // Jobs other scenarios left live are swept too; their messages are taken away.
                let mut now = Utc::now();
                let mut next_sweep = |step: &str| {
                    now += config.progress_deadline + chrono::Duration::seconds(1);
                    let (sweeper, now, step) = (&sweeper, now, step.to_owned());
                    async move { swept(&step, sweep(sweeper, now).await, now) }
                };
                for resend in 1..=config.max_resends {
                    let step = format!("sweep {resend}");
                    let report = next_sweep(&step).await?;
                    let sent = self.take(SegmentType::HighBalance).await;
                    let of_the_job = sent
                        .iter()
                        .filter_map(|body| serde_json::from_str::<JobMessage>(body).ok())
                        .filter(|m| m.job_id.to_string() == job_id)
                        .count();
                    if report.resent == 0 || of_the_job != SHARDS as usize {
                        return Err(format!(
                            "{step} sent {of_the_job} messages of the job for {SHARDS} shards: {report:?}"
                        ));
                    }
                }
                let report = next_sweep("the last sweep").await?;
                if report.failed == 0 {
                    return Err(format!("the last sweep failed no job: {report:?}"));
                }
                self.take(SegmentType::HighBalance).await;
                let status = self.job_status(mandator, &job_id).await;
                if status != "Failed" { Err(format!("the job is {status} after {report:?}")) } else { Ok(()) }
            }
            _ => Err(format!("no scenario for {}", function.logical_id)),
        }
    }
}

/// A refresh as the segment view shows it.
struct ShownRefresh {
    id: String,
    job_id: String,
    requested_at: DateTime<Utc>,
}

/// The segment's last refresh, which must be a just started one of `trigger`.
fn started_refresh(view: &Value, trigger: &str) -> Result<ShownRefresh, String> {
    let last = &view["lastRefresh"];
    if last["trigger"] != trigger || last["status"] != "PENDING" {
        return Err(format!("no {trigger} refresh started: {view}"));
    }
    let text = |field: &str| last[field].as_str().map(str::to_owned).ok_or_else(|| format!("no {field} in {last}"));
    Ok(ShownRefresh { id: text("id")?, job_id: text("jobId")?, requested_at: instant(&last["requestedAt"])? })
}

/// The segment shows `refresh` applied with these counts and members.
fn applied(view: &Value, refresh: &ShownRefresh, trigger: &str, entered: u64, left: u64, members: u64) -> Outcome {
    let last = &view["lastRefresh"];
    let shown = (last["id"].as_str(), last["trigger"].as_str(), last["status"].as_str());
    let counts = (last["entered"].as_u64(), last["left"].as_u64(), view["memberCount"].as_u64());
    if shown != (Some(refresh.id.as_str()), Some(trigger), Some("APPLIED"))
        || counts != (Some(entered), Some(left), Some(members))
    {
        return Err(format!(
            "the {trigger} refresh {} is not shown applied with {entered} entered, {left} left, {members} members: {view}",
            refresh.id
        ));
    }
    Ok(())
}

/// A timestamp of a view.
fn instant(value: &Value) -> Result<DateTime<Utc>, String> {
    let text = value.as_str().ok_or_else(|| format!("{value} is not a timestamp"))?;
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| format!("{text}: {e}"))
}

/// The events of `segment` among `events`, as (detail-type, detail).
fn events_of<'a>(events: &'a [Value], segment: &str) -> Vec<(&'a str, &'a Value)> {
    events
        .iter()
        .filter(|e| e["detail"]["segmentId"] == segment)
        .map(|e| (e["detail-type"].as_str().unwrap_or_default(), &e["detail"]))
        .collect()
}

impl Env {
    /// The segments services of `role` with `clients`, as the function's `main` builds them from
    /// its environment: the segments API, the refresh scheduler and the refresh applier run on
    /// the same services.
    fn segments_services(&self, role: &FunctionRole, clients: &AwsClients) -> Result<SegmentsServices, String> {
        let resources = role.resources()?;
        let var =
            |name: &str| role.env.get(name).cloned().ok_or_else(|| format!("{}: {name} is not set", role.logical_id));
        let segments = SegmentsResources {
            table: var(SEGMENTS_TABLE_VAR)?,
            event_bus: var(EVENT_BUS_NAME_VAR)?,
            refresh_queue_url: var(REFRESH_QUEUE_URL_VAR)?,
        };
        Ok(segments_aws::segments_api(clients, &resources, &segments, self.config.clone()))
    }

    /// The chain of a dynamic segment's refreshes (module docs), with `tested`'s steps run with
    /// `clients`. `segment` holds the segment's path while it exists.
    async fn refresh_chain(
        &self,
        tested: &FunctionRole,
        clients: &AwsClients,
        mandator: &str,
        segment: &mut Option<String>,
    ) -> Outcome {
        self.users(mandator).await;
        let api_role = self.stack.role("SegmentsApiFunction");
        let api = self.segments_services(&api_role, &self.clients_of("SegmentsApiFunction", tested, clients).await)?;
        let call = |method: &'static str, path: String, query: &'static [(&'static str, &'static str)]| {
            let api = &api;
            async move {
                answer(
                    segments_api::handle(api, segments_request_with_query(method, &path, query, None, mandator)).await,
                )
            }
        };
        let send = |method: &'static str, path: String, body: Value| {
            let api = &api;
            async move { answer(segments_api::handle(api, segments_request(method, &path, Some(body), mandator)).await) }
        };
        let base = format!("/v1/organizations/{mandator}/segments");
        // Daily, ten minutes ahead: not due before the manual refresh has been applied.
        let at = Utc::now() + Duration::minutes(10);
        let schedule = json!({"every": "day", "at": format!("{:02}:{:02}", at.hour(), at.minute())});
        let rule = json!({"segmentType": "highBalance", "parameters": {"accountType": "checking", "threshold": 5000}});
        let body = json!({"name": "Rich", "rule": rule, "refresh": schedule});
        let created = expect("create", send("POST", base.clone(), body).await, 201)?;
        let id = created["id"].as_str().ok_or_else(|| format!("no id in {created}"))?.to_owned();
        let item = format!("{base}/{id}");
        *segment = Some(item.clone());
        if created["refresh"] != schedule {
            return Err(format!("the schedule is not shown: {created}"));
        }
        let first_run = instant(&created["nextRefreshAt"])?;
        expect("list", call("GET", base.clone(), &[]).await, 200)?;
        expect("rename", send("PATCH", item.clone(), json!({"name": "Richer"})).await, 200)?;
        // a2 (a balance of 100) tagged by hand: the rule does not select it, the refresh takes it out.
        expect("tag", send("PUT", format!("{item}/accounts"), json!({"add": ["a2"]})).await, 200)?;
        expect("members", call("GET", format!("{item}/accounts"), &[]).await, 200)?;

        // The manual refresh: a1 and a3 enter, a2 leaves.
        let started = expect("refresh", call("POST", format!("{item}/refresh"), &[]).await, 202)?;
        let manual = started_refresh(&started, "MANUAL")?;
        self.run_job(tested, clients, SegmentType::HighBalance, mandator, &manual.job_id).await?;
        let look = manual.requested_at + RefreshSettings::default().poll_interval + Duration::seconds(1);
        if look >= first_run {
            return Err(format!(
                "the schedule ({first_run}) comes due before the manual refresh is looked at ({look})"
            ));
        }
        let report = self.tick_as(tested, clients, look).await?;
        if report.sent == 0 {
            return Err(format!("the tick at {look} handed no refresh on: {report:?}"));
        }
        self.apply_queued(tested, clients, &manual.id, look).await?;
        let shown = expect("read after the refresh", call("GET", item.clone(), &[]).await, 200)?;
        applied(&shown, &manual, "MANUAL", 2, 1, 2)?;
        let changes = format!("{item}/refreshes/{}/changes", manual.id);
        let entered = expect("changes", call("GET", changes, &[("kind", "entered")]).await, 200)?;
        let accounts: Vec<&str> =
            entered["items"].as_array().into_iter().flatten().filter_map(|a| a["accountId"].as_str()).collect();
        if accounts != ["a1", "a3"] {
            return Err(format!("the change feed's entered accounts: {entered}"));
        }

        // The scheduled refresh, after the rule has changed: the users who paid at least 500 of
        // rent over the last three months, with their checking accounts. A financialBreakdown
        // result lists users, not accounts: the applier reads the selected users' accounts. Only
        // u2 pays rent: a2 enters, a1 and a3 leave.
        self.pay_rent(mandator, "u2", "a2").await;
        let rent_payers = json!({"segmentType": "financialBreakdown",
            "parameters": {"labelGroups": [{"alias": "RENT", "includeLabels": ["rent"]}], "durationInMonth": 3},
            "condition": {"figure": "total", "labelGroup": "RENT", "operator": "lte", "threshold": -500},
            "accountType": "checking"});
        expect("change the rule", send("PATCH", item.clone(), json!({"rule": rent_payers})).await, 200)?;
        let report = self.tick_as(tested, clients, first_run).await?;
        if report.started == 0 {
            return Err(format!("the tick at {first_run} started no scheduled refresh: {report:?}"));
        }
        let shown = expect("read after the scheduled start", call("GET", item.clone(), &[]).await, 200)?;
        let scheduled = started_refresh(&shown, "SCHEDULE")?;
        if instant(&shown["nextRefreshAt"])? <= first_run {
            return Err(format!("the next run did not move on: {shown}"));
        }
        self.run_job(tested, clients, SegmentType::FinancialBreakdown, mandator, &scheduled.job_id).await?;
        let look = scheduled.requested_at + RefreshSettings::default().poll_interval + Duration::seconds(1);
        let report = self.tick_as(tested, clients, look).await?;
        if report.sent == 0 {
            return Err(format!("the tick at {look} handed no refresh on: {report:?}"));
        }
        self.apply_queued(tested, clients, &scheduled.id, look).await?;
        let shown = expect("read after the scheduled refresh", call("GET", item.clone(), &[]).await, 200)?;
        applied(&shown, &scheduled, "SCHEDULE", 1, 2, 1)?;

        expect("delete", call("DELETE", item, &[]).await, 204)?;
        *segment = None;

        // What a subscriber of the bus received: every change of the segment, and each
        // refresh's membership change with its counts.
        let events = self.events.take(&self.stack.admin).await;
        let ours = events_of(&events, &id);
        for kind in ["Segment Created", "Segment Updated", "Segment Deleted"] {
            if !ours.iter().any(|(k, _)| *k == kind) {
                return Err(format!("no \"{kind}\" event on the bus: {ours:?}"));
            }
        }
        for (refresh, entered, left, members) in [(&manual, 2, 1, 2), (&scheduled, 1, 2, 1)] {
            let published = ours.iter().any(|(kind, detail)| {
                *kind == "Segment Membership Changed"
                    && detail["refreshId"] == refresh.id.as_str()
                    && (detail["entered"].as_u64(), detail["left"].as_u64(), detail["memberCount"].as_u64())
                        == (Some(entered), Some(left), Some(members))
            });
            if !published {
                return Err(format!("no membership change of refresh {} on the bus: {ours:?}", refresh.id));
            }
        }
        Ok(())
    }

    /// The workers' step: runs every queued shard message of `segment_type` under the role of
    /// that type's worker (other runs' jobs among them), then the job `job_id` must be completed.
    async fn run_job(
        &self,
        tested: &FunctionRole,
        clients: &AwsClients,
        segment_type: SegmentType,
        mandator: &str,
        job_id: &str,
    ) -> Outcome {
        let function = format!("{}WorkerFunction", crate::support::iam::pascal_case(segment_type));
        let role = self.stack.role(&function);
        let worker = self.clients_of(&function, tested, clients).await;
        let runner = segments_aws::runner(&worker, &role.resources()?, self.config.clone());
        for body in self.take(segment_type).await {
            let event = sqs_event([Record { message_id: "m", receipt_handle: "r", body: &body, receive_count: 1 }]);
            segments_core::sqs::handle_sqs_batch(&runner, segment_type, event).await;
        }
        let status = self.job_status(mandator, job_id).await;
        if status != "Completed" { Err(format!("the refresh's job {job_id} is {status}")) } else { Ok(()) }
    }

    /// The refresh scheduler's step: one tick at `now` under its role.
    async fn tick_as(
        &self,
        tested: &FunctionRole,
        clients: &AwsClients,
        now: DateTime<Utc>,
    ) -> Result<segments_core::usecases::segments::refresh::TickReport, String> {
        let role = self.stack.role("RefreshSchedulerFunction");
        let services =
            self.segments_services(&role, &self.clients_of("RefreshSchedulerFunction", tested, clients).await)?;
        tick(&services, now).await.map_err(|e| format!("the tick at {now}: {e}"))
    }

    /// The refresh applier's step at `now`: its event source mapping polls the refresh queue with
    /// its role until the queue is empty (the tick may have handed on refreshes other runs left
    /// unfinished), and each message is applied; the one of `refresh_id` must end it.
    async fn apply_queued(
        &self,
        tested: &FunctionRole,
        clients: &AwsClients,
        refresh_id: &str,
        now: DateTime<Utc>,
    ) -> Outcome {
        let role = self.stack.role("RefreshApplierFunction");
        let applier = self.clients_of("RefreshApplierFunction", tested, clients).await;
        let services = self.segments_services(&role, &applier)?;
        let queue_url =
            role.env.get(REFRESH_QUEUE_URL_VAR).ok_or("RefreshApplierFunction: REFRESH_QUEUE_URL is not set")?;
        let mut ours = None;
        loop {
            let received = applier.sqs.receive_message().queue_url(queue_url).max_number_of_messages(10).send().await;
            let received = received.map_err(|e| format!("receive: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                let body = m.body.unwrap_or_default();
                let message: RefreshMessage =
                    serde_json::from_str(&body).map_err(|e| format!("a refresh message ({e}): {body}"))?;
                let outcome = apply(&services, &message, now).await;
                if message.refresh_id.to_string() == refresh_id {
                    ours = Some(outcome.map_err(|e| e.to_string()));
                }
                // Handled; another run's refresh that fails here is left to its lease.
                let handle = m.receipt_handle.unwrap_or_default();
                let deleted = applier.sqs.delete_message().queue_url(queue_url).receipt_handle(handle).send().await;
                deleted.map_err(|e| format!("delete: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            }
        }
        match ours {
            Some(Ok(ApplyOutcome::Done)) => Ok(()),
            Some(other) => Err(format!("applying refresh {refresh_id}: {other:?}")),
            None => Err(format!("no message of refresh {refresh_id} reached the applier")),
        }
    }

    /// Deletes the segment at `path` with the administrator's clients; what fails is ignored
    /// (the scenario has failed already).
    async fn delete_segment_as_admin(&self, path: &str, mandator: &str) {
        let role = self.stack.role("SegmentsApiFunction");
        if let Ok(api) = self.segments_services(&role, &self.stack.admin) {
            let _ = segments_api::handle(&api, segments_request("DELETE", path, None, mandator)).await;
        }
    }
}

/// A sweep's report, or why the step failed: the sweep could not read the stalled jobs, or a job
/// could not be handled (the sweep counts such a failure and goes on).
fn swept(
    step: &str,
    report: Result<SweepReport, segments_core::ports::StoreError>,
    now: DateTime<Utc>,
) -> Result<SweepReport, String> {
    let report = report.map_err(|e| format!("{step} at {now}: {e}"))?;
    if report.errors > 0 { Err(format!("{step} at {now} could not handle every job: {report:?}")) } else { Ok(report) }
}

/// Each function's scenario succeeds with exactly its role's grants, and fails without any one
/// statement of them, naming the refused action.
#[tokio::test(flavor = "multi_thread")]
async fn every_function_runs_with_its_roles_grants_and_fails_without_any_of_them() {
    let started = Instant::now();
    let env = Env::start().await;
    let mut run = 0;
    let mut failures = Vec::new();
    for &function in FUNCTIONS {
        let role = env.stack.role(function);
        run += 1;
        let mandator = format!("bank-{run}");
        let identity = env.stack.identity(&format!("{function}-granted"), &role.policy).await;
        let outcome = env.scenario(&role, &identity.clients, &mandator).await;
        let denied = env.stack.refused(&identity).await;
        if outcome.is_err() || !denied.is_empty() {
            failures.push(format!("{function} with its own grants: {outcome:?}, refused {denied:?}"));
        }
    }
    eprintln!("granted scenarios: {:?}", started.elapsed());
    assert!(failures.is_empty(), "{failures:#?}");

    let removal = Instant::now();
    let mut unexercised = BTreeSet::new();
    for &function in FUNCTIONS {
        let role = env.stack.role(function);
        for (index, statement) in role.statements().iter().enumerate() {
            run += 1;
            let mandator = format!("bank-{run}");
            let identity =
                env.stack.identity(&format!("{function}-without-{index}"), &role.policy_without(index)).await;
            let outcome = env.scenario(&role, &identity.clients, &mandator).await;
            let denied = env.stack.refused(&identity).await;
            let actions: BTreeSet<String> = match &statement["Action"] {
                Value::String(a) => [a.clone()].into(),
                Value::Array(list) => list.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect(),
                other => panic!("{function}: action {other}"),
            };
            if outcome.is_ok() && denied.is_empty() {
                unexercised.insert((function, index));
                continue;
            }
            assert!(
                outcome.is_err(),
                "{function} without statement {index} ({statement}) succeeded although refused {denied:?}"
            );
            assert!(
                denied.iter().any(|d| actions.contains(&d.action)),
                "{function} without statement {index} ({statement}) failed ({outcome:?}), but not for lack of it: {denied:?}"
            );
        }
    }
    eprintln!("removal scenarios: {:?}", removal.elapsed());
    let listed: BTreeSet<(&str, usize)> = ERROR_PATH_STATEMENTS
        .iter()
        .map(|(function, action, resource, _)| {
            let role = env.stack.role(function);
            let arn = env.stack.arn(resource);
            let index = role
                .statements()
                .iter()
                .position(|s| s["Action"].to_string().contains(action) && s["Resource"].to_string().contains(&arn))
                .unwrap_or_else(|| panic!("{function} has no statement of {action} on {resource}"));
            (*function, index)
        })
        .collect();
    assert_eq!(unexercised, listed, "statements no scenario needs, beyond those listed with their path");
}
