//! The two backends the port contracts run against, behind one fixture: the embedded store in a
//! temporary directory with in-process queues and the local event file, or a moto server with the
//! service's tables, bucket and queues provisioned and an EventBridge bus whose rule forwards the
//! service's events to a subscriber queue. A test takes a [`Backend`] and sees only ports, plus
//! readers that see what the queues and the event publisher were handed, as their consumers do.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use futures::TryStreamExt;
use segments_aws::provision::{self, create_queue_with_dlq};
use segments_aws::{
    DynamoAccounts, DynamoCallbackSecrets, DynamoCatalog, DynamoImports, DynamoJobs, DynamoOutbox, DynamoSegments,
    EventBridgeEvents, S3Links, S3Results, SqsQueue, SqsRefreshQueue,
};
use segments_core::config::ServiceConfig;
use segments_core::domain::SegmentType;
use segments_core::domain::events::EVENT_SOURCE;
use segments_core::domain::refresh::RefreshMessage;
use segments_core::jobs::JobMessage;
use segments_core::ports::{
    AccountDirectory, AccountSource, CallbackOutbox, CallbackSecrets, EventPublisher, ImportStore, JobCatalog,
    JobQueue, JobStore, RefreshQueue, RefreshStore, ResultLinks, ResultStore, SegmentStore, UserStore,
};
use segments_core::usecases::Services;
use segments_core::usecases::account_data::AccountData;
use segments_core::usecases::callbacks::{CallbackPolicy, Callbacks};
use segments_core::usecases::segments::SegmentsServices;
use segments_core::usecases::segments::refresh::RefreshSettings;
use segments_embedded::{
    EmbeddedQueue, EmbeddedStore, EventFile, LINK_PATH, LocalLinks, LocalRefreshReceiver, refresh_channel,
};
use serde_json::Value;
use tokio::sync::Mutex;

use super::contract::{LinkOpener, QueueReader};
use super::moto::MotoServer;

/// Every port over one backend, and what a contract needs to observe them from outside.
pub struct Backend {
    /// The account data, with its shards and account directory.
    pub users: Arc<dyn UserStore>,
    /// The account directory of `users`.
    pub directory: Arc<dyn AccountDirectory>,
    /// Import records and import locks.
    pub imports: Arc<dyn ImportStore>,
    pub jobs: Arc<dyn JobStore>,
    pub catalog: Arc<dyn JobCatalog>,
    pub results: Arc<dyn ResultStore>,
    pub links: Arc<dyn ResultLinks>,
    /// Opens a link as its reader would.
    pub opener: Box<dyn LinkOpener>,
    pub secrets: Arc<dyn CallbackSecrets>,
    /// The callbacks kept for retries.
    pub outbox: Arc<dyn CallbackOutbox>,
    /// A second adapter over the same secrets (another process, another cold start).
    pub secrets_again: Arc<dyn CallbackSecrets>,
    pub segments: Arc<dyn SegmentStore>,
    pub queue: Arc<dyn JobQueue>,
    /// Takes the queue's messages back.
    pub queue_reader: Mutex<Box<dyn QueueReader>>,
    /// A queue that can take no message (its consumer or the queue itself is gone).
    pub closed_queue: Arc<dyn JobQueue>,
    /// The refreshes of dynamic segments and their change feeds.
    pub refreshes: Arc<dyn RefreshStore>,
    /// Where segment events go: the local event file, or the EventBridge bus.
    pub events: Arc<dyn EventPublisher>,
    /// What a subscriber of the events receives.
    pub subscriber: Mutex<Box<dyn EventSubscriber>>,
    /// The queue of refresh steps.
    pub refresh_queue: Arc<dyn RefreshQueue>,
    /// Takes the refresh queue's messages back, as the refresh applier receives them.
    pub refresh_reader: Mutex<Box<dyn RefreshReader>>,
    _keep: Keep,
}

/// Reads what a subscriber of the segment events receives.
#[async_trait::async_trait]
pub trait EventSubscriber: Send {
    /// The events received since the last call, oldest first, each as the JSON object the
    /// subscriber gets (`source`, `detail-type`, `time`, `detail`, …).
    async fn received(&mut self) -> Vec<Value>;
}

/// Takes messages back from the refresh queue, as the refresh applier would receive them.
#[async_trait::async_trait]
pub trait RefreshReader: Send {
    /// Whatever the queue holds now (nothing when empty), oldest first.
    async fn drain(&mut self) -> Vec<RefreshMessage>;
}

impl Backend {
    /// Every job port of the backend, as the local runner and the Lambdas wire them.
    pub fn services(&self) -> Services {
        let accounts: Arc<dyn AccountSource> = self.users.clone();
        Services {
            accounts,
            jobs: self.jobs.clone(),
            results: self.results.clone(),
            queue: self.queue.clone(),
            config: ServiceConfig::default(),
            callbacks: Callbacks::http(self.secrets.clone(), CallbackPolicy::strict()),
        }
    }

    /// The segments API, the refresh scheduler and the refresh applier over the backend, with
    /// `settings` (page size, time budget, poll interval).
    pub fn segments_services(&self, settings: RefreshSettings) -> SegmentsServices {
        let core = self.services();
        SegmentsServices {
            intake: core.intake(),
            reader: core.reader(),
            segments: self.segments.clone(),
            refreshes: self.refreshes.clone(),
            users: self.users.clone(),
            events: self.events.clone(),
            refresh_queue: self.refresh_queue.clone(),
            refresh_settings: settings,
        }
    }

    /// The data API over the backend's account data and segments.
    pub fn account_data(&self) -> AccountData {
        AccountData { users: self.users.clone(), segments: self.segments.clone() }
    }

    /// The importer over the backend.
    pub fn importer(&self) -> segments_core::usecases::import::Importer {
        segments_core::usecases::import::Importer {
            users: self.users.clone(),
            imports: self.imports.clone(),
            segments: self.segments.clone(),
        }
    }
}

/// What must live as long as the backend.
enum Keep {
    Embedded(#[allow(dead_code)] tempfile::TempDir),
    Moto(#[allow(dead_code)] MotoServer),
}

impl Backend {
    /// The embedded store in a new temporary directory.
    pub fn embedded() -> Backend {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = EmbeddedStore::open(dir.path()).expect("the store opens");
        let (queue, receiver) = EmbeddedQueue::new();
        // A queue whose receiver is gone: the local runner shut down.
        let (closed, gone) = EmbeddedQueue::new();
        drop(gone);
        let links = LocalLinks::new(store.clone(), RUNNER_URL);
        let (refresh_queue, refresh_receiver) = refresh_channel();
        let events = EventFile::in_data_dir(dir.path()).expect("the event file opens");
        let events_file = events.path().to_owned();
        let shared = Arc::new(store.clone());
        Backend {
            users: shared.clone(),
            directory: shared.clone(),
            imports: shared.clone(),
            jobs: shared.clone(),
            catalog: shared.clone(),
            results: shared.clone(),
            links: Arc::new(links.clone()),
            opener: Box::new(RunnerOpener(links)),
            secrets: shared.clone(),
            outbox: shared.clone(),
            secrets_again: Arc::new(store),
            segments: shared.clone(),
            queue: Arc::new(queue),
            queue_reader: Mutex::new(Box::new(ChannelReader(receiver))),
            closed_queue: Arc::new(closed),
            refreshes: shared,
            events: Arc::new(events),
            subscriber: Mutex::new(Box::new(EventFileReader { path: events_file, lines_read: 0 })),
            refresh_queue: Arc::new(refresh_queue),
            refresh_reader: Mutex::new(Box::new(RefreshChannelReader(refresh_receiver))),
            _keep: Keep::Embedded(dir),
        }
    }

    /// A new moto server with every resource of the service.
    pub async fn moto() -> Backend {
        let server = MotoServer::start();
        let clients = server.clients().await;
        let resources = provision::provision_all(&clients, "contract", 5).await.expect("provisioned");
        let segments_table = provision::segments_table_name("contract");
        provision::create_segments_table(&clients.dynamodb, &segments_table).await.expect("segments table");
        let queue = SqsQueue::new(clients.sqs.clone(), resources.queue_urls.clone());
        // Queues that no longer exist: SQS refuses every message.
        let (gone, _dlq) = create_queue_with_dlq(&clients.sqs, "contract-gone", 5).await.expect("a queue");
        clients.sqs.delete_queue().queue_url(&gone).send().await.expect("deleted");
        let closed: BTreeMap<SegmentType, String> = SegmentType::ALL.iter().map(|t| (*t, gone.clone())).collect();
        let accounts = Arc::new(DynamoAccounts::new(clients.dynamodb.clone(), resources.account_table.clone()));
        let jobs_table = resources.jobs_table.clone();
        let bucket = resources.results_bucket.clone();
        // A second client over the same endpoint, as another process would have.
        let other_clients = server.clients().await;
        let (refresh_queue_url, _refresh_dlq) =
            create_queue_with_dlq(&clients.sqs, "contract-refresh", 5).await.expect("the refresh queue");
        let events_client = aws_sdk_eventbridge::Client::new(&server.sdk_config().await);
        let subscriber_url = subscribe_to_events(&events_client, &clients.sqs).await;
        let segments = Arc::new(DynamoSegments::new(clients.dynamodb.clone(), &segments_table));
        Backend {
            users: accounts.clone(),
            directory: accounts,
            imports: Arc::new(DynamoImports::new(clients.dynamodb.clone(), jobs_table.clone())),
            jobs: Arc::new(DynamoJobs::new(clients.dynamodb.clone(), jobs_table.clone())),
            catalog: Arc::new(DynamoCatalog::new(clients.dynamodb.clone(), jobs_table.clone())),
            results: Arc::new(S3Results::new(clients.s3.clone(), bucket.clone())),
            links: Arc::new(S3Links::new(clients.s3.clone(), bucket)),
            opener: Box::new(HttpOpener),
            secrets: Arc::new(DynamoCallbackSecrets::new(clients.dynamodb.clone(), jobs_table.clone())),
            outbox: Arc::new(DynamoOutbox::new(clients.dynamodb.clone(), jobs_table.clone())),
            secrets_again: Arc::new(DynamoCallbackSecrets::new(other_clients.dynamodb, jobs_table)),
            segments: segments.clone(),
            queue: Arc::new(queue.clone()),
            queue_reader: Mutex::new(Box::new(SqsReader(queue))),
            closed_queue: Arc::new(SqsQueue::new(clients.sqs.clone(), closed)),
            refreshes: segments,
            events: Arc::new(EventBridgeEvents::new(events_client, EVENT_BUS)),
            subscriber: Mutex::new(Box::new(SqsEventReader { sqs: clients.sqs.clone(), url: subscriber_url })),
            refresh_queue: Arc::new(SqsRefreshQueue::new(clients.sqs.clone(), refresh_queue_url.clone())),
            refresh_reader: Mutex::new(Box::new(SqsRefreshReader { sqs: clients.sqs.clone(), url: refresh_queue_url })),
            _keep: Keep::Moto(server),
        }
    }
}

/// The base URL the embedded links are made for.
const RUNNER_URL: &str = "http://127.0.0.1:8080";

/// The EventBridge bus of the moto backend.
const EVENT_BUS: &str = "contract-segments";

/// Creates the bus, a subscriber queue and the rule that forwards the service's events to it, as
/// a bank's integration would subscribe; returns the queue's URL.
async fn subscribe_to_events(events: &aws_sdk_eventbridge::Client, sqs: &aws_sdk_sqs::Client) -> String {
    events.create_event_bus().name(EVENT_BUS).send().await.expect("the bus is created");
    let url = sqs.create_queue().queue_name("contract-subscriber").send().await.expect("a queue").queue_url;
    let url = url.expect("the queue's URL");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("the queue's attributes")
        .attributes
        .and_then(|mut a| a.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .expect("the queue's ARN");
    let pattern = serde_json::json!({ "source": [EVENT_SOURCE] }).to_string();
    events
        .put_rule()
        .name("segment-events")
        .event_bus_name(EVENT_BUS)
        .event_pattern(pattern)
        .send()
        .await
        .expect("the rule is created");
    let target = aws_sdk_eventbridge::types::Target::builder().id("subscriber").arn(arn).build().expect("a target");
    let put = events
        .put_targets()
        .rule("segment-events")
        .event_bus_name(EVENT_BUS)
        .targets(target)
        .send()
        .await
        .expect("the target is set");
    assert_eq!(put.failed_entry_count, 0, "{:?}", put.failed_entries);
    url
}

/// Receives and deletes everything a queue holds, oldest batch first.
async fn take_all_bodies(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await
            .expect("the queue answers");
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return bodies;
        }
        for m in messages {
            let handle = m.receipt_handle.expect("a receipt handle");
            sqs.delete_message().queue_url(url).receipt_handle(handle).send().await.expect("deleted");
            bodies.push(m.body.expect("a body"));
        }
    }
}

/// The lines of the local event file written since the last read.
struct EventFileReader {
    path: std::path::PathBuf,
    lines_read: usize,
}

#[async_trait::async_trait]
impl EventSubscriber for EventFileReader {
    async fn received(&mut self) -> Vec<Value> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("cannot read {}: {e}", self.path.display()),
        };
        assert!(text.is_empty() || text.ends_with('\n'), "every event line is complete: {text:?}");
        let lines: Vec<&str> = text.lines().collect();
        let new = lines[self.lines_read..]
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("an event line is JSON ({e}): {l}")))
            .collect();
        self.lines_read = lines.len();
        new
    }
}

/// The events EventBridge delivered to the subscriber queue.
struct SqsEventReader {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

#[async_trait::async_trait]
impl EventSubscriber for SqsEventReader {
    async fn received(&mut self) -> Vec<Value> {
        take_all_bodies(&self.sqs, &self.url)
            .await
            .iter()
            .map(|b| serde_json::from_str(b).unwrap_or_else(|e| panic!("a delivered event is JSON ({e}): {b}")))
            .collect()
    }
}

struct RefreshChannelReader(LocalRefreshReceiver);

#[async_trait::async_trait]
impl RefreshReader for RefreshChannelReader {
    async fn drain(&mut self) -> Vec<RefreshMessage> {
        use futures::FutureExt;
        let mut taken = Vec::new();
        // What the channel holds now: a message sent is ready at once, an empty channel is not.
        while let Some(Some(message)) = self.0.recv().now_or_never() {
            taken.push(message);
        }
        taken
    }
}

struct SqsRefreshReader {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

#[async_trait::async_trait]
impl RefreshReader for SqsRefreshReader {
    async fn drain(&mut self) -> Vec<RefreshMessage> {
        take_all_bodies(&self.sqs, &self.url)
            .await
            .iter()
            .map(|b| serde_json::from_str(b).unwrap_or_else(|e| panic!("a refresh message ({e}): {b}")))
            .collect()
    }
}

struct ChannelReader(tokio::sync::mpsc::UnboundedReceiver<JobMessage>);

#[async_trait::async_trait]
impl QueueReader for ChannelReader {
    async fn take(&mut self, n: usize) -> Vec<JobMessage> {
        let mut taken = Vec::with_capacity(n);
        while taken.len() < n {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), self.0.recv()).await;
            let next = next.unwrap_or_else(|_| panic!("only {} of {n} messages arrived", taken.len()));
            taken.push(next.expect("the queue is open"));
        }
        taken
    }

    async fn drain(&mut self) -> Vec<JobMessage> {
        let mut taken = Vec::new();
        while let Ok(message) = self.0.try_recv() {
            taken.push(message);
        }
        taken
    }
}

/// Takes messages back from the work queues of every segment type, deleting what it takes.
struct SqsReader(SqsQueue);

#[async_trait::async_trait]
impl QueueReader for SqsReader {
    async fn take(&mut self, n: usize) -> Vec<JobMessage> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let mut taken = Vec::with_capacity(n);
        let mut wait_seconds = 0;
        while taken.len() < n {
            assert!(std::time::Instant::now() < deadline, "only {} of {n} messages arrived", taken.len());
            let before = taken.len();
            for &segment_type in SegmentType::ALL {
                for m in self.0.receive(segment_type, 10, wait_seconds).await.unwrap() {
                    self.0.delete(segment_type, &m.receipt_handle).await.unwrap();
                    taken.push(serde_json::from_str::<JobMessage>(&m.body).unwrap());
                }
            }
            // Long-poll on the next round when this one found nothing.
            wait_seconds = if taken.len() == before { 1 } else { 0 };
        }
        taken
    }

    async fn drain(&mut self) -> Vec<JobMessage> {
        let mut taken = Vec::new();
        for &segment_type in SegmentType::ALL {
            for body in crate::support::queues::take_bodies(&self.0, segment_type).await {
                taken.push(serde_json::from_str::<JobMessage>(&body).unwrap());
            }
        }
        taken
    }
}

/// `%XX` sequences decoded, as the runner's router decodes a path.
fn percent_decode(path: &str) -> Result<String, String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3).ok_or_else(|| format!("a truncated escape in {path}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|e| format!("{hex}: {e}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// Opens links the way the local runner serves them: [`LocalLinks::open`] on the parts of the URL.
struct RunnerOpener(LocalLinks);

#[async_trait::async_trait]
impl LinkOpener for RunnerOpener {
    async fn open(&self, link: &str) -> Result<Vec<u8>, String> {
        let rest = link.strip_prefix(&format!("{RUNNER_URL}{LINK_PATH}")).ok_or("not a link of this runner")?;
        let (path, query) = rest.split_once('?').ok_or("a link without a query")?;
        let (mut expires, mut signature) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("expires", v)) => expires = Some(v),
                Some(("signature", v)) => signature = Some(v),
                _ => return Err(format!("unexpected query part {pair:?}")),
            }
        }
        let (expires, signature) = expires.zip(signature).ok_or("expires or signature missing")?;
        let key = percent_decode(path)?;
        let stream = self.0.open(&key, expires, signature, Utc::now()).await.map_err(|e| e.to_string())?;
        let pieces: Vec<bytes::Bytes> = stream.try_collect().await.map_err(|e| e.to_string())?;
        Ok(pieces.concat())
    }
}

/// Opens links as a client does: an HTTP GET of the URL.
struct HttpOpener;

#[async_trait::async_trait]
impl LinkOpener for HttpOpener {
    async fn open(&self, link: &str) -> Result<Vec<u8>, String> {
        segments_core::usecases::callbacks::install_tls_provider();
        let response = reqwest::get(link).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(body.to_vec())
    }
}
