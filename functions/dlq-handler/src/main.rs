//! The dead-letter handler: every DLQ of the work queues is its event source. A message lands
//! there after failing `maxReceiveCount` times; its job is marked FAILED with the reason, so a
//! poller gets 422 instead of waiting forever (DESIGN §7).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    segments_core::worker::run_dead_letter_lambda().await
}
