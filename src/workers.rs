//! The runner's workers: the same worker runtime the Lambdas run, fed from the in-process queue
//! (embedded store) or by polling the SQS queues (`--aws`). A job's shards are separate messages,
//! so the pool computes them in parallel. Started imports run one at a time, in the import
//! worker of the Lambda function, fed the same two ways. The runner also plays the refresh
//! scheduler and the refresh applier of dynamic segments, over the in-process refresh queue or by
//! polling the SQS refresh queue.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use segments_aws::{SqsImportQueue, SqsQueue, SqsRefreshQueue};
use segments_core::config::{ConfigError, ServiceConfig, parsed_or};
use segments_core::domain::SegmentType;
use segments_core::domain::refresh::RefreshMessage;
use segments_core::imports::ImportMessage;
use segments_core::jobs::JobMessage;
use segments_core::usecases::AppError;
use segments_core::usecases::dead_letter::dead_letter;
use segments_core::usecases::import::Importer;
use segments_core::usecases::import_worker::ImportWorker;
use segments_core::usecases::run_shard::{Delivery, Disposition, RetrySchedule, ShardRunner, process_delivery};
use segments_core::usecases::segments::SegmentsServices;
use segments_core::usecases::segments::refresh::{self, RefreshSettings};
use segments_core::usecases::sweep::{SWEEP_INTERVAL, Sweeper, sweep};
use segments_embedded::{EmbeddedDeliveries, EmbeddedDelivery, EmbeddedReceiver, EmbeddedStore, LocalRefreshReceiver};
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

/// The variable that sets [`LocalRefreshConfig::tick_interval`], in seconds.
pub const REFRESH_TICK_SECONDS_VAR: &str = "REFRESH_TICK_SECONDS";
/// The variable that sets [`LocalRefreshConfig::poll_interval`], in seconds.
pub const REFRESH_POLL_SECONDS_VAR: &str = "REFRESH_POLL_SECONDS";
/// Longest interval either variable may set: beyond it a local refresh would seem stuck.
const MAX_REFRESH_INTERVAL_SECONDS: u64 = 3600;

/// How the local runner drives the refreshes of dynamic segments. The deployed scheduler runs
/// every minute; on one machine a refresh of a small data set is done in seconds, so the runner
/// looks every few seconds and a refresh is applied soon after its job completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRefreshConfig {
    /// How often the runner runs the scheduler's tick (due schedules, due refreshes).
    pub tick_interval: Duration,
    /// How long after it starts, and then how often, a refresh's job is looked at.
    pub poll_interval: chrono::Duration,
}

impl Default for LocalRefreshConfig {
    /// A tick every 2 seconds and a look at a running job every 2 seconds: a refresh is applied
    /// within about 4 seconds of its job's completion.
    fn default() -> Self {
        LocalRefreshConfig { tick_interval: Duration::from_secs(2), poll_interval: chrono::Duration::seconds(2) }
    }
}

impl LocalRefreshConfig {
    /// `REFRESH_TICK_SECONDS` and `REFRESH_POLL_SECONDS` (default 2 each, 1 to 3600).
    pub fn from_env() -> Result<LocalRefreshConfig, ConfigError> {
        let d = LocalRefreshConfig::default();
        let seconds = |name: &str, default: u64| -> Result<u64, ConfigError> {
            let n: u64 = parsed_or(name, default)?;
            if !(1..=MAX_REFRESH_INTERVAL_SECONDS).contains(&n) {
                return Err(ConfigError::Invalid {
                    name: name.to_owned(),
                    reason: format!("must be from 1 to {MAX_REFRESH_INTERVAL_SECONDS} seconds"),
                });
            }
            Ok(n)
        };
        let tick = seconds(REFRESH_TICK_SECONDS_VAR, d.tick_interval.as_secs())?;
        let poll = seconds(REFRESH_POLL_SECONDS_VAR, d.poll_interval.num_seconds().unsigned_abs())?;
        Ok(LocalRefreshConfig {
            tick_interval: Duration::from_secs(tick),
            // At most an hour of seconds: always within chrono's range.
            poll_interval: chrono::Duration::seconds(poll as i64),
        })
    }

    /// The refresh settings of the runner's segments services: the deployed ones but for the
    /// poll interval.
    pub fn settings(&self) -> RefreshSettings {
        RefreshSettings { poll_interval: self.poll_interval, ..RefreshSettings::default() }
    }
}

/// Runs the refresh scheduler's tick every `interval`, as the scheduled `refresh-scheduler`
/// function does on AWS every minute. The first tick runs at once: it sends again the refreshes
/// whose messages were lost when the runner last stopped (once their lease has run out).
pub fn spawn_refresh_ticker(services: SegmentsServices, interval: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticks.tick().await;
            if let Err(e) = refresh::tick(&services, chrono::Utc::now()).await {
                tracing::warn!(error = %e, "the refresh tick failed; trying again at the next interval");
            }
        }
    });
}

/// Deliveries of one refresh message before the local applier gives it up, as the refresh
/// queue's redrive does on AWS; the scheduler's tick sends the refresh again later.
const REFRESH_DELIVERIES: u32 = 5;

/// Runs the refresh applier over the in-process refresh queue, one message at a time, as the
/// `refresh-applier` function does over SQS: a run that failed because a store was unavailable
/// for a moment is run again after a backoff, up to [`REFRESH_DELIVERIES`] times; any other
/// failure is the same on every run and is dropped. A refresh left unfinished is not lost: the
/// tick sends it again once its lease has run out.
pub fn spawn_refresh_applier(services: SegmentsServices, receiver: LocalRefreshReceiver) {
    tokio::spawn(async move { apply_refreshes(&services, receiver).await });
}

/// The applier's loop: until every sender of the queue is gone.
async fn apply_refreshes(services: &SegmentsServices, mut receiver: LocalRefreshReceiver) {
    while let Some(message) = receiver.recv().await {
        let refresh_id = message.refresh_id.to_string();
        for delivery in 1..=REFRESH_DELIVERIES {
            match refresh::apply(services, &message, chrono::Utc::now()).await {
                Ok(outcome) => {
                    tracing::debug!(refresh_id, ?outcome, "refresh message handled");
                    break;
                }
                Err(AppError::Unavailable(e)) if e.is_transient() && delivery < REFRESH_DELIVERIES => {
                    tracing::warn!(refresh_id, error = %e, delivery, "refresh step failed; running it again");
                    tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(delivery))).await;
                }
                Err(e) => {
                    tracing::error!(refresh_id, error = %e, "refresh step failed; the scheduler looks at it again");
                    break;
                }
            }
        }
    }
}

/// Polls the SQS refresh queue and takes one refresh step at a time, as the `refresh-applier`
/// function does: a message is deleted once its step is taken; one whose step failed because a
/// store or queue was unavailable for a moment is left to come back after its visibility timeout
/// (and to the dead-letter queue after the last receive); anything else is the same on every
/// delivery, so it is deleted and logged. A refresh left unfinished is not lost: the tick sends
/// it again once its lease has run out.
pub fn spawn_sqs_refresh_applier(services: SegmentsServices, queue: SqsRefreshQueue) {
    tokio::spawn(async move {
        loop {
            let message = match queue.receive(20).await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "receiving from the refresh queue failed; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            let disposition = sqs_refresh_disposition(&services, &message.body, message.receive_count).await;
            if disposition == Disposition::Ack
                && let Err(e) = queue.delete(&message.receipt_handle).await
            {
                tracing::warn!(error = %e, "delete failed; the refresh message will be delivered again");
            }
        }
    });
}

/// What to do with one message of the SQS refresh queue: delete it, or let it come back.
async fn sqs_refresh_disposition(services: &SegmentsServices, body: &str, receive_count: u32) -> Disposition {
    let message: RefreshMessage = match serde_json::from_str(body) {
        Ok(message) => message,
        Err(e) => {
            // The parser's message names a position, never the body's content.
            tracing::error!(error = %e, "refresh queue message deleted: not a refresh message");
            return Disposition::Ack;
        }
    };
    let (mandator_id, refresh_id) = (message.mandator_id.as_str(), message.refresh_id.to_string());
    match refresh::apply(services, &message, chrono::Utc::now()).await {
        Ok(outcome) => {
            tracing::debug!(mandator_id, refresh_id, ?outcome, "refresh message handled");
            Disposition::Ack
        }
        Err(AppError::Unavailable(e)) if e.is_transient() => {
            tracing::warn!(mandator_id, refresh_id, receive_count, error = %e, "refresh step failed; the message comes back");
            Disposition::Retry
        }
        Err(e) => {
            tracing::error!(mandator_id, refresh_id, error = %e, "refresh step failed; message deleted, the scheduler looks again");
            Disposition::Ack
        }
    }
}
