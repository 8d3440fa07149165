//! The job endpoints beyond creating a job and reading its pages (docs/api.md "Beyond the
//! anchors"): the list of a mandator's jobs, the export of a whole result, and metered usage.

mod export;
mod listing;
mod usage;

use std::sync::Arc;

pub use export::{EXPORT_LINK_TTL, export_link};
pub use listing::{DEFAULT_LIST_LIMIT, JobList, JobSummary, MAX_LIST_LIMIT, list_jobs};
pub use usage::{USAGE_SCOPE, UsageEntry, UsageReport, usage};

use crate::config::ServiceConfig;
use crate::ports::{JobCatalog, JobStore, ResultLinks};

/// What the job endpoints need: the job records (usage, the job behind an export), the job list
/// and links to result objects.
#[derive(Clone)]
pub struct JobsApiServices {
    pub jobs: Arc<dyn JobStore>,
    pub catalog: Arc<dyn JobCatalog>,
    pub links: Arc<dyn ResultLinks>,
    pub config: ServiceConfig,
}
