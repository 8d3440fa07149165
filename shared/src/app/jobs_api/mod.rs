//! The job endpoints beyond creating a job and reading its pages (DESIGN §3 "Beyond the
//! anchors"): the list of a mandator's jobs, the export of a whole result, and metered usage.

mod export;
mod listing;
mod usage;

use std::sync::Arc;

pub use export::{EXPORT_LINK_TTL, export_link};
pub use listing::{DEFAULT_LIST_LIMIT, JobList, JobSummary, MAX_LIST_LIMIT, list_jobs};
pub use usage::{USAGE_SCOPE, UsageEntry, UsageReport, usage};

use super::Services;
use crate::ports::{JobCatalog, ResultLinks};

/// The job services plus what the job endpoints need beyond them.
#[derive(Clone)]
pub struct JobsApiServices {
    pub core: Services,
    pub catalog: Arc<dyn JobCatalog>,
    pub links: Arc<dyn ResultLinks>,
}
