//! Financial segments: the domain, the segment rules, the ports the use cases need, the use cases
//! themselves and the HTTP edge the Lambda functions share. No adapter lives here: the AWS
//! adapters are the crate `segments-aws`, the embedded store is `segments-embedded`.
//!
//! Layers, from the inside out; each module imports only the ones above it in this list:
//! - [`domain`]: typed values (ids, money, months), the account data model, segments. Pure.
//! - [`rules`]: request parameters and the five segment computations. Pure.
//! - [`jobs`]: the job record, its lifecycle and the layout of its results.
//! - [`imports`]: the record of a bulk import of account data.
//! - [`config`]: settings read from the environment.
//! - [`snapshot`]: the stored form of one user's account data, shared by both stores. Pure.
//! - [`ports`]: the small traits the use cases need for storage and queueing.
//! - [`telemetry`]: the metrics (CloudWatch embedded metric format) the use cases record.
//! - [`usecases`]: one module per use case, over the ports.
//! - [`http`]: the API edge shared by the Lambda functions and the local runner: the caller from
//!   the request, problems, responses.
//! - [`sqs`]: the SQS edge: worker and dead-letter batches as Lambda handlers.

pub mod config;
pub mod domain;
pub mod http;
pub mod imports;
pub mod jobs;
pub mod ports;
pub mod rules;
pub mod snapshot;
pub mod sqs;
pub mod telemetry;
pub mod usecases;
