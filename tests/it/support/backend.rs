//! The two backends the port contracts run against, behind one fixture: the embedded store in a
//! temporary directory with an in-process queue, or a moto server with the service's tables,
//! bucket and queues provisioned. A test takes a [`Backend`] and sees only ports.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use futures::TryStreamExt;
use segments_aws::provision::{self, create_queue_with_dlq};
use segments_aws::{
    DynamoAccounts, DynamoCallbackSecrets, DynamoCatalog, DynamoImports, DynamoJobs, DynamoOutbox, DynamoSegments,
    S3Links, S3Results, SqsQueue,
};
use segments_core::domain::SegmentType;
use segments_core::jobs::JobMessage;
use segments_core::ports::{
    AccountDirectory, CallbackOutbox, CallbackSecrets, ImportStore, JobCatalog, JobQueue, JobStore, ResultLinks,
    ResultStore, SegmentStore, UserStore,
};
use segments_embedded::{EmbeddedQueue, EmbeddedStore, LINK_PATH, LocalLinks};
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
    _keep: Keep,
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
            segments: shared,
            queue: Arc::new(queue),
            queue_reader: Mutex::new(Box::new(ChannelReader(receiver))),
            closed_queue: Arc::new(closed),
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
            segments: Arc::new(DynamoSegments::new(clients.dynamodb.clone(), &segments_table)),
            queue: Arc::new(queue.clone()),
            queue_reader: Mutex::new(Box::new(SqsReader(queue))),
            closed_queue: Arc::new(SqsQueue::new(clients.sqs.clone(), closed)),
            _keep: Keep::Moto(server),
        }
    }
}

/// The base URL the embedded links are made for.
const RUNNER_URL: &str = "http://127.0.0.1:8080";

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
