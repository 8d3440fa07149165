use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let services = segments_core::adapters::aws_jobs_api_services_from_env().await?;
    run(service_fn(|event| jobs_api::handle(&services, event))).await
}
