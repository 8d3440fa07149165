//! The CDK app (`infra/cdk`) deploys the same service as the SAM template (`infra/template.yaml`).
//! The app is synthesized once (offline, with a placeholder `bootstrap` per function so that no
//! release build is needed), both templates are reduced to the facts that make the service, and
//! the facts are compared: every resource under its logical id, routes with their authorization
//! and function, the authorizer, queues with their dead-letter queues, tables with their
//! secondary indexes, the results bucket, the functions with their settings, variables and
//! grants, the functions run on a schedule and at what rate, the event buses, the event source
//! mappings (function, queue, batch, partial failures, concurrency), log groups, alarms, the operations
//! dashboard widget for widget, and the outputs. The SAM side is read through
//! `support::template`, which expands the template's `Fn::ForEach` loops as CloudFormation does. cfn-lint checks the synthesized template, tsc the app's types.
//!
//! `tests/run.sh` runs `npm ci` in infra/cdk and exports `CDK_APP_DIR` and `CFN_LINT`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::support::template::sam_template;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The construct id of the app's stack: the name of its template in the cloud assembly.
const CDK_STACK: &str = "FinancialSegments";
/// A queue's visibility timeout when the template sets none.
const DEFAULT_VISIBILITY_TIMEOUT: u64 = 30;
/// Memory and timeout of a function that sets none (Lambda's defaults).
const DEFAULT_MEMORY_SIZE: u64 = 128;
const DEFAULT_TIMEOUT: u64 = 3;
/// Tracing writes to X-Ray: SAM grants it through a managed policy, CDK through the role's
/// inline policy. Neither is part of what a function may do with the service's data.
const XRAY_ACTIONS: [&str; 2] = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"];
/// The service's own metrics (namespace `FinancialSegments`), all of which the dashboard shows.
const SERVICE_METRICS: [&str; 18] = [
    "JobsCreated",
    "JobsCompleted",
    "JobsFailed",
    "JobDuration",
    "ShardDuration",
    "ItemsRead",
    "BytesRead",
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

// ---------------------------------------------------------------------------------------------
// The two templates
// ---------------------------------------------------------------------------------------------

/// The synthesized CDK template, made once for all tests of this module.
fn cdk_template() -> &'static Value {
    static TEMPLATE: OnceLock<Result<Value, String>> = OnceLock::new();
    match TEMPLATE.get_or_init(synthesize) {
        Ok(template) => template,
        Err(failure) => panic!("{failure}"),
    }
}

/// `npx cdk synth` in `$CDK_APP_DIR`, quiet and offline, into a temporary directory, with the
/// functions' code taken from a temporary directory of placeholder binaries.
fn synthesize() -> Result<Value, String> {
    let app = std::env::var_os("CDK_APP_DIR")
        .map(PathBuf::from)
        .ok_or("CDK_APP_DIR is not set: run tests/run.sh, which installs the CDK app's packages and exports it")?;
    if !app.join("node_modules/.bin/cdk").is_file() {
        return Err(format!("{} has no node_modules/.bin/cdk: run `npm ci` there (tests/run.sh does)", app.display()));
    }
    let code = placeholder_binaries();
    let output = tempfile::tempdir().expect("a temporary directory for the cloud assembly");
    let started = Instant::now();
    let result = Command::new("npx")
        // Never download a CDK other than the one the lock file installed.
        .args(["--no", "--", "cdk", "synth", "--quiet", "--no-notices", "--no-version-reporting", "--no-lookups"])
        .arg("--output")
        .arg(output.path())
        .arg("--context")
        .arg(format!("lambdaDir={}", code.path().display()))
        .current_dir(&app)
        .output()
        .map_err(|e| format!("npx starts in {}: {e}", app.display()))?;
    if !result.status.success() {
        return Err(format!(
            "cdk synth failed ({}):\n{}\n{}",
            result.status,
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        ));
    }
    eprintln!("cdk synth took {:.1} s", started.elapsed().as_secs_f64());
    let path = output.path().join(format!("{CDK_STACK}.template.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{} is readable: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is JSON: {e}", path.display()))
}

/// `$CDK_APP_DIR`, with its packages installed.
fn cdk_app() -> Result<PathBuf, String> {
    let app = std::env::var_os("CDK_APP_DIR")
        .map(PathBuf::from)
        .ok_or("CDK_APP_DIR is not set: run tests/run.sh, which installs the CDK app's packages and exports it")?;
    if !app.join("node_modules/.bin/cdk").is_file() {
        return Err(format!("{} has no node_modules/.bin/cdk: run `npm ci` there (tests/run.sh does)", app.display()));
    }
    Ok(app)
}

/// A directory with `<function>/bootstrap` for every function crate, as infra/build.sh lays the
/// release binaries out; the files only need to exist for the app to package them.
fn placeholder_binaries() -> tempfile::TempDir {
    let directory = tempfile::tempdir().expect("a temporary directory for the binaries");
    for crate_name in function_crates() {
        let function = directory.path().join(&crate_name);
        std::fs::create_dir(&function).expect("a function's directory");
        std::fs::write(function.join("bootstrap"), b"placeholder").expect("a placeholder bootstrap");
    }
    directory
}

/// The package names of `functions/*/Cargo.toml`, which infra/build.sh builds.
fn function_crates() -> BTreeSet<String> {
    let functions = Path::new(ROOT).join("functions");
    std::fs::read_dir(&functions)
        .expect("functions/ is readable")
        .map(|entry| entry.expect("a directory entry").path().join("Cargo.toml"))
        .filter(|manifest| manifest.is_file())
        .map(|manifest| {
            let text = std::fs::read_to_string(&manifest).expect("a readable Cargo.toml");
            let name = text
                .lines()
                .find_map(|line| line.strip_prefix("name = \""))
                .and_then(|rest| rest.strip_suffix('"'))
                .unwrap_or_else(|| panic!("{} names its package", manifest.display()));
            name.to_owned()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reading a template
// ---------------------------------------------------------------------------------------------

fn resources(doc: &Value) -> &Map<String, Value> {
    doc["Resources"].as_object().expect("the template has Resources")
}

fn of_type<'a>(doc: &'a Value, ty: &str) -> impl Iterator<Item = (&'a str, &'a Value)> {
    resources(doc).iter().filter(move |(_, r)| r["Type"] == ty).map(|(name, r)| (name.as_str(), r))
}

fn number(v: &Value, what: &str) -> u64 {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or_else(|| panic!("{what} is a number: {v}"))
}

fn number_or(v: &Value, default: u64, what: &str) -> u64 {
    if v.is_null() { default } else { number(v, what) }
}

/// One value or a list of values, as the templates allow for actions and resources.
fn one_or_many(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        single => vec![single],
    }
}

/// A value as one string in `Fn::Sub` syntax, whichever intrinsics built it: `!Sub
/// "${ResultsBucket.Arn}/results/*"` and `Fn::Join ["", [{"Fn::GetAtt": ["ResultsBucket",
/// "Arn"]}, "/results/*"]]` both read `${ResultsBucket.Arn}/results/*`.
fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Object(o) if o.len() == 1 => {
            let (function, argument) = o.iter().next().expect("one entry");
            match function.as_str() {
                "Ref" => format!("${{{}}}", argument.as_str().expect("Ref names a resource")),
                "Fn::GetAtt" => match argument {
                    Value::Array(parts) => {
                        format!("${{{}}}", parts.iter().map(render).collect::<Vec<_>>().join("."))
                    }
                    other => format!("${{{}}}", render(other)),
                },
                "Fn::Sub" => match argument {
                    Value::String(text) => text.clone(),
                    Value::Array(parts) => {
                        let text = parts[0].as_str().expect("Fn::Sub's text");
                        let variables = parts[1].as_object().expect("Fn::Sub's variables");
                        variables.iter().fold(text.to_owned(), |text, (name, value)| {
                            text.replace(&format!("${{{name}}}"), &render(value))
                        })
                    }
                    other => panic!("Fn::Sub takes a text or [text, variables]: {other}"),
                },
                "Fn::Join" => {
                    let separator = argument[0].as_str().expect("Fn::Join's separator");
                    let items = argument[1].as_array().expect("Fn::Join's list");
                    items.iter().map(render).collect::<Vec<_>>().join(separator)
                }
                "Fn::If" => {
                    let branches = argument.as_array().expect("Fn::If's list");
                    format!(
                        "${{If {} then {} else {}}}",
                        render(&branches[0]),
                        render(&branches[1]),
                        render(&branches[2])
                    )
                }
                other => panic!("no rendering for {other}: {v}"),
            }
        }
        other => panic!("not a string value: {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The facts both templates must agree on
// ---------------------------------------------------------------------------------------------

/// How a route is protected and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteFacts {
    /// Behind the JWT authorizer (false: open, as the console's files are).
    authorized: bool,
    scopes: BTreeSet<String>,
    /// The logical id of the function it invokes.
    function: String,
}

/// The JWT authorizer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AuthorizerFacts {
    identity_source: BTreeSet<String>,
    issuer: String,
    audience: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct QueueFacts {
    visibility_timeout: u64,
    retention: u64,
    /// The dead-letter queue's logical id and the receives before a message moves there.
    dead_letter: Option<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TableFacts {
    /// `(attribute, key type, attribute type)` in key order.
    keys: Vec<(String, String, String)>,
    time_to_live: Option<String>,
    /// DeletionPolicy and UpdateReplacePolicy.
    policies: (String, String),
    /// The global secondary indexes by name.
    indexes: BTreeMap<String, IndexFacts>,
}

/// A global secondary index: its keys as the table's are read, and what it projects.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexFacts {
    /// `(attribute, key type, attribute type)` in key order.
    keys: Vec<(String, String, String)>,
    projection_type: String,
    /// The non-key attributes of an INCLUDE projection.
    projected: BTreeSet<String>,
}

/// A function run on a schedule: the rate or cron expression, and whether the schedule may invoke
/// it (SAM's Schedule event grants that itself; a CDK rule needs a Lambda permission for
/// EventBridge naming the rule).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ScheduleFacts {
    expression: String,
    enabled: bool,
    invocable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LifecycleRule {
    id: String,
    prefix: String,
    expiration_days: u64,
    abort_multipart_days: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct BucketFacts {
    lifecycle: BTreeSet<LifecycleRule>,
    cors: Value,
    public_access_block: Value,
    encryption: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FunctionFacts {
    runtime: String,
    architectures: Vec<String>,
    handler: String,
    memory_size: u64,
    timeout: u64,
    ephemeral_storage: Option<u64>,
    /// X-Ray tracing mode.
    tracing: String,
    /// `LoggingConfig`: format, levels and log group, rendered.
    logging: BTreeMap<String, String>,
    /// Variable names and their values, rendered.
    environment: BTreeMap<String, String>,
    /// Every `(action, resource)` its role allows, resources rendered, X-Ray left out.
    grants: BTreeSet<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LogGroupFacts {
    retention_days: String,
    deletion_policy: String,
}

/// What an alarm watches and whom it calls. A metric is `Namespace MetricName Statistic Period`
/// with its dimensions rendered; an alarm on a math expression lists the expression's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AlarmFacts {
    metrics: BTreeSet<String>,
    expressions: BTreeSet<String>,
    threshold: String,
    comparison: String,
    evaluation_periods: u64,
    missing_data: String,
    actions: BTreeSet<String>,
}

/// The operations dashboard: its name and its widgets in order, each as the JSON of the body with
/// the names of the stack's resources in `Fn::Sub` syntax and every metric row spelled out (see
/// [`expand_metric_rows`]), so a body written with CloudWatch's `.`/`...` shorthand and one
/// written in full compare equal when they draw the same lines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DashboardFacts {
    name: String,
    widgets: Vec<Value>,
}

/// An EventBridge bus of the stack: its name, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EventBusFacts {
    name: String,
}

/// What invokes a function from a queue: the function and the queue by logical id, how many
/// messages an invocation takes, whether it reports failed messages one by one, how many
/// invocations run at once (rendered; empty when unbounded).
#[derive(Debug, Clone, PartialEq, Eq)]
struct EventSourceFacts {
    function: String,
    queue: String,
    batch_size: u64,
    response_types: BTreeSet<String>,
    maximum_concurrency: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OutputFacts {
    description: String,
    value: String,
    condition: Option<String>,
}

/// The service as one template defines it.
#[derive(Debug)]
struct Service {
    routes: BTreeMap<(String, String), RouteFacts>,
    authorizer: AuthorizerFacts,
    queues: BTreeMap<String, QueueFacts>,
    tables: BTreeMap<String, TableFacts>,
    bucket: BucketFacts,
    functions: BTreeMap<String, FunctionFacts>,
    log_groups: BTreeMap<String, LogGroupFacts>,
    alarms: BTreeMap<String, AlarmFacts>,
    dashboard: DashboardFacts,
    outputs: BTreeMap<String, OutputFacts>,
    /// The functions run on a schedule, by logical id.
    schedules: BTreeMap<String, BTreeSet<ScheduleFacts>>,
    /// The event buses, by logical id.
    event_buses: BTreeMap<String, EventBusFacts>,
    /// The event source mappings, by logical id.
    event_sources: BTreeMap<String, EventSourceFacts>,
}

impl Service {
    /// From the SAM template: routes are the HttpApi events of the functions, the authorizer is
    /// the HttpApi's, functions take `Globals.Function` where they set nothing themselves.
    fn from_sam(doc: &Value) -> Self {
        let (_, api) = single(of_type(doc, "AWS::Serverless::HttpApi"), "AWS::Serverless::HttpApi");
        let auth = &api["Properties"]["Auth"];
        let default_authorizer = auth["DefaultAuthorizer"].as_str().expect("the API has a default authorizer");
        let jwt = &auth["Authorizers"][default_authorizer];
        let authorizer = AuthorizerFacts {
            identity_source: one_or_many(&jwt["IdentitySource"]).into_iter().map(render).collect(),
            issuer: render(&jwt["JwtConfiguration"]["issuer"]),
            audience: one_or_many(&jwt["JwtConfiguration"]["audience"]).into_iter().map(render).collect(),
        };

        let globals = &doc["Globals"]["Function"];
        let mut routes = BTreeMap::new();
        let mut functions = BTreeMap::new();
        let mut schedules: BTreeMap<String, BTreeSet<ScheduleFacts>> = BTreeMap::new();
        // SAM turns a function's SQS event into a mapping named `{Function}{Event}`.
        let mut sqs_events: Vec<(String, String, Value)> = Vec::new();
        for (name, function) in of_type(doc, "AWS::Serverless::Function") {
            let properties = &function["Properties"];
            let setting = |key: &str| match &properties[key] {
                Value::Null => &globals[key],
                own => own,
            };
            for (event_name, event) in properties["Events"].as_object().into_iter().flatten() {
                if event["Type"] == "Schedule" {
                    let schedule = &event["Properties"];
                    // SAM makes the rule and the permission that lets it invoke the function.
                    let facts = ScheduleFacts {
                        expression: render(&schedule["Schedule"]),
                        enabled: schedule["Enabled"] != false && schedule["State"] != "DISABLED",
                        invocable: true,
                    };
                    schedules.entry(name.to_owned()).or_default().insert(facts);
                    continue;
                }
                if event["Type"] == "SQS" {
                    sqs_events.push((name.to_owned(), event_name.clone(), event["Properties"].clone()));
                    continue;
                }
                if event["Type"] != "HttpApi" {
                    continue;
                }
                let event = &event["Properties"];
                let route = (
                    event["Method"].as_str().expect("an HttpApi event's Method").to_uppercase(),
                    event["Path"].as_str().expect("an HttpApi event's Path").to_owned(),
                );
                let facts = RouteFacts {
                    authorized: event["Auth"]["Authorizer"] != "NONE",
                    scopes: one_or_many(&event["Auth"]["AuthorizationScopes"]).into_iter().map(render).collect(),
                    function: name.to_owned(),
                };
                assert!(routes.insert(route.clone(), facts).is_none(), "SAM: {route:?} is declared twice");
            }
            let mut environment = BTreeMap::new();
            for variables in [&globals["Environment"]["Variables"], &properties["Environment"]["Variables"]] {
                for (key, value) in variables.as_object().into_iter().flatten() {
                    environment.insert(key.clone(), render(value));
                }
            }
            let mut grants = BTreeSet::new();
            for policy in properties["Policies"].as_array().into_iter().flatten() {
                grants.extend(statement_grants(name, &policy["Statement"]));
            }
            let facts = FunctionFacts {
                runtime: render(setting("Runtime")),
                architectures: one_or_many(setting("Architectures")).into_iter().map(render).collect(),
                handler: render(setting("Handler")),
                memory_size: number_or(setting("MemorySize"), DEFAULT_MEMORY_SIZE, "MemorySize"),
                timeout: number_or(setting("Timeout"), DEFAULT_TIMEOUT, "Timeout"),
                ephemeral_storage: ephemeral_storage(setting("EphemeralStorage")),
                tracing: render(setting("Tracing")),
                // SAM merges a function's LoggingConfig into the global one.
                logging: [&globals["LoggingConfig"], &properties["LoggingConfig"]]
                    .into_iter()
                    .flat_map(|config| config.as_object().into_iter().flatten())
                    .map(|(key, value)| (key.clone(), render(value)))
                    .collect(),
                environment,
                grants,
            };
            functions.insert(name.to_owned(), facts);
        }

        Service {
            routes,
            authorizer,
            queues: queues(doc),
            tables: tables(doc),
            bucket: bucket(doc),
            functions,
            log_groups: log_groups(doc),
            alarms: alarms(doc),
            dashboard: dashboard(doc),
            outputs: outputs(doc),
            schedules,
            event_buses: event_buses(doc),
            event_sources: {
                let mut mappings = event_sources(doc);
                for (function, event, properties) in sqs_events {
                    let mut mapping = properties;
                    mapping["FunctionName"] = json!({ "Ref": function });
                    mapping["EventSourceArn"] = mapping["Queue"].take();
                    mappings.insert(format!("{function}{event}"), event_source(&function, &mapping));
                }
                mappings
            },
        }
    }

    /// From the synthesized template: routes are `AWS::ApiGatewayV2::Route`s, each targeting an
    /// integration of a function; a function's grants are the inline policies of its role.
    fn from_cdk(doc: &Value) -> Self {
        let (_, jwt) = single(of_type(doc, "AWS::ApiGatewayV2::Authorizer"), "AWS::ApiGatewayV2::Authorizer");
        let jwt = &jwt["Properties"];
        assert_eq!(jwt["AuthorizerType"], "JWT", "CDK: a JWT authorizer");
        let authorizer = AuthorizerFacts {
            identity_source: one_or_many(&jwt["IdentitySource"]).into_iter().map(render).collect(),
            issuer: render(&jwt["JwtConfiguration"]["Issuer"]),
            audience: one_or_many(&jwt["JwtConfiguration"]["Audience"]).into_iter().map(render).collect(),
        };

        let mut routes = BTreeMap::new();
        for (name, route) in of_type(doc, "AWS::ApiGatewayV2::Route") {
            let properties = &route["Properties"];
            let key = properties["RouteKey"].as_str().expect("a route's RouteKey");
            let (method, path) = key.split_once(' ').unwrap_or_else(|| panic!("{name}: RouteKey is `METHOD /path`"));
            let target = render(&properties["Target"]);
            let integration = target
                .strip_prefix("integrations/${")
                .and_then(|rest| rest.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{name}: Target names an integration: {target}"));
            let uri = render(&resources(doc)[integration]["Properties"]["IntegrationUri"]);
            let function = uri
                .strip_prefix("${")
                .and_then(|rest| rest.strip_suffix(".Arn}"))
                .unwrap_or_else(|| panic!("{integration}: IntegrationUri is a function's ARN: {uri}"));
            let authorized = match properties["AuthorizationType"].as_str() {
                Some("JWT") => true,
                Some("NONE") | None => false,
                Some(other) => panic!("{name}: unexpected AuthorizationType {other}"),
            };
            let facts = RouteFacts {
                authorized,
                scopes: one_or_many(&properties["AuthorizationScopes"]).into_iter().map(render).collect(),
                function: function.to_owned(),
            };
            let route = (method.to_owned(), path.to_owned());
            assert!(routes.insert(route.clone(), facts).is_none(), "CDK: {route:?} is declared twice");
        }

        // The role of each function, and the grants of each role's inline policies.
        let mut role_grants: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        for (name, policy) in of_type(doc, "AWS::IAM::Policy") {
            let grants = statement_grants(name, &policy["Properties"]["PolicyDocument"]["Statement"]);
            for role in one_or_many(&policy["Properties"]["Roles"]) {
                let role = render(role);
                let role = role.trim_start_matches("${").trim_end_matches('}').to_owned();
                role_grants.entry(role).or_default().extend(grants.iter().cloned());
            }
        }
        let mut functions = BTreeMap::new();
        for (name, function) in of_type(doc, "AWS::Lambda::Function") {
            let properties = &function["Properties"];
            let role = render(&properties["Role"]);
            let role = role.strip_prefix("${").and_then(|r| r.strip_suffix(".Arn}")).unwrap_or_else(|| {
                panic!("{name}: Role is a role of the stack: {role}");
            });
            let facts = FunctionFacts {
                runtime: render(&properties["Runtime"]),
                architectures: one_or_many(&properties["Architectures"]).into_iter().map(render).collect(),
                handler: render(&properties["Handler"]),
                memory_size: number_or(&properties["MemorySize"], DEFAULT_MEMORY_SIZE, "MemorySize"),
                timeout: number_or(&properties["Timeout"], DEFAULT_TIMEOUT, "Timeout"),
                ephemeral_storage: ephemeral_storage(&properties["EphemeralStorage"]),
                tracing: render(&properties["TracingConfig"]["Mode"]),
                logging: properties["LoggingConfig"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(key, value)| (key.clone(), render(value)))
                    .collect(),
                environment: properties["Environment"]["Variables"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(key, value)| (key.clone(), render(value)))
                    .collect(),
                grants: role_grants.remove(role).unwrap_or_default(),
            };
            functions.insert(name.to_owned(), facts);
        }

        Service {
            routes,
            authorizer,
            queues: queues(doc),
            tables: tables(doc),
            bucket: bucket(doc),
            functions,
            log_groups: log_groups(doc),
            alarms: alarms(doc),
            dashboard: dashboard(doc),
            outputs: outputs(doc),
            schedules: cdk_schedules(doc),
            event_buses: event_buses(doc),
            event_sources: event_sources(doc),
        }
    }
}

/// The functions the EventBridge rules of a synthesized template run on a schedule, each with
/// whether a Lambda permission lets that rule invoke it.
fn cdk_schedules(doc: &Value) -> BTreeMap<String, BTreeSet<ScheduleFacts>> {
    // `(function, rule)` pairs an EventBridge permission names.
    let permitted: BTreeSet<(String, String)> = of_type(doc, "AWS::Lambda::Permission")
        .map(|(_, permission)| &permission["Properties"])
        .filter(|p| p["Action"] == "lambda:InvokeFunction" && p["Principal"] == "events.amazonaws.com")
        .map(|p| (logical_id_of(&render(&p["FunctionName"])), logical_id_of(&render(&p["SourceArn"]))))
        .collect();
    let mut schedules: BTreeMap<String, BTreeSet<ScheduleFacts>> = BTreeMap::new();
    for (rule, definition) in of_type(doc, "AWS::Events::Rule") {
        let properties = &definition["Properties"];
        let Some(expression) = properties["ScheduleExpression"].as_str() else { continue };
        for target in one_or_many(&properties["Targets"]) {
            let function = logical_id_of(&render(&target["Arn"]));
            let facts = ScheduleFacts {
                expression: expression.to_owned(),
                enabled: properties["State"] != "DISABLED",
                invocable: permitted.contains(&(function.clone(), rule.to_owned())),
            };
            schedules.entry(function).or_default().insert(facts);
        }
    }
    schedules
}

fn event_buses(doc: &Value) -> BTreeMap<String, EventBusFacts> {
    of_type(doc, "AWS::Events::EventBus")
        .map(|(name, bus)| (name.to_owned(), EventBusFacts { name: render(&bus["Properties"]["Name"]) }))
        .collect()
}

fn event_sources(doc: &Value) -> BTreeMap<String, EventSourceFacts> {
    of_type(doc, "AWS::Lambda::EventSourceMapping")
        .map(|(name, mapping)| (name.to_owned(), event_source(name, &mapping["Properties"])))
        .collect()
}

/// The facts of an event source mapping's properties (`owner` names it in a failure).
fn event_source(owner: &str, p: &Value) -> EventSourceFacts {
    let concurrency = &p["ScalingConfig"]["MaximumConcurrency"];
    EventSourceFacts {
        function: logical_id_of(&render(&p["FunctionName"])),
        queue: logical_id_of(&render(&p["EventSourceArn"])),
        // SQS's default batch size.
        batch_size: number_or(&p["BatchSize"], 10, &format!("{owner}: BatchSize")),
        response_types: one_or_many(&p["FunctionResponseTypes"]).into_iter().map(render).collect(),
        maximum_concurrency: if concurrency.is_null() { String::new() } else { render(concurrency) },
    }
}

/// `X` of a rendered `${X}` or `${X.Arn}`: the logical id a reference names.
fn logical_id_of(rendered: &str) -> String {
    let inner = rendered.strip_prefix("${").and_then(|r| r.strip_suffix('}')).unwrap_or(rendered);
    inner.strip_suffix(".Arn").unwrap_or(inner).to_owned()
}

fn single<'a>(mut found: impl Iterator<Item = (&'a str, &'a Value)>, what: &str) -> (&'a str, &'a Value) {
    let first = found.next().unwrap_or_else(|| panic!("no {what}"));
    assert!(found.next().is_none(), "more than one {what}");
    first
}

fn ephemeral_storage(v: &Value) -> Option<u64> {
    (!v.is_null()).then(|| number(&v["Size"], "EphemeralStorage.Size"))
}

/// The `(action, resource)` pairs of a policy's statements, which must all allow.
fn statement_grants(owner: &str, statements: &Value) -> BTreeSet<(String, String)> {
    let mut grants = BTreeSet::new();
    for statement in one_or_many(statements) {
        assert_eq!(statement["Effect"], "Allow", "{owner}: only Allow statements");
        for action in one_or_many(&statement["Action"]) {
            let action = render(action);
            if XRAY_ACTIONS.contains(&action.as_str()) {
                continue;
            }
            for resource in one_or_many(&statement["Resource"]) {
                grants.insert((action.clone(), render(resource)));
            }
        }
    }
    grants
}

fn queues(doc: &Value) -> BTreeMap<String, QueueFacts> {
    of_type(doc, "AWS::SQS::Queue")
        .map(|(name, queue)| {
            let properties = &queue["Properties"];
            let redrive = &properties["RedrivePolicy"];
            let dead_letter = (!redrive.is_null()).then(|| {
                let target = render(&redrive["deadLetterTargetArn"]);
                let target = target
                    .strip_prefix("${")
                    .and_then(|t| t.strip_suffix(".Arn}"))
                    .unwrap_or_else(|| panic!("{name}: the dead-letter target is a queue of the stack: {target}"));
                (target.to_owned(), number(&redrive["maxReceiveCount"], "maxReceiveCount"))
            });
            let facts = QueueFacts {
                visibility_timeout: number_or(
                    &properties["VisibilityTimeout"],
                    DEFAULT_VISIBILITY_TIMEOUT,
                    "VisibilityTimeout",
                ),
                retention: number(&properties["MessageRetentionPeriod"], "MessageRetentionPeriod"),
                dead_letter,
            };
            (name.to_owned(), facts)
        })
        .collect()
}

fn tables(doc: &Value) -> BTreeMap<String, TableFacts> {
    of_type(doc, "AWS::DynamoDB::Table")
        .map(|(name, table)| {
            let properties = &table["Properties"];
            let attribute_type = |attribute: &str| {
                one_or_many(&properties["AttributeDefinitions"])
                    .into_iter()
                    .find(|d| d["AttributeName"] == attribute)
                    .map(|d| render(&d["AttributeType"]))
                    .unwrap_or_else(|| panic!("{name}: key attribute {attribute} is defined"))
            };
            let keys = one_or_many(&properties["KeySchema"])
                .into_iter()
                .map(|key| {
                    let attribute = render(&key["AttributeName"]);
                    let ty = attribute_type(&attribute);
                    (attribute, render(&key["KeyType"]), ty)
                })
                .collect();
            let ttl = &properties["TimeToLiveSpecification"];
            let indexes = one_or_many(&properties["GlobalSecondaryIndexes"])
                .into_iter()
                .map(|index| {
                    let keys = one_or_many(&index["KeySchema"])
                        .into_iter()
                        .map(|key| {
                            let attribute = render(&key["AttributeName"]);
                            let ty = attribute_type(&attribute);
                            (attribute, render(&key["KeyType"]), ty)
                        })
                        .collect();
                    let projection = &index["Projection"];
                    let facts = IndexFacts {
                        keys,
                        projection_type: render(&projection["ProjectionType"]),
                        projected: one_or_many(&projection["NonKeyAttributes"]).into_iter().map(render).collect(),
                    };
                    (render(&index["IndexName"]), facts)
                })
                .collect();
            let facts = TableFacts {
                keys,
                time_to_live: (ttl["Enabled"] == true).then(|| render(&ttl["AttributeName"])),
                policies: (
                    table["DeletionPolicy"].as_str().unwrap_or("Delete").to_owned(),
                    table["UpdateReplacePolicy"].as_str().unwrap_or("Delete").to_owned(),
                ),
                indexes,
            };
            (name.to_owned(), facts)
        })
        .collect()
}

fn bucket(doc: &Value) -> BucketFacts {
    let (name, bucket) = single(of_type(doc, "AWS::S3::Bucket"), "AWS::S3::Bucket");
    let properties = &bucket["Properties"];
    let lifecycle = one_or_many(&properties["LifecycleConfiguration"]["Rules"])
        .into_iter()
        .map(|rule| {
            assert_eq!(rule["Status"], "Enabled", "{name}: lifecycle rules are enabled");
            LifecycleRule {
                id: render(&rule["Id"]),
                prefix: render(&rule["Prefix"]),
                expiration_days: number(&rule["ExpirationInDays"], "ExpirationInDays"),
                abort_multipart_days: number(
                    &rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"],
                    "DaysAfterInitiation",
                ),
            }
        })
        .collect();
    BucketFacts {
        lifecycle,
        cors: properties["CorsConfiguration"].clone(),
        public_access_block: properties["PublicAccessBlockConfiguration"].clone(),
        encryption: properties["BucketEncryption"].clone(),
    }
}

fn log_groups(doc: &Value) -> BTreeMap<String, LogGroupFacts> {
    of_type(doc, "AWS::Logs::LogGroup")
        .map(|(name, group)| {
            let facts = LogGroupFacts {
                retention_days: render(&group["Properties"]["RetentionInDays"]),
                deletion_policy: group["DeletionPolicy"].as_str().unwrap_or("Delete").to_owned(),
            };
            (name.to_owned(), facts)
        })
        .collect()
}

fn alarms(doc: &Value) -> BTreeMap<String, AlarmFacts> {
    let metric = |namespace: &Value, name: &Value, dimensions: &Value, statistic: &Value, period: &Value| {
        let mut dimensions: Vec<String> = one_or_many(dimensions)
            .into_iter()
            .map(|d| format!("{}={}", render(&d["Name"]), render(&d["Value"])))
            .collect();
        dimensions.sort();
        format!(
            "{} {} {} {} [{}]",
            render(namespace),
            render(name),
            render(statistic),
            render(period),
            dimensions.join(", ")
        )
    };
    of_type(doc, "AWS::CloudWatch::Alarm")
        .map(|(name, alarm)| {
            let p = &alarm["Properties"];
            let mut metrics = BTreeSet::new();
            let mut expressions = BTreeSet::new();
            if !p["MetricName"].is_null() {
                metrics.insert(metric(
                    &p["Namespace"],
                    &p["MetricName"],
                    &p["Dimensions"],
                    &p["Statistic"],
                    &p["Period"],
                ));
            }
            for query in one_or_many(&p["Metrics"]) {
                if let Some(expression) = query["Expression"].as_str() {
                    expressions.insert(expression.to_owned());
                } else {
                    let stat = &query["MetricStat"];
                    let m = &stat["Metric"];
                    metrics.insert(metric(
                        &m["Namespace"],
                        &m["MetricName"],
                        &m["Dimensions"],
                        &stat["Stat"],
                        &stat["Period"],
                    ));
                }
            }
            let facts = AlarmFacts {
                metrics,
                expressions,
                threshold: render(&p["Threshold"]),
                comparison: render(&p["ComparisonOperator"]),
                evaluation_periods: number(&p["EvaluationPeriods"], "EvaluationPeriods"),
                missing_data: render(&p["TreatMissingData"]),
                actions: one_or_many(&p["AlarmActions"]).into_iter().map(render).collect(),
            };
            (name.to_owned(), facts)
        })
        .collect()
}

/// The `Dashboard` resource, its body rendered to one JSON text and parsed.
fn dashboard(doc: &Value) -> DashboardFacts {
    let dashboard = resources(doc).get("Dashboard").expect("the template declares the Dashboard");
    assert_eq!(dashboard["Type"], "AWS::CloudWatch::Dashboard", "Dashboard's type");
    let properties = &dashboard["Properties"];
    let body = render(&properties["DashboardBody"]);
    let body: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("the dashboard body is JSON once rendered ({e}):\n{body}"));
    let widgets = body["widgets"]
        .as_array()
        .expect("the dashboard body has widgets")
        .iter()
        .map(|widget| {
            let mut widget = widget.clone();
            if let Some(rows) = widget["properties"]["metrics"].as_array() {
                widget["properties"]["metrics"] = Value::Array(expand_metric_rows(rows));
            }
            widget
        })
        .collect();
    DashboardFacts { name: render(&properties["DashboardName"]), widgets }
}

/// The rows of a metric widget with CloudWatch's shorthand spelled out: `"."` is the value at the
/// same place in the row above, a leading `"..."` stands for the row above's values up to where
/// the given ones start. A row's options (label, stat) and expressions are its own.
fn expand_metric_rows(rows: &[Value]) -> Vec<Value> {
    let mut previous: Vec<Value> = Vec::new();
    rows.iter()
        .map(|row| {
            let items = row.as_array().unwrap_or_else(|| panic!("a metric row is a list: {row}"));
            let fields = items.iter().take_while(|item| item.is_string()).count();
            let (given, options) = items.split_at(fields);
            let expanded: Vec<Value> = if given.first().is_some_and(|first| first == "...") {
                let tail = &given[1..];
                let kept = previous
                    .len()
                    .checked_sub(tail.len())
                    .unwrap_or_else(|| panic!("`...` in {row} follows a shorter row {previous:?}"));
                previous[..kept].iter().chain(tail).cloned().collect()
            } else {
                given
                    .iter()
                    .enumerate()
                    .map(|(place, field)| match field.as_str() {
                        Some(".") => {
                            previous.get(place).cloned().unwrap_or_else(|| panic!("`.` in {row} has nothing above it"))
                        }
                        _ => field.clone(),
                    })
                    .collect()
            };
            if !expanded.is_empty() {
                previous = expanded.clone();
            }
            Value::Array(expanded.into_iter().chain(options.iter().cloned()).collect())
        })
        .collect()
}

fn outputs(doc: &Value) -> BTreeMap<String, OutputFacts> {
    doc["Outputs"]
        .as_object()
        .expect("the template has Outputs")
        .iter()
        .map(|(name, output)| {
            let facts = OutputFacts {
                description: render(&output["Description"]),
                value: render(&output["Value"]),
                condition: output["Condition"].as_str().map(str::to_owned),
            };
            (name.clone(), facts)
        })
        .collect()
}

fn sam() -> Service {
    Service::from_sam(&sam_template())
}

fn cdk() -> Service {
    Service::from_cdk(cdk_template())
}

// ---------------------------------------------------------------------------------------------
// The comparisons
// ---------------------------------------------------------------------------------------------

/// Every difference between the two services, one line each; empty when they are the same.
fn differences(sam: &Service, cdk: &Service) -> Vec<String> {
    let mut found = Vec::new();
    compare(&mut found, "route", &sam.routes, &cdk.routes);
    if sam.authorizer != cdk.authorizer {
        found.push(format!("authorizer: SAM {:?}, CDK {:?}", sam.authorizer, cdk.authorizer));
    }
    compare(&mut found, "queue", &sam.queues, &cdk.queues);
    compare(&mut found, "table", &sam.tables, &cdk.tables);
    if sam.bucket != cdk.bucket {
        found.push(format!("results bucket: SAM {:?}, CDK {:?}", sam.bucket, cdk.bucket));
    }
    compare(&mut found, "function", &sam.functions, &cdk.functions);
    compare(&mut found, "log group", &sam.log_groups, &cdk.log_groups);
    compare(&mut found, "alarm", &sam.alarms, &cdk.alarms);
    compare_dashboards(&mut found, &sam.dashboard, &cdk.dashboard);
    compare(&mut found, "output", &sam.outputs, &cdk.outputs);
    compare(&mut found, "schedule", &sam.schedules, &cdk.schedules);
    compare(&mut found, "event bus", &sam.event_buses, &cdk.event_buses);
    compare(&mut found, "event source", &sam.event_sources, &cdk.event_sources);
    found
}

/// The dashboards' names, then their widgets place by place, named by title or heading.
fn compare_dashboards(found: &mut Vec<String>, sam: &DashboardFacts, cdk: &DashboardFacts) {
    if sam.name != cdk.name {
        found.push(format!("dashboard name: SAM {}, CDK {}", sam.name, cdk.name));
    }
    for (place, (sam_widget, cdk_widget)) in sam.widgets.iter().zip(&cdk.widgets).enumerate() {
        if sam_widget != cdk_widget {
            let properties = &sam_widget["properties"];
            let title = properties["title"].as_str().or(properties["markdown"].as_str()).unwrap_or("untitled");
            found.push(format!("dashboard widget {place} ({title}): SAM {sam_widget}, CDK {cdk_widget}"));
        }
    }
    if sam.widgets.len() != cdk.widgets.len() {
        found.push(format!("dashboard widgets: SAM has {}, CDK {}", sam.widgets.len(), cdk.widgets.len()));
    }
}

fn compare<K: std::fmt::Debug + Ord, V: std::fmt::Debug + PartialEq>(
    found: &mut Vec<String>,
    what: &str,
    sam: &BTreeMap<K, V>,
    cdk: &BTreeMap<K, V>,
) {
    for (key, sam_value) in sam {
        match cdk.get(key) {
            None => found.push(format!("{what} {key:?}: only in the SAM template")),
            Some(cdk_value) if cdk_value != sam_value => {
                found.push(format!("{what} {key:?}: SAM {sam_value:?}, CDK {cdk_value:?}"))
            }
            Some(_) => {}
        }
    }
    for key in cdk.keys().filter(|key| !sam.contains_key(key)) {
        found.push(format!("{what} {key:?}: only in the CDK app"));
    }
}

fn assert_no_differences(found: Vec<String>) {
    assert!(found.is_empty(), "the CDK app and the SAM template differ:\n{}", found.join("\n"));
}

#[test]
fn cdk_app_has_the_routes_scopes_and_authorizer_of_the_sam_template() {
    let (sam, cdk) = (sam(), cdk());
    let mut found = Vec::new();
    compare(&mut found, "route", &sam.routes, &cdk.routes);
    if sam.authorizer != cdk.authorizer {
        found.push(format!("authorizer: SAM {:?}, CDK {:?}", sam.authorizer, cdk.authorizer));
    }
    assert_no_differences(found);
    // The comparison means something only if the routes are there and protected.
    assert!(sam.routes.len() > 40, "the API's routes are found: {}", sam.routes.len());
    assert!(sam.routes.values().filter(|r| r.authorized && !r.scopes.is_empty()).count() > 40);
}

#[test]
fn cdk_app_has_the_queues_and_dead_letter_queues_of_the_sam_template() {
    let (sam, cdk) = (sam(), cdk());
    let mut found = Vec::new();
    compare(&mut found, "queue", &sam.queues, &cdk.queues);
    assert_no_differences(found);
    // Every queue is either a dead-letter queue or has one.
    let dead_letter_queues: BTreeSet<&str> =
        cdk.queues.values().filter_map(|q| q.dead_letter.as_ref()).map(|(dlq, _)| dlq.as_str()).collect();
    for (name, queue) in &cdk.queues {
        assert!(
            queue.dead_letter.is_some() || dead_letter_queues.contains(name.as_str()),
            "{name} has no dead-letter queue and is none"
        );
    }
    assert!(
        dead_letter_queues.len() >= 7,
        "a dead-letter queue per worker, for imports and for refreshes: {dead_letter_queues:?}"
    );
    let refresh = &sam.queues["RefreshQueue"];
    assert_eq!(
        refresh.dead_letter.as_ref().map(|(dlq, _)| dlq.as_str()),
        Some("RefreshDeadLetterQueue"),
        "the refresh queue's dead-letter queue is compared"
    );
}

#[test]
fn cdk_app_has_the_tables_and_the_bucket_of_the_sam_template() {
    let (sam, cdk) = (sam(), cdk());
    let mut found = Vec::new();
    compare(&mut found, "table", &sam.tables, &cdk.tables);
    if sam.bucket != cdk.bucket {
        found.push(format!("results bucket: SAM {:?}, CDK {:?}", sam.bucket, cdk.bucket));
    }
    assert_no_differences(found);
    assert!(sam.tables.values().any(|t| t.time_to_live.is_some()), "the jobs table expires items");
    let index = sam.tables["JobsTable"].indexes.get(segments_aws::PROGRESS_INDEX).expect("the progress index");
    assert_eq!(index.keys.len(), 2, "the progress index has a hash and a range key: {index:?}");
    assert!(!index.projected.is_empty(), "the progress index projects the watch's counts: {index:?}");
    let due = sam.tables["SegmentsTable"].indexes.get(segments_aws::DUE_INDEX).expect("the due index");
    assert_eq!(due.keys.len(), 2, "the due index has a hash and a range key: {due:?}");
    assert_eq!(due.keys[1].2, "N", "the due index orders by epoch seconds: {due:?}");
    assert_eq!(due.projection_type, "KEYS_ONLY", "{due:?}");
    assert!(!sam.bucket.lifecycle.is_empty(), "the bucket has lifecycle rules");
}

#[test]
fn cdk_app_runs_the_scheduled_functions_of_the_sam_template_at_the_same_rate() {
    let (sam, cdk) = (sam(), cdk());
    let mut found = Vec::new();
    compare(&mut found, "schedule", &sam.schedules, &cdk.schedules);
    assert_no_differences(found);
    // The comparison means something only if the sweeper's and the refresh scheduler's schedules
    // are found.
    let sweeper = sam.schedules.get("SweeperFunction").expect("the sweeper runs on a schedule");
    assert!(sweeper.iter().all(|s| s.enabled && s.invocable), "{sweeper:?}");
    let scheduler = sam.schedules.get("RefreshSchedulerFunction").expect("the refresh scheduler runs on a schedule");
    assert!(scheduler.iter().all(|s| s.enabled && s.invocable && s.expression == "rate(1 minute)"), "{scheduler:?}");
}

#[test]
fn cdk_app_has_the_event_bus_and_the_event_sources_of_the_sam_template() {
    let (sam, cdk) = (sam(), cdk());
    let mut found = Vec::new();
    compare(&mut found, "event bus", &sam.event_buses, &cdk.event_buses);
    compare(&mut found, "event source", &sam.event_sources, &cdk.event_sources);
    assert_no_differences(found);
    // The comparison means something only if what it compares is found: the segment events'
    // bus named after the stack, the applier on the refresh queue, a worker per segment type on
    // its queue, the import worker and the dead-letter handler.
    let bus = sam.event_buses.get("SegmentEventBus").expect("the segment events' bus");
    assert!(bus.name.contains("${AWS::StackName}"), "the bus is named after the stack: {bus:?}");
    let applier = sam.event_sources.get("RefreshApplierEventSource").expect("the applier's event source");
    assert_eq!(
        (applier.function.as_str(), applier.queue.as_str(), applier.batch_size),
        ("RefreshApplierFunction", "RefreshQueue", 1),
        "{applier:?}"
    );
    assert!(applier.response_types.contains("ReportBatchItemFailures"), "{applier:?}");
    assert!(sam.event_sources.len() >= 12, "the mappings are found: {:?}", sam.event_sources.keys());
    // The applier's grants reach the bus and its queue: compared with the functions.
    let grants = &sam.functions["RefreshApplierFunction"].grants;
    assert!(grants.contains(&("events:PutEvents".to_owned(), "${SegmentEventBus.Arn}".to_owned())), "{grants:?}");
    assert!(grants.contains(&("sqs:ReceiveMessage".to_owned(), "${RefreshQueue.Arn}".to_owned())), "{grants:?}");
}

#[test]
fn cdk_app_has_the_functions_of_the_sam_template_with_their_variables_and_grants() {
    let (sam, cdk) = (sam(), cdk());
    let mut found = Vec::new();
    compare(&mut found, "function", &sam.functions, &cdk.functions);
    assert_no_differences(found);
    assert_eq!(sam.functions.len(), function_crates().len(), "a function per function crate");
    // The comparison means something only if there is something to compare: every function but
    // the console (which calls no AWS service) has grants, every one has variables and a log group.
    let granted = sam.functions.values().filter(|f| !f.grants.is_empty()).count();
    assert_eq!(granted, sam.functions.len() - 1, "grants are found");
    assert!(sam.functions.values().all(|f| !f.environment.is_empty() && f.logging.contains_key("LogGroup")));
}

#[test]
fn cdk_app_has_the_log_groups_and_alarms_of_the_sam_template() {
    let (sam, cdk) = (sam(), cdk());
    let mut found = Vec::new();
    compare(&mut found, "log group", &sam.log_groups, &cdk.log_groups);
    compare(&mut found, "alarm", &sam.alarms, &cdk.alarms);
    assert_no_differences(found);
    assert!(sam.log_groups.len() > sam.functions.len(), "a log group per function and the API's");
    assert!(sam.alarms.len() > 2 * sam.functions.len(), "errors and throttles alarms per function, and more");
}

#[test]
fn cdk_app_has_the_dashboard_and_outputs_of_the_sam_template() {
    let (sam, cdk) = (sam(), cdk());
    let mut found = Vec::new();
    compare_dashboards(&mut found, &sam.dashboard, &cdk.dashboard);
    compare(&mut found, "output", &sam.outputs, &cdk.outputs);
    assert_no_differences(found);

    // The comparison means something only if the dashboard shows the service: every metric of
    // its own, and the stack's resources by the names the stack gives them.
    let sam_template = sam_template();
    let rows: Vec<&Value> = sam
        .dashboard
        .widgets
        .iter()
        .flat_map(|widget| widget["properties"]["metrics"].as_array().into_iter().flatten())
        .collect();
    assert!(rows.len() > 50, "the dashboard's metric rows are found: {}", rows.len());
    // A service metric is a row of the namespace, or a SEARCH for one of its metric names.
    let shown: BTreeSet<&str> = rows
        .iter()
        .filter_map(|row| match (&row[0], &row[1]) {
            (Value::String(namespace), Value::String(metric)) if namespace == "FinancialSegments" => {
                Some(metric.as_str())
            }
            (Value::Object(query), _) => query["expression"]
                .as_str()
                .and_then(|expression| expression.split_once("MetricName=\"")?.1.split_once('"'))
                .map(|(metric, _)| metric),
            _ => None,
        })
        .collect();
    assert_eq!(shown, BTreeSet::from(SERVICE_METRICS), "the dashboard shows every metric of the service");
    let named: BTreeSet<&str> = rows
        .iter()
        .flat_map(|row| row.as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .filter_map(|field| field.strip_prefix("${")?.strip_suffix('}'))
        .map(|reference| reference.split('.').next().unwrap_or(reference))
        .collect();
    for reference in &named {
        assert!(resources(&sam_template).contains_key(*reference), "the dashboard names ${{{reference}}}, no resource");
    }
    let every_function_queue_table_and_the_api = sam.functions.len() + sam.queues.len() + sam.tables.len() + 1;
    assert_eq!(named.len(), every_function_queue_table_and_the_api, "the dashboard names {named:?}");
    assert!(sam.outputs.contains_key("DashboardUrl"), "the dashboard's address is an output");
}

#[test]
fn cdk_app_declares_every_resource_of_the_sam_template_under_its_logical_id() {
    let sam = sam_template();
    let cdk = cdk_template();
    let mut missing = Vec::new();
    for (name, resource) in resources(&sam) {
        let sam_type = resource["Type"].as_str().unwrap_or_else(|| panic!("{name} has a Type"));
        // The SAM resource types become these CloudFormation types.
        let expected = match sam_type {
            "AWS::Serverless::Function" => "AWS::Lambda::Function",
            "AWS::Serverless::HttpApi" => "AWS::ApiGatewayV2::Api",
            other => other,
        };
        let found = &resources(cdk).get(name).map(|r| r["Type"].clone());
        if found.as_ref().and_then(Value::as_str) != Some(expected) {
            missing.push(format!("{name} ({expected}): CDK has {found:?}"));
        }
    }
    assert!(missing.is_empty(), "resources of the SAM template the CDK app lacks:\n{}", missing.join("\n"));
    // Conditional resources keep their condition.
    for (name, resource) in resources(&sam).iter().filter(|(_, r)| !r["Condition"].is_null()) {
        assert_eq!(resources(cdk)[name]["Condition"], resource["Condition"], "{name}'s condition");
    }
}

/// `cdk synth` runs the app with `ts-node -T`, which strips the types without checking them.
#[test]
fn cdk_app_type_checks() {
    let app = cdk_app().unwrap_or_else(|failure| panic!("{failure}"));
    let output = Command::new("npx")
        .args(["--no", "--", "tsc", "--noEmit", "--project", "."])
        .current_dir(&app)
        .output()
        .expect("npx starts");
    assert!(
        output.status.success(),
        "tsc finds errors in the CDK app:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn cfn_lint_finds_no_error_in_the_synthesized_template() {
    let linter =
        std::env::var_os("CFN_LINT").map(PathBuf::from).unwrap_or_else(|| Path::new(ROOT).join(".venv/bin/cfn-lint"));
    assert!(
        linter.is_file(),
        "{} not found: run tests/run.sh, which installs cfn-lint and exports CFN_LINT",
        linter.display()
    );
    let mut file = tempfile::Builder::new().suffix(".json").tempfile().expect("a temporary template file");
    serde_json::to_writer(&mut file, cdk_template()).expect("the template is written");
    let output = Command::new(&linter).args(["--format", "json"]).arg(file.path()).output().expect("cfn-lint starts");
    let matches: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "cfn-lint printed JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    // Warnings remain: CDK names each function's role both by GetAtt and in DependsOn (W3005).
    let errors: Vec<&Value> = matches.iter().filter(|m| m["Level"] == "Error").collect();
    assert!(errors.is_empty(), "cfn-lint errors in the synthesized template:\n{errors:#?}");
}

/// A change to the synthesized template, and what it breaks.
type Mutation = (&'static str, Box<dyn Fn(&mut Value)>);

/// The comparison fails when one fact of the CDK template changes.
#[test]
fn the_comparison_catches_a_lost_route_scope_redrive_key_index_lifecycle_variable_grant_metric_schedule_or_output() {
    let sam = sam();
    assert_no_differences(differences(&sam, &cdk()));
    let mutations: Vec<Mutation> = vec![
        (
            "a route without its scope",
            Box::new(|doc| {
                let route = routes_mut(doc)
                    .find(|r| r["Properties"]["AuthorizationScopes"].is_array())
                    .expect("a scoped route");
                route["Properties"].as_object_mut().expect("properties").remove("AuthorizationScopes");
            }),
        ),
        (
            "a removed route",
            Box::new(|doc| {
                let name = of_type(doc, "AWS::ApiGatewayV2::Route").map(|(n, _)| n.to_owned()).next().expect("a route");
                doc["Resources"].as_object_mut().expect("resources").remove(&name);
            }),
        ),
        (
            "a route open to anyone",
            Box::new(|doc| {
                let route =
                    routes_mut(doc).find(|r| r["Properties"]["AuthorizationType"] == "JWT").expect("a JWT route");
                route["Properties"]["AuthorizationType"] = json!("NONE");
            }),
        ),
        (
            "another maxReceiveCount",
            Box::new(|doc| {
                doc["Resources"]["HighBalanceQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] = json!(10)
            }),
        ),
        (
            "a queue without its dead-letter queue",
            Box::new(|doc| {
                doc["Resources"]["ImportQueue"]["Properties"]
                    .as_object_mut()
                    .expect("properties")
                    .remove("RedrivePolicy");
            }),
        ),
        (
            "another visibility timeout",
            Box::new(|doc| doc["Resources"]["LowBalanceQueue"]["Properties"]["VisibilityTimeout"] = json!(900)),
        ),
        (
            "a table without TTL",
            Box::new(|doc| {
                doc["Resources"]["JobsTable"]["Properties"]
                    .as_object_mut()
                    .expect("properties")
                    .remove("TimeToLiveSpecification");
            }),
        ),
        (
            "a table deleted with the stack",
            Box::new(|doc| doc["Resources"]["AccountDataTable"]["DeletionPolicy"] = json!("Delete")),
        ),
        (
            "another key type",
            Box::new(|doc| {
                doc["Resources"]["SegmentsTable"]["Properties"]["AttributeDefinitions"][1]["AttributeType"] = json!("N")
            }),
        ),
        (
            "results kept longer",
            Box::new(|doc| {
                doc["Resources"]["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] =
                    json!(30)
            }),
        ),
        (
            "another lifecycle prefix",
            Box::new(|doc| {
                doc["Resources"]["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"][1]["Prefix"] =
                    json!("uploads/")
            }),
        ),
        (
            "a function without a variable",
            Box::new(|doc| {
                doc["Resources"]["CreateJobFunction"]["Properties"]["Environment"]["Variables"]
                    .as_object_mut()
                    .expect("variables")
                    .remove("HIGH_BALANCE_QUEUE_URL");
            }),
        ),
        (
            "another memory size",
            Box::new(|doc| doc["Resources"]["GetResultFunction"]["Properties"]["MemorySize"] = json!(1024)),
        ),
        (
            "a wider grant",
            Box::new(|doc| {
                let name = of_type(doc, "AWS::IAM::Policy").map(|(n, _)| n.to_owned()).next().expect("a policy");
                let statements = &mut doc["Resources"][&name]["Properties"]["PolicyDocument"]["Statement"];
                statements
                    .as_array_mut()
                    .expect("statements")
                    .push(json!({"Effect": "Allow", "Action": "dynamodb:Scan", "Resource": "*"}));
            }),
        ),
        (
            "a dashboard without one of its metrics",
            Box::new(|doc| {
                let dropped = r#",["FinancialSegments","CallbacksFailed"]"#;
                let parts = doc["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Join"][1]
                    .as_array_mut()
                    .expect("the dashboard body is joined from parts");
                let part = parts
                    .iter_mut()
                    .find(|part| part.as_str().is_some_and(|text| text.contains(dropped)))
                    .expect("the callbacks widget's second metric");
                *part = json!(part.as_str().expect("a text part").replacen(dropped, "", 1));
            }),
        ),
        (
            "another dashboard period",
            Box::new(|doc| {
                let parts = doc["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Join"][1]
                    .as_array_mut()
                    .expect("the dashboard body is joined from parts");
                let part = parts
                    .iter_mut()
                    .rev()
                    .find(|part| part.as_str().is_some_and(|text| text.contains(r#""period":300"#)))
                    .expect("a widget's period");
                *part = json!(part.as_str().expect("a text part").replacen(r#""period":300"#, r#""period":60"#, 1));
            }),
        ),
        (
            "a table without its index",
            Box::new(|doc| {
                doc["Resources"]["JobsTable"]["Properties"]
                    .as_object_mut()
                    .expect("properties")
                    .remove("GlobalSecondaryIndexes");
            }),
        ),
        (
            "an index that projects less",
            Box::new(|doc| {
                let projection =
                    &mut doc["Resources"]["JobsTable"]["Properties"]["GlobalSecondaryIndexes"][0]["Projection"];
                projection["NonKeyAttributes"].as_array_mut().expect("projected attributes").pop();
            }),
        ),
        (
            "an index range key of another type",
            Box::new(|doc| {
                let definitions = doc["Resources"]["JobsTable"]["Properties"]["AttributeDefinitions"]
                    .as_array_mut()
                    .expect("attribute definitions");
                let range = definitions.iter_mut().find(|d| d["AttributeType"] == "N").expect("a number attribute");
                range["AttributeType"] = json!("S");
            }),
        ),
        (
            "a schedule of another rate",
            Box::new(|doc| {
                doc["Resources"]["SweeperFunctionEvery5Minutes"]["Properties"]["ScheduleExpression"] =
                    json!("rate(1 hour)")
            }),
        ),
        (
            "a schedule that may not invoke its function",
            Box::new(|doc| {
                doc["Resources"].as_object_mut().expect("resources").remove("SweeperFunctionEvery5MinutesPermission");
            }),
        ),
        (
            "a disabled schedule",
            Box::new(|doc| doc["Resources"]["SweeperFunctionEvery5Minutes"]["Properties"]["State"] = json!("DISABLED")),
        ),
        (
            "a lost output",
            Box::new(|doc| {
                doc["Outputs"].as_object_mut().expect("outputs").remove("DashboardUrl");
            }),
        ),
        (
            "a bus of another name",
            Box::new(|doc| doc["Resources"]["SegmentEventBus"]["Properties"]["Name"] = json!("default")),
        ),
        (
            "a lost bus output",
            Box::new(|doc| {
                doc["Outputs"].as_object_mut().expect("outputs").remove("SegmentEventBusArn");
            }),
        ),
        (
            "refreshes batched",
            Box::new(|doc| doc["Resources"]["RefreshApplierEventSource"]["Properties"]["BatchSize"] = json!(10)),
        ),
        (
            "an applier without partial batch failures",
            Box::new(|doc| {
                doc["Resources"]["RefreshApplierEventSource"]["Properties"]
                    .as_object_mut()
                    .expect("properties")
                    .remove("FunctionResponseTypes");
            }),
        ),
        (
            "an applier with unbounded concurrency",
            Box::new(|doc| {
                doc["Resources"]["RefreshApplierEventSource"]["Properties"]
                    .as_object_mut()
                    .expect("properties")
                    .remove("ScalingConfig");
            }),
        ),
        (
            "a refresh queue nobody consumes",
            Box::new(|doc| {
                doc["Resources"].as_object_mut().expect("resources").remove("RefreshApplierEventSource");
            }),
        ),
        (
            "a refresh message back before the lease is over",
            Box::new(|doc| doc["Resources"]["RefreshQueue"]["Properties"]["VisibilityTimeout"] = json!(600)),
        ),
        (
            "a Segments table without the due index",
            Box::new(|doc| {
                doc["Resources"]["SegmentsTable"]["Properties"]
                    .as_object_mut()
                    .expect("properties")
                    .remove("GlobalSecondaryIndexes");
            }),
        ),
        (
            "a refresh scheduler of another rate",
            Box::new(|doc| {
                doc["Resources"]["RefreshSchedulerFunctionEveryMinute"]["Properties"]["ScheduleExpression"] =
                    json!("rate(5 minutes)")
            }),
        ),
        (
            "segments-api without the bus",
            Box::new(|doc| {
                doc["Resources"]["SegmentsApiFunction"]["Properties"]["Environment"]["Variables"]
                    .as_object_mut()
                    .expect("variables")
                    .remove("EVENT_BUS_NAME");
            }),
        ),
        (
            "an applier that may not publish",
            Box::new(|doc| {
                let policies: Vec<String> = of_type(doc, "AWS::IAM::Policy")
                    .filter(|(_, p)| {
                        one_or_many(&p["Properties"]["Roles"]).iter().any(|r| render(r).contains("RefreshApplier"))
                    })
                    .map(|(n, _)| n.to_owned())
                    .collect();
                assert!(!policies.is_empty(), "the applier's role has a policy");
                for name in policies {
                    let statements = doc["Resources"][&name]["Properties"]["PolicyDocument"]["Statement"]
                        .as_array_mut()
                        .expect("statements");
                    statements.retain(|s| s["Action"] != "events:PutEvents");
                }
            }),
        ),
    ];
    for (what, mutate) in mutations {
        let mut doc = cdk_template().clone();
        mutate(&mut doc);
        assert!(!differences(&sam, &Service::from_cdk(&doc)).is_empty(), "{what} is not caught");
    }
}

fn routes_mut(doc: &mut Value) -> impl Iterator<Item = &mut Value> {
    doc["Resources"]
        .as_object_mut()
        .expect("resources")
        .values_mut()
        .filter(|r| r["Type"] == "AWS::ApiGatewayV2::Route")
}
