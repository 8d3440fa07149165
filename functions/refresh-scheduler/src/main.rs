//! The refresh scheduler: run by a schedule every minute, it starts the refreshes of dynamic
//! segments whose schedule is due and looks at the unfinished refreshes due a look — one whose
//! job completed is sent to the refresh applier, one whose job failed is failed
//! (`segments_core::usecases::segments::refresh::tick`). Its answer is the tick's report, which
//! the function's log shows too.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use segments_core::usecases::segments::refresh::tick;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // The metrics (embedded metric format) go to the function's log stream with its logs.
    segments_core::telemetry::print_to_stdout();
    let services = segments_aws::segments_from_env().await?;
    let services = &services;
    // The scheduled event says nothing the tick needs: it runs at the time it is invoked.
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| async move {
        let report = tick(services, chrono::Utc::now()).await?;
        Ok::<_, Error>(serde_json::json!(report))
    }))
    .await
}
