//! The runner's workers: the same worker runtime the Lambdas run, fed from the in-process queue
//! (embedded store) or by polling the SQS queues (`--aws`). A job's shards are separate messages,
//! so the pool computes them in parallel. Started imports run one at a time, in the import
//! worker of the Lambda function, fed the same two ways.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use segments_aws::{SqsImportQueue, SqsQueue};
use segments_core::config::ServiceConfig;
use segments_core::domain::SegmentType;
use segments_core::imports::ImportMessage;
use segments_core::jobs::JobMessage;
use segments_core::usecases::dead_letter::dead_letter;
use segments_core::usecases::import::Importer;
use segments_core::usecases::import_worker::ImportWorker;
use segments_core::usecases::run_shard::{Disposition, ShardRunner, process_message};
use segments_embedded::EmbeddedStore;
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

/// The import worker over the embedded store, working in `scratch`.
pub fn import_worker(store: &EmbeddedStore, scratch: PathBuf, config: &ServiceConfig) -> ImportWorker {
    let store = Arc::new(store.clone());
    ImportWorker {
        importer: Importer { users: store.clone(), imports: store.clone(), segments: store.clone() },
        files: store,
        scratch,
        max_receive_count: config.max_receive_count,
    }
}

/// Runs the imports of the in-process import queue, one after the other. A delivery the worker
/// wants again is made again after a backoff, counting deliveries like SQS does, up to the
/// worker's last one (on which it marks the import FAILED itself).
pub fn spawn_embedded_imports(worker: ImportWorker, mut receiver: mpsc::UnboundedReceiver<ImportMessage>) {
    tokio::spawn(async move {
        while let Some(message) = receiver.recv().await {
            let Ok(body) = serde_json::to_string(&message) else { continue };
            let mut receive_count = 1;
            while worker.process(&body, receive_count, None).await == Disposition::Retry {
                if receive_count >= worker.max_receive_count {
                    tracing::error!(import_id = %message.import_id, "import message dropped after the last delivery");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(receive_count.min(6)))).await;
                receive_count += 1;
            }
        }
    });
}

/// Polls the SQS import queue and runs one import at a time; deletes a message once the worker
/// is done with it.
pub fn spawn_sqs_imports(worker: ImportWorker, queue: SqsImportQueue) {
    tokio::spawn(async move {
        loop {
            let message = match queue.receive(20).await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "receiving from the import queue failed; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            if worker.process(&message.body, message.receive_count, None).await == Disposition::Ack
                && let Err(e) = queue.delete(&message.receipt_handle).await
            {
                tracing::warn!(error = %e, "delete failed; the import message will be delivered again");
            }
        }
    });
}
