use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    // The metrics (embedded metric format) go to the function's log stream with its logs.
    segments_core::telemetry::print_to_stdout();
    let (data, imports, config) = segments_aws::data_api_from_env().await?;
    run(service_fn(|event| data_api::handle_all(&data, &imports, &config, event))).await
}
