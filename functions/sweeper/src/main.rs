//! The sweeper: run by a schedule every few minutes, it finds the live jobs that have made no
//! progress for their deadline, sends their unfinished shards again, and fails those that still
//! do not progress after a few tries (docs/jobs.md, "No job hangs"). Its answer is the sweep's
//! report, which the function's log shows too.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use segments_core::usecases::sweep::sweep;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // The metrics (embedded metric format) go to the function's log stream with its logs.
    segments_core::telemetry::print_to_stdout();
    let sweeper = segments_aws::sweeper_from_env().await?;
    let sweeper = &sweeper;
    // The scheduled event says nothing the sweep needs: it runs at the time it is invoked.
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| async move {
        let report = sweep(sweeper, chrono::Utc::now()).await?;
        Ok::<_, Error>(serde_json::json!(report))
    }))
    .await
}
