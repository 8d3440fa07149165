//! The SDK clients, built once per process (per Lambda cold start) and cloned cheaply.

use std::env;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Fail fast when an endpoint is unreachable instead of waiting for the Lambda timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One attempt of any call. Longer than the longest SQS long poll (20 s).
const OPERATION_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(25);
/// A call including its retries.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The DynamoDB, S3 and SQS clients of the service.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
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
    pub fn from_sdk_config(config: &SdkConfig) -> Self {
        let path_style = config.endpoint_url().is_some() || env_is_set("AWS_ENDPOINT_URL_S3");
        let s3_config = aws_sdk_s3::config::Builder::from(config).force_path_style(path_style).build();
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            sqs: aws_sdk_sqs::Client::new(config),
        }
    }
}

/// The timeouts [`AwsClients::from_env`] sets.
fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(OPERATION_ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

fn env_is_set(name: &str) -> bool {
    env::var(name).is_ok_and(|v| !v.trim().is_empty())
}
