//! Retries in minutes (docs/jobs.md, "Retries"): a shard whose run fails transiently comes back
//! after a backoff that grows with its receive count, set as the message's visibility; a long
//! run extends its own visibility so no second copy starts meanwhile; a shard that keeps failing
//! fails its job with the reason on the last allowed receive, within 20 minutes of backoff.
//!
//! Time is simulated the way the queues count it: the schedule's durations are read from the
//! visibility the worker sets (a recording queue), or shortened for the test on a real queue.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::contract::unique_mandator;
use crate::support::moto::MotoServer;
use async_trait::async_trait;
use chrono::Utc;
use futures::StreamExt;
use futures::stream::BoxStream;
use segments_aws::{SqsQueue, provision, services as aws_services};
use segments_core::config::ServiceConfig;
use segments_core::domain::{MandatorId, SegmentType, UserData};
use segments_core::jobs::{Job, JobMessage, JobStatus};
use segments_core::ports::{AccountSource, JobQueue, MessageVisibility, StoreError};
use segments_core::rules::SegmentRequest;
use segments_core::usecases::Services;
use segments_core::usecases::run_shard::{Delivery, Disposition, RetrySchedule, ShardRunner, process_delivery};
use segments_embedded::EmbeddedReceiver;
use segments_embedded::wiring::services as embedded_services;
use segments_embedded::{EmbeddedDeliveries, EmbeddedStore};

const MAX_RECEIVES: u32 = 5;
const BODY: &str = r#"{"accountType":"checking","threshold":100}"#;

/// Account data that is never reachable: every read of a shard fails transiently, after `delay`.
struct Unreachable {
    delay: Duration,
}

#[async_trait]
impl AccountSource for Unreachable {
    async fn shard_count(&self, _: &MandatorId) -> Result<Option<u32>, StoreError> {
        Ok(Some(1))
    }

    fn users<'a>(&'a self, _: &'a MandatorId, _: u32) -> BoxStream<'a, Result<UserData, StoreError>> {
        let delay = self.delay;
        futures::stream::once(async move {
            tokio::time::sleep(delay).await;
            Err(StoreError::unavailable("reading the account data", "the table does not answer"))
        })
        .boxed()
    }
}

/// A queue that records every visibility a worker sets, in order.
#[derive(Default)]
struct RecordingQueue(Mutex<Vec<Duration>>);

#[async_trait]
impl MessageVisibility for RecordingQueue {
    async fn change_visibility(&self, _: &str, timeout: Duration) -> Result<(), StoreError> {
        self.0.lock().unwrap().push(timeout);
        Ok(())
    }
}

fn config() -> ServiceConfig {
    ServiceConfig { max_receive_count: MAX_RECEIVES, ..ServiceConfig::default() }
}

/// A one-shard highBalance job of a new mandator, stored QUEUED.
async fn queued_job(s: &Services, label: &str) -> Job {
    let request = SegmentRequest::parse(SegmentType::HighBalance, BODY.as_bytes(), Utc::now().date_naive()).unwrap();
    let job = Job::new(unique_mandator(label), request.as_of, request.params, request.callback_url, 1, Utc::now());
    s.jobs.create(&job).await.unwrap();
    job
}

/// The services' runner, reading account data that never answers (after `delay`).
fn failing_runner(s: &Services, delay: Duration) -> ShardRunner {
    ShardRunner { accounts: Arc::new(Unreachable { delay }), ..s.runner() }
}

/// A schedule of seconds instead of minutes, for a real queue.
fn short_schedule(first_backoff: Duration) -> RetrySchedule {
    RetrySchedule {
        first_backoff,
        max_backoff: first_backoff * 8,
        heartbeat_every: Duration::from_millis(500),
        heartbeat_hold: Duration::from_secs(2),
    }
}

fn message_of(job: &Job) -> JobMessage {
    job.messages().into_iter().next().expect("the job's one message")
}

#[test]
fn the_schedule_doubles_from_30_seconds_to_8_minutes() {
    let schedule = RetrySchedule::default();
    let backoffs: Vec<u64> = (1..=7).map(|n| schedule.backoff(n).as_secs()).collect();
    assert_eq!(backoffs, [30, 60, 120, 240, 480, 480, 480]);
    assert!(schedule.heartbeat_hold > schedule.heartbeat_every, "one missed extension does not free the message");
}

/// On the embedded store: five receives of a shard whose account data never answers. Each failed
/// receive sets the schedule's backoff as the message's visibility; the job stays live until the
/// last receive, which fails it with the reason; the backoff between the first and the last
/// receive (what SQS waits before redelivering) is at most 20 minutes.
#[tokio::test(flavor = "multi_thread")]
async fn a_shard_that_keeps_failing_fails_its_job_within_20_minutes_of_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _receiver) = embedded_services(EmbeddedStore::open(dir.path()).unwrap(), config());
    let job = queued_job(&s, "retries-give-up").await;
    let runner = failing_runner(&s, Duration::ZERO);
    let body = serde_json::to_string(&message_of(&job)).unwrap();
    let queue = RecordingQueue::default();
    let schedule = RetrySchedule::default();

    let mut waited = Duration::ZERO;
    for receive_count in 1..=MAX_RECEIVES {
        let stored = s.jobs.get(&job.mandator_id, job.job_id).await.unwrap().unwrap();
        assert!(!stored.status.is_final(), "receive {receive_count}: the job is still live ({:?})", stored.status);
        let delivery = Delivery { body: &body, receive_count, receipt_handle: "r", queue: &queue };
        let disposition = process_delivery(&runner, SegmentType::HighBalance, &delivery, &schedule, Utc::now()).await;
        // Every failed receive is reported failed: SQS counts it, and the last one goes to the DLQ.
        assert_eq!(disposition, Disposition::Retry, "receive {receive_count}");
        let visibility = *queue.0.lock().unwrap().last().expect("a visibility is set");
        assert_eq!(visibility, schedule.backoff(receive_count), "receive {receive_count}");
        if receive_count < MAX_RECEIVES {
            waited += visibility;
        }
    }

    let set: Vec<u64> = queue.0.lock().unwrap().iter().map(Duration::as_secs).collect();
    assert_eq!(set, [30, 60, 120, 240, 480], "the backoff by receive count");
    assert!(waited <= Duration::from_secs(20 * 60), "{waited:?} of backoff before the last receive");
    let failed = s.jobs.get(&job.mandator_id, job.job_id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    let reason = failed.error.expect("the reason is stored");
    assert!(reason.contains("failed 5 times") && reason.contains("reading the account data"), "{reason}");
}

/// On the in-process queue: a failed run's message is handed back with its backoff as
/// visibility; it is not receivable before the backoff has passed, then it is, counted as the
/// second receive.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_comes_back_after_its_backoff_on_the_embedded_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (s, fresh) = embedded_services(EmbeddedStore::open(dir.path()).unwrap(), config());
    let mut receiver = EmbeddedReceiver::new(fresh);
    let deliveries: EmbeddedDeliveries = receiver.deliveries();
    let job = queued_job(&s, "retries-embedded").await;
    s.queue.enqueue(&message_of(&job)).await.unwrap();
    let schedule = short_schedule(Duration::from_secs(2));

    let first = receiver.receive().await.expect("the message");
    assert_eq!(first.receive_count, 1);
    let body = serde_json::to_string(&first.message).unwrap();
    let delivery =
        Delivery { body: &body, receive_count: 1, receipt_handle: &first.receipt_handle, queue: &deliveries };
    let runner = failing_runner(&s, Duration::ZERO);
    let failed_at = tokio::time::Instant::now();
    assert_eq!(
        process_delivery(&runner, SegmentType::HighBalance, &delivery, &schedule, Utc::now()).await,
        Disposition::Retry
    );
    deliveries.hand_back(&first.receipt_handle);

    let early = tokio::time::timeout(Duration::from_millis(1500), receiver.receive()).await;
    assert!(early.is_err(), "received again before the backoff: {early:?}");
    let again = tokio::time::timeout(Duration::from_secs(5), receiver.receive()).await.expect("back after the backoff");
    let again = again.expect("the queue is open");
    assert!(failed_at.elapsed() >= Duration::from_secs(2), "back after {:?}", failed_at.elapsed());
    assert_eq!((again.message, again.receive_count), (first.message, 2));
}

/// SQS on moto with the service's queues, the job of `label` stored and its message queued.
struct Moto {
    s: Services,
    queue: SqsQueue,
    client: aws_sdk_sqs::Client,
    queue_url: String,
    job: Job,
    _server: MotoServer,
}

impl Moto {
    async fn start(label: &str) -> Moto {
        let server = MotoServer::start();
        let clients = server.clients().await;
        let resources = provision::provision_all(&clients, "retries", MAX_RECEIVES).await.unwrap();
        let s = aws_services(&clients, &resources, config());
        let queue = SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone());
        let job = queued_job(&s, label).await;
        queue.enqueue(&message_of(&job)).await.unwrap();
        let queue_url = resources.queue_urls[&SegmentType::HighBalance].clone();
        Moto { s, queue, client: clients.sqs.clone(), queue_url, job, _server: server }
    }

    async fn set_queue_visibility(&self, seconds: u32) {
        self.client
            .set_queue_attributes()
            .queue_url(&self.queue_url)
            .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, seconds.to_string())
            .send()
            .await
            .unwrap();
    }

    async fn receive_now(&self) -> Vec<segments_aws::ReceivedMessage> {
        self.queue.receive(SegmentType::HighBalance, 10, 0).await.unwrap()
    }
}

/// On SQS (moto): after a failed run the message is invisible for its backoff (2 s here), not
/// for the queue's visibility timeout (60 s here): not receivable at once, receivable after.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_comes_back_after_its_backoff_on_sqs() {
    let m = Moto::start("retries-sqs").await;
    m.set_queue_visibility(60).await;
    let received = m.receive_now().await;
    assert_eq!(received.len(), 1);
    let visibility = m.queue.visibility(SegmentType::HighBalance).unwrap();
    let delivery = Delivery {
        body: &received[0].body,
        receive_count: received[0].receive_count,
        receipt_handle: &received[0].receipt_handle,
        queue: &visibility,
    };
    let runner = failing_runner(&m.s, Duration::ZERO);
    let schedule = short_schedule(Duration::from_secs(2));
    assert_eq!(
        process_delivery(&runner, SegmentType::HighBalance, &delivery, &schedule, Utc::now()).await,
        Disposition::Retry
    );

    assert!(m.receive_now().await.is_empty(), "receivable before the backoff");
    let again = m.queue.receive(SegmentType::HighBalance, 10, 5).await.unwrap();
    assert_eq!(again.len(), 1, "back after the 2 s backoff, long before the queue's 60 s");
    assert_eq!((again[0].body.as_str(), again[0].receive_count), (received[0].body.as_str(), 2));
    let stored = m.s.jobs.get(&m.job.mandator_id, m.job.job_id).await.unwrap().unwrap();
    assert!(!stored.status.is_final(), "a transient failure leaves the job live");
}

/// On SQS (moto), with a queue visibility of 1 s and a run of 5 s: the heartbeat keeps the
/// message invisible for the whole run, so no second copy is received meanwhile. Without the
/// heartbeat (an interval longer than the run) the same run lets a second copy through.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_run_keeps_its_message_from_a_second_receiver_on_sqs() {
    let m = Moto::start("retries-heartbeat").await;
    m.set_queue_visibility(1).await;
    let heartbeat = short_schedule(Duration::from_secs(30));
    assert_eq!(second_copies_during_a_long_run(&m, &heartbeat).await, 0, "a second copy while the heartbeat runs");

    // The control: the message is back (after its 30 s backoff) and no heartbeat extends it.
    m.client.purge_queue().queue_url(&m.queue_url).send().await.expect("purged");
    m.queue.enqueue(&message_of(&m.job)).await.unwrap();
    let silent = RetrySchedule { heartbeat_every: Duration::from_secs(60), ..heartbeat };
    assert!(second_copies_during_a_long_run(&m, &silent).await > 0, "without the heartbeat a second copy arrives");
}

/// Receives the message, runs it for 5 s under `schedule` and counts the copies another receiver
/// gets meanwhile.
async fn second_copies_during_a_long_run(m: &Moto, schedule: &RetrySchedule) -> usize {
    let received = m.queue.receive(SegmentType::HighBalance, 1, 5).await.unwrap();
    assert_eq!(received.len(), 1, "the message");
    let visibility = m.queue.visibility(SegmentType::HighBalance).unwrap();
    let runner = failing_runner(&m.s, Duration::from_secs(5));
    let delivery = Delivery {
        body: &received[0].body,
        receive_count: received[0].receive_count,
        receipt_handle: &received[0].receipt_handle,
        queue: &visibility,
    };
    let run = process_delivery(&runner, SegmentType::HighBalance, &delivery, schedule, Utc::now());
    let watch = async {
        let mut copies = 0;
        let until = tokio::time::Instant::now() + Duration::from_millis(4500);
        while tokio::time::Instant::now() < until {
            copies += m.receive_now().await.len();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        copies
    };
    let (disposition, copies) = tokio::join!(run, watch);
    assert_eq!(disposition, Disposition::Retry);
    copies
}
