//! Creates the service's tables, bucket, queues and event bus: for local setups against an
//! AWS-compatible server and for tests. The SAM template (`infra/`) is what deploys them to AWS;
//! these calls mirror its settings (keys, TTL, lifecycle, DLQ redrive).
//!
//! Two ways to meet resources that exist already:
//! - [`provision_service`] (the `segments provision` command, on an emulator or a development
//!   account) inspects every resource first and refuses, changing nothing, when one exists with
//!   another shape (other keys, TTL, lifecycle, redrive, …); it creates only what is missing.
//! - The `create_*` functions and [`provision_all`] (tests, which own their emulator) bring an
//!   existing resource to the asked configuration where that can be changed in place.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    TableDescription, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_eventbridge::operation::create_event_bus::CreateEventBusError;
use aws_sdk_eventbridge::operation::describe_event_bus::DescribeEventBusError;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::operation::create_bucket::CreateBucketError;
use aws_sdk_s3::operation::head_bucket::HeadBucketError;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration,
    ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, PublicAccessBlockConfiguration,
};
use aws_sdk_sqs::operation::create_queue::CreateQueueError;
use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;
use aws_sdk_sqs::types::QueueAttributeName;
use tracing::instrument;

use super::items::{IDLE_SWEEPS, JOBS_TTL_ATTRIBUTE, PARTITION_KEY, SHARDS_SEEN, SORT_KEY};
use super::progress_index::{DUE, PROGRESS, TimeIndex};
use super::{AwsClients, AwsResources, IMPORT_QUEUE_URL_VAR, SegmentsResources};
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
    /// Resources exist under the names with another shape; nothing was created or changed.
    #[error(
        "refusing to change existing resources of another shape (delete them or choose another prefix): {}",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Conflicts(Vec<Conflict>),
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

/// A secondary index of one of the service's tables, as [`create_keyed_table`] makes it.
#[derive(Debug, Clone, Copy)]
struct IndexShape {
    index: TimeIndex,
    /// The attributes projected besides the keys; none: a keys-only index.
    projected: &'static [&'static str],
}

/// The Jobs table's `ProgressIndex`: `sweepPartition` (S, hash), `progressAt` (N, range),
/// projecting the watch's counts, so the sweeper reads a stalled job's watch from the index alone.
const PROGRESS_INDEX_SHAPE: IndexShape = IndexShape { index: PROGRESS, projected: &[SHARDS_SEEN, IDLE_SWEEPS] };

/// The Segments table's `DueIndex`: `duePartition` (S, hash), `dueAt` (N, range), keys only (a
/// due item is read again whole).
const DUE_INDEX_SHAPE: IndexShape = IndexShape { index: DUE, projected: &[] };

/// The AccountData table: `pk` (S) and `sk` (S), on-demand capacity.
#[instrument(skip(client))]
pub async fn create_account_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), ProvisionError> {
    create_keyed_table(client, name, None).await
}

/// The Jobs table: `pk` (S) and `sk` (S), on-demand capacity, TTL on `expiresAt`, and the sparse
/// index of live jobs by progress (`ProgressIndex`); an existing table without the index gets it.
#[instrument(skip(client))]
pub async fn create_jobs_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), ProvisionError> {
    create_keyed_table(client, name, Some(PROGRESS_INDEX_SHAPE)).await?;
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

/// The Segments table of the management API: `pk` (S) and `sk` (S), on-demand capacity, and the
/// sparse index of due refreshes and schedules (`DueIndex`); an existing table without the index
/// gets it. Not part of [`provision_all`]: only the segments functions use it
/// ([`segments_table_name`]).
#[instrument(skip(client))]
pub async fn create_segments_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), ProvisionError> {
    create_keyed_table(client, name, Some(DUE_INDEX_SHAPE)).await
}

/// The Segments table's name for a prefix: `{prefix}-segments`.
pub fn segments_table_name(prefix: &str) -> String {
    format!("{prefix}-segments")
}

fn attribute(name: &str, attribute_type: ScalarAttributeType) -> Result<AttributeDefinition, ProvisionError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(attribute_type)
        .build()
        .map_err(|e| service_error("building a key attribute", e))
}

fn key(attribute: &str, key_type: KeyType) -> Result<KeySchemaElement, ProvisionError> {
    KeySchemaElement::builder()
        .attribute_name(attribute)
        .key_type(key_type)
        .build()
        .map_err(|e| service_error("building a key schema", e))
}

impl IndexShape {
    fn keys(&self) -> Result<Vec<KeySchemaElement>, ProvisionError> {
        Ok(vec![key(self.index.partition, KeyType::Hash)?, key(self.index.time, KeyType::Range)?])
    }

    fn projection(&self) -> Projection {
        if self.projected.is_empty() {
            return Projection::builder().projection_type(ProjectionType::KeysOnly).build();
        }
        let builder = Projection::builder().projection_type(ProjectionType::Include);
        self.projected.iter().fold(builder, |b, attribute| b.non_key_attributes(*attribute)).build()
    }

    fn attributes(&self) -> Result<[AttributeDefinition; 2], ProvisionError> {
        Ok([
            attribute(self.index.partition, ScalarAttributeType::S)?,
            attribute(self.index.time, ScalarAttributeType::N)?,
        ])
    }

    /// How the index shows in a table's difference: `ProgressIndex (sweepPartition HASH, progressAt RANGE)`.
    fn shown(&self) -> String {
        format!("{} ({} HASH, {} RANGE)", self.index.name, self.index.partition, self.index.time)
    }
}

async fn create_keyed_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    index: Option<IndexShape>,
) -> Result<(), ProvisionError> {
    let mut create = client
        .create_table()
        .table_name(name)
        .attribute_definitions(attribute(PARTITION_KEY, ScalarAttributeType::S)?)
        .attribute_definitions(attribute(SORT_KEY, ScalarAttributeType::S)?)
        .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key(SORT_KEY, KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest);
    if let Some(shape) = index {
        let index = GlobalSecondaryIndex::builder()
            .index_name(shape.index.name)
            .set_key_schema(Some(shape.keys()?))
            .projection(shape.projection())
            .build()
            .map_err(|e| service_error(format!("building {}", shape.index.name), e))?;
        create = create.set_attribute_definitions(Some(
            [attribute(PARTITION_KEY, ScalarAttributeType::S)?, attribute(SORT_KEY, ScalarAttributeType::S)?]
                .into_iter()
                .chain(shape.attributes()?)
                .collect(),
        ));
        create = create.global_secondary_indexes(index);
    }
    let mut existed = false;
    if let Err(e) = create.send().await {
        match e.into_service_error() {
            CreateTableError::ResourceInUseException(_) => {
                tracing::debug!("table exists already");
                existed = true;
            }
            other => return Err(service_error(format!("creating table {name}"), other)),
        }
    }
    wait_until_active(client, name).await?;
    if let (true, Some(shape)) = (existed, index) {
        add_index_if_missing(client, name, shape).await?;
    }
    Ok(())
}

async fn wait_until_active(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), ProvisionError> {
    client
        .wait_until_table_exists()
        .table_name(name)
        .wait(TABLE_ACTIVE_TIMEOUT)
        .await
        .map_err(|e| service_error(format!("waiting for table {name} to become active"), e))?;
    Ok(())
}

/// Adds the index to a table made before it existed.
async fn add_index_if_missing(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    shape: IndexShape,
) -> Result<(), ProvisionError> {
    let described = client
        .describe_table()
        .table_name(name)
        .send()
        .await
        .map_err(|e| service_error(format!("reading table {name}"), e.into_service_error()))?;
    let has_index = described
        .table()
        .is_some_and(|t| t.global_secondary_indexes().iter().any(|i| i.index_name() == Some(shape.index.name)));
    if has_index {
        return Ok(());
    }
    let index = CreateGlobalSecondaryIndexAction::builder()
        .index_name(shape.index.name)
        .set_key_schema(Some(shape.keys()?))
        .projection(shape.projection())
        .build()
        .map_err(|e| service_error(format!("building {}", shape.index.name), e))?;
    client
        .update_table()
        .table_name(name)
        .set_attribute_definitions(Some(shape.attributes()?.into()))
        .global_secondary_index_updates(GlobalSecondaryIndexUpdate::builder().create(index).build())
        .send()
        .await
        .map_err(|e| service_error(format!("adding {} to table {name}", shape.index.name), e.into_service_error()))?;
    wait_until_active(client, name).await
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

    let lifecycle = BucketLifecycleConfiguration::builder()
        .set_rules(Some(lifecycle_rules()?))
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

/// The results bucket's lifecycle rules: `results/` and `imports/` expire after 14 days.
fn lifecycle_rules() -> Result<Vec<LifecycleRule>, ProvisionError> {
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
    Ok(vec![rule, uploads])
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

/// The event bus of the segment events, `name`; one that exists already is left as it is (a bus
/// has no settings the service depends on).
#[instrument(skip(client))]
pub async fn create_event_bus(client: &aws_sdk_eventbridge::Client, name: &str) -> Result<(), ProvisionError> {
    if let Err(e) = client.create_event_bus().name(name).send().await {
        match e.into_service_error() {
            CreateEventBusError::ResourceAlreadyExistsException(_) => tracing::debug!("event bus exists already"),
            other => return Err(service_error(format!("creating event bus {name}"), other)),
        }
    }
    Ok(())
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

// ---------------------------------------------------------------------------------------------
// The whole service, refusing resources of another shape

/// The variable [`segments_core::config::ServiceConfig`] reads the workers' last delivery from:
/// it must equal the queues' redrive `maxReceiveCount`.
pub const MAX_RECEIVE_COUNT_VAR: &str = "MAX_RECEIVE_COUNT";

/// The import queue's name for a prefix: `{prefix}-imports`.
pub fn import_queue_name(prefix: &str) -> String {
    format!("{prefix}-imports")
}

/// The refresh queue's name for a prefix: `{prefix}-refresh`.
pub fn refresh_queue_name(prefix: &str) -> String {
    format!("{prefix}-refresh")
}

/// The segment events' bus name for a prefix: `{prefix}-segment-events`, as the stack names its
/// bus after the stack.
pub fn event_bus_name(prefix: &str) -> String {
    format!("{prefix}-segment-events")
}

/// What a queue of [`provision_service`] is for: where its URL goes.
#[derive(Debug, Clone, Copy)]
enum QueueRole {
    /// The work queue of a segment type.
    Work(SegmentType),
    Imports,
    Refresh,
}

/// The kind of a provisioned resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Table,
    Bucket,
    Queue,
    EventBus,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Table => "table",
            ResourceKind::Bucket => "bucket",
            ResourceKind::Queue => "queue",
            ResourceKind::EventBus => "event bus",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource that exists under one of the service's names with another shape than
/// [`provision_service`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub kind: ResourceKind,
    pub name: String,
    /// What differs, e.g. `keys (id HASH) instead of (pk HASH, sk RANGE)`.
    pub difference: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.name, self.difference)
    }
}

/// One resource of a [`provision_service`] run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedResource {
    pub kind: ResourceKind,
    pub name: String,
    /// Whether this run created it (false: it existed with the right shape and was left alone).
    pub created: bool,
}

/// Every resource the functions and `segments serve --aws` use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceResources {
    pub resources: AwsResources,
    pub segments_table: String,
    pub import_queue_url: String,
    /// The queue of refresh steps, consumed by the refresh applier.
    pub refresh_queue_url: String,
    /// The bus of the segment events.
    pub event_bus: String,
    /// The redrive `maxReceiveCount` of every queue.
    pub max_receive_count: u32,
}

impl ServiceResources {
    /// What the segments functions use besides [`AwsResources`]: the Segments table, the event
    /// bus and the refresh queue.
    pub fn segments(&self) -> SegmentsResources {
        SegmentsResources {
            table: self.segments_table.clone(),
            event_bus: self.event_bus.clone(),
            refresh_queue_url: self.refresh_queue_url.clone(),
        }
    }

    /// The variables the functions and `segments serve --aws` read, with these values.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let mut vars = self.resources.env_vars();
        vars.extend(self.segments().env_vars());
        vars.push((IMPORT_QUEUE_URL_VAR.to_owned(), self.import_queue_url.clone()));
        vars.push((MAX_RECEIVE_COUNT_VAR.to_owned(), self.max_receive_count.to_string()));
        vars
    }
}

/// The outcome of [`provision_service`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub service: ServiceResources,
    /// Every resource in creation order: tables, bucket, each dead-letter queue before its
    /// queue, then the event bus.
    pub resources: Vec<ProvisionedResource>,
}

/// What is found under a resource's name.
enum Found<T> {
    Missing,
    Matches(T),
    Differs(String),
}

impl<T> Found<T> {
    fn from_differences(differences: Vec<String>, value: T) -> Self {
        if differences.is_empty() { Found::Matches(value) } else { Found::Differs(differences.join(", ")) }
    }
}

/// Creates everything the service needs under a name prefix: the AccountData, Jobs and Segments
/// tables, the results bucket, one queue per segment type, the import queue and the refresh
/// queue, each queue with its dead-letter queue after `max_receive_count` receives, and the event
/// bus of the segment events.
///
/// Every resource is inspected before anything is written. A resource that exists with the
/// shape this function gives it is left alone (a second run changes nothing); one that exists
/// with another shape — other keys or capacity mode, TTL, lifecycle rules, public access, no or
/// another redrive, another `maxReceiveCount` — may belong to something else, so the run stops
/// with [`ProvisionError::Conflicts`] naming each difference, and creates nothing.
#[instrument(skip(clients))]
pub async fn provision_service(
    clients: &AwsClients,
    prefix: &str,
    max_receive_count: u32,
) -> Result<Provisioned, ProvisionError> {
    let names = resource_names(prefix)?;
    let max_receive_count = max_receive_count.max(1);
    let segments_table = segments_table_name(prefix);
    let mut conflicts = Vec::new();
    let mut conflict = |kind: ResourceKind, name: &str, difference: String| {
        conflicts.push(Conflict { kind, name: name.to_owned(), difference });
    };

    // Only the Jobs table has TTL; it has the progress index, the Segments table the due index.
    let tables = [
        (names.account_table.as_str(), None, None),
        (names.jobs_table.as_str(), Some(JOBS_TTL_ATTRIBUTE), Some(PROGRESS_INDEX_SHAPE)),
        (segments_table.as_str(), None, Some(DUE_INDEX_SHAPE)),
    ];
    let mut table_exists = Vec::new();
    for (name, ttl_attribute, index) in tables {
        match inspect_table(&clients.dynamodb, name, ttl_attribute, index).await? {
            Found::Missing => table_exists.push(false),
            Found::Matches(()) => table_exists.push(true),
            Found::Differs(difference) => conflict(ResourceKind::Table, name, difference),
        }
    }
    let bucket_exists = match inspect_bucket(&clients.s3, &names.results_bucket).await? {
        Found::Missing => false,
        Found::Matches(()) => true,
        Found::Differs(difference) => {
            conflict(ResourceKind::Bucket, &names.results_bucket, difference);
            true
        }
    };
    let mut queue_names: Vec<(QueueRole, String)> =
        SegmentType::ALL.iter().map(|&t| (QueueRole::Work(t), queue_name(prefix, t))).collect();
    queue_names.push((QueueRole::Imports, import_queue_name(prefix)));
    queue_names.push((QueueRole::Refresh, refresh_queue_name(prefix)));
    // Per queue: the URL of the queue when both it and its dead-letter queue exist as they should,
    // and whether each of the two exists.
    let mut queues = Vec::new();
    for (role, name) in queue_names {
        let dlq_name = dead_letter_queue_name(&name);
        let dlq = match queue_attributes(&clients.sqs, &dlq_name).await? {
            None => Found::Missing,
            Some((url, attributes)) => Found::from_differences(dead_letter_queue_differences(&attributes), url),
        };
        let queue = match queue_attributes(&clients.sqs, &name).await? {
            None => Found::Missing,
            Some((url, attributes)) => {
                Found::from_differences(work_queue_differences(&attributes, &dlq_name, max_receive_count), url)
            }
        };
        if let Found::Differs(difference) = &dlq {
            conflict(ResourceKind::Queue, &dlq_name, difference.clone());
        }
        if let Found::Differs(difference) = &queue {
            conflict(ResourceKind::Queue, &name, difference.clone());
        }
        queues.push((role, name, dlq, queue));
    }
    // A bus has nothing to compare: one of the name serves, whoever made it.
    let event_bus = event_bus_name(prefix);
    let bus_exists = inspect_event_bus(&clients.eventbridge, &event_bus).await?;
    if !conflicts.is_empty() {
        return Err(ProvisionError::Conflicts(conflicts));
    }

    let mut resources = Vec::new();
    for ((name, ttl_attribute, index), exists) in tables.into_iter().zip(table_exists) {
        match (exists, ttl_attribute) {
            (true, _) => {}
            (false, Some(_)) => create_jobs_table(&clients.dynamodb, name).await?,
            (false, None) => create_keyed_table(&clients.dynamodb, name, index).await?,
        }
        resources.push(ProvisionedResource { kind: ResourceKind::Table, name: name.to_owned(), created: !exists });
    }
    if !bucket_exists {
        create_results_bucket(&clients.s3, &names.results_bucket).await?;
    }
    resources.push(ProvisionedResource {
        kind: ResourceKind::Bucket,
        name: names.results_bucket.clone(),
        created: !bucket_exists,
    });
    let mut service = ServiceResources {
        resources: names,
        segments_table,
        import_queue_url: String::new(),
        refresh_queue_url: String::new(),
        event_bus,
        max_receive_count,
    };
    for (role, name, dlq, queue) in queues {
        let (dlq_created, queue_created) = (matches!(dlq, Found::Missing), matches!(queue, Found::Missing));
        let url = match (dlq, queue) {
            (Found::Matches(_), Found::Matches(url)) => url,
            // Either is missing (the other matches): creating both leaves the existing one as is.
            _ => create_queue_with_dlq(&clients.sqs, &name, max_receive_count).await?.0,
        };
        resources.push(ProvisionedResource {
            kind: ResourceKind::Queue,
            name: dead_letter_queue_name(&name),
            created: dlq_created,
        });
        resources.push(ProvisionedResource { kind: ResourceKind::Queue, name, created: queue_created });
        match role {
            QueueRole::Work(segment_type) => {
                service.resources.queue_urls.insert(segment_type, url);
            }
            QueueRole::Imports => service.import_queue_url = url,
            QueueRole::Refresh => service.refresh_queue_url = url,
        }
    }
    if !bus_exists {
        create_event_bus(&clients.eventbridge, &service.event_bus).await?;
    }
    resources.push(ProvisionedResource {
        kind: ResourceKind::EventBus,
        name: service.event_bus.clone(),
        created: !bus_exists,
    });
    Ok(Provisioned { service, resources })
}

/// Whether an event bus of that name exists.
async fn inspect_event_bus(client: &aws_sdk_eventbridge::Client, name: &str) -> Result<bool, ProvisionError> {
    match client.describe_event_bus().name(name).send().await {
        Ok(_) => Ok(true),
        Err(e) => match e.into_service_error() {
            DescribeEventBusError::ResourceNotFoundException(_) => Ok(false),
            other => Err(service_error(format!("reading event bus {name}"), other)),
        },
    }
}

/// Reads a table: missing, as [`create_keyed_table`] makes it (with TTL on `ttl_attribute`, or
/// none, and `index`, or no secondary index), or what differs.
async fn inspect_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    ttl_attribute: Option<&str>,
    index: Option<IndexShape>,
) -> Result<Found<()>, ProvisionError> {
    let described = match client.describe_table().table_name(name).send().await {
        Ok(described) => described,
        Err(e) => {
            return match e.into_service_error() {
                DescribeTableError::ResourceNotFoundException(_) => Ok(Found::Missing),
                other => Err(service_error(format!("reading table {name}"), other)),
            };
        }
    };
    let table =
        described.table().ok_or_else(|| service_error(format!("reading table {name}"), "no table description"))?;
    let mut differences = table_differences(table, index);
    let ttl = client
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(|e| service_error(format!("reading the TTL of table {name}"), e.into_service_error()))?;
    let active_ttl = ttl
        .time_to_live_description()
        .filter(|d| matches!(d.time_to_live_status(), Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)))
        .and_then(|d| d.attribute_name());
    if active_ttl != ttl_attribute {
        let shown = |ttl: Option<&str>| ttl.map_or_else(|| "off".to_owned(), |a| format!("on {a}"));
        differences.push(format!("TTL {} instead of {}", shown(active_ttl), shown(ttl_attribute)));
    }
    Ok(Found::from_differences(differences, ()))
}

/// How a described table differs from `pk` (S, hash) and `sk` (S, range), on demand, with
/// `index` (its name, keys and projection) or without secondary indexes.
fn table_differences(table: &TableDescription, index: Option<IndexShape>) -> Vec<String> {
    let mut differences = Vec::new();
    let keys: Vec<String> =
        table.key_schema().iter().map(|k| format!("{} {}", k.attribute_name(), k.key_type().as_str())).collect();
    let expected = [format!("{PARTITION_KEY} HASH"), format!("{SORT_KEY} RANGE")];
    if keys != expected {
        differences.push(format!("keys ({}) instead of ({})", keys.join(", "), expected.join(", ")));
    }
    for key in [PARTITION_KEY, SORT_KEY] {
        let declared = table.attribute_definitions().iter().find(|a| a.attribute_name() == key);
        if let Some(declared) = declared
            && declared.attribute_type() != &ScalarAttributeType::S
        {
            differences.push(format!("key {key} of type {} instead of S", declared.attribute_type().as_str()));
        }
    }
    let billing = table.billing_mode_summary().and_then(|b| b.billing_mode());
    if billing != Some(&BillingMode::PayPerRequest) {
        // A table that was never on demand has no billing mode summary.
        let shown = billing.map_or("PROVISIONED", BillingMode::as_str);
        differences.push(format!("billing mode {shown} instead of PAY_PER_REQUEST"));
    }
    let indexes: Vec<String> = table
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            let keys: Vec<String> =
                i.key_schema().iter().map(|k| format!("{} {}", k.attribute_name(), k.key_type().as_str())).collect();
            format!("{} ({})", i.index_name().unwrap_or_default(), keys.join(", "))
        })
        .chain(table.local_secondary_indexes().iter().filter_map(|i| i.index_name()).map(str::to_owned))
        .collect();
    let expected: Vec<String> = index.iter().map(IndexShape::shown).collect();
    if indexes != expected {
        let shown = |list: &[String]| if list.is_empty() { "none".to_owned() } else { list.join(", ") };
        differences.push(format!("secondary indexes {} instead of {}", shown(&indexes), shown(&expected)));
    } else if let Some(shape) = index {
        // The keys match; a projection that misses attributes the readers need would answer
        // without them.
        let found = table.global_secondary_indexes().iter().find_map(|i| i.projection());
        let found_type = found.and_then(|p| p.projection_type());
        let wanted = shape.projection();
        let mut found_attributes: Vec<&str> =
            found.map(|p| p.non_key_attributes().iter().map(String::as_str).collect()).unwrap_or_default();
        found_attributes.sort_unstable();
        let mut wanted_attributes: Vec<&str> = shape.projected.to_vec();
        wanted_attributes.sort_unstable();
        if found_type != wanted.projection_type() || found_attributes != wanted_attributes {
            let shown = |t: Option<&ProjectionType>, a: &[&str]| {
                let t = t.map_or("unknown", ProjectionType::as_str);
                if a.is_empty() { t.to_owned() } else { format!("{t} {}", a.join(", ")) }
            };
            differences.push(format!(
                "{} projects {} instead of {}",
                shape.index.name,
                shown(found_type, &found_attributes),
                shown(wanted.projection_type(), &wanted_attributes)
            ));
        }
    }
    differences
}

/// Reads the bucket: missing, as [`create_results_bucket`] makes it (the two lifecycle rules,
/// public access blocked), or what differs.
async fn inspect_bucket(client: &aws_sdk_s3::Client, name: &str) -> Result<Found<()>, ProvisionError> {
    if let Err(e) = client.head_bucket().bucket(name).send().await {
        let status = e.raw_response().map(|r| r.status().as_u16());
        return match e.into_service_error() {
            HeadBucketError::NotFound(_) => Ok(Found::Missing),
            _ if status == Some(403) => Ok(Found::Differs("it exists and belongs to another account".to_owned())),
            other => Err(service_error(format!("reading bucket {name}"), other)),
        };
    }
    let mut differences = Vec::new();
    let expected: BTreeSet<String> = lifecycle_rules()?.iter().map(lifecycle_rule_shape).collect();
    let actual: BTreeSet<String> = match client.get_bucket_lifecycle_configuration().bucket(name).send().await {
        Ok(lifecycle) => lifecycle.rules().iter().map(lifecycle_rule_shape).collect(),
        Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => BTreeSet::new(),
        Err(e) => {
            return Err(service_error(format!("reading the lifecycle of bucket {name}"), e.into_service_error()));
        }
    };
    if actual != expected {
        let shown = |rules: &BTreeSet<String>| match rules.len() {
            0 => "none".to_owned(),
            _ => rules.iter().map(String::as_str).collect::<Vec<_>>().join(" and "),
        };
        differences.push(format!("lifecycle rules {} instead of {}", shown(&actual), shown(&expected)));
    }
    let blocked = match client.get_public_access_block().bucket(name).send().await {
        Ok(out) => out.public_access_block_configuration().is_some_and(|c| {
            [c.block_public_acls(), c.ignore_public_acls(), c.block_public_policy(), c.restrict_public_buckets()]
                .iter()
                .all(|setting| *setting == Some(true))
        }),
        Err(e) if e.code() == Some("NoSuchPublicAccessBlockConfiguration") => false,
        Err(e) => {
            return Err(service_error(format!("reading the public access of bucket {name}"), e.into_service_error()));
        }
    };
    if !blocked {
        differences.push("public access not blocked".to_owned());
    }
    Ok(Found::from_differences(differences, ()))
}

/// A lifecycle rule as the text its comparison and its error message use.
fn lifecycle_rule_shape(rule: &LifecycleRule) -> String {
    let shown = |days: Option<i32>| days.map_or_else(|| "never".to_owned(), |d| format!("{d} days"));
    format!(
        "{} ({} {}: expire after {}, abort uploads after {})",
        rule.id().unwrap_or("unnamed"),
        rule.filter().and_then(|f| f.prefix()).unwrap_or("every key"),
        rule.status().as_str(),
        shown(rule.expiration().and_then(|e| e.days())),
        shown(rule.abort_incomplete_multipart_upload().and_then(|a| a.days_after_initiation())),
    )
}

/// The URL and every attribute of a queue, or `None` when there is no queue of that name.
async fn queue_attributes(
    client: &aws_sdk_sqs::Client,
    name: &str,
) -> Result<Option<(String, HashMap<QueueAttributeName, String>)>, ProvisionError> {
    let url = match client.get_queue_url().queue_name(name).send().await {
        Ok(out) => {
            out.queue_url.ok_or_else(|| service_error(format!("finding queue {name}"), "no queue URL returned"))?
        }
        Err(e) => {
            return match e.into_service_error() {
                GetQueueUrlError::QueueDoesNotExist(_) => Ok(None),
                other => Err(service_error(format!("finding queue {name}"), other)),
            };
        }
    };
    let attributes = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| service_error(format!("reading the attributes of queue {name}"), e.into_service_error()))?
        .attributes
        .unwrap_or_default();
    Ok(Some((url, attributes)))
}

/// How a dead-letter queue differs from a standard queue keeping messages 14 days, without a
/// redrive of its own.
fn dead_letter_queue_differences(attributes: &HashMap<QueueAttributeName, String>) -> Vec<String> {
    let mut differences = fifo_difference(attributes);
    let retention = attributes.get(&QueueAttributeName::MessageRetentionPeriod).map(String::as_str);
    if retention != Some(DLQ_RETENTION_SECONDS.to_string().as_str()) {
        differences.push(format!(
            "keeps messages {} s instead of {DLQ_RETENTION_SECONDS} s",
            retention.unwrap_or("an unknown number of")
        ));
    }
    if let Some(redrive) = attributes.get(&QueueAttributeName::RedrivePolicy) {
        differences.push(format!("a redrive policy of its own ({redrive}) where a dead-letter queue has none"));
    }
    differences
}

/// How a work queue differs from a standard queue whose messages move to `dlq_name` after
/// `max_receive_count` receives.
fn work_queue_differences(
    attributes: &HashMap<QueueAttributeName, String>,
    dlq_name: &str,
    max_receive_count: u32,
) -> Vec<String> {
    let mut differences = fifo_difference(attributes);
    let Some(redrive) = attributes.get(&QueueAttributeName::RedrivePolicy) else {
        differences.push(format!(
            "no dead-letter queue (expected a redrive to {dlq_name} after {max_receive_count} receives)"
        ));
        return differences;
    };
    let redrive: serde_json::Value = serde_json::from_str(redrive).unwrap_or_default();
    // The ARN's last field is the queue's name.
    let target = redrive["deadLetterTargetArn"].as_str().and_then(|arn| arn.rsplit(':').next()).unwrap_or("");
    if target != dlq_name {
        differences.push(format!("redrive to {target:?} instead of {dlq_name}"));
    }
    // SQS answers the count as a string; accept a number as well.
    let count = match &redrive["maxReceiveCount"] {
        serde_json::Value::String(count) => count.parse::<u64>().ok(),
        other => other.as_u64(),
    };
    if count != Some(u64::from(max_receive_count)) {
        let shown = count.map_or_else(|| "missing".to_owned(), |c| c.to_string());
        differences.push(format!("maxReceiveCount {shown} instead of {max_receive_count}"));
    }
    differences
}

fn fifo_difference(attributes: &HashMap<QueueAttributeName, String>) -> Vec<String> {
    match attributes.get(&QueueAttributeName::FifoQueue).map(String::as_str) {
        Some("true") => vec!["a FIFO queue instead of a standard one".to_owned()],
        _ => Vec::new(),
    }
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
        assert_eq!(refresh_queue_name("dev-1"), "dev-1-refresh");
        assert_eq!(event_bus_name("dev-1"), "dev-1-segment-events");
    }

    #[test]
    fn prefixes_that_cannot_name_a_bucket_are_refused() {
        for bad in ["", "Dev", "a_b", "-a", "a.b", &"x".repeat(41)] {
            assert!(matches!(resource_names(bad), Err(ProvisionError::InvalidPrefix(_))), "{bad:?}");
        }
    }
}
