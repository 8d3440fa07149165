//! Every function's IAM grants, proven against moto with IAM enforced: each function runs its
//! scenario through the wiring its Lambda `main` uses, with the clients of an IAM user that holds
//! exactly the policy `infra/template.yaml` gives the function's role and the environment the
//! template sets. Each scenario succeeds with those grants; without any one statement of the
//! policy the scenario fails and moto records the refused action of that statement.
//!
//! State a function only reads (a completed job, a started import, a dead letter, a job whose
//! messages were lost) is prepared with the administrator's clients; data stays at a few users
//! (moto is slow).

use std::collections::BTreeSet;
use std::time::Instant;

use chrono::{DateTime, Utc};
use lambda_http::{Body, Request};
use segments_aws::{AwsClients, AwsResources, DynamoAccounts, DynamoJobs, SqsImportQueue, SqsQueue};
use segments_core::config::ServiceConfig;
use segments_core::domain::records::AccountItem;
use segments_core::domain::{Account, AccountId, AccountType, Currency, MandatorId, Money, SegmentType, UserId};
use segments_core::http::testing::{ApiRequest, create_job_request, get_result_request};
use segments_core::jobs::JobMessage;
use segments_core::ports::JobStore;
use segments_core::usecases::run_shard::RetrySchedule;
use segments_core::usecases::sweep::{MAX_RESENDS_VAR, PROGRESS_DEADLINE_MINUTES_VAR, SweepConfig, SweepReport, sweep};
use serde_json::{Value, json};

use crate::support::iam::{FunctionRole, IamStack};
use crate::support::queues::{Record, sqs_event};
use crate::support::users::put_items;

const SHARDS: u32 = 2;
const HIGH_BALANCE: &str = r#"{"accountType":"checking","threshold":5000}"#;
const ALL_SCOPES: &[&str] = &[
    "segments/highBalance",
    "segments/definitions.read",
    "segments/definitions.write",
    "segments/usage.read",
    "segments/data.read",
    "segments/data.write",
];

/// The functions whose grants are proven, by the template's logical id. The console calls no AWS
/// service (its policy list is empty); the five workers share one definition (a loop of the
/// template), proven on the high-balance worker.
const FUNCTIONS: &[&str] = &[
    "CreateJobFunction",
    "HighBalanceWorkerFunction",
    "GetResultFunction",
    "JobsApiFunction",
    "SegmentsApiFunction",
    "DataApiFunction",
    "ImportWorkerFunction",
    "DeadLetterFunction",
    "SweeperFunction",
];

/// Statements a function needs only on a path its scenario does not take, each with the path.
/// A statement listed here must indeed not be exercised (the removal test checks it), so the
/// list cannot hide a grant a scenario uses.
const ERROR_PATH_STATEMENTS: &[(&str, &str, &str)] = &[
    ("GetResultFunction", "s3:ListBucket", "a missing result object answers 404, not 403"),
    ("JobsApiFunction", "s3:ListBucket", "a missing export answers 404, not 403"),
    ("SegmentsApiFunction", "s3:ListBucket", "a missing result object answers 404, not 403"),
    ("DataApiFunction", "s3:ListBucket", "a start before the upload names the missing file"),
    ("HighBalanceWorkerFunction", "s3:ListBucket", "a part not written yet reads as missing, not refused"),
    ("SweeperFunction", "dynamodb:PutItem", "a callback of a job it fails gives up and is kept in the outbox"),
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
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut path_params = vec![("organizationId", mandator.to_owned())];
    if let Some(id) = parts.get(4) {
        path_params.push(("segmentId", (*id).to_owned()));
    }
    ApiRequest {
        method,
        path: path.to_owned(),
        route_key: "ANY /v1/{proxy+}",
        path_params,
        query: vec![],
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
}

impl Env {
    async fn start() -> Env {
        let stack = IamStack::start().await;
        let config = ServiceConfig { max_receive_count: 5, ..ServiceConfig::default() };
        Env { stack, config }
    }

    fn admin(&self) -> segments_core::usecases::Services {
        segments_aws::services(&self.stack.admin, &self.stack.service.resources, self.config.clone())
    }

    /// Three users of `mandator`, two with a checking balance above 5000.
    async fn users(&self, mandator: &str) {
        let accounts =
            DynamoAccounts::new(self.stack.admin.dynamodb.clone(), self.stack.service.resources.account_table.clone());
        let items: Vec<AccountItem> = [("u1", "a1", "9000"), ("u2", "a2", "100"), ("u3", "a3", "7000")]
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
        put_items(&accounts, &MandatorId::parse(mandator).unwrap(), SHARDS, &items).await;
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
            "SegmentsApiFunction" => {
                self.users(mandator).await;
                let table = function.var("SEGMENTS_TABLE");
                let services = segments_aws::segments_api(clients, &resources, &table, config);
                let call = |method: &'static str, path: String, body: Option<Value>| {
                    let services = &services;
                    async move {
                        answer(segments_api::handle(services, segments_request(method, &path, body, mandator)).await)
                    }
                };
                let base = format!("/v1/organizations/{mandator}/segments");
                let rule =
                    json!({"segmentType": "highBalance", "parameters": {"accountType": "checking", "threshold": 5000}});
                let created = expect(
                    "create",
                    call("POST", base.clone(), Some(json!({"name": "Rich", "rule": rule}))).await,
                    201,
                )?;
                let item = format!("{base}/{}", created["id"].as_str().unwrap_or_default());
                expect("read", call("GET", item.clone(), None).await, 200)?;
                expect("list", call("GET", base.clone(), None).await, 200)?;
                expect("rename", call("PATCH", item.clone(), Some(json!({"name": "Richer"}))).await, 200)?;
                expect("tag", call("PUT", format!("{item}/accounts"), Some(json!({"add": ["a2"]}))).await, 200)?;
                expect("members", call("GET", format!("{item}/accounts"), None).await, 200)?;
                expect("refresh", call("POST", format!("{item}/refresh"), None).await, 202)?;
                let queued = self.take(SegmentType::HighBalance).await;
                if queued.len() != SHARDS as usize {
                    return Err(format!("the refresh queued {} messages for {SHARDS} shards", queued.len()));
                }
                self.run_shards(&queued).await;
                // Reading the segment after its job completed applies the job's result.
                let applied = expect("read after the job", call("GET", item.clone(), None).await, 200)?;
                if applied["lastRefresh"]["status"] != "APPLIED" {
                    return Err(format!("the refresh was not applied: {applied}"));
                }
                expect("delete", call("DELETE", item, None).await, 204)?;
                Ok(())
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
        .map(|(function, action, _)| {
            let role = env.stack.role(function);
            let index =
                role.statements().iter().position(|s| s["Action"].to_string().contains(action)).expect("listed");
            (*function, index)
        })
        .collect();
    assert_eq!(unexercised, listed, "statements no scenario needs, beyond those listed with their path");
}
