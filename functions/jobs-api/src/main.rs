use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    // The metrics (embedded metric format) go to the function's log stream with its logs.
    segments_core::telemetry::print_to_stdout();
    let (clients, resources, config) = segments_aws::from_env().await?;
    let services = segments_aws::jobs_api(&clients, &resources, config);
    run(service_fn(|event| jobs_api::handle(&services, event))).await
}
