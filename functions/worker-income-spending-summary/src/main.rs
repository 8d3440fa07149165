use segments_core::domain::SegmentType;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let (clients, resources, config) = segments_aws::from_env().await?;
    segments_core::sqs::serve_worker(
        segments_aws::runner(&clients, &resources, config),
        SegmentType::IncomeSpendingSummary,
    )
    .await
}
