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
use segments_core::usecases::run_shard::{Delivery, Disposition, RetrySchedule, ShardRunner, process_delivery};
use segments_core::usecases::sweep::{SWEEP_INTERVAL, Sweeper, sweep};
use segments_embedded::{EmbeddedDeliveries, EmbeddedDelivery, EmbeddedReceiver, EmbeddedStore};
use tokio::sync::{Mutex, mpsc};

/// Runs `concurrency` workers over the in-process queue on `schedule` (the runner passes the
/// Lambdas' [`RetrySchedule::default`]): a message whose run fails comes back after its backoff
/// (the queue counts its deliveries like SQS), and after the last allowed delivery it takes the
/// dead-letter path of the Lambdas: its job is marked FAILED.
pub fn spawn_embedded_pool(
    runner: ShardRunner,
    receiver: mpsc::UnboundedReceiver<JobMessage>,
    concurrency: usize,
    schedule: RetrySchedule,
) {
    let receiver = EmbeddedReceiver::new(receiver);
    let deliveries = receiver.deliveries();
    let receiver = Arc::new(Mutex::new(receiver));
    for _ in 0..concurrency.max(1) {
        let runner = runner.clone();
        let receiver = receiver.clone();
        let deliveries = deliveries.clone();
        tokio::spawn(async move {
            loop {
                let Some(delivery) = receiver.lock().await.receive().await else { return };
                deliver(&runner, &deliveries, &delivery, &schedule).await;
            }
        });
    }
}

/// Runs one delivery of the in-process queue and acknowledges it or hands it back.
pub async fn deliver(
    runner: &ShardRunner,
    deliveries: &EmbeddedDeliveries,
    delivery: &EmbeddedDelivery,
    schedule: &RetrySchedule,
) {
    let message = &delivery.message;
    let Ok(body) = serde_json::to_string(message) else {
        deliveries.acknowledge(&delivery.receipt_handle);
        return;
    };
    let held = Delivery {
        body: &body,
        receive_count: delivery.receive_count,
        receipt_handle: &delivery.receipt_handle,
        queue: deliveries,
    };
    match process_delivery(runner, message.segment_type, &held, schedule, chrono::Utc::now()).await {
        Disposition::Ack => deliveries.acknowledge(&delivery.receipt_handle),
        Disposition::Retry if delivery.receive_count >= runner.config.max_receive_count => {
            tracing::error!(job_id = %message.job_id, shard = message.shard, "message dead-lettered after the last delivery");
            deliveries.acknowledge(&delivery.receipt_handle);
            while dead_letter(runner.jobs.as_ref(), &runner.callbacks, &body).await == Disposition::Retry {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Disposition::Retry => deliveries.hand_back(&delivery.receipt_handle),
    }
}

/// Polls every configured SQS queue and runs what arrives; deletes a message only once its work
/// is durable (the worker acknowledged it), and holds it meanwhile like a worker Lambda does (the
/// heartbeat, the backoff of a failed run).
pub fn spawn_sqs_pollers(runner: ShardRunner, queue: Arc<SqsQueue>, types: Vec<SegmentType>) {
    let schedule = RetrySchedule::default();
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
                let visibility = match queue.visibility(segment_type) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::error!(error = %e, %segment_type, "the queue has no URL; its worker stops");
                        return;
                    }
                };
                for m in messages {
                    let delivery = Delivery {
                        body: &m.body,
                        receive_count: m.receive_count,
                        receipt_handle: &m.receipt_handle,
                        queue: &visibility,
                    };
                    let disposition =
                        process_delivery(&runner, segment_type, &delivery, &schedule, chrono::Utc::now()).await;
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

/// Sweeps for stalled jobs every [`SWEEP_INTERVAL`], as the scheduled sweeper function does on
/// AWS: the local runner's jobs get the same progress deadline.
pub fn spawn_sweeper(sweeper: Sweeper) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // The first tick completes at once; nothing can be stalled at start beyond what the
        // runner has just sent again.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if let Err(e) = sweep(&sweeper, chrono::Utc::now()).await {
                tracing::warn!(error = %e, "sweeping stalled jobs failed; trying again at the next interval");
            }
        }
    });
}
