//! Writing a job's result as chunks plus a manifest, and serving any page from at most two chunks.

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::domain::{JobId, SegmentType};
use crate::jobs::{Job, ResultSummary, chunks_for_range};
use crate::ports::{ResultStore, StoreError};
use crate::segments::SegmentParams;

/// A 200 answer of `GET /segments/{segmentType}/{jobId}` (DESIGN §3).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultPage {
    pub job_id: JobId,
    pub segment_type: SegmentType,
    pub creation_date: String,
    pub as_of: NaiveDate,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_in_month: Option<u32>,
    pub parameters: SegmentParams,
    /// The stored entries, passed through verbatim: no re-encoding of amounts.
    pub users: Vec<Box<RawValue>>,
    pub page: u32,
    pub per_page: u32,
    pub total_elements: u64,
    pub total_pages: u64,
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    job_id: JobId,
    segment_type: SegmentType,
    total_elements: u64,
    chunk_size: u32,
    chunk_count: u32,
    chunks: &'a [String],
}

/// How many chunk uploads run at once.
const PARALLEL_PUTS: usize = 8;

/// Writes `lines` (one JSON user entry each, already sorted by userId) as NDJSON chunks of
/// `chunk_size` users and a manifest. Keys are deterministic, so a rerun overwrites the same
/// objects with the same content.
pub async fn write_result(
    store: &dyn ResultStore,
    job: &Job,
    lines: &[String],
    chunk_size: u32,
) -> Result<ResultSummary, StoreError> {
    let layout = job.layout();
    let chunk_size = chunk_size.max(1);
    let chunks: Vec<(String, Bytes)> = lines
        .chunks(chunk_size as usize)
        .enumerate()
        .map(|(i, users)| {
            let mut body = String::with_capacity(users.iter().map(|l| l.len() + 1).sum());
            for l in users {
                body.push_str(l);
                body.push('\n');
            }
            (layout.chunk(i as u32), Bytes::from(body))
        })
        .collect();
    let keys: Vec<String> = chunks.iter().map(|(k, _)| k.clone()).collect();
    futures::stream::iter(chunks)
        .map(|(key, body)| async move { store.put(&key, body).await })
        .buffer_unordered(PARALLEL_PUTS)
        .try_collect::<Vec<()>>()
        .await?;
    let summary = ResultSummary { total_elements: lines.len() as u64, chunk_size, chunk_count: keys.len() as u32 };
    let manifest = Manifest {
        job_id: job.job_id,
        segment_type: job.segment_type,
        total_elements: summary.total_elements,
        chunk_size,
        chunk_count: summary.chunk_count,
        chunks: &keys,
    };
    let manifest = serde_json::to_vec(&manifest).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    store.put(&layout.manifest(), Bytes::from(manifest)).await?;
    Ok(summary)
}

/// Page `page` (1-based) of `per_page` users of a completed job: at most two chunk GETs, memory
/// proportional to those chunks, not to the result.
pub async fn read_page(store: &dyn ResultStore, job: &Job, page: u32, per_page: u32) -> Result<ResultPage, StoreError> {
    let summary =
        job.result.ok_or_else(|| StoreError::Corrupt(format!("completed job {} has no result", job.job_id)))?;
    let total = summary.total_elements;
    let start = u64::from(page.max(1) - 1) * u64::from(per_page);
    let end = (start + u64::from(per_page)).min(total);
    let layout = job.layout();
    let mut users = Vec::new();
    for (chunk, range) in chunks_for_range(start, end, summary.chunk_size) {
        let key = layout.chunk(chunk);
        let body =
            store.get(&key).await?.ok_or_else(|| StoreError::Corrupt(format!("result chunk {key} is missing")))?;
        let text = std::str::from_utf8(&body).map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?;
        let lines: Vec<&str> = text.lines().collect();
        let selected = lines.get(range.clone()).ok_or_else(|| StoreError::Corrupt(format!("{key}: too few users")))?;
        for line in selected {
            users.push(
                RawValue::from_string((*line).to_owned()).map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?,
            );
        }
    }
    Ok(ResultPage {
        job_id: job.job_id,
        segment_type: job.segment_type,
        creation_date: timestamp(job.created_at),
        as_of: job.as_of,
        expires_at: timestamp(job.expires_at),
        duration_in_month: job.params.duration_in_month(),
        parameters: job.params.clone(),
        users,
        page,
        per_page,
        total_elements: total,
        total_pages: total.div_ceil(u64::from(per_page.max(1))),
    })
}
