use segments_core::domain::SegmentType;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // The metrics (embedded metric format) go to the function's log stream with its logs.
    segments_core::telemetry::print_to_stdout();
    let (clients, resources, config) = segments_aws::from_env().await?;
    segments_core::sqs::serve_worker(
        segments_aws::runner(&clients, &resources, config),
        SegmentType::FinancialBreakdown,
    )
    .await
}
