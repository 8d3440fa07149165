//! Implementations of the [`crate::ports`]: AWS (DynamoDB, S3, SQS) and embedded (one redb file
//! in a data directory plus an in-process queue).

pub mod aws;
pub mod embedded;
pub mod faults;

use std::sync::Arc;

use crate::app::Services;
use crate::config::ServiceConfig;
use crate::ports::BoxError;

/// The services of a Lambda function (or of the local runner with `--aws`): SDK clients built
/// once, resource names and settings from the environment. Honours `AWS_ENDPOINT_URL`, so the
/// same binary talks to AWS or to a local emulator.
pub async fn aws_services_from_env() -> Result<Services, BoxError> {
    let config = ServiceConfig::from_env()?;
    let resources = aws::AwsResources::from_env()?;
    let clients = aws::AwsClients::from_env().await;
    Ok(aws_services(&clients, &resources, config))
}

/// The services over given clients and resources (tests point these at a local emulator).
pub fn aws_services(clients: &aws::AwsClients, resources: &aws::AwsResources, config: ServiceConfig) -> Services {
    let accounts = Arc::new(aws::DynamoAccounts::new(clients.dynamodb.clone(), resources.account_table.clone()));
    Services {
        accounts,
        jobs: Arc::new(aws::DynamoJobs::new(clients.dynamodb.clone(), resources.jobs_table.clone())),
        results: Arc::new(aws::S3Results::new(clients.s3.clone(), resources.results_bucket.clone())),
        queue: Arc::new(aws::SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone())),
        config,
        faults: faults::FaultPlan::default(),
        callbacks: aws_callbacks(clients, resources),
    }
}

/// The services over the embedded store in `data_dir` and an in-process queue, whose receiving
/// end is returned for the runner's worker pool.
pub fn embedded_services(
    store: embedded::EmbeddedStore,
    config: ServiceConfig,
) -> (Services, tokio::sync::mpsc::UnboundedReceiver<crate::jobs::JobMessage>) {
    let (queue, receiver) = embedded::EmbeddedQueue::new();
    let store = Arc::new(store);
    let services = Services {
        accounts: store.clone(),
        jobs: store.clone(),
        results: store.clone(),
        queue: Arc::new(queue),
        config,
        faults: faults::FaultPlan::default(),
        callbacks: crate::callbacks::Callbacks::http(store, crate::callbacks::CallbackPolicy::strict()),
    };
    (services, receiver)
}

/// The services of the segments API on AWS: the job services plus the Segments table (named by
/// `SEGMENTS_TABLE`) and the account directory in the AccountData table.
pub async fn aws_segments_services_from_env() -> Result<crate::segments_api::app::SegmentsServices, BoxError> {
    let config = ServiceConfig::from_env()?;
    let resources = aws::AwsResources::from_env()?;
    let segments_table = crate::config::required(aws::SEGMENTS_TABLE_VAR)?;
    let clients = aws::AwsClients::from_env().await;
    let core = aws_services(&clients, &resources, config);
    Ok(aws_segments_services(&clients, &resources, &segments_table, core))
}

/// The services of the segments API over given clients and resources.
pub fn aws_segments_services(
    clients: &aws::AwsClients,
    resources: &aws::AwsResources,
    segments_table: &str,
    core: Services,
) -> crate::segments_api::app::SegmentsServices {
    crate::segments_api::app::SegmentsServices {
        core,
        segments: Arc::new(aws::DynamoSegments::new(clients.dynamodb.clone(), segments_table)),
        directory: Arc::new(aws::DynamoAccounts::new(clients.dynamodb.clone(), resources.account_table.clone())),
    }
}

/// The services of the segments API over the embedded store (the same store as `core`'s).
pub fn embedded_segments_services(
    store: embedded::EmbeddedStore,
    core: Services,
) -> crate::segments_api::app::SegmentsServices {
    let store = Arc::new(store);
    crate::segments_api::app::SegmentsServices { core, segments: store.clone(), directory: store }
}

/// The services of the job endpoints (list, export, usage) on AWS, from the environment like
/// [`aws_services_from_env`].
pub async fn aws_jobs_api_services_from_env() -> Result<crate::app::jobs_api::JobsApiServices, BoxError> {
    let config = ServiceConfig::from_env()?;
    let resources = aws::AwsResources::from_env()?;
    let clients = aws::AwsClients::from_env().await;
    let core = aws_services(&clients, &resources, config);
    Ok(aws_jobs_api_services(&clients, &resources, core))
}

/// The services of the job endpoints over given clients and resources: the job list over the Jobs
/// table and presigned URLs of the results bucket.
pub fn aws_jobs_api_services(
    clients: &aws::AwsClients,
    resources: &aws::AwsResources,
    core: Services,
) -> crate::app::jobs_api::JobsApiServices {
    crate::app::jobs_api::JobsApiServices {
        core,
        catalog: Arc::new(aws::DynamoCatalog::new(clients.dynamodb.clone(), resources.jobs_table.clone())),
        links: Arc::new(aws::S3Links::new(clients.s3.clone(), resources.results_bucket.clone())),
    }
}

/// The services of the job endpoints over the embedded store (the same store as `core`'s), with
/// links the local runner serves itself.
pub fn embedded_jobs_api_services(
    store: embedded::EmbeddedStore,
    core: Services,
    links: Arc<embedded::LocalLinks>,
) -> crate::app::jobs_api::JobsApiServices {
    crate::app::jobs_api::JobsApiServices { core, catalog: Arc::new(store), links }
}

/// Callbacks with the secrets in the Jobs table, delivered over HTTP under the strict policy.
pub fn aws_callbacks(clients: &aws::AwsClients, resources: &aws::AwsResources) -> crate::callbacks::Callbacks {
    let secrets = Arc::new(aws::DynamoCallbackSecrets::new(clients.dynamodb.clone(), resources.jobs_table.clone()));
    crate::callbacks::Callbacks::http(secrets, crate::callbacks::CallbackPolicy::strict())
}

/// Callbacks with the secrets in the embedded store. `policy` is strict unless the caller (a test,
/// or the local runner on an explicit option) decides otherwise.
pub fn embedded_callbacks(
    store: embedded::EmbeddedStore,
    policy: crate::callbacks::CallbackPolicy,
) -> crate::callbacks::Callbacks {
    crate::callbacks::Callbacks::http(Arc::new(store), policy)
}
