//! The last step of a job: merge the parts of every shard into the result (chunks, export,
//! manifest), then complete the job and meter its usage in one conditional write (docs/jobs.md).
//! That write touches only this job's items (its record, its own usage record, its live marker),
//! so jobs of one mandator finishing together never cancel each other's completion: a merge is
//! redone only after a real failure, never because another job completed at the same moment.
//! Run by whichever shard's delivery finds every shard recorded; idempotent, so a crash at any
//! point is finished by a redelivery.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use futures::StreamExt;
use serde::Deserialize;
use tracing::instrument;

use super::read_result::ResultWriter;
use super::shard_runner::{RunError, RunOutcome, ShardRunner};
use crate::jobs::{Job, JobStatus};
use crate::ports::{ByteStream, StoreError};
use crate::telemetry::{self, JobContext};

/// Merges the parts of every shard, by userId, into the result (chunks, export, manifest) and
/// completes the job, metering its usage. Streams: it holds one line per shard and the chunk
/// being filled, never the whole result. Idempotent: the same parts give the same objects under
/// the same keys, and only the first completion counts.
#[instrument(skip_all, fields(mandator_id = %job.mandator_id, job_id = %job.job_id, segment_type = %job.segment_type))]
pub async fn finalize(s: &ShardRunner, job: &Job) -> Result<RunOutcome, RunError> {
    let layout = job.layout();
    let mut parts = Vec::with_capacity(job.shards_total as usize);
    for shard in 0..job.shards_total {
        let key = layout.part(shard);
        let stream = s
            .results
            .get_stream(&key)
            .await?
            .ok_or_else(|| RunError::Permanent(format!("the part of shard {shard} is missing")))?;
        parts.push(LineReader::new(stream));
    }
    let mut heads: BinaryHeap<Reverse<(String, usize)>> = BinaryHeap::new();
    let mut lines: Vec<Option<Bytes>> = vec![None; parts.len()];
    for (i, part) in parts.iter_mut().enumerate() {
        advance(part, i, &mut heads, &mut lines).await?;
    }
    let mut result = ResultWriter::new(s.results.as_ref(), job, s.config.chunk_size).await?;
    let mut previous: Option<String> = None;
    while let Some(Reverse((user_id, i))) = heads.pop() {
        if previous.as_ref().is_some_and(|p| p.as_bytes() >= user_id.as_bytes()) {
            return Err(RunError::Permanent(format!("user {user_id} appears twice or out of order in the parts")));
        }
        let Some(line) = lines[i].take() else {
            return Err(RunError::Permanent("a part's line went missing during the merge".to_owned()));
        };
        result.push(&line).await?;
        previous = Some(user_id);
        advance(&mut parts[i], i, &mut heads, &mut lines).await?;
    }
    let summary = result.finish_chunks().await?;
    result.finish().await?;
    let completed = s.jobs.complete(job, summary).await?;
    if completed {
        tracing::info!(total_elements = summary.total_elements, "job completed");
        let duration = (Utc::now() - job.created_at).to_std().unwrap_or_default();
        telemetry::job_completed(JobContext::of(job), duration);
        let done = Job { status: JobStatus::Completed, result: Some(summary), ..job.clone() };
        s.callbacks.call_back(&done).await;
    }
    Ok(RunOutcome::Completed { total_elements: summary.total_elements })
}

/// Reads the next line of part `i` into `lines[i]` and puts its userId on the heap.
async fn advance(
    part: &mut LineReader,
    i: usize,
    heads: &mut BinaryHeap<Reverse<(String, usize)>>,
    lines: &mut [Option<Bytes>],
) -> Result<(), RunError> {
    let Some(line) = part.next_line().await? else { return Ok(()) };
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow, rename = "userId")]
        user_id: std::borrow::Cow<'a, str>,
    }
    let head: Head = serde_json::from_slice(&line)
        .map_err(|e| RunError::Permanent(format!("a line of the part of shard {i} is not an entry: {e}")))?;
    heads.push(Reverse((head.user_id.into_owned(), i)));
    lines[i] = Some(line);
    Ok(())
}

/// The lines of a streamed object, without their `\n`; empty lines are skipped.
struct LineReader {
    stream: ByteStream,
    buffer: BytesMut,
    /// How much of `buffer` is known to hold no `\n`.
    scanned: usize,
    ended: bool,
}

impl LineReader {
    fn new(stream: ByteStream) -> Self {
        LineReader { stream, buffer: BytesMut::new(), scanned: 0, ended: false }
    }

    async fn next_line(&mut self) -> Result<Option<Bytes>, StoreError> {
        loop {
            if let Some(at) = self.buffer[self.scanned..].iter().position(|b| *b == b'\n') {
                let mut line = self.buffer.split_to(self.scanned + at + 1);
                line.truncate(line.len() - 1);
                self.scanned = 0;
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line.freeze()));
            }
            self.scanned = self.buffer.len();
            if self.ended {
                self.scanned = 0;
                let rest = self.buffer.split();
                return Ok((!rest.is_empty()).then(|| rest.freeze()));
            }
            match self.stream.next().await {
                Some(piece) => self.buffer.extend_from_slice(&piece?),
                None => self.ended = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(pieces: &[&str]) -> LineReader {
        let pieces: Vec<Result<Bytes, StoreError>> =
            pieces.iter().map(|p| Ok(Bytes::copy_from_slice(p.as_bytes()))).collect();
        LineReader::new(Box::pin(futures::stream::iter(pieces)))
    }

    async fn all(mut r: LineReader) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = r.next_line().await.unwrap() {
            out.push(String::from_utf8(line.to_vec()).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn lines_are_read_across_piece_boundaries() {
        assert_eq!(all(reader(&["a\nb", "c\n", "", "\nd"])).await, ["a", "bc", "d"]);
        assert_eq!(all(reader(&["x\n"])).await, ["x"]);
        assert!(all(reader(&[])).await.is_empty());
        assert_eq!(all(reader(&["long", "er", " line", "\n"])).await, ["longer line"]);
    }
}
