//! The use cases, one module each, over the ports. Transport-free: the Lambda handlers and the
//! local runner call them with an authenticated [`Caller`]. Each use case takes a context of just
//! the ports it calls, so a Lambda function builds (and links) only those adapters; [`Services`]
//! holds every port for a process that runs them all (the local runner, the tests).

pub mod account_data;
pub mod callbacks;
mod caller;
pub mod create_job;
pub mod dead_letter;
mod error;
pub mod finalize;
#[cfg(feature = "import")]
pub mod import;
#[cfg(feature = "import")]
pub mod import_worker;
pub mod imports_api;
pub mod jobs_api;
pub mod read_result;
pub mod run_shard;
pub mod segments;
mod shard_runner;
pub mod sweep;

use std::sync::Arc;

pub use caller::{Caller, authorize_segment_type};
pub use error::{AppError, Progress};

use crate::config::ServiceConfig;
use crate::ports::{AccountSource, JobQueue, JobStore, ResultStore};
use callbacks::Callbacks;
use create_job::JobIntake;
use read_result::ResultReader;
use run_shard::ShardRunner;

/// Every port and setting, for a process that runs every use case. Built once.
#[derive(Clone)]
pub struct Services {
    pub accounts: Arc<dyn AccountSource>,
    pub jobs: Arc<dyn JobStore>,
    pub results: Arc<dyn ResultStore>,
    pub queue: Arc<dyn JobQueue>,
    pub config: ServiceConfig,
    /// The callback URL policy, the mandators' signing secrets and the notifier (docs/security.md).
    pub callbacks: Callbacks,
}

impl Services {
    /// What creating a job takes.
    pub fn intake(&self) -> JobIntake {
        JobIntake {
            accounts: self.accounts.clone(),
            jobs: self.jobs.clone(),
            queue: self.queue.clone(),
            callbacks: self.callbacks.clone(),
            config: self.config.clone(),
        }
    }

    /// What reading results takes.
    pub fn reader(&self) -> ResultReader {
        ResultReader { jobs: self.jobs.clone(), results: self.results.clone(), config: self.config.clone() }
    }

    /// What running a shard (and finalizing its job) takes.
    pub fn runner(&self) -> ShardRunner {
        ShardRunner {
            accounts: self.accounts.clone(),
            jobs: self.jobs.clone(),
            results: self.results.clone(),
            callbacks: self.callbacks.clone(),
            config: self.config.clone(),
        }
    }

    /// What sweeping stalled jobs takes.
    pub fn sweeper(&self, config: sweep::SweepConfig) -> sweep::Sweeper {
        sweep::Sweeper { jobs: self.jobs.clone(), queue: self.queue.clone(), callbacks: self.callbacks.clone(), config }
    }
}
