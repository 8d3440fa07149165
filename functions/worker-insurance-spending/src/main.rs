use segments_core::domain::SegmentType;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    segments_core::worker::run_lambda(SegmentType::InsuranceSpending).await
}
