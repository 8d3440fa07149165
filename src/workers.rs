//! The runner's workers: the same worker runtime the Lambdas run, fed from the in-process queue
//! (embedded store) or by polling the SQS queues (`--aws`). A job's shards are separate messages,
//! so the pool computes them in parallel.

use std::sync::Arc;
use std::time::Duration;

use segments_aws::SqsQueue;
use segments_core::domain::SegmentType;
use segments_core::jobs::JobMessage;
use segments_core::usecases::dead_letter::dead_letter;
use segments_core::usecases::run_shard::{Disposition, ShardRunner, process_message};
use tokio::sync::{Mutex, mpsc};

/// Runs `concurrency` workers over the in-process queue. A message whose run fails is delivered
/// again after a backoff, counting deliveries like SQS does; after the last allowed delivery it
/// takes the dead-letter path of the Lambdas: its job is marked FAILED.
pub fn spawn_embedded_pool(runner: ShardRunner, receiver: mpsc::UnboundedReceiver<JobMessage>, concurrency: usize) {
    let receiver = Arc::new(Mutex::new(receiver));
    for _ in 0..concurrency.max(1) {
        let runner = runner.clone();
        let receiver = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Some(message) = receiver.lock().await.recv().await else { return };
                deliver_until_done(&runner, &message).await;
            }
        });
    }
}

async fn deliver_until_done(runner: &ShardRunner, message: &JobMessage) {
    let Ok(body) = serde_json::to_string(message) else { return };
    let mut receive_count = 1;
    loop {
        match process_message(runner, message.segment_type, &body, receive_count, chrono::Utc::now()).await {
            Disposition::Ack => return,
            Disposition::Retry if receive_count >= runner.config.max_receive_count => {
                tracing::error!(job_id = %message.job_id, shard = message.shard, "message dead-lettered after the last delivery");
                while dead_letter(runner.jobs.as_ref(), &runner.callbacks, &body).await == Disposition::Retry {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                return;
            }
            Disposition::Retry => {
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(receive_count.min(6)))).await;
                receive_count += 1;
            }
        }
    }
}

/// Polls every configured SQS queue and runs what arrives; deletes a message only once its work
/// is durable (the worker acknowledged it).
pub fn spawn_sqs_pollers(runner: ShardRunner, queue: Arc<SqsQueue>, types: Vec<SegmentType>) {
    for segment_type in types {
        let runner = runner.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            loop {
                let messages = match queue.receive(segment_type, 10, 5).await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, %segment_type, "receive failed; retrying");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                };
                for m in messages {
                    let disposition =
                        process_message(&runner, segment_type, &m.body, m.receive_count, chrono::Utc::now()).await;
                    if disposition == Disposition::Ack
                        && let Err(e) = queue.delete(segment_type, &m.receipt_handle).await
                    {
                        tracing::warn!(error = %e, "delete failed; the message will be delivered again");
                    }
                }
            }
        });
    }
}
