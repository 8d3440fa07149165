//! Creates the service's tables, bucket and queues: for local setups against an AWS-compatible
//! server and for tests. The SAM template (`infra/`) is what deploys them to AWS; these calls
//! mirror its settings (keys, TTL, lifecycle, DLQ redrive).
//!
//! Every function may be called again on existing resources: it leaves them as configured.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveSpecification,
    TimeToLiveStatus,
};
use aws_sdk_s3::operation::create_bucket::CreateBucketError;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration,
    ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, PublicAccessBlockConfiguration,
};
use aws_sdk_sqs::operation::create_queue::CreateQueueError;
use aws_sdk_sqs::types::QueueAttributeName;
use tracing::instrument;

use super::items::{JOBS_TTL_ATTRIBUTE, PARTITION_KEY, SORT_KEY};
use super::{AwsClients, AwsResources};
use segments_core::domain::SegmentType;
use segments_core::imports::{IMPORT_RETENTION_DAYS, IMPORTS_PREFIX};
use segments_core::jobs::RESULT_RETENTION_DAYS;
use segments_core::ports::BoxError;

/// The key prefix of result objects, which the bucket's lifecycle rule expires.
pub const RESULTS_PREFIX: &str = "results/";
/// Days after which the lifecycle rule removes the parts of an upload never completed.
pub const ABORT_INCOMPLETE_UPLOADS_DAYS: i32 = 1;

/// The id of the bucket's lifecycle rule for results.
pub const RESULTS_LIFECYCLE_RULE_ID: &str = "expire-results";
/// The id of the bucket's lifecycle rule for the uploaded files of imports.
pub const IMPORTS_LIFECYCLE_RULE_ID: &str = "expire-imports";
/// Messages in a dead-letter queue are kept for the longest time SQS allows (14 days).
const DLQ_RETENTION_SECONDS: u32 = 14 * 24 * 60 * 60;
/// How long to wait for a new table to become active.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_PREFIX_LEN: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "invalid resource name prefix {0:?}: use 1 to {MAX_PREFIX_LEN} lower-case letters, digits and hyphens, \
         starting with a letter or digit"
    )]
    InvalidPrefix(String),
    #[error("{context}")]
    Service {
        context: String,
        #[source]
        source: BoxError,
    },
}

fn service_error(context: impl Into<String>, source: impl Into<BoxError>) -> ProvisionError {
    ProvisionError::Service { context: context.into(), source: source.into() }
}

/// The AccountData table: `pk` (S) and `sk` (S), on-demand capacity.
#[instrument(skip(client))]
pub async fn create_account_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), ProvisionError> {
    create_keyed_table(client, name).await
}

/// The Jobs table: `pk` (S) and `sk` (S), on-demand capacity, TTL on `expiresAt`.
#[instrument(skip(client))]
pub async fn create_jobs_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), ProvisionError> {
    create_keyed_table(client, name).await?;
    let described = client
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(|e| service_error(format!("reading the TTL of table {name}"), e.into_service_error()))?;
    let enabled = described.time_to_live_description().is_some_and(|d| {
        d.attribute_name() == Some(JOBS_TTL_ATTRIBUTE)
            && matches!(d.time_to_live_status(), Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling))
    });
    if enabled {
        return Ok(());
    }
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name(JOBS_TTL_ATTRIBUTE)
        .enabled(true)
        .build()
        .map_err(|e| service_error("building the TTL specification", e))?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(ttl)
        .send()
        .await
        .map_err(|e| service_error(format!("enabling TTL on table {name}"), e.into_service_error()))?;
    Ok(())
}

/// The Segments table of the management API: `pk` (S) and `sk` (S), on-demand capacity. Not part
/// of [`provision_all`]: only the segments API uses it ([`segments_table_name`]).
#[instrument(skip(client))]
pub async fn create_segments_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), ProvisionError> {
    create_keyed_table(client, name).await
}

/// The Segments table's name for a prefix: `{prefix}-segments`.
pub fn segments_table_name(prefix: &str) -> String {
    format!("{prefix}-segments")
}

async fn create_keyed_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), ProvisionError> {
    let attribute = |attribute: &str| {
        AttributeDefinition::builder()
            .attribute_name(attribute)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| service_error("building a key attribute", e))
    };
    let key = |attribute: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(attribute)
            .key_type(key_type)
            .build()
            .map_err(|e| service_error("building a key schema", e))
    };
    let created = client
        .create_table()
        .table_name(name)
        .attribute_definitions(attribute(PARTITION_KEY)?)
        .attribute_definitions(attribute(SORT_KEY)?)
        .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key(SORT_KEY, KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    if let Err(e) = created {
        match e.into_service_error() {
            CreateTableError::ResourceInUseException(_) => tracing::debug!("table exists already"),
            other => return Err(service_error(format!("creating table {name}"), other)),
        }
    }
    client
        .wait_until_table_exists()
        .table_name(name)
        .wait(TABLE_ACTIVE_TIMEOUT)
        .await
        .map_err(|e| service_error(format!("waiting for table {name} to become active"), e))?;
    Ok(())
}

/// The results bucket: private, with lifecycle rules expiring `results/` and `imports/` after 14
/// days.
#[instrument(skip(client))]
pub async fn create_results_bucket(client: &aws_sdk_s3::Client, name: &str) -> Result<(), ProvisionError> {
    let mut create = client.create_bucket().bucket(name);
    // Outside us-east-1 S3 wants the bucket's region spelled out.
    if let Some(region) = client.config().region().map(|r| r.as_ref().to_owned())
        && region != "us-east-1"
    {
        let location = CreateBucketConfiguration::builder()
            .location_constraint(BucketLocationConstraint::from(region.as_str()))
            .build();
        create = create.create_bucket_configuration(location);
    }
    if let Err(e) = create.send().await {
        match e.into_service_error() {
            CreateBucketError::BucketAlreadyOwnedByYou(_) => tracing::debug!("bucket exists already"),
            other => return Err(service_error(format!("creating bucket {name}"), other)),
        }
    }

    let private = PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build();
    client
        .put_public_access_block()
        .bucket(name)
        .public_access_block_configuration(private)
        .send()
        .await
        .map_err(|e| service_error(format!("blocking public access to bucket {name}"), e.into_service_error()))?;

    let rule = LifecycleRule::builder()
        .id(RESULTS_LIFECYCLE_RULE_ID)
        .filter(LifecycleRuleFilter::builder().prefix(RESULTS_PREFIX).build())
        .status(ExpirationStatus::Enabled)
        .expiration(LifecycleExpiration::builder().days(RESULT_RETENTION_DAYS as i32).build())
        // A finalize that died mid-upload leaves parts no one completes.
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder().days_after_initiation(ABORT_INCOMPLETE_UPLOADS_DAYS).build(),
        )
        .build()
        .map_err(|e| service_error("building the lifecycle rule", e))?;
    let uploads = LifecycleRule::builder()
        .id(IMPORTS_LIFECYCLE_RULE_ID)
        .filter(LifecycleRuleFilter::builder().prefix(IMPORTS_PREFIX).build())
        .status(ExpirationStatus::Enabled)
        .expiration(LifecycleExpiration::builder().days(IMPORT_RETENTION_DAYS as i32).build())
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder().days_after_initiation(ABORT_INCOMPLETE_UPLOADS_DAYS).build(),
        )
        .build()
        .map_err(|e| service_error("building the lifecycle rule of the uploads", e))?;
    let lifecycle = BucketLifecycleConfiguration::builder()
        .rules(rule)
        .rules(uploads)
        .build()
        .map_err(|e| service_error("building the lifecycle configuration", e))?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(name)
        .lifecycle_configuration(lifecycle)
        .send()
        .await
        .map_err(|e| service_error(format!("setting the lifecycle of bucket {name}"), e.into_service_error()))?;
    Ok(())
}

/// A standard queue `name` whose messages move to the dead-letter queue `{name}-dlq` after
/// `max_receive_count` receives. Returns `(queue_url, dlq_url)`.
#[instrument(skip(client))]
pub async fn create_queue_with_dlq(
    client: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
) -> Result<(String, String), ProvisionError> {
    let dlq_name = dead_letter_queue_name(name);
    let dlq_url = create_queue(
        client,
        &dlq_name,
        HashMap::from([(QueueAttributeName::MessageRetentionPeriod, DLQ_RETENTION_SECONDS.to_string())]),
    )
    .await?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| service_error(format!("reading the ARN of queue {dlq_name}"), e.into_service_error()))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| service_error(format!("reading the ARN of queue {dlq_name}"), "no QueueArn attribute"))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count.max(1).to_string(),
    });
    let queue_url =
        create_queue(client, name, HashMap::from([(QueueAttributeName::RedrivePolicy, redrive.to_string())])).await?;
    Ok((queue_url, dlq_url))
}

/// The name of a queue's dead-letter queue.
pub fn dead_letter_queue_name(queue_name: &str) -> String {
    format!("{queue_name}-dlq")
}

async fn create_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<String, ProvisionError> {
    let created = client.create_queue().queue_name(name).set_attributes(Some(attributes.clone())).send().await;
    match created {
        Ok(out) => {
            out.queue_url.ok_or_else(|| service_error(format!("creating queue {name}"), "no queue URL returned"))
        }
        // It exists with other attributes: bring them to what is asked for.
        Err(e) => match e.into_service_error() {
            CreateQueueError::QueueNameExists(_) => {
                let url = client
                    .get_queue_url()
                    .queue_name(name)
                    .send()
                    .await
                    .map_err(|e| service_error(format!("finding queue {name}"), e.into_service_error()))?
                    .queue_url
                    .ok_or_else(|| service_error(format!("finding queue {name}"), "no queue URL returned"))?;
                client
                    .set_queue_attributes()
                    .queue_url(&url)
                    .set_attributes(Some(attributes))
                    .send()
                    .await
                    .map_err(|e| service_error(format!("updating queue {name}"), e.into_service_error()))?;
                Ok(url)
            }
            other => Err(service_error(format!("creating queue {name}"), other)),
        },
    }
}

/// The resource names for a prefix: tables `{prefix}-account-data` and `{prefix}-jobs`, bucket
/// `{prefix}-results`, queues `{prefix}-{segment-type}` (queue URLs are only known once created).
pub fn resource_names(prefix: &str) -> Result<AwsResources, ProvisionError> {
    let valid = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !prefix.starts_with('-');
    if !valid {
        return Err(ProvisionError::InvalidPrefix(prefix.to_owned()));
    }
    Ok(AwsResources {
        account_table: format!("{prefix}-account-data"),
        jobs_table: format!("{prefix}-jobs"),
        results_bucket: format!("{prefix}-results"),
        queue_urls: BTreeMap::new(),
    })
}

/// The queue name of a segment type: `{prefix}-high-balance`.
pub fn queue_name(prefix: &str, segment_type: SegmentType) -> String {
    format!("{prefix}-{}", segment_type.kebab())
}

/// Creates everything the service needs under a name prefix (see [`resource_names`]): both
/// tables, the bucket, and one queue with a dead-letter queue per segment type.
#[instrument(skip(clients))]
pub async fn provision_all(
    clients: &AwsClients,
    prefix: &str,
    max_receive_count: u32,
) -> Result<AwsResources, ProvisionError> {
    let mut resources = resource_names(prefix)?;
    create_account_table(&clients.dynamodb, &resources.account_table).await?;
    create_jobs_table(&clients.dynamodb, &resources.jobs_table).await?;
    create_results_bucket(&clients.s3, &resources.results_bucket).await?;
    for &segment_type in SegmentType::ALL {
        let (url, _dlq_url) =
            create_queue_with_dlq(&clients.sqs, &queue_name(prefix, segment_type), max_receive_count).await?;
        resources.queue_urls.insert(segment_type, url);
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let r = resource_names("dev-1").unwrap();
        assert_eq!(r.account_table, "dev-1-account-data");
        assert_eq!(r.jobs_table, "dev-1-jobs");
        assert_eq!(r.results_bucket, "dev-1-results");
        assert_eq!(queue_name("dev-1", SegmentType::InsuranceSpending), "dev-1-insurance-spending");
        assert_eq!(dead_letter_queue_name("dev-1-low-balance"), "dev-1-low-balance-dlq");
    }

    #[test]
    fn prefixes_that_cannot_name_a_bucket_are_refused() {
        for bad in ["", "Dev", "a_b", "-a", "a.b", &"x".repeat(41)] {
            assert!(matches!(resource_names(bad), Err(ProvisionError::InvalidPrefix(_))), "{bad:?}");
        }
    }
}
