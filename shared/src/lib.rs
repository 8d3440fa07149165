//! Financial segments: the domain, the segment computations, the ports the application needs and
//! the adapters behind them (AWS and embedded).
//!
//! Layers, from the inside out:
//! - [`domain`]: typed values (ids, money, months) and the account data model. Pure.
//! - [`segments`]: request parameters and the five segment computations. Pure.
//! - [`jobs`]: the job record, its lifecycle and the layout of its results.
//! - [`ports`]: the small traits the application uses for storage and queueing.
//! - [`app`]: the use cases (create a job, read a result page, run a worker) over the ports.
//! - [`http`]: the API edge shared by the Lambda functions: caller identity, problems, responses.
//! - [`adapters`]: DynamoDB/SQS/S3 and the embedded store, both implementing [`ports`].

pub mod adapters;
pub mod app;
pub mod callbacks;
pub mod config;
pub mod domain;
pub mod generate;
pub mod http;
pub mod import;
pub mod jobs;
pub mod ports;
pub mod records;
pub mod segments;
pub mod segments_api;
pub mod testing;
pub mod worker;
