//! `GET /segments/{segmentType}?limit&cursor`: the caller's live jobs of a type, newest first.
//!
//! The cursor is opaque to clients: base64url of `{segmentType}/{jobId}` of the last job of the
//! previous page. It is only ever a position inside the caller's own partition (the mandator comes
//! from the token, never from the cursor), so a cursor taken from another mandator or made up
//! reveals and reaches nothing; one of another segment type is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tracing::instrument;

use super::JobsApiServices;
use crate::domain::date::timestamp;
use crate::domain::{JobId, SegmentType};
use crate::jobs::Job;
use crate::rules::SegmentParams;
use crate::rules::body::FieldError;
use crate::usecases::Caller;
use crate::usecases::{AppError, Progress};

pub const DEFAULT_LIST_LIMIT: u32 = 20;
pub const MAX_LIST_LIMIT: u32 = 100;

/// One job of the list.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    pub job_id: JobId,
    pub segment_type: SegmentType,
    pub status: &'static str,
    pub creation_date: String,
    pub as_of: NaiveDate,
    pub expires_at: String,
    pub parameters: SegmentParams,
    pub progress: Progress,
    /// Users in the result, once the job has completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_elements: Option<u64>,
}

impl JobSummary {
    fn of(job: Job) -> Self {
        JobSummary {
            job_id: job.job_id,
            segment_type: job.segment_type,
            status: job.status.as_str(),
            creation_date: timestamp(job.created_at),
            as_of: job.as_of,
            expires_at: timestamp(job.expires_at),
            progress: Progress { shards_done: job.shards_done, shards_total: job.shards_total },
            total_elements: job.result.map(|r| r.total_elements),
            parameters: job.params,
        }
    }
}

/// A page of the list: `{jobs, nextCursor}`; `nextCursor` is `null` on the last page.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobList {
    pub jobs: Vec<JobSummary>,
    pub next_cursor: Option<String>,
}

fn encode_cursor(segment_type: SegmentType, last: JobId) -> String {
    URL_SAFE_NO_PAD.encode(format!("{segment_type}/{last}"))
}

fn decode_cursor(segment_type: SegmentType, cursor: &str) -> Result<JobId, AppError> {
    let invalid = || AppError::InvalidParameter(FieldError::new("cursor", "is not a cursor of this list"));
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (t, id) = text.split_once('/').ok_or_else(invalid)?;
    if t != segment_type.as_str() {
        return Err(invalid());
    }
    JobId::parse(id).map_err(|_| invalid())
}

/// The caller's page of jobs of `segment_type` after `cursor`.
#[instrument(skip_all, fields(mandator_id = %caller.mandator, segment_type = %segment_type, limit))]
pub async fn list_jobs(
    s: &JobsApiServices,
    caller: &Caller,
    segment_type: SegmentType,
    cursor: Option<&str>,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<JobList, AppError> {
    let before = cursor.map(|c| decode_cursor(segment_type, c)).transpose()?;
    let page = s.catalog.list_jobs(&caller.mandator, segment_type, before, limit, now).await?;
    let next_cursor = match page.jobs.last() {
        Some(last) if page.more => Some(encode_cursor(segment_type, last.job_id)),
        _ => None,
    };
    Ok(JobList { jobs: page.jobs.into_iter().map(JobSummary::of).collect(), next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_the_type() {
        let id = JobId::new();
        let c = encode_cursor(SegmentType::HighBalance, id);
        assert_eq!(decode_cursor(SegmentType::HighBalance, &c).unwrap(), id);
        assert!(matches!(
            decode_cursor(SegmentType::LowBalance, &c),
            Err(AppError::InvalidParameter(f)) if f.field == "cursor"
        ));
        for bad in ["", "!!", "aGVsbG8", &URL_SAFE_NO_PAD.encode("highBalance/not-a-uuid")] {
            assert!(
                matches!(decode_cursor(SegmentType::HighBalance, bad), Err(AppError::InvalidParameter(_))),
                "{bad}"
            );
        }
    }
}
