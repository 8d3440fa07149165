use segments_core::domain::SegmentType;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // The metrics (embedded metric format) go to the function's log stream with its logs.
    segments_core::telemetry::print_to_stdout();
    let (clients, resources, config) = segments_aws::from_env().await?;
    // The worker's own queue: a failed shard's backoff and a long run's heartbeat.
    let queue = segments_aws::SqsMessageVisibility::from_env(clients.sqs.clone(), SegmentType::IncomeSpendingSummary)?;
    segments_core::sqs::serve_worker(
        segments_aws::runner(&clients, &resources, config),
        SegmentType::IncomeSpendingSummary,
        &queue,
    )
    .await
}
