use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    // The metrics (embedded metric format) go to the function's log stream with its logs.
    segments_core::telemetry::print_to_stdout();
    let (clients, resources, config) = segments_aws::from_env().await?;
    let intake = segments_aws::intake(&clients, &resources, config);
    run(service_fn(|event| create_job::handle(&intake, event))).await
}
