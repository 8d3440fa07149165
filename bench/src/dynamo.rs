//! A stand-in for DynamoDB's Query API inside the process: the real SDK client, with an HTTP
//! client that answers each Query with the next full page of a shard, as DynamoDB's JSON protocol
//! returns it. The worker's own adapter ([`DynamoAccounts`]) reads from it, so what is measured is
//! exactly the worker's hot path: SDK response parsing, item decoding, user assembly, computing.
//!
//! Pages hold items in the AccountData layout of docs/storage.md — each user's compressed record
//! in blocks, `pk`, `sk`, `v`, `n`, `b` — up to DynamoDB's 1 MB limit of item data, with item sizes
//! counted by DynamoDB's rules.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use segments_core::domain::{MandatorId, UserData};
use segments_core::ports::next_version;
use segments_core::snapshot;
use serde_json::{Value, json};

use crate::data::UserReader;

/// DynamoDB's limit of item data in one Query response.
pub const PAGE_LIMIT_BYTES: u64 = 1 << 20;
/// Item data one eventually consistent read unit covers: two reads of 4 KB.
const READ_UNIT_BYTES: u64 = 8 * 1024;

/// Totals of the pages served.
#[derive(Debug, Default)]
pub struct Served {
    pub calls: AtomicU64,
    pub items: AtomicU64,
    /// Item data as DynamoDB sizes it.
    pub item_bytes: AtomicU64,
    /// Bytes of the HTTP response bodies.
    pub wire_bytes: AtomicU64,
    /// Read units consumed, in halves (eventually consistent: ½ unit per started 4 KB).
    pub half_read_units: AtomicU64,
}

impl Served {
    pub fn read_units(&self) -> f64 {
        self.half_read_units.load(Ordering::Relaxed) as f64 / 2.0
    }
}

/// One encoded item and its DynamoDB size.
struct Encoded {
    json: String,
    size: u64,
}

/// A page: its response body and what it holds.
pub struct Page {
    pub body: Bytes,
    pub items: u64,
    pub item_bytes: u64,
}

/// Where pages come from: built ahead of time (timing) or when asked (memory).
pub trait PageSource: Send + Sync {
    fn next_page(&self) -> Option<Page>;
}

/// Builds full pages from users, item by item in sort-key order.
pub struct PageBuilder {
    mandator: MandatorId,
    /// The version every block carries: a clock value in microseconds, as the store writes.
    version: u64,
    pending: VecDeque<Encoded>,
    sent: u64,
}

impl PageBuilder {
    pub fn new(mandator: MandatorId) -> Self {
        PageBuilder { mandator, version: next_version(None), pending: VecDeque::new(), sent: 0 }
    }

    /// Queues a user's items: the blocks of its record.
    pub fn push_user(&mut self, user: &UserData) -> anyhow::Result<()> {
        let pk = format!("M#{}#S#0000", self.mandator);
        self.pending.extend(user_items(&pk, user, self.version)?);
        Ok(())
    }

    pub fn pending_bytes(&self) -> u64 {
        self.pending.iter().map(|e| e.size).sum()
    }

    /// The next page of at most 1 MB of item data; `last` when no more items will be pushed.
    pub fn page(&mut self, last: bool) -> Option<Page> {
        if self.pending.is_empty() {
            return None;
        }
        let mut size = 0;
        let mut items = Vec::new();
        while let Some(e) = self.pending.front() {
            if size + e.size > PAGE_LIMIT_BYTES {
                break;
            }
            size += e.size;
            items.push(self.pending.pop_front().map(|e| e.json).unwrap_or_default());
        }
        let count = items.len();
        self.sent += count as u64;
        let more = !last || !self.pending.is_empty();
        let mut body = format!("{{\"Count\":{count},\"ScannedCount\":{count},\"Items\":[");
        body.push_str(&items.join(","));
        body.push(']');
        if more {
            // Any key will do: the stand-in serves pages in order.
            body.push_str(&format!(
                ",\"LastEvaluatedKey\":{{\"pk\":{{\"S\":\"M#{}#S#0000\"}},\"sk\":{{\"S\":\"page-{}\"}}}}",
                self.mandator, self.sent
            ));
        }
        body.push('}');
        Some(Page { body: Bytes::from(body), items: count as u64, item_bytes: size })
    }
}

fn s(v: &str) -> Value {
    json!({ "S": v })
}

fn n(v: impl fmt::Display) -> Value {
    json!({ "N": v.to_string() })
}

/// DynamoDB's size of an attribute value.
fn value_size(v: &Value) -> u64 {
    if let Some(text) = v.get("S").and_then(Value::as_str) {
        return text.len() as u64;
    }
    if let Some(number) = v.get("N").and_then(Value::as_str) {
        // One byte per two significant digits, plus one.
        let digits = number.trim_start_matches('-').replace('.', "");
        let significant = digits.trim_start_matches('0').trim_end_matches('0').len().max(1) as u64;
        return significant.div_ceil(2) + 1;
    }
    if let Some(binary) = v.get("B").and_then(Value::as_str) {
        // Binary values count their raw bytes, not the base64 text of the wire.
        return BASE64.decode(binary).map_or(0, |b| b.len() as u64);
    }
    0
}

fn encode(attributes: Vec<(&str, Value)>) -> Encoded {
    let size = attributes.iter().map(|(name, v)| name.len() as u64 + value_size(v)).sum();
    let map: serde_json::Map<String, Value> = attributes.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Encoded { json: Value::Object(map).to_string(), size }
}

/// The items of one user's record as the DynamoDB adapter writes them.
fn user_items(pk: &str, user: &UserData, version: u64) -> anyhow::Result<Vec<Encoded>> {
    let record = snapshot::encode(user)?;
    let blocks = snapshot::blocks(&record);
    let count = blocks.len();
    Ok(blocks
        .into_iter()
        .enumerate()
        .map(|(i, block)| {
            encode(vec![
                ("pk", s(pk)),
                ("sk", s(&format!("U#{}#B{i:02}", user.user_id))),
                ("v", n(version)),
                ("n", n(count)),
                ("b", json!({ "B": BASE64.encode(block) })),
            ])
        })
        .collect())
}

/// Item data (DynamoDB's sizes) and item count of one user's record.
pub fn stored_size(user: &UserData) -> anyhow::Result<(u64, u64)> {
    let items = user_items("M#bench#S#0000", user, next_version(None))?;
    Ok((items.iter().map(|e| e.size).sum(), items.len() as u64))
}

/// Pages built ahead of time from the first users of a data set, served in order.
pub struct Prebuilt {
    pages: Vec<Page>,
    /// Transactions in the pages' records.
    pub transactions: u64,
    next: AtomicU64,
}

impl Prebuilt {
    /// Whole users until at least `min_transactions` transactions.
    pub fn load(reader: &mut UserReader, min_transactions: u64) -> anyhow::Result<(Prebuilt, MandatorId)> {
        let first = reader.next_user()?.ok_or_else(|| anyhow::anyhow!("the data set has no users"))?;
        let mandator = reader.mandator().cloned().ok_or_else(|| anyhow::anyhow!("no mandator"))?;
        let mut builder = PageBuilder::new(mandator.clone());
        let mut pages = Vec::new();
        let mut transactions = 0u64;
        let mut next = Some(first);
        while let Some(user) = next {
            builder.push_user(&user)?;
            transactions += user.accounts.iter().map(|h| h.transactions.len() as u64).sum::<u64>();
            while builder.pending_bytes() > PAGE_LIMIT_BYTES {
                pages.extend(builder.page(false));
            }
            next = if transactions < min_transactions { reader.next_user()? } else { None };
        }
        while let Some(p) = builder.page(true) {
            pages.push(p);
        }
        Ok((Prebuilt { pages, transactions, next: AtomicU64::new(0) }, mandator))
    }

    pub fn items(&self) -> u64 {
        self.pages.iter().map(|p| p.items).sum()
    }

    /// Serve the pages again from the first.
    pub fn rewind(&self) {
        self.next.store(0, Ordering::Relaxed);
    }
}

impl PageSource for Prebuilt {
    fn next_page(&self) -> Option<Page> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        self.pages.get(i).map(|p| Page { body: p.body.clone(), items: p.items, item_bytes: p.item_bytes })
    }
}

/// Pages built when asked, from a data set read one user at a time, until `max_transactions`
/// transactions: the process holds one page, never the shard.
pub struct Streamed {
    state: Mutex<StreamState>,
}

struct StreamState {
    reader: UserReader,
    builder: PageBuilder,
    transactions: u64,
    max_transactions: u64,
    done: bool,
}

impl Streamed {
    pub fn new(mut reader: UserReader, max_transactions: u64) -> anyhow::Result<(Streamed, MandatorId)> {
        // The first user tells the mandator; it goes on the first page.
        let first = reader.next_user()?.ok_or_else(|| anyhow::anyhow!("the data set has no users"))?;
        let mandator = reader.mandator().cloned().ok_or_else(|| anyhow::anyhow!("no mandator"))?;
        let mut builder = PageBuilder::new(mandator.clone());
        builder.push_user(&first)?;
        let transactions = first.accounts.iter().map(|h| h.transactions.len() as u64).sum();
        let state = StreamState { reader, builder, transactions, max_transactions, done: false };
        Ok((Streamed { state: Mutex::new(state) }, mandator))
    }
}

impl PageSource for Streamed {
    fn next_page(&self) -> Option<Page> {
        let mut guard = self.state.lock().ok()?;
        let st = &mut *guard;
        while !st.done && st.builder.pending_bytes() <= PAGE_LIMIT_BYTES {
            if st.transactions >= st.max_transactions {
                st.done = true;
                break;
            }
            match st.reader.next_user() {
                Ok(Some(user)) => {
                    st.transactions += user.accounts.iter().map(|h| h.transactions.len() as u64).sum::<u64>();
                    if st.builder.push_user(&user).is_err() {
                        st.done = true;
                    }
                }
                _ => st.done = true,
            }
        }
        let done = st.done;
        st.builder.page(done)
    }
}

/// The stand-in HTTP client: answers Query calls, refuses everything else.
#[derive(Clone)]
pub struct FakeDynamo {
    source: Arc<dyn PageSource>,
    pub served: Arc<Served>,
}

impl fmt::Debug for FakeDynamo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeDynamo").finish_non_exhaustive()
    }
}

impl FakeDynamo {
    pub fn new(source: Arc<dyn PageSource>) -> Self {
        FakeDynamo { source, served: Arc::new(Served::default()) }
    }

    /// A DynamoDB client whose every request goes to this stand-in.
    pub fn client(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-central-1"))
            .credentials_provider(Credentials::new("bench", "bench", None, None, "bench"))
            .endpoint_url("http://dynamodb.bench.invalid")
            .http_client(self.clone())
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }
}

impl HttpClient for FakeDynamo {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for FakeDynamo {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        if target != "DynamoDB_20120810.Query" {
            let e: Box<dyn std::error::Error + Send + Sync> = format!("unexpected call {target}").into();
            return HttpConnectorFuture::ready(Err(ConnectorError::other(e, None)));
        }
        let page = self.source.next_page().unwrap_or(Page {
            body: Bytes::from_static(b"{\"Count\":0,\"ScannedCount\":0,\"Items\":[]}"),
            items: 0,
            item_bytes: 0,
        });
        let served = &self.served;
        served.calls.fetch_add(1, Ordering::Relaxed);
        served.items.fetch_add(page.items, Ordering::Relaxed);
        served.item_bytes.fetch_add(page.item_bytes, Ordering::Relaxed);
        served.wire_bytes.fetch_add(page.body.len() as u64, Ordering::Relaxed);
        served.half_read_units.fetch_add(page.item_bytes.div_ceil(READ_UNIT_BYTES / 2), Ordering::Relaxed);
        let mut response = match 200u16.try_into() {
            Ok(status) => HttpResponse::new(status, SdkBody::from(page.body)),
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::other(Box::new(e), None))),
        };
        response.headers_mut().insert("content-type", "application/x-amz-json-1.0");
        HttpConnectorFuture::ready(Ok(response))
    }
}
