//! The SDK clients, built once per process (per Lambda cold start) and cloned cheaply.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Fail fast when an endpoint is unreachable instead of waiting for the Lambda timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One attempt of any call. Longer than the longest SQS long poll (20 s).
const OPERATION_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(25);
/// A call including its retries.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The clients of the services this build calls (DynamoDB, S3, SQS, EventBridge: one cargo
/// feature each).
#[derive(Debug, Clone)]
pub struct AwsClients {
    #[cfg(feature = "dynamodb")]
    pub dynamodb: aws_sdk_dynamodb::Client,
    #[cfg(feature = "s3")]
    pub s3: aws_sdk_s3::Client,
    #[cfg(feature = "sqs")]
    pub sqs: aws_sdk_sqs::Client,
    #[cfg(feature = "eventbridge")]
    pub eventbridge: aws_sdk_eventbridge::Client,
}

impl AwsClients {
    /// Loads the configuration the usual way (region, credentials, `AWS_ENDPOINT_URL` and the
    /// per-service `AWS_ENDPOINT_URL_*`), so the same binary talks to AWS or to a local
    /// AWS-compatible server, with the service's timeouts.
    pub async fn from_env() -> Self {
        let config = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts()).load().await;
        Self::from_sdk_config(&config)
    }

    /// Clients over a given configuration (tests build one pointing at a local server).
    ///
    /// S3 uses path-style addressing when the endpoint is overridden: a local server has no
    /// `{bucket}.host` names to resolve.
    // Without any service feature there is no client to build and `config` goes unused.
    #[cfg_attr(
        not(any(feature = "dynamodb", feature = "s3", feature = "sqs", feature = "eventbridge")),
        allow(unused_variables)
    )]
    pub fn from_sdk_config(config: &SdkConfig) -> Self {
        AwsClients {
            #[cfg(feature = "dynamodb")]
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            #[cfg(feature = "s3")]
            s3: s3_client(config),
            #[cfg(feature = "sqs")]
            sqs: aws_sdk_sqs::Client::new(config),
            #[cfg(feature = "eventbridge")]
            eventbridge: aws_sdk_eventbridge::Client::new(config),
        }
    }
}

#[cfg(feature = "s3")]
fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let path_style = config.endpoint_url().is_some() || env_is_set("AWS_ENDPOINT_URL_S3");
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(config).force_path_style(path_style).build())
}

/// The timeouts [`AwsClients::from_env`] sets.
fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(OPERATION_ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

#[cfg(feature = "s3")]
fn env_is_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}
