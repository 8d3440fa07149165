use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use segments_core::domain::SegmentType;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let services = segments_core::adapters::aws_services_from_env().await?;
    run(service_fn(|event: LambdaEvent<_>| async {
        Ok::<_, Error>(
            segments_core::worker::handle_sqs_batch(&services, SegmentType::HighBalance, event.payload).await,
        )
    }))
    .await
}
