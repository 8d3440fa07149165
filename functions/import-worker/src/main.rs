use lambda_runtime::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // The metrics (embedded metric format) go to the function's log stream with its logs.
    segments_core::telemetry::print_to_stdout();
    let worker = segments_aws::import_worker_from_env(import_worker::SCRATCH_DIR.into()).await?;
    import_worker::serve(worker).await
}
