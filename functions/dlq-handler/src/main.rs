//! The dead-letter handler: every DLQ of the work queues is its event source. A message lands
//! there after failing `maxReceiveCount` times; its job is marked FAILED with the reason, so a
//! poller gets 422 instead of waiting forever (docs/jobs.md).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // The metrics (embedded metric format) go to the function's log stream with its logs.
    segments_core::telemetry::print_to_stdout();
    let (jobs, callbacks) = segments_aws::dead_letters_from_env().await?;
    segments_core::sqs::serve_dead_letters(&jobs, &callbacks).await
}
