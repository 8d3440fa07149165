//! `GET /usage?month=YYYY-MM`: the caller's metered usage, completed jobs per segment type in the
//! month (the jobs' creation month, UTC). Every segment type is listed, 0 when unused. Each type's
//! count sums the usage records of its completed jobs (one per job, docs/storage.md), the types
//! read concurrently.

use serde::Serialize;
use tracing::instrument;

use super::JobsApiServices;
use crate::domain::{Month, SegmentType};
use crate::rules::body::FieldError;
use crate::usecases::AppError;
use crate::usecases::Caller;

/// The scope of `GET /usage`.
pub const USAGE_SCOPE: &str = "segments/usage.read";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageEntry {
    pub segment_type: SegmentType,
    pub jobs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    pub month: Month,
    pub usage: Vec<UsageEntry>,
}

/// `YYYY-MM` exactly: four digits, a hyphen, two digits, a month 01–12.
fn parse_month(month: Option<&str>) -> Result<Month, AppError> {
    let invalid = || AppError::InvalidParameter(FieldError::new("month", "must be a month in the form YYYY-MM"));
    let m = month.ok_or_else(|| AppError::InvalidParameter(FieldError::new("month", "is required (YYYY-MM)")))?;
    let b = m.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 7 || b[4] != b'-' || !digits(0..4) || !digits(5..7) {
        return Err(invalid());
    }
    m.parse().map_err(|_| invalid())
}

#[instrument(skip_all, fields(mandator_id = %caller.mandator))]
pub async fn usage(s: &JobsApiServices, caller: &Caller, month: Option<&str>) -> Result<UsageReport, AppError> {
    caller.require_scope(USAGE_SCOPE)?;
    let month = parse_month(month)?;
    let counts = futures::future::try_join_all(
        SegmentType::ALL.iter().map(|&t| async move { s.jobs.usage(&caller.mandator, month, t).await }),
    )
    .await?;
    let usage =
        SegmentType::ALL.iter().zip(counts).map(|(&segment_type, jobs)| UsageEntry { segment_type, jobs }).collect();
    Ok(UsageReport { month, usage })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_month_is_strict_yyyy_mm() {
        assert_eq!(parse_month(Some("2026-11")).unwrap(), Month::new(2026, 11).unwrap());
        for bad in
            ["2026-1", "2026-13", "2026-00", "+026-11", "2026-+1", "2026/11", "2026-11-01", "", " 2026-11", "२०२६-११"]
        {
            assert!(
                matches!(parse_month(Some(bad)), Err(AppError::InvalidParameter(f)) if f.field == "month"),
                "{bad}"
            );
        }
        assert!(matches!(parse_month(None), Err(AppError::InvalidParameter(f)) if f.field == "month"));
    }
}
