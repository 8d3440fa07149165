//! `segments provision --aws` against a local AWS-compatible server (moto): it creates every
//! resource the functions need, a second run changes nothing, resources of another shape under
//! its names are refused and left as they were, and the environment it prints and writes names
//! what it created.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;
use segments_aws::AwsClients;
use segments_core::domain::SegmentType;

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
        .chain(["IMPORT_QUEUE_URL", "MAX_RECEIVE_COUNT"])
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
    // Three tables, the bucket, and six queues (five types and the imports) with their DLQs.
    assert_eq!(created, 3 + 1 + 2 * (SegmentType::ALL.len() + 1), "{}", stderr(&first));
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
    // A Jobs table keyed by `id` alone, a work queue without a dead-letter queue and a bucket
    // without lifecycle rules, under the names the prefix gives.
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
    let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(REGION))
        .build();
    clients.s3.create_bucket().bucket("other-results").create_bucket_configuration(location).send().await.unwrap();

    let refused = provision_cli(&server, &["--prefix", "other"]);
    assert!(!refused.status.success(), "a table of other keys must be refused");
    let message = stderr(&refused);
    assert!(message.contains("table other-jobs: keys (id HASH) instead of (pk HASH, sk RANGE)"), "{message}");
    assert!(message.contains("queue other-high-balance: no dead-letter queue"), "{message}");
    assert!(message.contains("bucket other-results: lifecycle rules none instead of"), "{message}");
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(refused.stdout.is_empty(), "no environment for resources that are not there");

    // Left as they were, and nothing else created: the refusal comes before any write.
    let described = clients.dynamodb.describe_table().table_name("other-jobs").send().await.unwrap();
    let keys: Vec<&str> = described.table().unwrap().key_schema().iter().map(|k| k.attribute_name()).collect();
    assert_eq!(keys, ["id"]);
    assert_eq!(clients.dynamodb.list_tables().send().await.unwrap().table_names(), ["other-jobs"]);
    assert!(redrive_of(&clients, &foreign_queue).await.is_none(), "the queue keeps having no redrive");
    let queues = clients.sqs.list_queues().send().await.unwrap();
    assert_eq!(queues.queue_urls(), std::slice::from_ref(&foreign_queue));
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
