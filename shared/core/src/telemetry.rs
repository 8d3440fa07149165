//! The service's metrics, in CloudWatch embedded metric format (EMF): one JSON document per line
//! on stdout, which CloudWatch Logs turns into metrics of the namespace [`NAMESPACE`] without any
//! call to the CloudWatch API. The names, units and dimensions are part of the operations
//! contract (the dashboard and the alarms read them): the use cases call the functions below and
//! never build a document themselves.
//!
//! Job metrics carry the dimension `SegmentType`; the others none. The mandator is never a
//! dimension (one metric per bank would multiply the cost): it travels as a plain property, with
//! the job or import id, so a log query can still find one bank's documents.
//!
//! Where the lines go: the Lambda functions turn stdout on with [`print_to_stdout`]; any other
//! process (the local runner) prints them only when [`METRICS_ENV`] says `stdout`, so its own
//! output stays usable. Tests read them with `capture` (feature `testing`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::domain::{JobId, MandatorId, SegmentType};
use crate::jobs::Job;

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "FinancialSegments";
/// The only dimension: the API's name of a job's segment type (`highBalance`, …).
pub const SEGMENT_TYPE_DIMENSION: &str = "SegmentType";
/// The environment variable that turns the lines on outside Lambda: `stdout`.
pub const METRICS_ENV: &str = "SEGMENTS_METRICS";

/// A CloudWatch unit, as EMF spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Bytes,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
        }
    }
}

/// One value of a metric in a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    pub name: &'static str,
    pub unit: Unit,
    pub value: u64,
}

const fn count(name: &'static str, value: u64) -> Measure {
    Measure { name, unit: Unit::Count, value }
}

fn millis(name: &'static str, duration: Duration) -> Measure {
    Measure { name, unit: Unit::Milliseconds, value: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX) }
}

/// A job's segment type, its mandator and id: the dimension and the properties of a job metric.
#[derive(Debug, Clone, Copy)]
pub struct JobContext<'a> {
    pub segment_type: SegmentType,
    pub mandator: &'a MandatorId,
    pub job_id: JobId,
}

impl<'a> JobContext<'a> {
    pub fn of(job: &'a Job) -> Self {
        JobContext { segment_type: job.segment_type, mandator: &job.mandator_id, job_id: job.job_id }
    }
}

// ---- What the use cases record -------------------------------------------------------------

/// create-job stored and enqueued a new job (an idempotent replay is not one).
pub fn job_created(job: JobContext<'_>) {
    emit_job(job, &[count("JobsCreated", 1)], &[]);
}

/// The job's finalize completed it, `duration` after it was created.
pub fn job_completed(job: JobContext<'_>, duration: Duration) {
    emit_job(job, &[count("JobsCompleted", 1), millis("JobDuration", duration)], &[]);
}

/// The job became FAILED (a worker, the dead-letter handler, or create-job when enqueueing failed).
pub fn job_failed(job: JobContext<'_>) {
    emit_job(job, &[count("JobsFailed", 1)], &[]);
}

/// A worker ran one shard of the job: how long, and what it read from the account data.
pub fn shard_run(job: JobContext<'_>, shard: u32, duration: Duration, reads: ReadTotals) {
    emit_job(
        job,
        &[
            millis("ShardDuration", duration),
            count("ItemsRead", reads.items),
            Measure { name: "BytesRead", unit: Unit::Bytes, value: reads.bytes },
        ],
        &[("shard", json!(shard))],
    );
}

/// A callback reached its receiver; `job_id` when the body names the job.
pub fn callback_delivered(job_id: Option<&str>, attempts: u32) {
    let mut properties = vec![("attempts", json!(attempts))];
    properties.extend(job_id.map(|id| ("jobId", json!(id))));
    emit(&[], &[count("CallbacksDelivered", 1)], &properties);
}

/// A callback was given up: retries exhausted, or refused in a way no retry changes.
pub fn callback_failed(job_id: Option<&str>) {
    let properties: Vec<_> = job_id.map(|id| ("jobId", json!(id))).into_iter().collect();
    emit(&[], &[count("CallbacksFailed", 1)], &properties);
}

/// A segment event was published (`detail-type` as a property, never a dimension).
pub fn event_published(detail_type: &str) {
    emit(&[], &[count("EventsPublished", 1)], &[("detailType", json!(detail_type))]);
}

/// A segment event could not be published after the change it reports was made.
pub fn event_failed(detail_type: &str) {
    emit(&[], &[count("EventsFailed", 1)], &[("detailType", json!(detail_type))]);
}

/// A refresh of a dynamic segment ended: applied with its counts, or failed.
pub fn refresh_finished(applied: bool, entered: u64, left: u64) {
    let metric = if applied { "RefreshesApplied" } else { "RefreshesFailed" };
    emit(&[], &[count(metric, 1), count("AccountsEntered", entered), count("AccountsLeft", left)], &[]);
}

/// An import completed; `users` were written.
pub fn import_completed(mandator: &str, import_id: &str, users: u64) {
    emit_import(mandator, import_id, count("ImportsCompleted", 1), users);
}

/// An import failed; `users` were written before it stopped (writes are per user and stay).
pub fn import_failed(mandator: &str, import_id: &str, users: u64) {
    emit_import(mandator, import_id, count("ImportsFailed", 1), users);
}

fn emit_import(mandator: &str, import_id: &str, outcome: Measure, users: u64) {
    emit(
        &[],
        &[outcome, count("ImportedUsers", users)],
        &[("mandator", json!(mandator)), ("importId", json!(import_id))],
    );
}

fn emit_job(job: JobContext<'_>, measures: &[Measure], extra: &[(&'static str, Value)]) {
    let mut properties = vec![("mandator", json!(job.mandator.as_str())), ("jobId", json!(job.job_id.to_string()))];
    properties.extend(extra.iter().cloned());
    emit(&[(SEGMENT_TYPE_DIMENSION, job.segment_type.as_str())], measures, &properties);
}

fn emit(dimensions: &[(&'static str, &str)], measures: &[Measure], properties: &[(&'static str, Value)]) {
    let line = emf_document(Utc::now().timestamp_millis(), dimensions, measures, properties);
    SINK.write(&line);
}

// ---- The document --------------------------------------------------------------------------

/// One EMF document (without the line break): the `_aws` metadata naming the namespace, the one
/// dimension set (empty when `dimensions` is) and each metric with its unit, then the dimension
/// values, the metric values and the properties as top-level members.
pub fn emf_document(
    timestamp_ms: i64,
    dimensions: &[(&'static str, &str)],
    measures: &[Measure],
    properties: &[(&'static str, Value)],
) -> String {
    let dimension_set: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
    let metrics: Vec<Value> = measures.iter().map(|m| json!({"Name": m.name, "Unit": m.unit.as_str()})).collect();
    let mut document = Map::new();
    document.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [dimension_set], "Metrics": metrics}],
        }),
    );
    // Properties first: a dimension or a metric of the same name wins.
    for (name, value) in properties {
        document.insert((*name).to_owned(), value.clone());
    }
    for (name, value) in dimensions {
        document.insert((*name).to_owned(), json!(value));
    }
    for m in measures {
        document.insert(m.name.to_owned(), json!(m.value));
    }
    Value::Object(document).to_string()
}

// ---- Where the lines go ----------------------------------------------------------------------

/// The process-wide destination of the documents: stdout when turned on, and every live capture.
struct Sink {
    stdout: AtomicBool,
    captures: Mutex<Vec<std::sync::Weak<Mutex<Vec<String>>>>>,
}

static SINK: LazyLock<Sink> = LazyLock::new(|| Sink {
    stdout: AtomicBool::new(std::env::var(METRICS_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("stdout"))),
    captures: Mutex::new(Vec::new()),
});

impl Sink {
    fn write(&self, line: &str) {
        if self.stdout.load(Ordering::Relaxed) {
            // One write of the whole line under the lock, so no log line of another thread can
            // cut a document in two (CloudWatch reads one document per log event).
            let mut buffer = Vec::with_capacity(line.len() + 1);
            buffer.extend_from_slice(line.as_bytes());
            buffer.push(b'\n');
            let mut out = std::io::stdout().lock();
            // A metric is never worth failing the work for, and a broken stdout leaves nowhere
            // to report it.
            let _ = out.write_all(&buffer).and_then(|()| out.flush());
        }
        let mut captures = self.captures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        captures.retain(|capture| match capture.upgrade() {
            Some(lines) => {
                lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(line.to_owned());
                true
            }
            None => false,
        });
    }
}

/// Prints every document on stdout from now on: what the Lambda functions do, where stdout is
/// the function's log stream.
pub fn print_to_stdout() {
    SINK.stdout.store(true, Ordering::Relaxed);
}

/// The documents emitted while it lives, by any thread of the process (tests).
#[cfg(any(test, feature = "testing"))]
pub struct Capture(Arc<Mutex<Vec<String>>>);

/// Starts capturing the documents.
#[cfg(any(test, feature = "testing"))]
pub fn capture() -> Capture {
    let lines = Arc::new(Mutex::new(Vec::new()));
    SINK.captures.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(Arc::downgrade(&lines));
    Capture(lines)
}

#[cfg(any(test, feature = "testing"))]
impl Capture {
    /// The documents so far, one JSON line each.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

// ---- What a shard reads --------------------------------------------------------------------

/// Items and bytes read from the account data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadTotals {
    pub items: u64,
    pub bytes: u64,
}

/// Counts what one shard's run reads. The stores report each item they read with [`item_read`]
/// (or, on a thread of their own, through the meter [`current_read_meter`] gave them), so the
/// count is of stored items and bytes, which the use case never sees.
#[derive(Debug, Clone, Default)]
pub struct ReadMeter(Arc<(AtomicU64, AtomicU64)>);

tokio::task_local! {
    static READ_METER: ReadMeter;
}

impl ReadMeter {
    /// Adds `items` items of `bytes` bytes in all.
    pub fn add(&self, items: u64, bytes: u64) {
        self.0.0.fetch_add(items, Ordering::Relaxed);
        self.0.1.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn totals(&self) -> ReadTotals {
        ReadTotals { items: self.0.0.load(Ordering::Relaxed), bytes: self.0.1.load(Ordering::Relaxed) }
    }

    /// Runs `work` with this meter as the current one of its task.
    pub async fn measure<F: Future>(&self, work: F) -> F::Output {
        READ_METER.scope(self.clone(), work).await
    }
}

/// A store read one item of `bytes` bytes for the current task's shard run; nothing outside one.
pub fn item_read(bytes: usize) {
    let _ = READ_METER.try_with(|meter| meter.add(1, bytes as u64));
}

/// The current task's meter, for a store that reads on another thread.
pub fn current_read_meter() -> Option<ReadMeter> {
    READ_METER.try_with(ReadMeter::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Value {
        serde_json::from_str(line).expect("a document is one JSON object")
    }

    #[test]
    fn a_job_document_is_valid_emf_with_the_segment_type_dimension() {
        let line = emf_document(
            1_700_000_000_123,
            &[(SEGMENT_TYPE_DIMENSION, "highBalance")],
            &[count("JobsCompleted", 1), millis("JobDuration", Duration::from_millis(1234))],
            &[("mandator", json!("bank-1")), ("jobId", json!("j1"))],
        );
        assert!(!line.contains('\n'), "one document per line");
        let doc = parse(&line);
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_123i64);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["SegmentType"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "JobsCompleted", "Unit": "Count"}, {"Name": "JobDuration", "Unit": "Milliseconds"}])
        );
        // Every dimension and metric named in the directive is a top-level member.
        assert_eq!(doc["SegmentType"], "highBalance");
        assert_eq!(doc["JobsCompleted"], 1);
        assert_eq!(doc["JobDuration"], 1234);
        assert_eq!((doc["mandator"].as_str(), doc["jobId"].as_str()), (Some("bank-1"), Some("j1")));
    }

    #[test]
    fn a_metric_without_dimensions_has_one_empty_dimension_set() {
        let doc = parse(&emf_document(1, &[], &[count("CallbacksFailed", 1)], &[]));
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
        assert_eq!(doc["CallbacksFailed"], 1);
        assert!(doc.get("SegmentType").is_none());
    }

    #[test]
    fn a_property_never_replaces_a_metric_value() {
        let doc = parse(&emf_document(1, &[], &[count("ImportedUsers", 7)], &[("ImportedUsers", json!("x"))]));
        assert_eq!(doc["ImportedUsers"], 7);
    }

    #[test]
    fn emitted_documents_reach_a_capture() {
        let capture = capture();
        let mandator = MandatorId::parse("bank-telemetry-unit").unwrap();
        let job = JobContext { segment_type: SegmentType::LowBalance, mandator: &mandator, job_id: JobId::new() };
        shard_run(job, 3, Duration::from_millis(5), ReadTotals { items: 4, bytes: 400 });
        let doc = capture
            .lines()
            .iter()
            .map(|l| parse(l))
            .find(|d| d["mandator"] == "bank-telemetry-unit")
            .expect("the document is captured");
        assert_eq!((doc["ItemsRead"].as_u64(), doc["BytesRead"].as_u64()), (Some(4), Some(400)));
        assert_eq!(doc["shard"], 3);
        assert_eq!(doc["SegmentType"], "lowBalance");
        let units: Vec<&str> = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Unit"].as_str().unwrap())
            .collect();
        assert_eq!(units, ["Milliseconds", "Count", "Bytes"]);
    }

    #[tokio::test]
    async fn reads_count_within_the_meter_of_their_task_only() {
        let meter = ReadMeter::default();
        item_read(999);
        meter
            .measure(async {
                item_read(10);
                let elsewhere = current_read_meter().expect("a meter inside measure");
                std::thread::spawn(move || elsewhere.add(1, 5)).join().unwrap();
            })
            .await;
        item_read(999);
        assert_eq!(meter.totals(), ReadTotals { items: 2, bytes: 15 });
        assert!(current_read_meter().is_none());
    }
}
