//! The integration tests: one binary, a module per area. `support` holds what several areas share:
//! the moto launcher, the two backends and the port contract suites `contracts` runs on both,
//! request flows, queue helpers, fault injection and the local runner's process.

#[macro_use]
mod support;

mod account_data;
mod api_contract;
mod aws_adapters;
mod callback_delivery;
mod callbacks;
mod cargo_lambda;
mod cdk;
mod cognito_tokens;
mod console;
mod contracts;
mod data_api;
mod data_imports;
mod dynamic_segments;
mod embedded_adapters;
mod fairness;
mod iam;
mod importer;
mod infra;
mod job_endpoints;
mod jobs_at_scale;
mod local_events;
mod local_runner;
mod local_workers;
mod openapi;
mod pipeline;
mod provision;
mod refresh_store;
mod retries;
mod segment_adapters;
mod segments_api;
mod sweeper;
mod telemetry;
