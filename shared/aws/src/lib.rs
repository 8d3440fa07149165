//! DynamoDB, S3 and SQS adapters behind the [`segments_core::ports`].
//!
//! - [`DynamoAccounts`]: the AccountData table ([`AccountSource`](segments_core::ports::AccountSource),
//!   [`UserStore`](segments_core::ports::UserStore), [`AccountDirectory`](segments_core::ports::AccountDirectory));
//!   one compressed record per user in a few block items, one Query stream per shard
//!   (docs/storage.md), one directory item per account, one transaction per user's write.
//! - [`DynamoJobs`]: the Jobs table ([`JobStore`](segments_core::ports::JobStore)); every state change is
//!   a conditional write, so redelivered messages change nothing (docs/jobs.md).
//! - [`DynamoImports`]: import records and each mandator's import lock, in the Jobs table
//!   ([`ImportStore`](segments_core::ports::ImportStore)).
//! - [`S3Results`]: result objects ([`ResultStore`](segments_core::ports::ResultStore)).
//! - [`SqsQueue`]: one work queue per segment type ([`JobQueue`](segments_core::ports::JobQueue)), plus the
//!   receive/delete calls of the local runner that polls SQS.
//! - [`SqsImportQueue`]: the queue of started imports ([`ImportQueue`](segments_core::ports::ImportQueue)).
//! - [`DynamoSegments`]: the Segments table ([`SegmentStore`](segments_core::ports::SegmentStore),
//!   [`RefreshStore`](segments_core::ports::RefreshStore)): segments, members, refreshes and their
//!   change feeds, and the sparse `DueIndex` the refresh scheduler reads.
//! - [`EventBridgeEvents`]: the segment events on the stack's bus
//!   ([`EventPublisher`](segments_core::ports::EventPublisher)).
//! - [`SqsRefreshQueue`]: the queue of refresh steps ([`RefreshQueue`](segments_core::ports::RefreshQueue)).
//! - [`S3Links`]: presigned GETs of results ([`ResultLinks`](segments_core::ports::ResultLinks)) and
//!   presigned PUTs of import uploads ([`UploadLinks`](segments_core::ports::UploadLinks)).
//! - [`provision`]: creates the tables, bucket and queues for local setups and tests; the SAM
//!   template is the deployable truth.
//!
//! The SDK clients are built once per process ([`AwsClients`]) and the resource names come from
//! the environment ([`AwsResources`]); the wiring functions put adapters together into the
//! contexts the use cases take.
//!
//! Cargo features `dynamodb`, `s3`, `sqs` and `eventbridge` each compile the adapters of one
//! service and its SDK, so a Lambda function links only the SDKs it calls; `provision` needs all
//! four.

#[cfg(feature = "dynamodb")]
mod accounts;
#[cfg(feature = "dynamodb")]
mod callback_secrets;
#[cfg(feature = "dynamodb")]
mod catalog;
mod clients;
#[cfg(feature = "eventbridge")]
mod events;
#[cfg(feature = "sqs")]
mod import_queue;
#[cfg(feature = "dynamodb")]
mod imports;
#[cfg(feature = "dynamodb")]
mod items;
#[cfg(feature = "dynamodb")]
mod jobs;
#[cfg(feature = "s3")]
mod links;
#[cfg(feature = "dynamodb")]
mod outbox;
#[cfg(feature = "dynamodb")]
mod progress_index;
#[cfg(feature = "provision")]
pub mod provision;
#[cfg(feature = "sqs")]
mod queue;
#[cfg(feature = "sqs")]
mod refresh_queue;
#[cfg(feature = "s3")]
mod results;
#[cfg(feature = "dynamodb")]
mod retry;
#[cfg(feature = "dynamodb")]
mod segments;
mod wiring;

use std::collections::BTreeMap;

#[cfg(feature = "dynamodb")]
pub use accounts::DynamoAccounts;
#[cfg(feature = "dynamodb")]
pub use callback_secrets::{CALLBACK_SECRET_ATTRIBUTE, CALLBACK_SECRET_SORT_KEY, DynamoCallbackSecrets};
#[cfg(feature = "dynamodb")]
pub use catalog::DynamoCatalog;
pub use clients::AwsClients;
#[cfg(feature = "eventbridge")]
pub use events::{EventBridgeEvents, PUT_EVENTS_LIMIT};
#[cfg(feature = "sqs")]
pub use import_queue::{IMPORT_QUEUE_URL_VAR, SqsImportQueue};
#[cfg(feature = "dynamodb")]
pub use imports::{DynamoImports, IMPORT_LOCK_SORT_KEY};
#[cfg(feature = "dynamodb")]
pub use items::{
    DUE_AT, DUE_INDEX, DUE_PARTITION, IDLE_SWEEPS, JOBS_TTL_ATTRIBUTE, PARTITION_KEY, PROGRESS_AT, PROGRESS_INDEX,
    SHARDS_SEEN, SORT_KEY, SWEEP_PARTITION,
};
#[cfg(feature = "dynamodb")]
pub use jobs::DynamoJobs;
#[cfg(feature = "s3")]
pub use links::S3Links;
#[cfg(feature = "dynamodb")]
pub use outbox::DynamoOutbox;
#[cfg(feature = "sqs")]
pub use queue::{ReceivedMessage, SqsMessageVisibility, SqsQueue, WORK_QUEUE_URL_VAR};
#[cfg(feature = "sqs")]
pub use refresh_queue::SqsRefreshQueue;
#[cfg(feature = "s3")]
pub use results::{S3Results, UPLOAD_PART_BYTES};
#[cfg(feature = "dynamodb")]
pub use segments::DynamoSegments;
pub use wiring::*;

use segments_core::config::{ConfigError, required};
use segments_core::domain::SegmentType;

/// Names of the AWS resources the service uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsResources {
    /// The AccountData table (docs/storage.md).
    pub account_table: String,
    /// The Jobs table.
    pub jobs_table: String,
    /// The results bucket.
    pub results_bucket: String,
    /// The work queue of each segment type. A function that only reads results needs none.
    pub queue_urls: BTreeMap<SegmentType, String>,
}

pub const ACCOUNT_DATA_TABLE_VAR: &str = "ACCOUNT_DATA_TABLE";
pub const JOBS_TABLE_VAR: &str = "JOBS_TABLE";
pub const RESULTS_BUCKET_VAR: &str = "RESULTS_BUCKET";
/// The Segments table of the management API (the segments functions and the data API read it).
pub const SEGMENTS_TABLE_VAR: &str = "SEGMENTS_TABLE";
/// The EventBridge bus the segment events go to (its name or ARN).
pub const EVENT_BUS_NAME_VAR: &str = "EVENT_BUS_NAME";
/// The queue of refresh steps, consumed by the refresh applier.
pub const REFRESH_QUEUE_URL_VAR: &str = "REFRESH_QUEUE_URL";

/// Names of what the segments functions (the segments API, the refresh scheduler and applier)
/// use besides [`AwsResources`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentsResources {
    /// The Segments table: segments, members, refreshes and their change feeds.
    pub table: String,
    /// The event bus of the segment events.
    pub event_bus: String,
    /// The refresh queue's URL.
    pub refresh_queue_url: String,
}

impl SegmentsResources {
    /// `SEGMENTS_TABLE`, `EVENT_BUS_NAME` and `REFRESH_QUEUE_URL`, all required.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(SegmentsResources {
            table: required(SEGMENTS_TABLE_VAR)?,
            event_bus: required(EVENT_BUS_NAME_VAR)?,
            refresh_queue_url: required(REFRESH_QUEUE_URL_VAR)?,
        })
    }

    /// The variables [`SegmentsResources::from_env`] reads, with these values.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        vec![
            (SEGMENTS_TABLE_VAR.to_owned(), self.table.clone()),
            (EVENT_BUS_NAME_VAR.to_owned(), self.event_bus.clone()),
            (REFRESH_QUEUE_URL_VAR.to_owned(), self.refresh_queue_url.clone()),
        ]
    }
}

impl AwsResources {
    /// `ACCOUNT_DATA_TABLE`, `JOBS_TABLE` and `RESULTS_BUCKET` (required), and for each segment type
    /// `{TYPE}_QUEUE_URL`, e.g. `HIGH_BALANCE_QUEUE_URL` (optional each: a worker or reader does not
    /// send to every queue).
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut queue_urls = BTreeMap::new();
        for &segment_type in SegmentType::ALL {
            if let Ok(url) = required(&Self::queue_url_var(segment_type)) {
                queue_urls.insert(segment_type, url);
            }
        }
        Ok(AwsResources {
            account_table: required(ACCOUNT_DATA_TABLE_VAR)?,
            jobs_table: required(JOBS_TABLE_VAR)?,
            results_bucket: required(RESULTS_BUCKET_VAR)?,
            queue_urls,
        })
    }

    /// The environment variable holding the queue URL of a segment type: `HIGH_BALANCE_QUEUE_URL`.
    pub fn queue_url_var(segment_type: SegmentType) -> String {
        format!("{}_QUEUE_URL", segment_type.env_stem())
    }

    /// The queue URL of a segment type, when configured.
    pub fn queue_url(&self, segment_type: SegmentType) -> Option<&str> {
        self.queue_urls.get(&segment_type).map(String::as_str)
    }

    /// The variables [`AwsResources::from_env`] reads, with these values: for starting functions
    /// or a runner against provisioned resources.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            (ACCOUNT_DATA_TABLE_VAR.to_owned(), self.account_table.clone()),
            (JOBS_TABLE_VAR.to_owned(), self.jobs_table.clone()),
            (RESULTS_BUCKET_VAR.to_owned(), self.results_bucket.clone()),
        ];
        vars.extend(self.queue_urls.iter().map(|(t, url)| (Self::queue_url_var(*t), url.clone())));
        vars
    }
}

/// All AWS adapters over one set of clients and resources.
#[cfg(all(feature = "dynamodb", feature = "s3", feature = "sqs"))]
#[derive(Debug, Clone)]
pub struct AwsAdapters {
    pub accounts: DynamoAccounts,
    pub jobs: DynamoJobs,
    pub results: S3Results,
    pub queue: SqsQueue,
}

#[cfg(all(feature = "dynamodb", feature = "s3", feature = "sqs"))]
impl AwsAdapters {
    pub fn new(clients: &AwsClients, resources: &AwsResources) -> Self {
        AwsAdapters {
            accounts: DynamoAccounts::new(clients.dynamodb.clone(), resources.account_table.clone()),
            jobs: DynamoJobs::new(clients.dynamodb.clone(), resources.jobs_table.clone()),
            results: S3Results::new(clients.s3.clone(), resources.results_bucket.clone()),
            queue: SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_url_variables_follow_the_segment_type() {
        assert_eq!(AwsResources::queue_url_var(SegmentType::HighBalance), "HIGH_BALANCE_QUEUE_URL");
        assert_eq!(
            AwsResources::queue_url_var(SegmentType::IncomeSpendingSummary),
            "INCOME_SPENDING_SUMMARY_QUEUE_URL"
        );
    }

    #[test]
    fn env_vars_name_every_configured_resource() {
        let resources = AwsResources {
            account_table: "acc".into(),
            jobs_table: "jobs".into(),
            results_bucket: "bucket".into(),
            queue_urls: BTreeMap::from([(SegmentType::LowBalance, "http://q".to_owned())]),
        };
        let vars = resources.env_vars();
        assert!(vars.contains(&("JOBS_TABLE".to_owned(), "jobs".to_owned())));
        assert!(vars.contains(&("LOW_BALANCE_QUEUE_URL".to_owned(), "http://q".to_owned())));
        assert_eq!(vars.len(), 4);
    }
}
