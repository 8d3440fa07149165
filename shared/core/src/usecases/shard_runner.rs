//! What a worker's run takes and what it comes to: shared by running a shard and finalizing its
//! job.

use std::sync::Arc;

use super::callbacks::Callbacks;
use crate::config::ServiceConfig;
use crate::ports::{AccountSource, JobStore, ResultStore, StoreError};

/// What running a shard (and finalizing its job) needs: the account data, the job records, the
/// result objects, and callbacks for a job that reaches a final state.
#[derive(Clone)]
pub struct ShardRunner {
    pub accounts: Arc<dyn AccountSource>,
    pub jobs: Arc<dyn JobStore>,
    pub results: Arc<dyn ResultStore>,
    pub callbacks: Callbacks,
    pub config: ServiceConfig,
}

/// Why a run did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A store or queue failed; the same message may succeed later.
    #[error("transient failure: {0}")]
    Transient(#[source] StoreError),
    /// The job can never succeed (bad stored data, a type this worker cannot compute). The job
    /// has been marked FAILED.
    #[error("job failed permanently: {0}")]
    Permanent(String),
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() { RunError::Transient(e) } else { RunError::Permanent(e.to_string()) }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The shard's part is written and recorded; other shards are still to come.
    ShardDone,
    /// This run finalized the job (or found it finalized meanwhile by another run).
    Completed { total_elements: u64 },
    /// Completed, failed, expired or unknown already: a redelivered message, nothing to do.
    NothingToDo,
}
