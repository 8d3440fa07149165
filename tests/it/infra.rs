//! The SAM template (`infra/template.yaml`) is the deployable truth (docs/architecture.md). These tests keep
//! it in step with the code: routes and scopes, one function per function crate with the variables
//! the code reads, a queue with a dead-letter queue per worker, the sweeper's schedule and
//! settings, the event bus of segment events with the refresh scheduler's schedule and the refresh
//! applier's queue, least-privilege policies, the tables with their keys and indexes and the results
//! bucket, the web console and its optional Cognito sign-in, and what
//! operations rely on: log groups that expire, alarms, the dashboard (docs/operations.md). They also run the offline linters on it (cfn-lint and
//! `sam validate --lint`), which `tests/run.sh` installs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use financial_segments::server::{Function, ROUTES};
use segments_aws::provision::RESULTS_PREFIX;
use segments_aws::{
    AwsResources, DUE_AT, DUE_INDEX, DUE_PARTITION, EVENT_BUS_NAME_VAR, IDLE_SWEEPS, IMPORT_QUEUE_URL_VAR,
    JOBS_TTL_ATTRIBUTE, PARTITION_KEY, PROGRESS_AT, PROGRESS_INDEX, REFRESH_QUEUE_URL_VAR, SEGMENTS_TABLE_VAR,
    SHARDS_SEEN, SORT_KEY, SWEEP_PARTITION, SegmentsResources,
};
use segments_core::domain::SegmentType;
use segments_core::domain::refresh::RefreshMessage;
use segments_core::imports::{IMPORT_RETENTION_DAYS, IMPORTS_PREFIX, ImportMessage};
use segments_core::jobs::{JobMessage, RESULT_RETENTION_DAYS};
use segments_core::usecases::jobs_api::USAGE_SCOPE;
use segments_core::usecases::segments::refresh::{LEASE, RefreshSettings};
use segments_core::usecases::segments::{READ_SCOPE, WRITE_SCOPE};
use segments_core::usecases::sweep::{MAX_RESENDS_VAR, PROGRESS_DEADLINE_MINUTES_VAR, SWEEP_INTERVAL, SweepConfig};
use serde_json::{Map, Value, json};
use web_console::{BASE_PATH as CONSOLE_PATH, CLIENT_ID_VAR, COGNITO_DOMAIN_VAR, SCOPES_VAR};

use crate::support::template::{TEMPLATE_PATH as TEMPLATE, sam_template, written_template};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The variables `ServiceConfig::from_env` reads (all optional, with defaults).
const MANDATOR_CLAIM_VAR: &str = "MANDATOR_CLAIM";
const CONSOLE_CLIENT_ID_VAR: &str = "CONSOLE_CLIENT_ID";
const MAX_RECEIVE_COUNT_VAR: &str = "MAX_RECEIVE_COUNT";
const MAX_LIVE_JOBS_VAR: &str = segments_core::config::MAX_LIVE_JOBS_PER_MANDATOR_VAR;

/// At least this many receives before a message goes to its dead-letter queue.
const MIN_MAX_RECEIVE_COUNT: u64 = 5;
/// AWS guidance for SQS event sources: visibility timeout at least 6 x the function timeout.
const VISIBILITY_PER_TIMEOUT: u64 = 6;

/// The web console's binary. Its routes serve static files without a token: they are not routes
/// of the API (not in `ROUTES`, not in openapi.json) and are checked apart.
const CONSOLE_BINARY: &str = "web-console";
/// The console's app client (Cognito hosted UI), which exists only with the custom domain.
const CONSOLE_CLIENT: &str = "ConsoleClient";
/// The condition of the custom domain and, with it, of the console's Cognito sign-in.
const CUSTOM_DOMAIN: &str = "HasCustomDomain";

// ---------------------------------------------------------------------------------------------
// Reading the template
// ---------------------------------------------------------------------------------------------

/// The template as CloudFormation hands it to the SAM transform: its `Fn::ForEach` loops
/// expanded, so every resource is found by the logical id it is deployed with.
fn template() -> Value {
    sam_template()
}

fn resources(doc: &Value) -> &Map<String, Value> {
    doc["Resources"].as_object().expect("the template has Resources")
}

fn resource<'a>(doc: &'a Value, name: &str) -> &'a Value {
    resources(doc).get(name).unwrap_or_else(|| panic!("no resource {name}"))
}

fn of_type<'a>(doc: &'a Value, ty: &str) -> Vec<(&'a str, &'a Value)> {
    resources(doc).iter().filter(|(_, r)| r["Type"] == ty).map(|(n, r)| (n.as_str(), r)).collect()
}

/// `{"Ref": "X"}` → `X`.
fn ref_target(v: &Value) -> Option<&str> {
    v.get("Ref").and_then(Value::as_str)
}

/// `{"Fn::GetAtt": ["X", "Arn"]}` → `(X, Arn)`.
fn get_att(v: &Value) -> Option<(&str, &str)> {
    let parts = v.get("Fn::GetAtt")?.as_array()?;
    Some((parts.first()?.as_str()?, parts.get(1)?.as_str()?))
}

fn as_u64(v: &Value, what: &str) -> u64 {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or_else(|| panic!("{what} is a number: {v}"))
}

fn strings(v: &Value) -> BTreeSet<String> {
    match v {
        Value::Array(items) => items.iter().map(|s| s.as_str().expect("a string").to_owned()).collect(),
        Value::String(s) => BTreeSet::from([s.clone()]),
        Value::Null => BTreeSet::new(),
        other => panic!("expected a string or a list of strings: {other}"),
    }
}

/// A Lambda function of the template, with the SAM `Globals` applied.
struct FunctionResource<'a> {
    name: &'a str,
    binary: String,
    properties: &'a Value,
    globals: &'a Value,
}

impl FunctionResource<'_> {
    /// A property of the function, or of `Globals.Function` when the function has none; a map
    /// set in both is merged, the function's keys winning (as SAM merges Globals).
    fn property(&self, key: &str) -> Value {
        match (&self.properties[key], &self.globals[key]) {
            (Value::Null, global) => global.clone(),
            (Value::Object(own), Value::Object(global)) => {
                let mut merged = global.clone();
                merged.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
                Value::Object(merged)
            }
            (own, _) => own.clone(),
        }
    }

    /// The environment: the global variables overlaid with the function's own.
    fn environment(&self) -> BTreeMap<String, Value> {
        let mut vars = BTreeMap::new();
        for source in [&self.globals["Environment"]["Variables"], &self.properties["Environment"]["Variables"]] {
            if let Some(map) = source.as_object() {
                vars.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        vars
    }

    fn events(&self, ty: &str) -> Vec<(&str, &Value)> {
        self.properties["Events"]
            .as_object()
            .map(|events| {
                events.iter().filter(|(_, e)| e["Type"] == ty).map(|(n, e)| (n.as_str(), &e["Properties"])).collect()
            })
            .unwrap_or_default()
    }

    /// Every `(action, resource)` its inline policies allow. Resources are named by their logical
    /// id (`JobsTable`), or `ResultsBucket/<prefix>*` for objects of the bucket.
    fn grants(&self) -> BTreeSet<(String, String)> {
        let mut grants = BTreeSet::new();
        for policy in self.properties["Policies"].as_array().expect("the function has Policies") {
            for statement in policy["Statement"].as_array().expect("an inline policy document") {
                assert_eq!(statement["Effect"], "Allow", "{}: only Allow statements", self.name);
                for action in strings(&statement["Action"]) {
                    assert!(!action.contains('*'), "{}: wildcard action {action}", self.name);
                    let targets = match &statement["Resource"] {
                        Value::Array(items) => items.clone(),
                        single => vec![single.clone()],
                    };
                    for target in targets {
                        grants.insert((action.clone(), grant_target(self.name, &target)));
                    }
                }
            }
        }
        grants
    }
}

/// The properties of the event source mappings that invoke `function`.
fn event_sources<'a>(doc: &'a Value, function: &str) -> Vec<&'a Value> {
    of_type(doc, "AWS::Lambda::EventSourceMapping")
        .into_iter()
        .map(|(_, r)| &r["Properties"])
        .filter(|p| ref_target(&p["FunctionName"]) == Some(function))
        .collect()
}

fn grant_target(function: &str, target: &Value) -> String {
    if let Some((resource, "Arn")) = get_att(target) {
        return resource.to_owned();
    }
    if let Some(sub) = target.get("Fn::Sub").and_then(Value::as_str) {
        if let Some(rest) = sub.strip_prefix("${ResultsBucket.Arn}/") {
            return format!("ResultsBucket/{rest}");
        }
        // An index of a table: IAM authorizes a Query of an index on the index's ARN.
        if let Some((table, index)) = sub.strip_prefix("${").and_then(|rest| rest.split_once(".Arn}/index/")) {
            return format!("{table}/index/{index}");
        }
    }
    panic!("{function}: a policy resource that is neither a resource ARN, results objects nor an index: {target}")
}

fn functions(doc: &Value) -> Vec<FunctionResource<'_>> {
    of_type(doc, "AWS::Serverless::Function")
        .into_iter()
        .map(|(name, r)| {
            assert_eq!(r["Metadata"]["BuildMethod"], "rust-cargolambda", "{name}: built with cargo-lambda");
            let binary = r["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: Metadata.BuildProperties.Binary names the binary"))
                .to_owned();
            FunctionResource { name, binary, properties: &r["Properties"], globals: &doc["Globals"]["Function"] }
        })
        .collect()
}

fn function<'a>(all: &'a [FunctionResource<'a>], binary: &str) -> &'a FunctionResource<'a> {
    all.iter().find(|f| f.binary == binary).unwrap_or_else(|| panic!("no function with binary {binary}"))
}

fn binary_of(function: Function) -> &'static str {
    match function {
        Function::CreateJob => "create-job",
        Function::GetResult => "get-result",
        Function::SegmentsApi => "segments-api",
        Function::JobsApi => "jobs-api",
        Function::DataApi => "data-api",
    }
}

fn worker_binary(segment_type: SegmentType) -> String {
    format!("worker-{}", segment_type.env_stem().to_lowercase().replace('_', "-"))
}

/// A route of the HTTP API as the template declares it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct TemplateRoute {
    method: String,
    path: String,
    scopes: BTreeSet<String>,
    binary: String,
}

/// The API's routes: every HTTP event of the template but the console's, each behind the JWT
/// authorizer.
fn template_routes(doc: &Value) -> BTreeSet<TemplateRoute> {
    let authorizer = api_authorizer(doc);
    let mut routes = BTreeSet::new();
    for f in functions(doc).into_iter().filter(|f| f.binary != CONSOLE_BINARY) {
        for (event, p) in f.events("HttpApi") {
            assert_eq!(ref_target(&p["ApiId"]), Some("Api"), "{}.{event}: on the HTTP API", f.name);
            assert_eq!(p["PayloadFormatVersion"], "2.0", "{}.{event}: payload format 2.0", f.name);
            assert_eq!(p["Auth"]["Authorizer"], authorizer.as_str(), "{}.{event}: JWT-protected", f.name);
            routes.insert(TemplateRoute {
                method: p["Method"].as_str().expect("a method").to_uppercase(),
                path: p["Path"].as_str().expect("a path").to_owned(),
                scopes: strings(&p["Auth"]["AuthorizationScopes"]),
                binary: f.binary.clone(),
            });
        }
    }
    routes
}

/// The console's routes as `(method, path)`. They have no authorizer: the files carry no data,
/// and every call the page makes goes to the API with the user's token.
fn console_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let all = functions(doc);
    let console = function(&all, CONSOLE_BINARY);
    console
        .events("HttpApi")
        .into_iter()
        .map(|(event, p)| {
            assert_eq!(ref_target(&p["ApiId"]), Some("Api"), "{event}: on the HTTP API, the API's own origin");
            assert_eq!(p["PayloadFormatVersion"], "2.0", "{event}: payload format 2.0");
            assert_eq!(p["Auth"]["Authorizer"], "NONE", "{event}: the console's files need no token");
            assert!(p["Auth"]["AuthorizationScopes"].is_null(), "{event}: no scopes");
            (p["Method"].as_str().expect("a method").to_uppercase(), p["Path"].as_str().expect("a path").to_owned())
        })
        .collect()
}

/// `GET /console` (which redirects to `/console/`) and every file below it.
fn expected_console_routes() -> BTreeSet<(String, String)> {
    BTreeSet::from([
        ("GET".to_owned(), CONSOLE_PATH.to_owned()),
        ("GET".to_owned(), format!("{CONSOLE_PATH}/{{proxy+}}")),
    ])
}

/// `!If [HasCustomDomain, value, !Ref AWS::NoValue]`.
fn if_custom_domain(value: Value) -> Value {
    json!({ "Fn::If": [CUSTOM_DOMAIN, value, {"Ref": "AWS::NoValue"}] })
}

/// Every scope the resource server defines, as `segments/<name>`.
fn defined_scopes(doc: &Value) -> BTreeSet<String> {
    let (_, server) =
        of_type(doc, "AWS::Cognito::UserPoolResourceServer").into_iter().next().expect("a resource server");
    let server = &server["Properties"];
    let identifier = server["Identifier"].as_str().expect("an identifier");
    server["Scopes"]
        .as_array()
        .expect("scopes")
        .iter()
        .map(|s| format!("{identifier}/{}", s["ScopeName"].as_str().expect("a scope name")))
        .collect()
}

/// The places, outside resources and outputs that carry `condition` themselves and outside the
/// true branch of an `Fn::If` on it, that refer to `name` (`Ref`, `Fn::GetAtt` or `${name}` in
/// `Fn::Sub`). A stack without the condition would fail to deploy on any of them.
fn references_outside(doc: &Value, name: &str, condition: &str) -> Vec<String> {
    fn walk(v: &Value, name: &str, condition: &str, at: &str, found: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Array(args)) = map.get("Fn::If")
                    && args.first().and_then(Value::as_str) == Some(condition)
                {
                    if let Some(otherwise) = args.get(2) {
                        walk(otherwise, name, condition, &format!("{at}.Fn::If[2]"), found);
                    }
                    return;
                }
                let sub = match map.get("Fn::Sub") {
                    Some(Value::String(text)) => Some(text.as_str()),
                    Some(Value::Array(parts)) => parts.first().and_then(Value::as_str),
                    _ => None,
                };
                if ref_target(v) == Some(name)
                    || get_att(v).is_some_and(|(resource, _)| resource == name)
                    || sub.is_some_and(|t| t.contains(&format!("${{{name}}}")) || t.contains(&format!("${{{name}.")))
                {
                    found.push(at.to_owned());
                }
                for (key, child) in map {
                    walk(child, name, condition, &format!("{at}.{key}"), found);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, name, condition, &format!("{at}[{i}]"), found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(&doc["Globals"], name, condition, "Globals", &mut found);
    for section in ["Resources", "Outputs"] {
        for (id, entry) in doc[section].as_object().into_iter().flatten() {
            if entry["Condition"] != condition {
                walk(entry, name, condition, &format!("{section}.{id}"), &mut found);
            }
        }
    }
    found
}

/// The JWT authorizer of the API, which is also its default authorizer.
fn api_authorizer(doc: &Value) -> String {
    let auth = &resource(doc, "Api")["Properties"]["Auth"];
    let default = auth["DefaultAuthorizer"].as_str().expect("the API has a default authorizer").to_owned();
    assert!(auth["Authorizers"][&default]["JwtConfiguration"].is_object(), "{default} is a JWT authorizer");
    default
}

fn env_name_set(vars: Vec<(String, String)>) -> BTreeSet<String> {
    vars.into_iter().map(|(name, _)| name).collect()
}

fn resources_with_queues(types: &[SegmentType]) -> AwsResources {
    AwsResources {
        account_table: "account-data".into(),
        jobs_table: "jobs".into(),
        results_bucket: "results".into(),
        queue_urls: types.iter().map(|t| (*t, format!("https://sqs.example/{t}"))).collect(),
    }
}

/// The crates under `functions/` that are members of the workspace, by package name.
fn function_crates() -> BTreeSet<String> {
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).expect("Cargo.toml");
    manifest
        .lines()
        .filter_map(|line| line.trim().trim_end_matches(',').strip_prefix("\"functions/")?.strip_suffix('"'))
        .map(|dir| {
            let crate_manifest =
                std::fs::read_to_string(Path::new(ROOT).join("functions").join(dir).join("Cargo.toml"))
                    .expect("the function crate's Cargo.toml");
            crate_manifest
                .lines()
                .find_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"').map(str::to_owned))
                .expect("a package name")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Functions
// ---------------------------------------------------------------------------------------------

#[test]
fn every_function_crate_has_a_function_with_its_binary() {
    let doc = template();
    let crates = function_crates();
    let binaries: BTreeSet<String> = functions(&doc).iter().map(|f| f.binary.clone()).collect();
    assert_eq!(binaries, crates);
    for f in functions(&doc) {
        assert_eq!(f.property("Runtime"), "provided.al2023", "{}", f.name);
        assert_eq!(f.property("Architectures"), json!(["arm64"]), "{}", f.name);
        assert_eq!(f.property("Handler"), "bootstrap", "{}", f.name);
        assert_eq!(f.property("Tracing"), "Active", "{}", f.name);
        assert_eq!(f.property("LoggingConfig")["LogFormat"], "JSON", "{}", f.name);
        assert_eq!(ref_target(&f.property("LoggingConfig")["ApplicationLogLevel"]), Some("LogLevel"), "{}", f.name);
        // The workspace root, or the function's own crate (a worker of the per-type loop: each
        // needs its own CodeUri to be packaged as its own artifact).
        let code = f.properties["CodeUri"].as_str().unwrap_or_else(|| panic!("{}: a literal CodeUri", f.name));
        assert!(code == ".." || code == format!("../functions/{}", f.binary), "{}: built from {code}", f.name);
        let memory = as_u64(&f.properties["MemorySize"], "MemorySize");
        assert!((128..=10240).contains(&memory), "{}: memory {memory}", f.name);
        let timeout = as_u64(&f.properties["Timeout"], "Timeout");
        assert!((1..=900).contains(&timeout), "{}: timeout {timeout}", f.name);
    }
}

#[test]
fn each_function_gets_exactly_the_variables_the_code_reads() {
    check_environment(&template());
}

/// Each function's variables are the ones its code reads, naming the resources it uses.
fn check_environment(doc: &Value) {
    let all = functions(doc);
    let base = env_name_set(resources_with_queues(&[]).env_vars());
    let with = |extra: &[&str], queues: &[SegmentType]| -> BTreeSet<String> {
        let mut names = base.clone();
        names.extend(env_name_set(resources_with_queues(queues).env_vars()));
        names.extend(extra.iter().map(|s| (*s).to_owned()));
        names
    };
    // What the segments functions read besides (SegmentsResources::from_env): the Segments table,
    // the bus and the refresh queue.
    let segments_resources = SegmentsResources {
        table: "segments".into(),
        event_bus: "segment-events".into(),
        refresh_queue_url: "https://sqs.example/refresh".into(),
    };
    let segments_names = env_name_set(segments_resources.env_vars());
    let with_segments = |extra: &[&str], queues: &[SegmentType]| -> BTreeSet<String> {
        let mut names = with(extra, queues);
        names.extend(segments_names.iter().cloned());
        names
    };
    let mut expected = BTreeMap::from([
        (
            "create-job".to_owned(),
            with(&[MANDATOR_CLAIM_VAR, CONSOLE_CLIENT_ID_VAR, MAX_LIVE_JOBS_VAR], SegmentType::ALL),
        ),
        ("get-result".to_owned(), with(&[MANDATOR_CLAIM_VAR, CONSOLE_CLIENT_ID_VAR], &[])),
        // A refresh creates a job of any type: the work queues, as create-job. Its changes are
        // published to the bus; its services name the refresh queue, to which it sends nothing.
        (
            "segments-api".to_owned(),
            with_segments(&[MANDATOR_CLAIM_VAR, CONSOLE_CLIENT_ID_VAR, MAX_LIVE_JOBS_VAR], SegmentType::ALL),
        ),
        // A scheduled refresh creates its job as segments-api does; it hands refreshes to the
        // applier. No token is read: neither the claim nor the console's client.
        (REFRESH_SCHEDULER_BINARY.to_owned(), with_segments(&[MAX_LIVE_JOBS_VAR], SegmentType::ALL)),
        // The applier creates no job: no work queue, no live-job limit.
        (REFRESH_APPLIER_BINARY.to_owned(), with_segments(&[], &[])),
        ("jobs-api".to_owned(), with(&[MANDATOR_CLAIM_VAR, CONSOLE_CLIENT_ID_VAR], &[])),
        (
            "data-api".to_owned(),
            with(&[MANDATOR_CLAIM_VAR, CONSOLE_CLIENT_ID_VAR, SEGMENTS_TABLE_VAR, IMPORT_QUEUE_URL_VAR], &[]),
        ),
        ("import-worker".to_owned(), with(&[MAX_RECEIVE_COUNT_VAR, SEGMENTS_TABLE_VAR], &[])),
        // The console reads its sign-in settings only; the global names come with the others.
        (CONSOLE_BINARY.to_owned(), with(&[COGNITO_DOMAIN_VAR, CLIENT_ID_VAR, SCOPES_VAR], &[])),
    ]);
    for &t in SegmentType::ALL {
        expected.insert(worker_binary(t), with(&[MAX_RECEIVE_COUNT_VAR, segments_aws::WORK_QUEUE_URL_VAR], &[]));
    }
    // The dead-letter handler reads JOBS_TABLE; the other names come with the globals.
    expected.insert("dlq-handler".to_owned(), with(&[], &[]));
    // The sweeper sends unfinished shards of any type, and reads when a job counts as stalled.
    expected
        .insert(SWEEPER_BINARY.to_owned(), with(&[PROGRESS_DEADLINE_MINUTES_VAR, MAX_RESENDS_VAR], SegmentType::ALL));
    for f in &all {
        let env = f.environment();
        let names: BTreeSet<String> = env.keys().cloned().collect();
        assert_eq!(Some(&names), expected.get(&f.binary), "{}: environment", f.name);

        assert_eq!(ref_target(&env["ACCOUNT_DATA_TABLE"]), Some("AccountDataTable"));
        assert_eq!(ref_target(&env["JOBS_TABLE"]), Some("JobsTable"));
        assert_eq!(ref_target(&env["RESULTS_BUCKET"]), Some("ResultsBucket"));
        if let Some(table) = env.get(SEGMENTS_TABLE_VAR) {
            assert_eq!(ref_target(table), Some("SegmentsTable"));
        }
        if let Some(queue) = env.get(IMPORT_QUEUE_URL_VAR) {
            assert_eq!(ref_target(queue), Some(IMPORT_QUEUE), "{}: the queue the import worker consumes", f.name);
        }
        if let Some(bus) = env.get(EVENT_BUS_NAME_VAR) {
            assert_eq!(ref_target(bus), Some(EVENT_BUS), "{}: the stack's bus, by name", f.name);
        }
        if let Some(queue) = env.get(REFRESH_QUEUE_URL_VAR) {
            assert_eq!(ref_target(queue), Some(REFRESH_QUEUE), "{}: the queue the applier consumes", f.name);
        }
        if let Some(claim) = env.get(MANDATOR_CLAIM_VAR) {
            assert_eq!(claim, "client_id", "Cognito client-credentials tokens name the client in client_id");
        }
    }
    assert_eq!(resource(doc, "AccountDataTable")["Type"], "AWS::DynamoDB::Table");
    assert_eq!(resource(doc, "JobsTable")["Type"], "AWS::DynamoDB::Table");
    assert_eq!(resource(doc, "ResultsBucket")["Type"], "AWS::S3::Bucket");
    assert_eq!(resource(doc, EVENT_BUS)["Type"], "AWS::Events::EventBus");
    assert_eq!(resource(doc, REFRESH_QUEUE)["Type"], "AWS::SQS::Queue");

    // create-job sends each type's job to the queue its worker consumes, and the sweeper sends
    // its unfinished shards there again.
    for sender in ["create-job", SWEEPER_BINARY, REFRESH_SCHEDULER_BINARY] {
        let env = function(&all, sender).environment();
        for &t in SegmentType::ALL {
            let queue = ref_target(&env[&AwsResources::queue_url_var(t)]).expect("a queue reference");
            let worker = function(&all, &worker_binary(t));
            let sqs = event_sources(doc, worker.name).into_iter().next().expect("an event source mapping");
            assert_eq!(
                get_att(&sqs["EventSourceArn"]),
                Some((queue, "Arn")),
                "{t}: {sender} and the worker share the queue"
            );
        }
    }
}

#[test]
fn each_function_is_granted_only_what_it_uses() {
    check_grants(&template());
}

/// Every function's role allows what its code calls, on the resources it calls it on, and
/// nothing else.
fn check_grants(doc: &Value) {
    let all = functions(doc);
    let grants = |pairs: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        pairs.iter().map(|(a, r)| ((*a).to_owned(), (*r).to_owned())).collect()
    };
    let results = format!("ResultsBucket/{RESULTS_PREFIX}*");
    let uploads = format!("ResultsBucket/{IMPORTS_PREFIX}*");

    let mut create = grants(&[
        ("dynamodb:GetItem", "AccountDataTable"),
        ("dynamodb:PutItem", "JobsTable"),
        ("dynamodb:GetItem", "JobsTable"),
        ("dynamodb:UpdateItem", "JobsTable"),
        // The live-job limit counts the mandator's live markers; failing a job deletes its marker.
        ("dynamodb:Query", "JobsTable"),
        ("dynamodb:DeleteItem", "JobsTable"),
    ]);
    let env = function(&all, "create-job").environment();
    for &t in SegmentType::ALL {
        let queue = ref_target(&env[&AwsResources::queue_url_var(t)]).expect("a queue reference");
        create.insert(("sqs:SendMessage".to_owned(), queue.to_owned()));
    }
    assert_eq!(function(&all, "create-job").grants(), create);

    assert_eq!(
        function(&all, "jobs-api").grants(),
        grants(&[
            ("dynamodb:GetItem", "JobsTable"),
            ("dynamodb:Query", "JobsTable"),
            ("s3:GetObject", &results),
            ("s3:ListBucket", "ResultsBucket"),
        ])
    );

    assert_eq!(
        function(&all, "get-result").grants(),
        grants(&[("dynamodb:GetItem", "JobsTable"), ("s3:GetObject", &results), ("s3:ListBucket", "ResultsBucket")])
    );

    // A refresh creates its job as create-job does: the same grants on AccountData, Jobs and the
    // work queues, beside the segments' own.
    let mut segments_api = grants(&[
        ("dynamodb:GetItem", "SegmentsTable"),
        ("dynamodb:Query", "SegmentsTable"),
        ("dynamodb:PutItem", "SegmentsTable"),
        ("dynamodb:DeleteItem", "SegmentsTable"),
        ("dynamodb:BatchWriteItem", "SegmentsTable"),
        ("dynamodb:BatchGetItem", "AccountDataTable"),
    ]);
    segments_api.extend(create.iter().cloned());
    // Created, changed and deleted segments go to the stack's bus (and nowhere else); it starts
    // refreshes but never sends to the refresh queue.
    segments_api.insert(("events:PutEvents".to_owned(), EVENT_BUS.to_owned()));
    assert_eq!(function(&all, "segments-api").grants(), segments_api);

    // The scheduler finds what is due on the due index alone (the index's ARN), reads the due
    // items again in batches and writes them conditionally, creates jobs as create-job does (and reads them to see
    // whether they ended), and hands refreshes to the applier's queue. It publishes nothing.
    let mut scheduler = grants(&[
        ("dynamodb:Query", &format!("SegmentsTable/index/{DUE_INDEX}")),
        ("dynamodb:BatchGetItem", "SegmentsTable"),
        ("dynamodb:GetItem", "SegmentsTable"),
        ("dynamodb:PutItem", "SegmentsTable"),
        ("sqs:SendMessage", REFRESH_QUEUE),
    ]);
    scheduler.extend(create.iter().cloned());
    assert_eq!(function(&all, REFRESH_SCHEDULER_BINARY).grants(), scheduler);

    // The applier reads the job, its result and the users of selected accounts, records the
    // change feed and the members, publishes to the bus, signs a segment's callback with the
    // mandator's secret (a read of the Jobs table), sends itself the message that goes on and
    // polls its queue. It creates no job and writes neither the Jobs nor the AccountData table.
    assert_eq!(
        function(&all, REFRESH_APPLIER_BINARY).grants(),
        grants(&[
            ("dynamodb:GetItem", "SegmentsTable"),
            ("dynamodb:Query", "SegmentsTable"),
            ("dynamodb:PutItem", "SegmentsTable"),
            ("dynamodb:BatchWriteItem", "SegmentsTable"),
            ("dynamodb:GetItem", "JobsTable"),
            ("s3:GetObject", &results),
            ("s3:ListBucket", "ResultsBucket"),
            ("dynamodb:GetItem", "AccountDataTable"),
            ("dynamodb:Query", "AccountDataTable"),
            ("events:PutEvents", EVENT_BUS),
            ("sqs:SendMessage", REFRESH_QUEUE),
            ("sqs:ReceiveMessage", REFRESH_QUEUE),
            ("sqs:DeleteMessage", REFRESH_QUEUE),
            ("sqs:GetQueueAttributes", REFRESH_QUEUE),
        ])
    );

    assert_eq!(
        function(&all, "data-api").grants(),
        grants(&[
            ("dynamodb:GetItem", "AccountDataTable"),
            ("dynamodb:Query", "AccountDataTable"),
            ("dynamodb:PutItem", "AccountDataTable"),
            ("dynamodb:DeleteItem", "AccountDataTable"),
            ("dynamodb:ConditionCheckItem", "AccountDataTable"),
            ("dynamodb:BatchGetItem", "AccountDataTable"),
            ("dynamodb:Query", "SegmentsTable"),
            ("dynamodb:BatchWriteItem", "SegmentsTable"),
            // The imports: their records and lock, the presigned uploads, the queue of started ones.
            ("dynamodb:GetItem", "JobsTable"),
            ("dynamodb:PutItem", "JobsTable"),
            ("dynamodb:DeleteItem", "JobsTable"),
            ("s3:PutObject", &uploads),
            ("s3:GetObject", &uploads),
            ("s3:ListBucket", "ResultsBucket"),
            ("sqs:SendMessage", IMPORT_QUEUE),
        ])
    );

    // Downloads the uploads, writes users as the data API does, keeps the import's record, takes
    // the accounts it removes out of the segments, and polls its queue.
    assert_eq!(
        function(&all, "import-worker").grants(),
        grants(&[
            ("s3:GetObject", &uploads),
            ("dynamodb:GetItem", "AccountDataTable"),
            ("dynamodb:Query", "AccountDataTable"),
            ("dynamodb:PutItem", "AccountDataTable"),
            ("dynamodb:DeleteItem", "AccountDataTable"),
            ("dynamodb:ConditionCheckItem", "AccountDataTable"),
            ("dynamodb:BatchGetItem", "AccountDataTable"),
            ("dynamodb:GetItem", "JobsTable"),
            ("dynamodb:PutItem", "JobsTable"),
            ("dynamodb:DeleteItem", "JobsTable"),
            ("dynamodb:Query", "SegmentsTable"),
            ("dynamodb:BatchWriteItem", "SegmentsTable"),
            ("sqs:ReceiveMessage", IMPORT_QUEUE),
            ("sqs:DeleteMessage", IMPORT_QUEUE),
            ("sqs:GetQueueAttributes", IMPORT_QUEUE),
        ])
    );

    for &t in SegmentType::ALL {
        let queue = ref_target(&env[&AwsResources::queue_url_var(t)]).expect("a queue reference").to_owned();
        assert_eq!(
            function(&all, &worker_binary(t)).grants(),
            grants(&[
                ("dynamodb:Query", "AccountDataTable"),
                ("dynamodb:GetItem", "AccountDataTable"),
                ("dynamodb:GetItem", "JobsTable"),
                ("dynamodb:UpdateItem", "JobsTable"),
                // The completion's usage record and the live marker it deletes.
                ("dynamodb:PutItem", "JobsTable"),
                ("dynamodb:DeleteItem", "JobsTable"),
                ("s3:PutObject", &results),
                ("s3:GetObject", &results),
                ("s3:AbortMultipartUpload", &results),
                ("s3:ListBucket", "ResultsBucket"),
                ("sqs:ReceiveMessage", &queue),
                ("sqs:DeleteMessage", &queue),
                ("sqs:GetQueueAttributes", &queue),
                ("sqs:ChangeMessageVisibility", &queue),
            ]),
            "worker of {t}"
        );
    }

    // The failed job and its live marker, the callback secret, and the outbox for a callback
    // whose delivery gave up.
    let mut dead_letters = grants(&[
        ("dynamodb:UpdateItem", "JobsTable"),
        ("dynamodb:GetItem", "JobsTable"),
        ("dynamodb:DeleteItem", "JobsTable"),
        ("dynamodb:PutItem", "JobsTable"),
    ]);
    for dlq in dead_letter_queues(doc) {
        for action in ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"] {
            dead_letters.insert((action.to_owned(), dlq.clone()));
        }
    }
    assert_eq!(function(&all, "dlq-handler").grants(), dead_letters);

    // The sweeper reads the stalled jobs and the due callbacks from the progress index (on the
    // index's ARN alone), reads a job, the callback secret and a pending callback, moves a job's
    // watch and a pending callback's retry, fails a job (an update and the delete of its live
    // marker in one transaction), removes a delivered callback, keeps one that gave up, and sends
    // unfinished shards to every work queue.
    let mut sweeper = grants(&[
        ("dynamodb:Query", &format!("JobsTable/index/{PROGRESS_INDEX}")),
        ("dynamodb:GetItem", "JobsTable"),
        ("dynamodb:UpdateItem", "JobsTable"),
        ("dynamodb:DeleteItem", "JobsTable"),
        ("dynamodb:PutItem", "JobsTable"),
    ]);
    for &t in SegmentType::ALL {
        let queue = ref_target(&env[&AwsResources::queue_url_var(t)]).expect("a queue reference");
        sweeper.insert(("sqs:SendMessage".to_owned(), queue.to_owned()));
    }
    assert_eq!(function(&all, SWEEPER_BINARY).grants(), sweeper);

    // The console only answers with files it carries.
    assert_eq!(function(&all, CONSOLE_BINARY).grants(), BTreeSet::new());
}

/// The dead-letter queue of every work queue (the import queue's and the refresh queue's are not
/// ones: nothing reads those, an alarm calls an operator).
fn dead_letter_queues(doc: &Value) -> BTreeSet<String> {
    of_type(doc, "AWS::SQS::Queue")
        .into_iter()
        .filter(|(name, _)| *name != IMPORT_QUEUE && *name != REFRESH_QUEUE)
        .filter_map(|(_, q)| get_att(&q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]))
        .map(|(dlq, _)| dlq.to_owned())
        .collect()
}

#[test]
fn every_dead_letter_queue_feeds_the_dead_letter_handler() {
    let doc = template();
    let all = functions(&doc);
    let handler = function(&all, "dlq-handler");
    let sources: BTreeSet<String> = event_sources(&doc, handler.name)
        .into_iter()
        .map(|p| {
            assert!(strings(&p["FunctionResponseTypes"]).contains("ReportBatchItemFailures"));
            get_att(&p["EventSourceArn"]).expect("a queue ARN").0.to_owned()
        })
        .collect();
    let dlqs = dead_letter_queues(&doc);
    assert_eq!(dlqs.len(), SegmentType::ALL.len());
    assert_eq!(sources, dlqs, "every dead-letter queue, and nothing else");
    assert!(
        alarm_on(&doc, "AWS/Lambda", "FunctionName", |v| ref_target(v) == Some(handler.name)),
        "an alarm on the handler's errors"
    );
}

// ---------------------------------------------------------------------------------------------
// API, authorizer, scopes
// ---------------------------------------------------------------------------------------------

#[test]
fn every_served_route_is_a_template_route_with_its_scope_and_nothing_else() {
    check_routes(&template());
}

fn check_routes(doc: &Value) {
    let mut expected = BTreeSet::new();
    for route in ROUTES {
        let binary = binary_of(route.function).to_owned();
        if !route.path.contains("{segmentType}") {
            // The segments management API and the data API: reading and writing scopes.
            let scope = if route.path == "/usage" {
                USAGE_SCOPE
            } else if route.function == Function::DataApi {
                if route.method == "GET" { data_api::READ_SCOPE } else { data_api::WRITE_SCOPE }
            } else if matches!(route.method, "GET" | "HEAD") {
                READ_SCOPE
            } else {
                WRITE_SCOPE
            };
            expected.insert(TemplateRoute {
                method: route.method.to_owned(),
                path: route.path.to_owned(),
                scopes: BTreeSet::from([scope.to_owned()]),
                binary,
            });
            continue;
        }
        for &t in SegmentType::ALL {
            expected.insert(TemplateRoute {
                method: route.method.to_owned(),
                path: route.path.replace("{segmentType}", t.as_str()),
                scopes: BTreeSet::from([t.scope()]),
                binary: binary.clone(),
            });
        }
        // Any other type: still JWT-protected, answered 400 by the function.
        expected.insert(TemplateRoute {
            method: route.method.to_owned(),
            path: route.path.to_owned(),
            scopes: BTreeSet::new(),
            binary,
        });
    }
    assert_eq!(template_routes(doc), expected);
    assert_eq!(console_routes(doc), expected_console_routes());
}

#[test]
fn the_console_routes_have_no_authorizer_and_every_other_route_the_jwt_one() {
    let doc = template();
    assert_eq!(console_routes(&doc), expected_console_routes());
    let authorizer = api_authorizer(&doc);
    let mut protected = 0;
    for f in functions(&doc) {
        for (event, p) in f.events("HttpApi") {
            if f.binary == CONSOLE_BINARY {
                assert_eq!(p["Auth"]["Authorizer"], "NONE", "{}.{event}", f.name);
            } else {
                assert_eq!(p["Auth"]["Authorizer"], authorizer.as_str(), "{}.{event}: JWT-protected", f.name);
                protected += 1;
            }
        }
        if f.binary == CONSOLE_BINARY {
            let events = f.properties["Events"].as_object().expect("the console's events");
            assert_eq!(events.len(), expected_console_routes().len(), "the console has its HTTP routes only");
        }
    }
    assert_eq!(protected, template_routes(&doc).len(), "every API route is JWT-protected");
}

#[test]
fn the_console_function_has_no_permissions_and_signs_in_through_the_console_client() {
    let doc = template();
    let all = functions(&doc);
    let console = function(&all, CONSOLE_BINARY);
    assert_eq!(console.properties["Policies"], json!([]), "no policy statements: it calls no AWS service");
    assert!(console.properties["Role"].is_null(), "SAM's role: the basic execution role");
    assert!(event_sources(&doc, console.name).is_empty());
    assert_eq!(as_u64(&console.properties["MemorySize"], "MemorySize"), 128);
    assert_eq!(as_u64(&console.properties["Timeout"], "Timeout"), 3);

    // With the custom domain, the hosted UI of the pool's domain and the console's client with
    // its scopes; without it, none of the three (token sign-in).
    let env = console.environment();
    assert_eq!(
        env[COGNITO_DOMAIN_VAR],
        if_custom_domain(json!({"Fn::Sub": "https://${UserPoolDomain}.auth.${AWS::Region}.amazoncognito.com"}))
    );
    assert_eq!(env[CLIENT_ID_VAR], if_custom_domain(json!({ "Ref": CONSOLE_CLIENT })));
    let scopes = &env[SCOPES_VAR];
    assert_eq!(scopes, &if_custom_domain(scopes["Fn::If"][1].clone()), "CONSOLE_SCOPES under the condition");
    let asked: BTreeSet<String> =
        scopes["Fn::If"][1].as_str().expect("a scope list").split_whitespace().map(str::to_owned).collect();
    let allowed = strings(&resource(&doc, CONSOLE_CLIENT)["Properties"]["AllowedOAuthScopes"]);
    assert_eq!(asked, allowed, "the console asks for every scope its client may have");

    let url = &doc["Outputs"]["ConsoleUrl"]["Value"];
    assert_eq!(
        url,
        &json!({"Fn::If": [
            CUSTOM_DOMAIN,
            {"Fn::Sub": format!("https://${{ApiDomainName}}{CONSOLE_PATH}/")},
            {"Fn::Sub": format!("https://${{Api}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}{CONSOLE_PATH}/")},
        ]})
    );
}

#[test]
fn the_console_client_is_a_public_code_flow_client_of_the_custom_domain_and_in_the_audience() {
    let doc = template();
    // The custom domain: both parameters, empty by default.
    for parameter in ["ApiDomainName", "ApiCertificateArn"] {
        assert_eq!(doc["Parameters"][parameter]["Type"], "String", "{parameter}");
        assert_eq!(doc["Parameters"][parameter]["Default"], "", "{parameter}: optional");
    }
    let given = |parameter: &str| json!({"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]});
    assert_eq!(
        doc["Conditions"][CUSTOM_DOMAIN],
        json!({"Fn::And": [given("ApiDomainName"), given("ApiCertificateArn")]})
    );
    let domain = resource(&doc, "ApiDomain");
    assert_eq!(domain["Type"], "AWS::ApiGatewayV2::DomainName");
    assert_eq!(domain["Condition"], CUSTOM_DOMAIN);
    assert_eq!(ref_target(&domain["Properties"]["DomainName"]), Some("ApiDomainName"));
    let configuration = &domain["Properties"]["DomainNameConfigurations"][0];
    assert_eq!(ref_target(&configuration["CertificateArn"]), Some("ApiCertificateArn"));
    let mapping = resource(&doc, "ApiDomainMapping");
    assert_eq!(mapping["Type"], "AWS::ApiGatewayV2::ApiMapping");
    assert_eq!(mapping["Condition"], CUSTOM_DOMAIN);
    assert_eq!(ref_target(&mapping["Properties"]["DomainName"]), Some("ApiDomain"));
    assert_eq!(ref_target(&mapping["Properties"]["ApiId"]), Some("Api"));
    assert!(mapping["Properties"]["ApiMappingKey"].is_null(), "the API at the root of the domain");

    let client = resource(&doc, CONSOLE_CLIENT);
    assert_eq!(client["Type"], "AWS::Cognito::UserPoolClient");
    assert_eq!(client["Condition"], CUSTOM_DOMAIN);
    assert!(strings(&client["DependsOn"]).contains("SegmentsResourceServer"), "its scopes exist first");
    let p = &client["Properties"];
    assert_eq!(ref_target(&p["UserPoolId"]), Some("UserPool"));
    assert_eq!(p["GenerateSecret"], false, "a public client: a page in a browser keeps no secret");
    assert_eq!(p["AllowedOAuthFlows"], json!(["code"]), "authorization code (with PKCE) only");
    assert_eq!(p["AllowedOAuthFlowsUserPoolClient"], true);
    assert_eq!(p["SupportedIdentityProviders"], json!(["COGNITO"]));
    assert_eq!(p["ExplicitAuthFlows"], json!(["ALLOW_REFRESH_TOKEN_AUTH"]), "passwords go to the hosted UI only");
    assert_eq!(p["PreventUserExistenceErrors"], "ENABLED");
    assert_eq!(p["EnableTokenRevocation"], true);
    assert_eq!(p["TokenValidityUnits"]["AccessToken"], "minutes");
    assert!(as_u64(&p["AccessTokenValidity"], "AccessTokenValidity") <= 60, "short-lived access tokens");
    let console_url = json!({"Fn::Sub": format!("https://${{ApiDomainName}}{CONSOLE_PATH}/")});
    assert_eq!(p["CallbackURLs"], json!([console_url]), "the code goes to the console on the custom domain only");
    assert_eq!(p["LogoutURLs"], json!([console_url]));
    let mut scopes = defined_scopes(&doc);
    scopes.insert("openid".to_owned());
    assert_eq!(strings(&p["AllowedOAuthScopes"]), scopes, "openid and every scope of the service");

    // Its tokens carry its client id: the authorizer accepts them only with it in the audience.
    let authorizer = api_authorizer(&doc);
    let jwt = &resource(&doc, "Api")["Properties"]["Auth"]["Authorizers"][&authorizer]["JwtConfiguration"];
    let audience = jwt["audience"].as_array().expect("an audience list");
    assert!(audience.contains(&if_custom_domain(json!({ "Ref": CONSOLE_CLIENT }))), "in the audience, conditionally");

    // Without the custom domain the stack must still deploy: nothing names the conditional
    // resources outside their condition.
    for conditional in [CONSOLE_CLIENT, "ApiDomain", "ApiDomainMapping"] {
        assert_eq!(references_outside(&doc, conditional, CUSTOM_DOMAIN), Vec::<String>::new(), "{conditional}");
    }
}

#[test]
fn the_console_client_id_reaches_every_api_function_under_the_condition() {
    let doc = template();
    let all = functions(&doc);
    let api: BTreeSet<&str> = ROUTES.iter().map(|r| binary_of(r.function)).collect();
    let reading_the_mandator: BTreeSet<&str> =
        all.iter().filter(|f| f.environment().contains_key(MANDATOR_CLAIM_VAR)).map(|f| f.binary.as_str()).collect();
    assert_eq!(reading_the_mandator, api, "the functions that read the mandator from a token are the API's");
    for f in &all {
        let value = f.environment().get(CONSOLE_CLIENT_ID_VAR).cloned();
        if api.contains(f.binary.as_str()) || f.binary == CONSOLE_BINARY {
            assert_eq!(value, Some(if_custom_domain(json!({ "Ref": CONSOLE_CLIENT }))), "{}", f.name);
        } else {
            assert_eq!(value, None, "{}: reads no token", f.name);
        }
    }
}

#[test]
fn the_authorizer_trusts_the_user_pool_and_the_app_client() {
    let doc = template();
    let name = api_authorizer(&doc);
    let authorizer = &resource(&doc, "Api")["Properties"]["Auth"]["Authorizers"][&name];
    assert_eq!(authorizer["IdentitySource"], "$request.header.Authorization");
    let jwt = &authorizer["JwtConfiguration"];
    assert_eq!(jwt["issuer"]["Fn::Sub"], "https://cognito-idp.${AWS::Region}.amazonaws.com/${UserPool}");
    let audience = jwt["audience"].as_array().expect("an audience list");
    assert!(audience.iter().any(|a| ref_target(a) == Some("ExampleClient")), "the example client is an audience");
    assert_eq!(resource(&doc, "UserPool")["Type"], "AWS::Cognito::UserPool");
}

#[test]
fn the_resource_server_defines_every_scope_and_the_example_client_uses_client_credentials() {
    let doc = template();
    let (_, server) =
        of_type(&doc, "AWS::Cognito::UserPoolResourceServer").into_iter().next().expect("a resource server");
    assert_eq!(server["Properties"]["Identifier"], "segments");
    let defined = defined_scopes(&doc);
    let mut expected: BTreeSet<String> = SegmentType::ALL.iter().map(|t| t.scope()).collect();
    expected
        .extend(["segments/definitions.read", "segments/definitions.write", "segments/usage.read"].map(String::from));
    expected.extend([data_api::READ_SCOPE, data_api::WRITE_SCOPE].map(String::from));
    assert_eq!(defined, expected);

    for route in template_routes(&doc) {
        assert!(route.scopes.is_subset(&defined), "{route:?} uses an undefined scope");
    }

    let client = &resource(&doc, "ExampleClient")["Properties"];
    assert_eq!(client["AllowedOAuthFlows"], json!(["client_credentials"]));
    assert_eq!(client["AllowedOAuthFlowsUserPoolClient"], true);
    assert_eq!(client["GenerateSecret"], true);
    let scopes = strings(&client["AllowedOAuthScopes"]);
    assert!(scopes.is_subset(&defined), "the example client asks for defined scopes only");
    for &t in SegmentType::ALL {
        assert!(scopes.contains(&t.scope()), "the example client may use {t}");
    }
    for scope in [data_api::READ_SCOPE, data_api::WRITE_SCOPE] {
        assert!(scopes.contains(scope), "the example client may load its account data ({scope})");
    }
    assert_eq!(ref_target(&resource(&doc, "UserPoolDomain")["Properties"]["UserPoolId"]), Some("UserPool"));
}

#[test]
fn the_openapi_paths_are_the_template_routes() {
    let doc = template();
    let text = std::fs::read_to_string(Path::new(ROOT).join("infra/openapi.json")).expect("infra/openapi.json");
    let openapi: Value = serde_json::from_str(&text).expect("openapi.json is JSON");
    let mut documented = BTreeSet::new();
    for (path, item) in openapi["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    // Both name each segment type's routes on their own (`/segments/highBalance`). The deployed
    // `{segmentType}` routes only answer 400 for a type that does not exist, so they are no
    // operation of the contract; they need no scope because they never reach data.
    let (catch_all, typed): (Vec<_>, Vec<_>) =
        template_routes(&doc).into_iter().partition(|r| r.path.contains("{segmentType}"));
    let deployed: BTreeSet<(String, String)> = typed.into_iter().map(|r| (r.method, r.path)).collect();
    assert_eq!(documented, deployed);
    assert_eq!(catch_all.len(), 4, "create, list, read and export of an unknown type: {catch_all:?}");
    assert!(catch_all.iter().all(|r| r.scopes.is_empty()), "{catch_all:?}");
    // The console's routes are deployed on the same API but are no part of its contract: they
    // serve the console's own files, without a token, to a browser. They stay out of the document.
    let console = console_routes(&doc);
    assert!(!console.is_empty());
    assert!(documented.is_disjoint(&console), "the console's files are not API operations");
    assert!(
        documented.iter().all(|(_, path)| path != CONSOLE_PATH && !path.starts_with(&format!("{CONSOLE_PATH}/"))),
        "no documented path under {CONSOLE_PATH}"
    );
}

// ---------------------------------------------------------------------------------------------
// Queues and workers
// ---------------------------------------------------------------------------------------------

#[test]
fn every_worker_consumes_its_own_queue_which_has_a_dead_letter_queue() {
    check_workers(&template());
}

fn check_workers(doc: &Value) {
    let all = functions(doc);
    let mut queues = BTreeSet::new();
    for &t in SegmentType::ALL {
        let worker = function(&all, &worker_binary(t));
        assert!(
            worker.events("SQS").is_empty(),
            "{t}: no SAM SQS event (it would attach a managed policy on every queue)"
        );
        let sources = event_sources(doc, worker.name);
        assert_eq!(sources.len(), 1, "{t}: one event source mapping");
        let sqs = sources[0];
        assert!(strings(&sqs["FunctionResponseTypes"]).contains("ReportBatchItemFailures"), "{t}");
        let batch = as_u64(&sqs["BatchSize"], "BatchSize");
        assert!((1..=10).contains(&batch), "{t}: batch size {batch}");
        assert!(!sqs["ScalingConfig"]["MaximumConcurrency"].is_null(), "{t}: maximum concurrency");

        let (queue_name, "Arn") = get_att(&sqs["EventSourceArn"]).expect("the queue's ARN") else {
            panic!("{t}: queue ARN")
        };
        assert!(
            worker.grants().contains(&("sqs:ReceiveMessage".to_owned(), queue_name.to_owned())),
            "{t}: the worker's role may poll its queue"
        );
        assert!(queues.insert(queue_name.to_owned()), "{t}: its queue is its own");
        let queue = resource(doc, queue_name);
        assert_eq!(queue["Type"], "AWS::SQS::Queue");
        let queue = &queue["Properties"];
        assert!(queue["FifoQueue"].is_null(), "{t}: a standard queue");

        let timeout = as_u64(&worker.properties["Timeout"], "Timeout");
        // The worker holds its messages (heartbeat, backoff), so the queue needs only what Lambda
        // requires, the function's timeout, and not much more: a message of an invocation that
        // died comes back within minutes.
        let visibility = as_u64(&queue["VisibilityTimeout"], "VisibilityTimeout");
        assert!(
            (timeout..=timeout + 120).contains(&visibility),
            "{t}: visibility {visibility} s, not within 2 minutes above the {timeout} s timeout"
        );
        assert_eq!(
            ref_target(&worker.environment()[segments_aws::WORK_QUEUE_URL_VAR]),
            Some(queue_name),
            "{t}: WORK_QUEUE_URL names its own queue"
        );

        let redrive = &queue["RedrivePolicy"];
        let (dlq, "Arn") = get_att(&redrive["deadLetterTargetArn"]).expect("a dead-letter queue") else {
            panic!("{t}: DLQ ARN")
        };
        assert_ne!(dlq, queue_name);
        assert_eq!(resource(doc, dlq)["Type"], "AWS::SQS::Queue");
        assert!(queues.insert(dlq.to_owned()), "{t}: its dead-letter queue is its own");
        let max_receive = as_u64(&redrive["maxReceiveCount"], "maxReceiveCount");
        assert!(max_receive >= MIN_MAX_RECEIVE_COUNT, "{t}: maxReceiveCount {max_receive}");
        assert_eq!(
            worker.environment()[MAX_RECEIVE_COUNT_VAR],
            json!(max_receive.to_string()),
            "{t}: the worker fails the job on the last receive"
        );

        assert!(alarm_on(doc, "AWS/SQS", "QueueName", |v| get_att(v) == Some((dlq, "QueueName"))), "{t}: DLQ alarm");
        assert!(
            alarm_on(doc, "AWS/Lambda", "FunctionName", |v| ref_target(v) == Some(worker.name)),
            "{t}: worker errors alarm"
        );
    }
}

/// The import queue: filled by the data API's start, consumed by the import worker.
const IMPORT_QUEUE: &str = "ImportQueue";
/// The import worker's ephemeral storage holds both files and what it spills grouping them.
const MIN_IMPORT_STORAGE_MB: u64 = 8 * 1024;

#[test]
fn the_import_worker_consumes_the_import_queue_alone_with_room_for_large_files() {
    check_import_worker(&template());
}

fn check_import_worker(doc: &Value) {
    let all = functions(doc);
    let worker = function(&all, "import-worker");
    assert!(worker.events("SQS").is_empty(), "no SAM SQS event (it would attach a managed policy on every queue)");
    let sources = event_sources(doc, worker.name);
    assert_eq!(sources.len(), 1, "one event source mapping");
    let sqs = sources[0];
    assert_eq!(get_att(&sqs["EventSourceArn"]), Some((IMPORT_QUEUE, "Arn")));
    assert_eq!(as_u64(&sqs["BatchSize"], "BatchSize"), 1, "one import per invocation");
    assert!(strings(&sqs["FunctionResponseTypes"]).contains("ReportBatchItemFailures"));
    assert!(!sqs["ScalingConfig"]["MaximumConcurrency"].is_null(), "maximum concurrency");

    let timeout = as_u64(&worker.properties["Timeout"], "Timeout");
    assert_eq!(timeout, 900, "the Lambda maximum");
    let storage = as_u64(&worker.properties["EphemeralStorage"]["Size"], "EphemeralStorage.Size");
    assert!((MIN_IMPORT_STORAGE_MB..=10240).contains(&storage), "ephemeral storage {storage} MB");

    let queue = resource(doc, IMPORT_QUEUE);
    assert_eq!(queue["Type"], "AWS::SQS::Queue");
    let queue = &queue["Properties"];
    let visibility = as_u64(&queue["VisibilityTimeout"], "VisibilityTimeout");
    assert!(visibility >= VISIBILITY_PER_TIMEOUT * timeout, "visibility {visibility} s < 6 x {timeout} s");
    let redrive = &queue["RedrivePolicy"];
    let (dlq, "Arn") = get_att(&redrive["deadLetterTargetArn"]).expect("a dead-letter queue") else {
        panic!("the import queue's DLQ ARN")
    };
    assert_eq!(resource(doc, dlq)["Type"], "AWS::SQS::Queue");
    let max_receive = as_u64(&redrive["maxReceiveCount"], "maxReceiveCount");
    assert_eq!(
        worker.environment()[MAX_RECEIVE_COUNT_VAR],
        json!(max_receive.to_string()),
        "the worker fails the import on the last receive"
    );
    assert!(!dead_letter_queues(doc).contains(dlq), "the dead-letter handler reads job messages only");
    assert!(alarm_on(doc, "AWS/SQS", "QueueName", |v| get_att(v) == Some((dlq, "QueueName"))), "DLQ alarm");
    assert!(alarm_on(doc, "AWS/Lambda", "FunctionName", |v| ref_target(v) == Some(worker.name)), "errors alarm");

    let data_api = function(&all, "data-api").environment();
    assert_eq!(ref_target(&data_api[IMPORT_QUEUE_URL_VAR]), Some(IMPORT_QUEUE), "the data API queues what it starts");
}

fn alarm_on(doc: &Value, namespace: &str, dimension: &str, matches: impl Fn(&Value) -> bool) -> bool {
    of_type(doc, "AWS::CloudWatch::Alarm").into_iter().any(|(_, alarm)| {
        let p = &alarm["Properties"];
        p["Namespace"] == namespace
            && p["Dimensions"]
                .as_array()
                .is_some_and(|ds| ds.iter().any(|d| d["Name"] == dimension && matches(&d["Value"])))
            && p["AlarmActions"].as_array().is_some_and(|a| !a.is_empty())
    })
}

// ---------------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------------

/// A table keyed `pk`/`sk` (S), on demand, recoverable and encrypted, whose attribute definitions
/// are its keys and those of `indexes`, which are its only secondary indexes.
fn assert_table(doc: &Value, name: &str, index_attributes: &[(&str, &str)], indexes: Value) -> Value {
    let table = &resource(doc, name)["Properties"];
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST", "{name}: on demand");
    assert_eq!(
        table["KeySchema"],
        json!([{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}, {"AttributeName": SORT_KEY, "KeyType": "RANGE"}]),
        "{name}"
    );
    let mut definitions = vec![
        json!({"AttributeName": PARTITION_KEY, "AttributeType": "S"}),
        json!({"AttributeName": SORT_KEY, "AttributeType": "S"}),
    ];
    definitions.extend(index_attributes.iter().map(|(a, t)| json!({"AttributeName": a, "AttributeType": t})));
    assert_eq!(table["AttributeDefinitions"], Value::Array(definitions), "{name}");
    assert_eq!(table["GlobalSecondaryIndexes"], indexes, "{name}: secondary indexes");
    assert!(table["LocalSecondaryIndexes"].is_null(), "{name}: no local secondary index");
    assert_eq!(table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true, "{name}");
    assert_eq!(table["SSESpecification"]["SSEEnabled"], true, "{name}");
    table.clone()
}

#[test]
fn the_tables_have_the_code_keys_and_indexes_and_the_jobs_expire() {
    check_tables(&template());
}

/// The keys the code reads and writes; the Jobs table's TTL, and its progress index exactly as
/// `segments_aws::provision` creates it (sparse on the live markers' watch, the counts projected);
/// the Segments table's due index (epoch seconds compared as numbers, keys only).
fn check_tables(doc: &Value) {
    assert_table(doc, "AccountDataTable", &[], Value::Null);
    // Sparse: only unfinished refreshes and live scheduled segments carry its keys; keys only,
    // the scheduler reads each item again.
    let due_index = json!([{
        "IndexName": DUE_INDEX,
        "KeySchema": [
            {"AttributeName": DUE_PARTITION, "KeyType": "HASH"},
            {"AttributeName": DUE_AT, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "KEYS_ONLY"},
    }]);
    assert_table(doc, "SegmentsTable", &[(DUE_PARTITION, "S"), (DUE_AT, "N")], due_index);
    let progress_index = json!([{
        "IndexName": PROGRESS_INDEX,
        "KeySchema": [
            {"AttributeName": SWEEP_PARTITION, "KeyType": "HASH"},
            {"AttributeName": PROGRESS_AT, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": [SHARDS_SEEN, IDLE_SWEEPS]},
    }]);
    let jobs = assert_table(doc, "JobsTable", &[(SWEEP_PARTITION, "S"), (PROGRESS_AT, "N")], progress_index);
    assert_eq!(jobs["TimeToLiveSpecification"], json!({"AttributeName": JOBS_TTL_ATTRIBUTE, "Enabled": true}));
}

// ---------------------------------------------------------------------------------------------
// The sweeper
// ---------------------------------------------------------------------------------------------

/// The sweeper's binary (functions/sweeper).
const SWEEPER_BINARY: &str = "sweeper";
/// The longest a worker runs on one shard: the Lambda maximum, its timeout.
const WORKER_TIMEOUT_MINUTES: u64 = 15;

#[test]
fn the_sweeper_runs_every_sweep_interval_with_the_codes_defaults_as_parameters() {
    check_sweeper(&template());
}

/// The sweeper runs on a schedule of `SWEEP_INTERVAL` and nothing else invokes it; it ends within
/// that interval; its deadline and re-sends are parameters whose defaults are the code's
/// (`SweepConfig::default()`), the deadline above a worker's longest run.
fn check_sweeper(doc: &Value) {
    let all = functions(doc);
    let sweeper = function(&all, SWEEPER_BINARY);
    let events: Vec<&Value> =
        sweeper.properties["Events"].as_object().expect("the sweeper's events").values().collect();
    assert_eq!(events.len(), 1, "{}: one event, its schedule", sweeper.name);
    let schedule = events[0];
    assert_eq!(schedule["Type"], "Schedule", "{}: a Schedule event", sweeper.name);
    let interval_minutes = SWEEP_INTERVAL.as_secs() / 60;
    assert_eq!(SWEEP_INTERVAL.as_secs() % 60, 0, "the interval is whole minutes");
    assert_eq!(
        schedule["Properties"]["Schedule"],
        format!("rate({interval_minutes} minutes)"),
        "the schedule is SWEEP_INTERVAL of the code"
    );
    assert_ne!(schedule["Properties"]["Enabled"], false, "the schedule is enabled");
    assert!(event_sources(doc, sweeper.name).is_empty(), "nothing but the schedule invokes the sweeper");
    let timeout = as_u64(&sweeper.properties["Timeout"], "Timeout");
    assert!(timeout <= SWEEP_INTERVAL.as_secs(), "a sweep ends within the interval: {timeout} s");

    let defaults = SweepConfig::default();
    let env = sweeper.environment();
    for (variable, parameter, default) in [
        (
            PROGRESS_DEADLINE_MINUTES_VAR,
            "ProgressDeadlineMinutes",
            defaults.progress_deadline.num_minutes().unsigned_abs(),
        ),
        (MAX_RESENDS_VAR, "MaxResends", u64::from(defaults.max_resends)),
    ] {
        assert_eq!(ref_target(&env[variable]), Some(parameter), "{variable} is the parameter {parameter}");
        let declared = &doc["Parameters"][parameter];
        assert_eq!(declared["Type"], "Number", "{parameter}");
        assert_eq!(as_u64(&declared["Default"], parameter), default, "{parameter}: the code's default");
        assert!(declared["Description"].as_str().is_some_and(|d| d.contains(variable)), "{parameter} names {variable}");
    }
    let least_deadline = as_u64(&doc["Parameters"]["ProgressDeadlineMinutes"]["MinValue"], "MinValue");
    assert!(
        least_deadline > WORKER_TIMEOUT_MINUTES,
        "a deadline of {least_deadline} minutes would send the shards of a job still running again"
    );
    for worker in all.iter().filter(|f| f.binary.starts_with("worker-")) {
        assert_eq!(as_u64(&worker.properties["Timeout"], "Timeout"), WORKER_TIMEOUT_MINUTES * 60, "{}", worker.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Dynamic segments: the event bus, the refresh scheduler and the refresh applier
// ---------------------------------------------------------------------------------------------

/// The bus segment events are published to.
const EVENT_BUS: &str = "SegmentEventBus";
/// The queue of refreshes to apply, and its dead-letter queue.
const REFRESH_QUEUE: &str = "RefreshQueue";
const REFRESH_DEAD_LETTER_QUEUE: &str = "RefreshDeadLetterQueue";
/// The binaries of functions/refresh-scheduler and functions/refresh-applier.
const REFRESH_SCHEDULER_BINARY: &str = "refresh-scheduler";
const REFRESH_APPLIER_BINARY: &str = "refresh-applier";

#[test]
fn the_refresh_scheduler_ticks_every_poll_interval_and_the_applier_consumes_the_refresh_queue() {
    check_refreshes(&template());
}

/// The bus is the stack's own and an output; the scheduler runs on a schedule of the code's poll
/// interval and nothing else, and ends within it; the applier consumes the refresh queue alone,
/// one message at a time with partial batch failures, and has the whole Lambda maximum; the
/// queue's messages come back only once a dead run's lease is over; a message that keeps failing
/// is dead-lettered and an operator called.
fn check_refreshes(doc: &Value) {
    let bus = resource(doc, EVENT_BUS);
    assert_eq!(bus["Type"], "AWS::Events::EventBus");
    let bus_name = bus["Properties"]["Name"]["Fn::Sub"].as_str().expect("the bus's name is a Fn::Sub");
    assert!(bus_name.contains("${AWS::StackName}"), "the bus is named after the stack: {bus_name}");
    assert_eq!(ref_target(&doc["Outputs"]["SegmentEventBusName"]["Value"]), Some(EVENT_BUS), "the bus's name");
    assert_eq!(get_att(&doc["Outputs"]["SegmentEventBusArn"]["Value"]), Some((EVENT_BUS, "Arn")), "the bus's ARN");

    let all = functions(doc);
    let scheduler = function(&all, REFRESH_SCHEDULER_BINARY);
    let events: Vec<&Value> =
        scheduler.properties["Events"].as_object().expect("the scheduler's events").values().collect();
    assert_eq!(events.len(), 1, "{}: one event, its schedule", scheduler.name);
    assert_eq!(events[0]["Type"], "Schedule", "{}: a Schedule event", scheduler.name);
    let interval = RefreshSettings::default().poll_interval.num_seconds().unsigned_abs();
    assert_eq!(interval % 60, 0, "the poll interval is whole minutes");
    let minutes = interval / 60;
    let rate = if minutes == 1 { "rate(1 minute)".to_owned() } else { format!("rate({minutes} minutes)") };
    assert_eq!(events[0]["Properties"]["Schedule"], rate.as_str(), "the schedule is the code's poll interval");
    assert_ne!(events[0]["Properties"]["Enabled"], false, "the schedule is enabled");
    assert!(event_sources(doc, scheduler.name).is_empty(), "nothing but the schedule invokes the scheduler");
    let timeout = as_u64(&scheduler.properties["Timeout"], "Timeout");
    assert!(timeout <= interval, "a tick ends within the interval: {timeout} s");

    let applier = function(&all, REFRESH_APPLIER_BINARY);
    assert!(applier.events("SQS").is_empty(), "no SAM SQS event (it would attach a managed policy on every queue)");
    assert!(applier.properties["Events"].is_null(), "nothing but its queue invokes the applier");
    let sources = event_sources(doc, applier.name);
    assert_eq!(sources.len(), 1, "one event source mapping");
    let sqs = sources[0];
    assert_eq!(get_att(&sqs["EventSourceArn"]), Some((REFRESH_QUEUE, "Arn")), "the applier consumes the refresh queue");
    assert_eq!(as_u64(&sqs["BatchSize"], "BatchSize"), 1, "one refresh per invocation");
    assert_eq!(strings(&sqs["FunctionResponseTypes"]), BTreeSet::from(["ReportBatchItemFailures".to_owned()]));
    assert!(!sqs["ScalingConfig"]["MaximumConcurrency"].is_null(), "maximum concurrency");
    let applier_timeout = as_u64(&applier.properties["Timeout"], "Timeout");
    assert_eq!(applier_timeout, 900, "the Lambda maximum");
    let budget = RefreshSettings::default().budget.as_secs();
    assert!(budget < applier_timeout, "a run saves its cursor ({budget} s) before its timeout ({applier_timeout} s)");
    let consumers: Vec<&Value> = of_type(doc, "AWS::Lambda::EventSourceMapping")
        .into_iter()
        .map(|(_, m)| &m["Properties"])
        .filter(|p| get_att(&p["EventSourceArn"]) == Some((REFRESH_QUEUE, "Arn")))
        .collect();
    assert_eq!(consumers.len(), 1, "the applier alone consumes the refresh queue");

    let queue = resource(doc, REFRESH_QUEUE);
    assert_eq!(queue["Type"], "AWS::SQS::Queue");
    let queue = &queue["Properties"];
    assert!(queue["FifoQueue"].is_null(), "a standard queue");
    assert_eq!(queue["SqsManagedSseEnabled"], true, "encrypted like the other queues");
    let visibility = as_u64(&queue["VisibilityTimeout"], "VisibilityTimeout");
    let lease = LEASE.num_seconds().unsigned_abs();
    assert!(
        visibility > applier_timeout && visibility > lease,
        "visibility {visibility} s: a message comes back after the {applier_timeout} s timeout and the {lease} s lease"
    );
    assert!(visibility <= applier_timeout + 120, "a dead run's refresh goes on within minutes: {visibility} s");
    let redrive = &queue["RedrivePolicy"];
    assert_eq!(
        get_att(&redrive["deadLetterTargetArn"]),
        Some((REFRESH_DEAD_LETTER_QUEUE, "Arn")),
        "the refresh queue has its own dead-letter queue"
    );
    let receives = as_u64(&redrive["maxReceiveCount"], "maxReceiveCount");
    for &t in SegmentType::ALL {
        let worker = function(&all, &worker_binary(t));
        let source = event_sources(doc, worker.name).into_iter().next().expect("the worker's event source mapping");
        let (work_queue, _) = get_att(&source["EventSourceArn"]).expect("the work queue's ARN");
        let work = as_u64(&resource(doc, work_queue)["Properties"]["RedrivePolicy"]["maxReceiveCount"], "receives");
        assert_eq!(receives, work, "the refresh queue's maxReceiveCount is the one of the work queue {work_queue}");
    }
    assert!(receives >= MIN_MAX_RECEIVE_COUNT, "maxReceiveCount {receives}");
    let dead_letters = resource(doc, REFRESH_DEAD_LETTER_QUEUE);
    assert_eq!(dead_letters["Type"], "AWS::SQS::Queue");
    assert_eq!(dead_letters["Properties"]["SqsManagedSseEnabled"], true, "the dead letters are encrypted too");
    // Nothing consumes the dead-letter queue: what waits there is what arrived.
    let waiting = of_type(doc, "AWS::CloudWatch::Alarm").into_iter().any(|(_, alarm)| {
        let p = &alarm["Properties"];
        p["Namespace"] == "AWS/SQS"
            && p["MetricName"] == "ApproximateNumberOfMessagesVisible"
            && p["Dimensions"].as_array().is_some_and(|ds| {
                ds.iter().any(|d| get_att(&d["Value"]) == Some((REFRESH_DEAD_LETTER_QUEUE, "QueueName")))
            })
            && as_u64(&p["Threshold"], "Threshold") == 0
            && p["ComparisonOperator"] == "GreaterThanThreshold"
            && p["AlarmActions"].as_array().is_some_and(|a| a.iter().any(|t| ref_target(t) == Some("AlarmTopic")))
    });
    assert!(waiting, "an alarm on any refresh message in the dead-letter queue");
}

#[test]
fn what_must_not_be_lost_is_kept_when_the_stack_is_deleted_or_replaced() {
    check_kept(&template());
}

/// The customer data and the mandators' identities: the three tables (account data, segments,
/// jobs with usage records and callback secrets) and the user pool survive a deleted or replaced
/// stack, and the pool refuses deletion while its protection is on.
fn check_kept(doc: &Value) {
    for name in ["AccountDataTable", "SegmentsTable", "JobsTable", "UserPool"] {
        let r = resource(doc, name);
        assert_eq!(r["DeletionPolicy"], "Retain", "{name}: DeletionPolicy");
        assert_eq!(r["UpdateReplacePolicy"], "Retain", "{name}: UpdateReplacePolicy");
    }
    let tables: BTreeSet<&String> =
        resources(doc).iter().filter(|(_, r)| r["Type"] == "AWS::DynamoDB::Table").map(|(n, _)| n).collect();
    assert_eq!(tables.len(), 3, "a new table needs its place in this list: {tables:?}");
    assert_eq!(resource(doc, "UserPool")["Properties"]["DeletionProtection"], "ACTIVE");
}

#[test]
fn the_results_bucket_is_private_encrypted_tls_only_and_expires_results() {
    check_bucket(&template());
}

fn check_bucket(doc: &Value) {
    let bucket = &resource(doc, "ResultsBucket")["Properties"];
    let rules = bucket["LifecycleConfiguration"]["Rules"].as_array().expect("lifecycle rules");
    let rule = rules.iter().find(|r| r["Prefix"] == RESULTS_PREFIX).expect("a rule on the results prefix");
    assert_eq!(rule["Status"], "Enabled");
    assert_eq!(as_u64(&rule["ExpirationInDays"], "ExpirationInDays"), RESULT_RETENTION_DAYS.unsigned_abs());
    assert!(as_u64(&rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"], "days") >= 1);
    // Uploaded import files go no later than their import's record.
    let uploads = rules
        .iter()
        .find(|r| r["Status"] == "Enabled" && r["Prefix"].as_str().is_some_and(|p| IMPORTS_PREFIX.starts_with(p)))
        .expect("a rule covering the uploads of imports");
    let days = as_u64(&uploads["ExpirationInDays"], "ExpirationInDays");
    assert!((1..=IMPORT_RETENTION_DAYS.unsigned_abs()).contains(&days), "uploads expire after {days} days");

    // The console follows an export's 302 to its presigned URL with fetch: reading, from any
    // origin (the presigned URL is the credential; the bucket cannot name the API's origin
    // without a cycle), and nothing else.
    let cors = bucket["CorsConfiguration"]["CorsRules"].as_array().expect("CORS rules");
    assert_eq!(cors.len(), 1, "one CORS rule");
    assert_eq!(strings(&cors[0]["AllowedMethods"]), BTreeSet::from(["GET".to_owned(), "HEAD".to_owned()]));
    assert_eq!(strings(&cors[0]["AllowedOrigins"]), BTreeSet::from(["*".to_owned()]));
    assert!(cors[0]["AllowedHeaders"].is_null(), "no request headers beyond the CORS-safelisted ones");

    let block = &bucket["PublicAccessBlockConfiguration"];
    for flag in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"] {
        assert_eq!(block[flag], true, "{flag}");
    }
    let sse = &bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"];
    assert!(sse["SSEAlgorithm"].is_string(), "encrypted at rest");

    let (_, policy) = of_type(doc, "AWS::S3::BucketPolicy")
        .into_iter()
        .find(|(_, p)| ref_target(&p["Properties"]["Bucket"]) == Some("ResultsBucket"))
        .expect("a bucket policy");
    let tls_only =
        policy["Properties"]["PolicyDocument"]["Statement"].as_array().expect("statements").iter().any(|s| {
            s["Effect"] == "Deny"
                && s["Condition"]["Bool"]["aws:SecureTransport"] == "false"
                && s["Resource"].as_array().is_some_and(|r| r.len() == 2)
        });
    assert!(tls_only, "the bucket policy denies requests without TLS, on the bucket and its objects");
}

#[test]
fn parameters_and_outputs_are_declared() {
    let doc = template();
    for parameter in ["Stage", "ShardCount", "LogLevel", "ApiDomainName", "ApiCertificateArn"] {
        assert!(doc["Parameters"][parameter].is_object(), "parameter {parameter}");
    }
    for output in ["ApiUrl", "ConsoleUrl", "TokenUrl", "ExampleClientId"] {
        assert!(doc["Outputs"][output]["Value"].is_object(), "output {output}");
    }
    // The loops are expanded by AWS::LanguageExtensions, which must run before SAM's transform.
    assert_eq!(doc["Transform"], json!(["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]));
}

// ---------------------------------------------------------------------------------------------
// Operations: logs, alarms, dashboard (docs/operations.md)
// ---------------------------------------------------------------------------------------------

/// The parameter every function's log group takes its retention from.
const LOG_RETENTION_PARAMETER: &str = "LogRetentionDays";
/// The retention periods CloudWatch Logs accepts (RetentionInDays).
const CLOUDWATCH_RETENTION_DAYS: [u64; 22] =
    [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];
/// The service's own metrics (embedded metric format, namespace `FinancialSegments`): the job
/// metrics carry the `SegmentType` dimension, the others none.
const METRICS_NAMESPACE: &str = "FinancialSegments";
const JOB_METRICS: [&str; 7] =
    ["JobsCreated", "JobsCompleted", "JobsFailed", "JobDuration", "ShardDuration", "ItemsRead", "BytesRead"];
const PLAIN_METRICS: [&str; 11] = [
    "CallbacksDelivered",
    "CallbacksFailed",
    "ImportsCompleted",
    "ImportsFailed",
    "ImportedUsers",
    "RefreshesApplied",
    "RefreshesFailed",
    "AccountsEntered",
    "AccountsLeft",
    "EventsPublished",
    "EventsFailed",
];

#[test]
fn every_function_logs_to_its_own_group_kept_for_the_retention_parameter_with_report_lines() {
    check_logging(&template());
}

/// Each function names its own log group (LoggingConfig.LogGroup), which expires after
/// LogRetentionDays; the platform's REPORT lines are kept (SystemLogLevel INFO).
fn check_logging(doc: &Value) {
    let parameter = &doc["Parameters"][LOG_RETENTION_PARAMETER];
    assert_eq!(parameter["Type"], "Number");
    assert_eq!(parameter["Default"], 30, "a month by default");
    let allowed: BTreeSet<u64> =
        parameter["AllowedValues"].as_array().expect("AllowedValues").iter().map(|v| as_u64(v, "retention")).collect();
    assert_eq!(allowed, BTreeSet::from(CLOUDWATCH_RETENTION_DAYS), "the values CloudWatch Logs accepts");

    let all = functions(doc);
    let mut groups = BTreeSet::new();
    for f in &all {
        let logging = f.property("LoggingConfig");
        assert_eq!(logging["SystemLogLevel"], "INFO", "{}: REPORT lines (duration, memory, init) kept", f.name);
        let group = ref_target(&logging["LogGroup"]).unwrap_or_else(|| panic!("{}: LoggingConfig.LogGroup", f.name));
        assert!(groups.insert(group.to_owned()), "{}: its log group {group} is its own", f.name);
        let group = resource(doc, group);
        assert_eq!(group["Type"], "AWS::Logs::LogGroup", "{}", f.name);
        assert_eq!(
            ref_target(&group["Properties"]["RetentionInDays"]),
            Some(LOG_RETENTION_PARAMETER),
            "{}: its logs expire",
            f.name
        );
    }
    assert_eq!(groups.len(), all.len());
}

/// `(namespace, metric, dimensions)` of every metric an alarm watches: its own, or each metric
/// of its metric math.
fn alarm_metrics(alarm: &Value) -> Vec<(&Value, &Value, &Value)> {
    let p = &alarm["Properties"];
    let mut metrics = vec![(&p["Namespace"], &p["MetricName"], &p["Dimensions"])];
    for m in p["Metrics"].as_array().into_iter().flatten() {
        let metric = &m["MetricStat"]["Metric"];
        metrics.push((&metric["Namespace"], &metric["MetricName"], &metric["Dimensions"]));
    }
    metrics
}

/// The alarm that notifies the alarm topic when `metric` of `namespace` with the dimension
/// `dimension` (its value accepted by `matches`) crosses a threshold an operator can tune (a
/// parameter of the template).
fn tunable_alarm(
    doc: &Value,
    namespace: &str,
    metric: &str,
    dimension: &str,
    matches: impl Fn(&Value) -> bool,
) -> bool {
    of_type(doc, "AWS::CloudWatch::Alarm").into_iter().any(|(_, alarm)| {
        let p = &alarm["Properties"];
        let watches = alarm_metrics(alarm).into_iter().any(|(ns, name, dimensions)| {
            ns == namespace
                && name == metric
                && dimensions
                    .as_array()
                    .is_some_and(|ds| ds.iter().any(|d| d["Name"] == dimension && matches(&d["Value"])))
        });
        let notifies =
            p["AlarmActions"].as_array().is_some_and(|a| a.iter().any(|t| ref_target(t) == Some("AlarmTopic")));
        let tunable = ref_target(&p["Threshold"]).is_some_and(|name| doc["Parameters"][name]["Type"] == "Number");
        watches && notifies && tunable
    })
}

#[test]
fn every_function_queue_table_and_the_api_has_its_alarms() {
    check_alarms(&template());
}

/// Errors and throttles of every function; the age of the oldest message of every queue a
/// function consumes (the work queues, the import queue, the job dead-letter queues); throttled
/// reads and writes of every table; the API's 5xx.
fn check_alarms(doc: &Value) {
    for f in functions(doc) {
        let is_it = |v: &Value| ref_target(v) == Some(f.name);
        assert!(tunable_alarm(doc, "AWS/Lambda", "Errors", "FunctionName", is_it), "{}: errors alarm", f.name);
        assert!(tunable_alarm(doc, "AWS/Lambda", "Throttles", "FunctionName", is_it), "{}: throttles alarm", f.name);
    }
    let consumed: BTreeSet<&str> = of_type(doc, "AWS::Lambda::EventSourceMapping")
        .into_iter()
        .filter_map(|(_, m)| get_att(&m["Properties"]["EventSourceArn"]).map(|(queue, _)| queue))
        .collect();
    assert!(consumed.contains(IMPORT_QUEUE), "the import queue is consumed");
    assert!(consumed.contains(REFRESH_QUEUE), "the refresh queue is consumed");
    assert_eq!(
        consumed.len(),
        2 + 2 * SegmentType::ALL.len(),
        "the import queue, the refresh queue, a queue and a DLQ per type"
    );
    for queue in consumed {
        let is_it = |v: &Value| get_att(v) == Some((queue, "QueueName"));
        assert!(
            tunable_alarm(doc, "AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", is_it),
            "{queue}: age alarm"
        );
    }
    for (table, _) in of_type(doc, "AWS::DynamoDB::Table") {
        let is_it = |v: &Value| ref_target(v) == Some(table);
        for metric in ["ReadThrottleEvents", "WriteThrottleEvents"] {
            assert!(tunable_alarm(doc, "AWS/DynamoDB", metric, "TableName", is_it), "{table}: {metric} alarm");
        }
    }
    assert!(tunable_alarm(doc, "AWS/ApiGateway", "5xx", "ApiId", |v| ref_target(v) == Some("Api")), "API 5xx alarm");
}

#[test]
fn the_dashboard_shows_the_service_metrics_and_the_stacks_own_resources() {
    check_dashboard(&template());
}

/// The dashboard's body: JSON once the `${…}` of its Fn::Sub are filled in, with a widget for
/// every metric of the service (per segment type where it has that dimension) and the stack's
/// functions, queues, tables and API named through Fn::Sub.
fn check_dashboard(doc: &Value) {
    let dashboards = of_type(doc, "AWS::CloudWatch::Dashboard");
    assert_eq!(dashboards.len(), 1, "one dashboard");
    let body =
        dashboards[0].1["Properties"]["DashboardBody"]["Fn::Sub"].as_str().expect("DashboardBody is a Fn::Sub text");
    let mut filled = body.to_owned();
    while let Some(start) = filled.find("${") {
        let end = start + filled[start..].find('}').expect("a closed ${…}");
        filled.replace_range(start..=end, "x");
    }
    let parsed: Value = serde_json::from_str(&filled).unwrap_or_else(|e| panic!("the dashboard body is JSON: {e}"));
    let widgets = parsed["widgets"].as_array().expect("widgets");

    // Every metric row with the "." shorthand (same as the row above) written out.
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut expressions: Vec<String> = Vec::new();
    for widget in widgets {
        let mut previous: Vec<String> = Vec::new();
        for row in widget["properties"]["metrics"].as_array().into_iter().flatten() {
            let items = row.as_array().expect("a metric row");
            if let Some(expression) = items.iter().find_map(|i| i["expression"].as_str()) {
                expressions.push(expression.to_owned());
                continue;
            }
            let mut full = Vec::new();
            for (i, item) in items.iter().filter_map(Value::as_str).enumerate() {
                match item {
                    "." => full.push(previous.get(i).cloned().expect("a row above to repeat")),
                    "..." => full.extend(previous.iter().skip(i).cloned()),
                    name => full.push(name.to_owned()),
                }
            }
            previous.clone_from(&full);
            rows.push(full);
        }
    }
    for metric in JOB_METRICS {
        let search = format!("{{{METRICS_NAMESPACE},SegmentType}} MetricName=\"{metric}\"");
        assert!(expressions.iter().any(|e| e.contains(&search)), "{metric} per segment type");
    }
    for metric in PLAIN_METRICS {
        assert!(rows.iter().any(|r| r == &[METRICS_NAMESPACE, metric]), "{metric} (no dimension)");
    }
    let shows = |namespace: &str, metric: &str, dimension: &str, reference: String| {
        body.contains(&reference)
            && rows.iter().any(|r| r.len() >= 4 && r[0] == namespace && r[1] == metric && r[2] == dimension)
    };
    for f in functions(doc) {
        for metric in ["Errors", "Throttles", "Duration"] {
            assert!(shows("AWS/Lambda", metric, "FunctionName", format!("${{{}}}", f.name)), "{}: {metric}", f.name);
        }
    }
    for (queue, _) in of_type(doc, "AWS::SQS::Queue") {
        if queue.ends_with("DeadLetterQueue") {
            assert!(body.contains(&format!("${{{queue}.QueueName}}")), "{queue}: dead letters shown");
            continue;
        }
        for metric in ["ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"] {
            assert!(shows("AWS/SQS", metric, "QueueName", format!("${{{queue}.QueueName}}")), "{queue}: {metric}");
        }
    }
    for (table, _) in of_type(doc, "AWS::DynamoDB::Table") {
        for metric in
            ["ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits", "ReadThrottleEvents", "WriteThrottleEvents"]
        {
            assert!(shows("AWS/DynamoDB", metric, "TableName", format!("${{{table}}}")), "{table}: {metric}");
        }
    }
    for metric in ["Count", "4xx", "5xx", "Latency"] {
        assert!(shows("AWS/ApiGateway", metric, "ApiId", "${Api}".to_owned()), "API {metric}");
    }
}

/// Folding the per-type resources into loops kept their logical ids, so a deployed stack
/// updates them in place.
#[test]
fn the_folded_template_keeps_the_logical_ids_of_the_written_out_one() {
    let doc = template();
    for name in ["HighBalance", "LowBalance", "IncomeSpendingSummary", "InsuranceSpending", "FinancialBreakdown"] {
        for suffix in [
            "Queue",
            "DeadLetterQueue",
            "WorkerFunction",
            "WorkerEventSource",
            "DeadLetterAlarm",
            "WorkerErrorsAlarm",
            "DeadLetterEventSource",
        ] {
            resource(&doc, &format!("{name}{suffix}"));
        }
    }
    for name in ["ImportWorkerErrorsAlarm", "DeadLetterErrorsAlarm", "ImportDeadLetterAlarm"] {
        resource(&doc, name);
    }
    let written = written_template();
    assert!(
        written["Resources"].as_object().unwrap().keys().any(|k| k.starts_with("Fn::ForEach::")),
        "the template as written folds its repetition into loops"
    );
    assert!(resources(&written).get("HighBalanceQueue").is_none(), "the loops are what the test expanded");
}

/// The operations checks above can fail: each runs on a copy with one fact removed.
#[test]
fn the_operations_checks_fail_when_a_log_group_an_alarm_or_a_dashboard_metric_is_removed() {
    let doc = template();
    let fails = |check: fn(&Value), mutated: Value| std::panic::catch_unwind(move || check(&mutated)).is_err();
    assert!(!fails(check_logging, doc.clone()) && !fails(check_alarms, doc.clone()));
    assert!(!fails(check_dashboard, doc.clone()));

    let mut no_group = doc.clone();
    no_group["Resources"]["CreateJobFunction"]["Properties"]["LoggingConfig"]
        .as_object_mut()
        .unwrap()
        .remove("LogGroup");
    assert!(fails(check_logging, no_group), "a function without its log group is caught");
    let mut forever = doc.clone();
    forever["Resources"]["HighBalanceWorkerFunctionLogGroup"]["Properties"]
        .as_object_mut()
        .unwrap()
        .remove("RetentionInDays");
    assert!(fails(check_logging, forever), "a log group that never expires is caught");
    let mut quiet = doc.clone();
    quiet["Globals"]["Function"]["LoggingConfig"]["SystemLogLevel"] = json!("WARN");
    assert!(fails(check_logging, quiet), "REPORT lines dropped is caught");
    let mut odd_retention = doc.clone();
    odd_retention["Parameters"][LOG_RETENTION_PARAMETER]["AllowedValues"].as_array_mut().unwrap().push(json!(2));
    assert!(fails(check_logging, odd_retention), "a retention CloudWatch refuses is caught");

    for alarm in [
        "CreateJobErrorsAlarm",
        "DataApiThrottlesAlarm",
        "LowBalanceQueueAgeAlarm",
        "FinancialBreakdownDeadLetterQueueAgeAlarm",
        "ImportQueueAgeAlarm",
        "SegmentsTableThrottlesAlarm",
        "SweeperThrottlesAlarm",
        "RefreshSchedulerErrorsAlarm",
        "RefreshApplierThrottlesAlarm",
        "RefreshQueueAgeAlarm",
        "ApiServerErrorsAlarm",
    ] {
        let mut removed = doc.clone();
        removed["Resources"].as_object_mut().unwrap().remove(alarm).unwrap_or_else(|| panic!("{alarm} exists"));
        assert!(fails(check_alarms, removed), "a missing {alarm} is caught");
    }
    let mut fixed = doc.clone();
    fixed["Resources"]["ImportWorkerErrorsAlarm"]["Properties"]["Threshold"] = json!(0);
    assert!(fails(check_alarms, fixed), "a threshold an operator cannot tune is caught");
    let mut silent = doc.clone();
    silent["Resources"]["JobsTableThrottlesAlarm"]["Properties"]["AlarmActions"] = json!([]);
    assert!(fails(check_alarms, silent), "an alarm that notifies nobody is caught");

    fn body(doc: &mut Value) -> &mut Value {
        &mut doc["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    }
    let mut no_dashboard = doc.clone();
    no_dashboard["Resources"].as_object_mut().unwrap().remove("Dashboard");
    assert!(fails(check_dashboard, no_dashboard), "a missing dashboard is caught");
    for (metric, replacement) in [
        ("\\\"ShardDuration\\\"", "\\\"Shard\\\""),
        ("\"ImportedUsers\"", "\"Imported\""),
        ("${GetResultFunction}", "${GetResult}"),
        ("${SweeperFunction}", "${Sweeper}"),
        ("${JobsTable}", "${Jobs}"),
        ("${ImportQueue.QueueName}", "${Import.QueueName}"),
        ("${RefreshApplierFunction}", "${RefreshApplier}"),
        ("${RefreshSchedulerFunction}", "${RefreshScheduler}"),
        ("${RefreshQueue.QueueName}", "${Refresh.QueueName}"),
        ("${RefreshDeadLetterQueue.QueueName}", "${RefreshDeadLetter.QueueName}"),
        ("\"RefreshesApplied\"", "\"Refreshes\""),
        ("\"AccountsLeft\"", "\"Accounts\""),
        ("\"EventsFailed\"", "\"Events\""),
        ("\"5xx\"", "\"500\""),
    ] {
        let mut mutated = doc.clone();
        let text = body(&mut mutated);
        let changed = text.as_str().unwrap().replace(metric, replacement);
        assert_ne!(text.as_str().unwrap(), changed, "{metric} is in the body");
        *text = json!(changed);
        assert!(fails(check_dashboard, mutated), "a dashboard without {metric} is caught");
    }
}

// ---------------------------------------------------------------------------------------------
// Event fixtures
// ---------------------------------------------------------------------------------------------

fn fixtures() -> BTreeMap<String, Value> {
    let dir = Path::new(ROOT).join("events");
    std::fs::read_dir(&dir)
        .expect("events/")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().expect("a file name").to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).expect("a readable fixture");
            (name.clone(), serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}")))
        })
        .collect()
}

#[test]
fn the_event_fixtures_are_requests_of_template_routes_and_messages_of_every_worker() {
    let doc = template();
    let mut routes: BTreeSet<String> =
        template_routes(&doc).into_iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    routes.extend(console_routes(&doc).into_iter().map(|(method, path)| format!("{method} {path}")));
    let mut requested = BTreeSet::new();
    let mut messaged = BTreeSet::new();
    let mut imports_messaged = false;
    for (name, event) in fixtures() {
        if let Some(route_key) = event["routeKey"].as_str() {
            assert!(routes.contains(route_key), "{name}: {route_key} is not a route of the template");
            assert_eq!(event["requestContext"]["routeKey"], route_key, "{name}");
            assert_eq!(event["version"], "2.0", "{name}");
            requested.insert(route_key.to_owned());
        } else {
            let records = event["Records"].as_array().unwrap_or_else(|| panic!("{name}: an API or SQS event"));
            for record in records {
                assert_eq!(record["eventSource"], "aws:sqs", "{name}");
                let body = record["body"].as_str().expect("a body");
                if serde_json::from_str::<ImportMessage>(body).is_ok() {
                    imports_messaged = true;
                    continue;
                }
                // A message of the refresh queue, for the refresh applier.
                if serde_json::from_str::<RefreshMessage>(body).is_ok() {
                    continue;
                }
                let message: JobMessage = serde_json::from_str(body).unwrap_or_else(|e| panic!("{name}: {e}"));
                messaged.insert(message.segment_type);
            }
        }
    }
    for route in template_routes(&doc) {
        if SegmentType::ALL.iter().any(|t| route.scopes.contains(&t.scope())) || route.path.starts_with("/data/imports")
        {
            let key = format!("{} {}", route.method, route.path);
            assert!(requested.contains(&key), "no fixture in events/ for {key}");
        }
    }
    let every: BTreeSet<SegmentType> = SegmentType::ALL.iter().copied().collect();
    assert_eq!(messaged, every, "an SQS fixture per worker");
    assert!(imports_messaged, "an SQS fixture of the import worker");
}

// ---------------------------------------------------------------------------------------------
// Offline linters
// ---------------------------------------------------------------------------------------------

/// The tool from `var` (exported by tests/run.sh) or its place in the repository's virtualenv.
fn tool(var: &str, fallback: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| Path::new(ROOT).join(fallback));
    assert!(path.is_file(), "{} not found: run tests/run.sh, which installs it and exports {var}", path.display());
    path
}

fn run(mut command: Command) {
    let output = command.current_dir(ROOT).output().expect("the linter starts");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn cfn_lint_accepts_the_template() {
    let mut command = Command::new(tool("CFN_LINT", ".venv/bin/cfn-lint"));
    command.arg(TEMPLATE);
    run(command);
}

#[test]
fn sam_validate_lint_accepts_the_template() {
    let mut command = Command::new(tool("SAM_CLI", ".venv/sam/bin/sam"));
    command
        .args(["validate", "--lint", "--template", TEMPLATE])
        .env("SAM_CLI_TELEMETRY", "0")
        .env("AWS_DEFAULT_REGION", "eu-central-1");
    run(command);
}

/// The checks above can fail: each is run on a copy of the template with one fact removed.
#[test]
fn the_fact_checks_fail_when_a_route_a_scope_a_dlq_an_index_the_schedule_or_the_retention_is_removed() {
    let doc = template();
    let fails = |check: fn(&Value), mutated: Value| std::panic::catch_unwind(move || check(&mutated)).is_err();
    assert!(
        !fails(check_routes, doc.clone()) && !fails(check_workers, doc.clone()) && !fails(check_bucket, doc.clone())
    );
    assert!(!fails(check_kept, doc.clone()));
    for (name, attribute) in [("JobsTable", "DeletionPolicy"), ("UserPool", "UpdateReplacePolicy")] {
        let mut removed = doc.clone();
        removed["Resources"][name].as_object_mut().unwrap().remove(attribute);
        assert!(fails(check_kept, removed), "{name} without {attribute} is caught");
    }
    let mut unprotected = doc.clone();
    unprotected["Resources"]["UserPool"]["Properties"]["DeletionProtection"] = json!("INACTIVE");
    assert!(fails(check_kept, unprotected), "a user pool without deletion protection is caught");

    let http_events = |doc: &mut Value| -> Vec<(String, String)> {
        let mut found = Vec::new();
        for (name, r) in doc["Resources"].as_object().unwrap() {
            for (event, e) in r["Properties"]["Events"].as_object().into_iter().flatten() {
                if e["Type"] == "HttpApi" {
                    found.push((name.clone(), event.clone()));
                }
            }
        }
        found
    };

    let mut no_route = doc.clone();
    let (function, event) = http_events(&mut no_route).into_iter().next().expect("an HTTP route");
    no_route["Resources"][&function]["Properties"]["Events"].as_object_mut().unwrap().remove(&event);
    assert!(fails(check_routes, no_route), "a removed route is caught");

    let mut no_scope = doc.clone();
    let scoped = http_events(&mut no_scope)
        .into_iter()
        .find(|(f, e)| {
            doc["Resources"][f]["Properties"]["Events"][e]["Properties"]["Auth"]["AuthorizationScopes"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
        })
        .expect("a scoped route");
    no_scope["Resources"][&scoped.0]["Properties"]["Events"][&scoped.1]["Properties"]["Auth"]["AuthorizationScopes"] =
        json!([]);
    assert!(fails(check_routes, no_scope), "a removed scope is caught");

    let mut console_protected = doc.clone();
    let console = console_protected["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, r)| r["Metadata"]["BuildProperties"]["Binary"] == CONSOLE_BINARY)
        .map(|(name, _)| name.clone())
        .expect("the console function");
    for (_, event) in console_protected["Resources"][&console]["Properties"]["Events"].as_object_mut().unwrap() {
        event["Properties"]["Auth"]["Authorizer"] = json!("CognitoJwt");
    }
    assert!(fails(check_routes, console_protected), "a console route behind the authorizer is caught");

    let mut open_route = doc.clone();
    let (function, event) =
        http_events(&mut open_route).into_iter().find(|(f, _)| *f != console).expect("an API route");
    open_route["Resources"][&function]["Properties"]["Events"][&event]["Properties"]["Auth"] =
        json!({"Authorizer": "NONE"});
    assert!(fails(check_routes, open_route), "an API route without the authorizer is caught");

    let mut no_dlq = doc.clone();
    let queue = no_dlq["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, r)| r["Type"] == "AWS::SQS::Queue" && !r["Properties"]["RedrivePolicy"].is_null())
        .map(|(name, _)| name.clone())
        .expect("a queue with a DLQ");
    no_dlq["Resources"][&queue]["Properties"].as_object_mut().unwrap().remove("RedrivePolicy");
    assert!(fails(check_workers, no_dlq), "a removed DLQ is caught");

    let mut longer = doc.clone();
    for rule in
        longer["Resources"]["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"].as_array_mut().unwrap()
    {
        rule["ExpirationInDays"] = json!(30);
    }
    assert!(fails(check_bucket, longer), "a retention other than 14 days is caught");

    let mut uploads_kept = doc.clone();
    uploads_kept["Resources"]["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
        .as_array_mut()
        .unwrap()
        .retain(|rule| rule["Prefix"] != IMPORTS_PREFIX);
    assert!(fails(check_bucket, uploads_kept), "uploads without an expiry are caught");

    let mut cors_writes = doc.clone();
    cors_writes["Resources"]["ResultsBucket"]["Properties"]["CorsConfiguration"]["CorsRules"][0]["AllowedMethods"] =
        json!(["GET", "HEAD", "PUT"]);
    assert!(fails(check_bucket, cors_writes), "a CORS rule that allows writes is caught");

    assert!(!fails(check_import_worker, doc.clone()));
    let mut small = doc.clone();
    small["Resources"]["ImportWorkerFunction"]["Properties"]["EphemeralStorage"]["Size"] = json!(512);
    assert!(fails(check_import_worker, small), "an import worker without room for large files is caught");

    assert!(!fails(check_tables, doc.clone()));
    let mut no_index = doc.clone();
    no_index["Resources"]["JobsTable"]["Properties"].as_object_mut().unwrap().remove("GlobalSecondaryIndexes");
    assert!(fails(check_tables, no_index), "a Jobs table without the progress index is caught");
    let mut less_projected = doc.clone();
    less_projected["Resources"]["JobsTable"]["Properties"]["GlobalSecondaryIndexes"][0]["Projection"]
        ["NonKeyAttributes"]
        .as_array_mut()
        .unwrap()
        .pop();
    assert!(fails(check_tables, less_projected), "an index without a count of the watch is caught");
    let mut text_range = doc.clone();
    text_range["Resources"]["JobsTable"]["Properties"]["AttributeDefinitions"][3]["AttributeType"] = json!("S");
    assert!(fails(check_tables, text_range), "progressAt compared as text is caught");

    assert!(!fails(check_sweeper, doc.clone()));
    fn schedule(doc: &mut Value) -> &mut Value {
        &mut doc["Resources"]["SweeperFunction"]["Properties"]["Events"]["Every5Minutes"]["Properties"]
    }
    let mut slower = doc.clone();
    schedule(&mut slower)["Schedule"] = json!("rate(10 minutes)");
    assert!(fails(check_sweeper, slower), "a schedule other than SWEEP_INTERVAL is caught");
    let mut disabled = doc.clone();
    schedule(&mut disabled)["Enabled"] = json!(false);
    assert!(fails(check_sweeper, disabled), "a disabled schedule is caught");
    let mut unscheduled = doc.clone();
    unscheduled["Resources"]["SweeperFunction"]["Properties"]["Events"] = json!({});
    assert!(fails(check_sweeper, unscheduled), "a sweeper without its schedule is caught");
    let mut other_default = doc.clone();
    other_default["Parameters"]["MaxResends"]["Default"] = json!(5);
    assert!(fails(check_sweeper, other_default), "a default other than the code's is caught");
    let mut short_deadline = doc.clone();
    short_deadline["Parameters"]["ProgressDeadlineMinutes"]["MinValue"] = json!(5);
    assert!(fails(check_sweeper, short_deadline), "a deadline shorter than a shard's run is caught");

    // Dynamic segments: the due index, the bus, the scheduler's schedule, the applier's event
    // source and queue, their variables and grants.
    let mut no_due_index = doc.clone();
    no_due_index["Resources"]["SegmentsTable"]["Properties"].as_object_mut().unwrap().remove("GlobalSecondaryIndexes");
    assert!(fails(check_tables, no_due_index), "a Segments table without the due index is caught");
    let mut projects_all = doc.clone();
    projects_all["Resources"]["SegmentsTable"]["Properties"]["GlobalSecondaryIndexes"][0]["Projection"] =
        json!({"ProjectionType": "ALL"});
    assert!(fails(check_tables, projects_all), "a due index that projects whole items is caught");
    let mut due_as_text = doc.clone();
    for definition in
        due_as_text["Resources"]["SegmentsTable"]["Properties"]["AttributeDefinitions"].as_array_mut().unwrap()
    {
        if definition["AttributeName"] == DUE_AT {
            definition["AttributeType"] = json!("S");
        }
    }
    assert!(fails(check_tables, due_as_text), "dueAt compared as text is caught");

    assert!(!fails(check_refreshes, doc.clone()));
    let mut no_bus = doc.clone();
    no_bus["Resources"].as_object_mut().unwrap().remove(EVENT_BUS);
    assert!(fails(check_refreshes, no_bus), "a stack without its event bus is caught");
    let mut no_bus_output = doc.clone();
    no_bus_output["Outputs"].as_object_mut().unwrap().remove("SegmentEventBusArn");
    assert!(fails(check_refreshes, no_bus_output), "the bus's ARN missing from the outputs is caught");
    fn tick(doc: &mut Value) -> &mut Value {
        &mut doc["Resources"]["RefreshSchedulerFunction"]["Properties"]["Events"]["EveryMinute"]["Properties"]
    }
    let mut hourly = doc.clone();
    tick(&mut hourly)["Schedule"] = json!("rate(1 hour)");
    assert!(fails(check_refreshes, hourly), "a tick other than the poll interval is caught");
    let mut stopped = doc.clone();
    tick(&mut stopped)["Enabled"] = json!(false);
    assert!(fails(check_refreshes, stopped), "a disabled tick is caught");
    fn applier_source(doc: &mut Value) -> &mut Value {
        &mut doc["Resources"]["RefreshApplierEventSource"]["Properties"]
    }
    let mut batched = doc.clone();
    applier_source(&mut batched)["BatchSize"] = json!(10);
    assert!(fails(check_refreshes, batched), "refreshes batched into one invocation are caught");
    let mut whole_batch = doc.clone();
    applier_source(&mut whole_batch).as_object_mut().unwrap().remove("FunctionResponseTypes");
    assert!(fails(check_refreshes, whole_batch), "an applier without partial batch failures is caught");
    let mut unconsumed = doc.clone();
    unconsumed["Resources"].as_object_mut().unwrap().remove("RefreshApplierEventSource");
    assert!(fails(check_refreshes, unconsumed), "a refresh queue nobody consumes is caught");
    let mut early = doc.clone();
    early["Resources"][REFRESH_QUEUE]["Properties"]["VisibilityTimeout"] = json!(600);
    assert!(fails(check_refreshes, early), "a message back before the lease is over is caught");
    let mut no_refresh_dlq = doc.clone();
    no_refresh_dlq["Resources"][REFRESH_QUEUE]["Properties"].as_object_mut().unwrap().remove("RedrivePolicy");
    assert!(fails(check_refreshes, no_refresh_dlq), "a refresh queue without its dead-letter queue is caught");
    let mut unwatched = doc.clone();
    unwatched["Resources"].as_object_mut().unwrap().remove("RefreshDeadLetterAlarm");
    assert!(fails(check_refreshes, unwatched), "refresh dead letters nobody is called for are caught");

    assert!(!fails(check_environment, doc.clone()) && !fails(check_grants, doc.clone()));
    fn variables<'a>(doc: &'a mut Value, function: &str) -> &'a mut Map<String, Value> {
        doc["Resources"][function]["Properties"]["Environment"]["Variables"].as_object_mut().unwrap()
    }
    for (function, variable) in [
        ("SegmentsApiFunction", EVENT_BUS_NAME_VAR),
        ("RefreshSchedulerFunction", REFRESH_QUEUE_URL_VAR),
        ("RefreshSchedulerFunction", "HIGH_BALANCE_QUEUE_URL"),
        ("RefreshApplierFunction", EVENT_BUS_NAME_VAR),
        ("RefreshApplierFunction", SEGMENTS_TABLE_VAR),
    ] {
        let mut removed = doc.clone();
        variables(&mut removed, function).remove(variable).unwrap_or_else(|| panic!("{function} has {variable}"));
        assert!(fails(check_environment, removed), "{function} without {variable} is caught");
    }
    let mut other_bus = doc.clone();
    variables(&mut other_bus, "RefreshApplierFunction").insert(EVENT_BUS_NAME_VAR.to_owned(), json!("default"));
    assert!(fails(check_environment, other_bus), "events sent to the default bus are caught");

    /// The copy with `action` taken out of every statement of `function` (a statement left with
    /// no action goes too).
    fn without_action(doc: &Value, function: &str, action: &str) -> Value {
        let mut mutated = doc.clone();
        let policies = mutated["Resources"][function]["Properties"]["Policies"].as_array_mut().unwrap();
        let mut found = false;
        for policy in policies {
            let statements = policy["Statement"].as_array_mut().unwrap();
            for statement in statements.iter_mut() {
                match &mut statement["Action"] {
                    Value::String(a) if a == action => {
                        statement["Action"] = json!([]);
                        found = true;
                    }
                    Value::Array(actions) => {
                        let before = actions.len();
                        actions.retain(|a| a != action);
                        found |= actions.len() < before;
                    }
                    _ => {}
                }
            }
            statements.retain(|s| s["Action"] != json!([]));
        }
        assert!(found, "{function} is granted {action}");
        mutated
    }
    for (function, action) in [
        ("SegmentsApiFunction", "events:PutEvents"),
        ("RefreshSchedulerFunction", "dynamodb:Query"),
        ("RefreshSchedulerFunction", "sqs:SendMessage"),
        ("RefreshApplierFunction", "events:PutEvents"),
        ("RefreshApplierFunction", "dynamodb:BatchWriteItem"),
        ("RefreshApplierFunction", "sqs:SendMessage"),
        ("RefreshApplierFunction", "sqs:ReceiveMessage"),
        ("RefreshApplierFunction", "s3:GetObject"),
    ] {
        assert!(fails(check_grants, without_action(&doc, function, action)), "{function} without {action} is caught");
    }
    let mut wider = doc.clone();
    wider["Resources"]["RefreshSchedulerFunction"]["Properties"]["Policies"][0]["Statement"]
        .as_array_mut()
        .unwrap()
        .push(json!({"Effect": "Allow", "Action": "events:PutEvents", "Resource": {"Fn::GetAtt": [EVENT_BUS, "Arn"]}}));
    assert!(fails(check_grants, wider), "a scheduler that may publish is caught");
}
