//! `segments provision --aws` against a local AWS-compatible server (moto): it creates every
//! resource the functions need, a second run changes nothing, resources of another shape under
//! its names are refused and left as they were, an event bus of its name is used as it is, and
//! the environment it prints and writes names what it created — enough for `serve --aws` to
//! start and consume the refresh queue.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;
use segments_aws::AwsClients;
use segments_core::domain::refresh::{RefreshId, RefreshMessage};
use segments_core::domain::segment::SegmentId;
use segments_core::domain::{MandatorId, SegmentType};

use crate::support::moto::{MotoServer, REGION};
use crate::support::runner::BIN;

/// `segments provision --aws …` with the server's endpoint, region and test credentials, and
/// nothing else of the AWS environment of the machine running the tests.
pub fn provision_cli(server: &MotoServer, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["provision", "--aws"]).args(args);
    for inherited in ["AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"] {
        cmd.env_remove(inherited);
    }
    cmd.env("AWS_ENDPOINT_URL", server.endpoint())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .output()
        .expect("segments provision runs")
}

/// A `segments serve --aws` process; stopped when dropped.
struct ServingProcess(Child);

impl Drop for ServingProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The messages of a queue, visible or received and not yet deleted.
async fn messages_in(clients: &AwsClients, queue_url: &str) -> u64 {
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    attributes.values().map(|count| count.parse::<u64>().unwrap()).sum()
}

/// `KEY=value` lines (as `provision` prints them and writes the env file), unquoting a
/// single-quoted value.
pub fn env_lines(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not KEY=value: {line:?}"));
            let value = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(value);
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The variable names of every resource, for prefix-independent checks.
fn expected_variables() -> Vec<String> {
    let mut names: Vec<String> = ["ACCOUNT_DATA_TABLE", "JOBS_TABLE", "RESULTS_BUCKET", "SEGMENTS_TABLE"]
        .into_iter()
        .chain(["IMPORT_QUEUE_URL", "MAX_RECEIVE_COUNT", "REFRESH_QUEUE_URL", "EVENT_BUS_NAME"])
        .map(str::to_owned)
        .collect();
    names.extend(SegmentType::ALL.iter().map(|&t| segments_aws::AwsResources::queue_url_var(t)));
    names.sort();
    names
}

async fn redrive_of(clients: &AwsClients, queue_url: &str) -> Option<serde_json::Value> {
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    attributes.get(&QueueAttributeName::RedrivePolicy).map(|r| serde_json::from_str(r).unwrap())
}

fn max_receive_count(redrive: &serde_json::Value) -> String {
    redrive["maxReceiveCount"].to_string().trim_matches('"').to_owned()
}

async fn queue_url(clients: &AwsClients, name: &str) -> String {
    clients.sqs.get_queue_url().queue_name(name).send().await.unwrap().queue_url.unwrap()
}

/// The names of every event bus, the account's `default` one included.
async fn event_buses(clients: &AwsClients) -> Vec<String> {
    let listed = clients.eventbridge.list_event_buses().send().await.unwrap();
    let mut names: Vec<String> = listed.event_buses().iter().filter_map(|b| b.name().map(str::to_owned)).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn provision_creates_every_resource_and_a_second_run_changes_nothing() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("lambda.env");
    let env_file_arg = env_file.to_str().unwrap();

    let first = provision_cli(&server, &["--prefix", "dev-1", "--env-file", env_file_arg]);
    assert!(first.status.success(), "{}", stderr(&first));
    let created = stderr(&first).lines().filter(|l| l.starts_with("created ")).count();
    // Three tables, the bucket, seven queues (five types, the imports, the refreshes) with their
    // DLQs, and the event bus.
    assert_eq!(created, 3 + 1 + 2 * (SegmentType::ALL.len() + 2) + 1, "{}", stderr(&first));
    assert!(stderr(&first).contains("created event bus dev-1-segment-events"), "{}", stderr(&first));
    let printed = env_lines(&String::from_utf8(first.stdout.clone()).unwrap());
    assert_eq!(printed.keys().cloned().collect::<Vec<_>>(), expected_variables());

    // The printed environment names what exists, shaped as the functions need it.
    assert_eq!(printed["ACCOUNT_DATA_TABLE"], "dev-1-account-data");
    assert_eq!(printed["SEGMENTS_TABLE"], "dev-1-segments");
    assert_eq!(printed["MAX_RECEIVE_COUNT"], "5");
    for table in [&printed["ACCOUNT_DATA_TABLE"], &printed["JOBS_TABLE"], &printed["SEGMENTS_TABLE"]] {
        let described = clients.dynamodb.describe_table().table_name(table).send().await.unwrap();
        let keys: Vec<(&str, KeyType)> = described
            .table()
            .unwrap()
            .key_schema()
            .iter()
            .map(|k| (k.attribute_name(), k.key_type().clone()))
            .collect();
        assert_eq!(keys, [("pk", KeyType::Hash), ("sk", KeyType::Range)], "{table}");
    }
    let ttl = clients.dynamodb.describe_time_to_live().table_name(&printed["JOBS_TABLE"]).send().await.unwrap();
    assert_eq!(ttl.time_to_live_description().unwrap().time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    clients.s3.head_bucket().bucket(&printed["RESULTS_BUCKET"]).send().await.expect("the results bucket exists");
    for &segment_type in SegmentType::ALL {
        let url = &printed[&segments_aws::AwsResources::queue_url_var(segment_type)];
        assert_eq!(*url, queue_url(&clients, &format!("dev-1-{}", segment_type.kebab())).await);
        let redrive = redrive_of(&clients, url).await.expect("a redrive policy");
        assert_eq!(max_receive_count(&redrive), "5");
        let dlq = redrive["deadLetterTargetArn"].as_str().unwrap();
        assert!(dlq.ends_with(&format!(":dev-1-{}-dlq", segment_type.kebab())), "{dlq}");
    }
    assert_eq!(printed["IMPORT_QUEUE_URL"], queue_url(&clients, "dev-1-imports").await);
    assert!(redrive_of(&clients, &printed["IMPORT_QUEUE_URL"]).await.is_some(), "the import queue has a DLQ");
    assert_eq!(printed["REFRESH_QUEUE_URL"], queue_url(&clients, "dev-1-refresh").await);
    let redrive = redrive_of(&clients, &printed["REFRESH_QUEUE_URL"]).await.expect("the refresh queue has a DLQ");
    assert_eq!(max_receive_count(&redrive), "5");
    let dlq = redrive["deadLetterTargetArn"].as_str().unwrap();
    assert!(dlq.ends_with(":dev-1-refresh-dlq"), "{dlq}");
    assert_eq!(printed["EVENT_BUS_NAME"], "dev-1-segment-events");
    assert_eq!(event_buses(&clients).await, ["default", "dev-1-segment-events"]);

    // The env file: the same values, plus where the server is.
    assert_env_file_format(&env_file);
    let written = env_lines(&std::fs::read_to_string(&env_file).unwrap());
    let mut expected = printed.clone();
    expected.insert("AWS_ENDPOINT_URL".into(), server.endpoint());
    expected.insert("AWS_REGION".into(), REGION.into());
    assert_eq!(written, expected);

    // Again: everything is found as it should be, nothing is created, the output is the same.
    let second = provision_cli(&server, &["--prefix", "dev-1"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).lines().all(|l| l.starts_with("unchanged ")),
        "a second run changes nothing: {}",
        stderr(&second)
    );
    assert_eq!(env_lines(&String::from_utf8(second.stdout).unwrap()), printed);
    let tables = clients.dynamodb.list_tables().send().await.unwrap();
    assert_eq!(tables.table_names().len(), 3);
    let queues = clients.sqs.list_queues().send().await.unwrap();
    assert_eq!(queues.queue_urls().len(), 2 * (SegmentType::ALL.len() + 2));
    assert_eq!(event_buses(&clients).await, ["default", "dev-1-segment-events"]);

    // `--json`: the same environment as one object.
    let json = provision_cli(&server, &["--prefix", "dev-1", "--json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    let object: BTreeMap<String, String> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(object, printed);
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_of_another_shape_are_refused_and_left_unchanged() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    // A Jobs table keyed by `id` alone, a work queue and a refresh queue without a dead-letter
    // queue and a bucket without lifecycle rules, under the names the prefix gives.
    let id = |key_type| KeySchemaElement::builder().attribute_name("id").key_type(key_type).build().unwrap();
    clients
        .dynamodb
        .create_table()
        .table_name("other-jobs")
        .key_schema(id(KeyType::Hash))
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("id").attribute_type(ScalarAttributeType::S).build().unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let foreign_queue =
        clients.sqs.create_queue().queue_name("other-high-balance").send().await.unwrap().queue_url.unwrap();
    let foreign_refresh_queue =
        clients.sqs.create_queue().queue_name("other-refresh").send().await.unwrap().queue_url.unwrap();
    let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(REGION))
        .build();
    clients.s3.create_bucket().bucket("other-results").create_bucket_configuration(location).send().await.unwrap();

    let refused = provision_cli(&server, &["--prefix", "other"]);
    assert!(!refused.status.success(), "a table of other keys must be refused");
    let message = stderr(&refused);
    assert!(message.contains("table other-jobs: keys (id HASH) instead of (pk HASH, sk RANGE)"), "{message}");
    assert!(message.contains("queue other-high-balance: no dead-letter queue"), "{message}");
    assert!(message.contains("queue other-refresh: no dead-letter queue"), "{message}");
    assert!(message.contains("bucket other-results: lifecycle rules none instead of"), "{message}");
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(refused.stdout.is_empty(), "no environment for resources that are not there");

    // Left as they were, and nothing else created: the refusal comes before any write.
    let described = clients.dynamodb.describe_table().table_name("other-jobs").send().await.unwrap();
    let keys: Vec<&str> = described.table().unwrap().key_schema().iter().map(|k| k.attribute_name()).collect();
    assert_eq!(keys, ["id"]);
    assert_eq!(clients.dynamodb.list_tables().send().await.unwrap().table_names(), ["other-jobs"]);
    assert!(redrive_of(&clients, &foreign_queue).await.is_none(), "the queue keeps having no redrive");
    assert!(redrive_of(&clients, &foreign_refresh_queue).await.is_none(), "the queue keeps having no redrive");
    let mut queues = clients.sqs.list_queues().send().await.unwrap().queue_urls().to_vec();
    queues.sort();
    let mut foreign = vec![foreign_queue, foreign_refresh_queue];
    foreign.sort();
    assert_eq!(queues, foreign);
    assert_eq!(event_buses(&clients).await, ["default"], "no event bus is created either");
    let lifecycle = clients.s3.get_bucket_lifecycle_configuration().bucket("other-results").send().await;
    assert!(lifecycle.is_err(), "the bucket keeps having no lifecycle: {lifecycle:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_with_another_max_receive_count_is_refused() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    let first = provision_cli(&server, &["--prefix", "mrc"]);
    assert!(first.status.success(), "{}", stderr(&first));

    let other = provision_cli(&server, &["--prefix", "mrc", "--max-receive-count", "3"]);
    assert!(!other.status.success(), "another maxReceiveCount must be refused");
    let message = stderr(&other);
    assert!(message.contains("queue mrc-high-balance: maxReceiveCount 5 instead of 3"), "{message}");
    let url = queue_url(&clients, "mrc-high-balance").await;
    assert_eq!(max_receive_count(&redrive_of(&clients, &url).await.unwrap()), "5", "left unchanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_bus_of_its_name_is_used_as_it_is() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    let description = "the bank's own bus";
    clients.eventbridge.create_event_bus().name("bus-segment-events").description(description).send().await.unwrap();

    let out = provision_cli(&server, &["--prefix", "bus"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("unchanged event bus bus-segment-events"), "{}", stderr(&out));
    let printed = env_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(printed["EVENT_BUS_NAME"], "bus-segment-events");
    let described = clients.eventbridge.describe_event_bus().name("bus-segment-events").send().await.unwrap();
    assert_eq!(described.description(), Some(description), "left as it was");
    assert_eq!(event_buses(&clients).await, ["bus-segment-events", "default"]);
}

/// The README's flow: the env file of `provision` is all `serve --aws` needs to start, and the
/// runner consumes the refresh queue itself, deleting what it handled (a message of a refresh
/// that does not exist, and one that is no refresh message at all).
#[tokio::test(flavor = "multi_thread")]
async fn serve_aws_starts_on_the_written_environment_and_consumes_the_refresh_queue() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("lambda.env");
    let out = provision_cli(&server, &["--prefix", "run", "--env-file", env_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let environment = env_lines(&std::fs::read_to_string(&env_file).unwrap());
    let refresh_queue = environment["REFRESH_QUEUE_URL"].clone();
    let unknown_refresh = RefreshMessage {
        mandator_id: MandatorId::parse("demo-bank").unwrap(),
        segment_id: SegmentId::new(),
        refresh_id: RefreshId::new(),
    };
    for body in [serde_json::to_string(&unknown_refresh).unwrap(), "not a refresh message".to_owned()] {
        clients.sqs.send_message().queue_url(&refresh_queue).message_body(body).send().await.unwrap();
    }
    assert_eq!(messages_in(&clients, &refresh_queue).await, 2);

    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--aws", "--port", "0", "--json", "--workers", "1", "--data-dir"]).arg(dir.path().join("data"));
    for inherited in ["AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"] {
        cmd.env_remove(inherited);
    }
    for cognito in ["COGNITO_USER_POOL_ID", "COGNITO_ISSUER", "COGNITO_CLIENT_IDS"] {
        cmd.env_remove(cognito);
    }
    cmd.envs(&environment)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut serving = ServingProcess(cmd.spawn().expect("segments serve starts"));
    let mut line = String::new();
    BufReader::new(serving.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let announced: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve --aws did not start ({e}): {line:?}"));
    assert!(announced["url"].as_str().is_some_and(|u| u.starts_with("http://127.0.0.1:")), "{announced}");

    let deadline = Instant::now() + Duration::from_secs(30);
    while messages_in(&clients, &refresh_queue).await > 0 {
        assert!(Instant::now() < deadline, "serve --aws left the refresh messages in the queue");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let dlq = queue_url(&clients, "run-refresh-dlq").await;
    assert_eq!(messages_in(&clients, &dlq).await, 0, "deleted, not dead-lettered");
}

#[test]
fn provision_without_aws_names_the_missing_flag() {
    let out = Command::new(BIN).args(["provision", "--prefix", "x"]).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--aws"), "{}", stderr(&out));
}

/// The env file is what `cargo lambda watch --env-file` and a shell read: one `KEY=value` per
/// line, nothing else.
fn assert_env_file_format(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    for line in text.lines() {
        let (key, _) = line.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
        assert!(key.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{line:?}");
    }
}
