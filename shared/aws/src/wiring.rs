//! The contexts the use cases take, put together from the AWS adapters. A Lambda function's
//! `main` reads [`from_env`] once per cold start and builds the one context its handler needs;
//! each builder exists only when the features of the SDKs it calls are on.

#[cfg(feature = "dynamodb")]
use std::sync::Arc;

use segments_core::config::{ServiceConfig, required};
use segments_core::ports::BoxError;
#[cfg(feature = "dynamodb")]
use segments_core::usecases::callbacks::{CallbackPolicy, Callbacks};

use crate::{AwsClients, AwsResources, SEGMENTS_TABLE_VAR};

/// The SDK clients, resource names and settings of a function, from its environment. Honours
/// `AWS_ENDPOINT_URL`, so the same binary talks to AWS or to a local emulator.
pub async fn from_env() -> Result<(AwsClients, AwsResources, ServiceConfig), BoxError> {
    let config = ServiceConfig::from_env()?;
    let resources = AwsResources::from_env()?;
    Ok((AwsClients::from_env().await, resources, config))
}

/// Callbacks with the secrets and the outbox in the Jobs table `jobs_table`, delivered over HTTP
/// under the strict policy.
#[cfg(feature = "dynamodb")]
pub fn callbacks(clients: &AwsClients, jobs_table: &str) -> Callbacks {
    let secrets = Arc::new(crate::DynamoCallbackSecrets::new(clients.dynamodb.clone(), jobs_table.to_owned()));
    let outbox = Arc::new(crate::DynamoOutbox::new(clients.dynamodb.clone(), jobs_table.to_owned()));
    Callbacks::http(secrets, CallbackPolicy::strict()).with_outbox(outbox)
}

/// What creating a job takes: AccountData and Jobs tables, the work queues.
#[cfg(all(feature = "dynamodb", feature = "sqs"))]
pub fn intake(
    clients: &AwsClients,
    resources: &AwsResources,
    config: ServiceConfig,
) -> segments_core::usecases::create_job::JobIntake {
    segments_core::usecases::create_job::JobIntake {
        accounts: account_store(clients, resources),
        jobs: job_records(clients, resources),
        queue: work_queues(clients, resources),
        callbacks: callbacks(clients, &resources.jobs_table),
        config,
    }
}

/// What reading results takes: the Jobs table and the results bucket.
#[cfg(all(feature = "dynamodb", feature = "s3"))]
pub fn reader(
    clients: &AwsClients,
    resources: &AwsResources,
    config: ServiceConfig,
) -> segments_core::usecases::read_result::ResultReader {
    segments_core::usecases::read_result::ResultReader {
        jobs: job_records(clients, resources),
        results: result_objects(clients, resources),
        config,
    }
}

/// What a worker takes: AccountData and Jobs tables, the results bucket, callbacks.
#[cfg(all(feature = "dynamodb", feature = "s3"))]
pub fn runner(
    clients: &AwsClients,
    resources: &AwsResources,
    config: ServiceConfig,
) -> segments_core::usecases::run_shard::ShardRunner {
    segments_core::usecases::run_shard::ShardRunner {
        accounts: account_store(clients, resources),
        jobs: job_records(clients, resources),
        results: result_objects(clients, resources),
        callbacks: callbacks(clients, &resources.jobs_table),
        config,
    }
}

/// What the job endpoints (list, export, usage) take: the Jobs table and links into the
/// results bucket.
#[cfg(all(feature = "dynamodb", feature = "s3"))]
pub fn jobs_api(
    clients: &AwsClients,
    resources: &AwsResources,
    config: ServiceConfig,
) -> segments_core::usecases::jobs_api::JobsApiServices {
    segments_core::usecases::jobs_api::JobsApiServices {
        jobs: job_records(clients, resources),
        catalog: Arc::new(crate::DynamoCatalog::new(clients.dynamodb.clone(), resources.jobs_table.clone())),
        links: Arc::new(crate::S3Links::new(clients.s3.clone(), resources.results_bucket.clone())),
        config,
    }
}

/// What the segments functions take (the segments API, the refresh scheduler, the refresh
/// applier): job creation and results (a refresh runs a job and reads its result), the Segments
/// table (segments and their refreshes), the AccountData table (the account directory resolves
/// members; a financialBreakdown rule reads a user's accounts), the event bus and the refresh
/// queue of `segments`.
#[cfg(all(feature = "dynamodb", feature = "s3", feature = "sqs", feature = "eventbridge"))]
pub fn segments_api(
    clients: &AwsClients,
    resources: &AwsResources,
    segments: &crate::SegmentsResources,
    config: ServiceConfig,
) -> segments_core::usecases::segments::SegmentsServices {
    let table = Arc::new(crate::DynamoSegments::new(clients.dynamodb.clone(), segments.table.clone()));
    segments_core::usecases::segments::SegmentsServices {
        intake: intake(clients, resources, config.clone()),
        reader: reader(clients, resources, config),
        segments: table.clone(),
        refreshes: table,
        users: account_store(clients, resources),
        events: Arc::new(crate::EventBridgeEvents::new(clients.eventbridge.clone(), segments.event_bus.clone())),
        refresh_queue: Arc::new(crate::SqsRefreshQueue::new(clients.sqs.clone(), segments.refresh_queue_url.clone())),
        refresh_settings: segments_core::usecases::segments::refresh::RefreshSettings::default(),
    }
}

/// The segments functions' context from their environment: the resource names and settings of
/// [`from_env`] and `SEGMENTS_TABLE`, `EVENT_BUS_NAME`, `REFRESH_QUEUE_URL`
/// ([`crate::SegmentsResources::from_env`]).
#[cfg(all(feature = "dynamodb", feature = "s3", feature = "sqs", feature = "eventbridge"))]
pub async fn segments_from_env() -> Result<segments_core::usecases::segments::SegmentsServices, BoxError> {
    let segments = crate::SegmentsResources::from_env()?;
    let (clients, resources, config) = from_env().await?;
    Ok(segments_api(&clients, &resources, &segments, config))
}

/// What the data API takes: the AccountData table (the users and the account directory) and the
/// Segments table, whose memberships the accounts a write removes leave.
#[cfg(feature = "dynamodb")]
pub fn account_data(
    clients: &AwsClients,
    account_table: &str,
    segments_table: &str,
) -> segments_core::usecases::account_data::AccountData {
    segments_core::usecases::account_data::AccountData {
        users: Arc::new(crate::DynamoAccounts::new(clients.dynamodb.clone(), account_table)),
        segments: Arc::new(crate::DynamoSegments::new(clients.dynamodb.clone(), segments_table)),
    }
}

/// The data API's context from its environment: a user's data (the AccountData table and
/// `SEGMENTS_TABLE`), the bulk imports (the Jobs table, the results bucket and `IMPORT_QUEUE_URL`)
/// and the settings.
#[cfg(all(feature = "dynamodb", feature = "s3", feature = "sqs"))]
pub async fn data_api_from_env() -> Result<
    (
        segments_core::usecases::account_data::AccountData,
        segments_core::usecases::imports_api::ImportsApi,
        ServiceConfig,
    ),
    BoxError,
> {
    let (clients, resources, config) = from_env().await?;
    let data = account_data(&clients, &resources.account_table, &segments_table_from_env()?);
    let imports = imports_api(&clients, &resources, &crate::SqsImportQueue::url_from_env()?);
    Ok((data, imports, config))
}

/// What the data API's bulk imports take: their records and locks in the Jobs table, upload links
/// into the results bucket, and the import queue at `import_queue_url`.
#[cfg(all(feature = "dynamodb", feature = "s3", feature = "sqs"))]
pub fn imports_api(
    clients: &AwsClients,
    resources: &AwsResources,
    import_queue_url: &str,
) -> segments_core::usecases::imports_api::ImportsApi {
    segments_core::usecases::imports_api::ImportsApi {
        imports: Arc::new(crate::DynamoImports::new(clients.dynamodb.clone(), resources.jobs_table.clone())),
        uploads: Arc::new(crate::S3Links::new(clients.s3.clone(), resources.results_bucket.clone())),
        files: result_objects(clients, resources),
        queue: Arc::new(crate::SqsImportQueue::new(clients.sqs.clone(), import_queue_url)),
    }
}

/// What an import takes: the AccountData table it writes, the import records and locks in the
/// Jobs table and the Segments table `segments_table` (accounts an import takes away leave their
/// segments).
#[cfg(feature = "import")]
pub fn importer(
    clients: &AwsClients,
    resources: &AwsResources,
    segments_table: &str,
) -> segments_core::usecases::import::Importer {
    segments_core::usecases::import::Importer {
        users: Arc::new(crate::DynamoAccounts::new(clients.dynamodb.clone(), resources.account_table.clone())),
        imports: Arc::new(crate::DynamoImports::new(clients.dynamodb.clone(), resources.jobs_table.clone())),
        segments: Arc::new(crate::DynamoSegments::new(clients.dynamodb.clone(), segments_table)),
    }
}

/// What the import worker takes: the uploads in the results bucket, the AccountData table it
/// writes, the import records in the Jobs table and the Segments table `segments_table` (accounts
/// an import takes away leave their segments); `scratch` is its local working folder.
#[cfg(all(feature = "import", feature = "s3"))]
pub fn import_worker(
    clients: &AwsClients,
    resources: &AwsResources,
    segments_table: &str,
    config: &ServiceConfig,
    scratch: std::path::PathBuf,
) -> segments_core::usecases::import_worker::ImportWorker {
    segments_core::usecases::import_worker::ImportWorker {
        importer: importer(clients, resources, segments_table),
        files: result_objects(clients, resources),
        scratch,
        max_receive_count: config.max_receive_count,
    }
}

/// The import worker's context from its environment (the resource names, `SEGMENTS_TABLE`,
/// `MAX_RECEIVE_COUNT`).
#[cfg(all(feature = "import", feature = "s3"))]
pub async fn import_worker_from_env(
    scratch: std::path::PathBuf,
) -> Result<segments_core::usecases::import_worker::ImportWorker, BoxError> {
    let (clients, resources, config) = from_env().await?;
    let segments_table = segments_table_from_env()?;
    Ok(import_worker(&clients, &resources, &segments_table, &config, scratch))
}

// One adapter each over the resources every builder above shares.

#[cfg(all(feature = "dynamodb", any(feature = "s3", feature = "sqs")))]
fn account_store(clients: &AwsClients, resources: &AwsResources) -> Arc<crate::DynamoAccounts> {
    Arc::new(crate::DynamoAccounts::new(clients.dynamodb.clone(), resources.account_table.clone()))
}

#[cfg(all(feature = "dynamodb", any(feature = "s3", feature = "sqs")))]
fn job_records(clients: &AwsClients, resources: &AwsResources) -> Arc<crate::DynamoJobs> {
    Arc::new(crate::DynamoJobs::new(clients.dynamodb.clone(), resources.jobs_table.clone()))
}

#[cfg(all(feature = "dynamodb", feature = "s3"))]
fn result_objects(clients: &AwsClients, resources: &AwsResources) -> Arc<crate::S3Results> {
    Arc::new(crate::S3Results::new(clients.s3.clone(), resources.results_bucket.clone()))
}

#[cfg(all(feature = "dynamodb", feature = "sqs"))]
fn work_queues(clients: &AwsClients, resources: &AwsResources) -> Arc<crate::SqsQueue> {
    Arc::new(crate::SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone()))
}

/// The Segments table's name from `SEGMENTS_TABLE`.
pub fn segments_table_from_env() -> Result<String, BoxError> {
    Ok(required(SEGMENTS_TABLE_VAR)?)
}

/// Every port over AWS: for a process that runs every use case (the local runner with `--aws`,
/// the tests).
#[cfg(all(feature = "dynamodb", feature = "s3", feature = "sqs"))]
pub fn services(
    clients: &AwsClients,
    resources: &AwsResources,
    config: ServiceConfig,
) -> segments_core::usecases::Services {
    segments_core::usecases::Services {
        accounts: account_store(clients, resources),
        jobs: job_records(clients, resources),
        results: result_objects(clients, resources),
        queue: work_queues(clients, resources),
        callbacks: callbacks(clients, &resources.jobs_table),
        config,
    }
}

/// What the dead-letter handler takes: only the Jobs table (`JOBS_TABLE`), for the jobs and the
/// mandators' callback secrets.
#[cfg(feature = "dynamodb")]
pub async fn dead_letters_from_env() -> Result<(crate::DynamoJobs, Callbacks), BoxError> {
    let table = required(crate::JOBS_TABLE_VAR)?;
    let clients = AwsClients::from_env().await;
    let jobs = crate::DynamoJobs::new(clients.dynamodb.clone(), table.clone());
    Ok((jobs, callbacks(&clients, &table)))
}

/// What the sweeper takes: the Jobs table and every work queue (it sends the unfinished shards of
/// a job of any type).
#[cfg(all(feature = "dynamodb", feature = "sqs"))]
pub fn sweeper(
    clients: &AwsClients,
    jobs_table: &str,
    queue_urls: std::collections::BTreeMap<segments_core::domain::SegmentType, String>,
    config: segments_core::usecases::sweep::SweepConfig,
) -> segments_core::usecases::sweep::Sweeper {
    segments_core::usecases::sweep::Sweeper {
        jobs: Arc::new(crate::DynamoJobs::new(clients.dynamodb.clone(), jobs_table.to_owned())),
        queue: Arc::new(crate::SqsQueue::new(clients.sqs.clone(), queue_urls)),
        callbacks: callbacks(clients, jobs_table),
        config,
    }
}

/// The sweeper of the environment: `JOBS_TABLE`, the queue URL of every segment type
/// (`{TYPE}_QUEUE_URL`, all required), `PROGRESS_DEADLINE_MINUTES` and `MAX_RESENDS`.
#[cfg(all(feature = "dynamodb", feature = "sqs"))]
pub async fn sweeper_from_env() -> Result<segments_core::usecases::sweep::Sweeper, BoxError> {
    let table = required(crate::JOBS_TABLE_VAR)?;
    let mut queue_urls = std::collections::BTreeMap::new();
    for &segment_type in segments_core::domain::SegmentType::ALL {
        queue_urls.insert(segment_type, required(&AwsResources::queue_url_var(segment_type))?);
    }
    let config = segments_core::usecases::sweep::SweepConfig::from_env()?;
    let clients = AwsClients::from_env().await;
    Ok(sweeper(&clients, &table, queue_urls, config))
}
