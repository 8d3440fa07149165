//! `GET /segments/{segmentType}/{jobId}`: a page of a completed job's result, or why there is
//! none. Also the writing of a result as chunks, an export and a manifest, so that any page is
//! served from at most two chunks.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use tracing::instrument;

use super::{AppError, Caller, Progress};
use crate::config::ServiceConfig;
use crate::domain::date::timestamp;
use crate::domain::{JobId, SegmentType};
use crate::jobs::{Job, JobStatus, ResultSummary, chunks_for_range};
use crate::ports::{JobStore, ObjectWriter, ResultStore, StoreError};
use crate::rules::SegmentParams;

/// What reading results needs: the job records and the result objects.
#[derive(Clone)]
pub struct ResultReader {
    pub jobs: Arc<dyn JobStore>,
    pub results: Arc<dyn ResultStore>,
    pub config: ServiceConfig,
}

/// What `GET /segments/{segmentType}/{jobId}` finds.
#[instrument(skip_all, fields(mandator_id = %caller.mandator, segment_type = %segment_type))]
pub async fn get_result(
    s: &ResultReader,
    caller: &Caller,
    segment_type: SegmentType,
    job_id: &str,
    page: u32,
    per_page: u32,
    now: DateTime<Utc>,
) -> Result<ResultPage, AppError> {
    let job_id = JobId::parse(job_id).map_err(|_| AppError::UnknownJob)?;
    let job = s.jobs.get(&caller.mandator, job_id).await?.ok_or(AppError::UnknownJob)?;
    if job.segment_type != segment_type || job.is_expired(now) {
        return Err(AppError::UnknownJob);
    }
    match job.status {
        JobStatus::Queued | JobStatus::Running => Err(AppError::NotReady {
            status: job.status,
            progress: Progress { shards_done: job.shards_done, shards_total: job.shards_total },
        }),
        JobStatus::Failed => Err(AppError::JobFailed(job.error.clone().unwrap_or_else(|| "unknown reason".into()))),
        JobStatus::Completed => Ok(read_page(s.results.as_ref(), &job, page, per_page).await?),
    }
}

/// A 200 answer of `GET /segments/{segmentType}/{jobId}` (docs/api.md).
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    job_id: JobId,
    segment_type: SegmentType,
    total_elements: u64,
    chunk_size: u32,
    chunk_count: u32,
    chunks: &'a [String],
    export: String,
}

/// The export is uploaded in pieces of about this size.
const EXPORT_PIECE_BYTES: usize = 1024 * 1024;

/// Writes a job's result from its entries, given one by one in userId order: chunks of
/// `chunk_size` users (each written as soon as it is full), the export (the whole result as
/// NDJSON, uploaded piece by piece) and the manifest. Memory: one chunk and one export piece.
/// Keys are deterministic, so a rerun overwrites the same objects with the same bytes.
pub struct ResultWriter<'a> {
    store: &'a dyn ResultStore,
    job_id: JobId,
    segment_type: SegmentType,
    layout: crate::jobs::ResultLayout,
    chunk_size: u32,
    chunk: BytesMut,
    in_chunk: u32,
    chunk_keys: Vec<String>,
    export: Box<dyn ObjectWriter>,
    export_piece: BytesMut,
    total: u64,
}

impl<'a> ResultWriter<'a> {
    pub async fn new(store: &'a dyn ResultStore, job: &Job, chunk_size: u32) -> Result<ResultWriter<'a>, StoreError> {
        let layout = job.layout();
        let export = store.writer(&layout.export_key()).await?;
        Ok(ResultWriter {
            store,
            job_id: job.job_id,
            segment_type: job.segment_type,
            layout,
            chunk_size: chunk_size.max(1),
            chunk: BytesMut::new(),
            in_chunk: 0,
            chunk_keys: Vec::new(),
            export,
            export_piece: BytesMut::new(),
            total: 0,
        })
    }

    /// Appends one user's entry (a JSON line without its `\n`).
    pub async fn push(&mut self, line: &[u8]) -> Result<(), StoreError> {
        self.chunk.extend_from_slice(line);
        self.chunk.put_u8(b'\n');
        self.export_piece.extend_from_slice(line);
        self.export_piece.put_u8(b'\n');
        self.in_chunk += 1;
        self.total += 1;
        if self.in_chunk == self.chunk_size {
            self.write_chunk().await?;
        }
        if self.export_piece.len() >= EXPORT_PIECE_BYTES {
            self.export.write(self.export_piece.split().freeze()).await?;
        }
        Ok(())
    }

    async fn write_chunk(&mut self) -> Result<(), StoreError> {
        let key = self.layout.chunk(self.chunk_keys.len() as u32);
        self.store.put(&key, self.chunk.split().freeze()).await?;
        self.chunk_keys.push(key);
        self.in_chunk = 0;
        Ok(())
    }

    /// Writes the last, partial chunk; the result's summary.
    pub async fn finish_chunks(&mut self) -> Result<ResultSummary, StoreError> {
        if self.in_chunk > 0 {
            self.write_chunk().await?;
        }
        Ok(ResultSummary {
            total_elements: self.total,
            chunk_size: self.chunk_size,
            chunk_count: self.chunk_keys.len() as u32,
        })
    }

    /// Writes what is left: the last chunk, the export and the manifest.
    pub async fn finish(mut self) -> Result<ResultSummary, StoreError> {
        let summary = self.finish_chunks().await?;
        self.export.write(self.export_piece.split().freeze()).await?;
        self.export.finish().await?;
        let manifest = Manifest {
            job_id: self.job_id,
            segment_type: self.segment_type,
            total_elements: summary.total_elements,
            chunk_size: summary.chunk_size,
            chunk_count: summary.chunk_count,
            chunks: &self.chunk_keys,
            export: self.layout.export_key(),
        };
        let manifest = serde_json::to_vec(&manifest).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.store.put(&self.layout.manifest(), Bytes::from(manifest)).await?;
        Ok(summary)
    }
}

/// Writes `lines` (one JSON user entry each, already sorted by userId) as the job's result:
/// chunks, export and manifest (see [`ResultWriter`]).
pub async fn write_result(
    store: &dyn ResultStore,
    job: &Job,
    lines: &[String],
    chunk_size: u32,
) -> Result<ResultSummary, StoreError> {
    let mut writer = ResultWriter::new(store, job, chunk_size).await?;
    for line in lines {
        writer.push(line.as_bytes()).await?;
    }
    writer.finish().await
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
