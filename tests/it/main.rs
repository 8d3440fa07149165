//! The integration tests: one binary, a module per area. `support` holds what several areas share:
//! the moto launcher, the two backends and the port contract suites `contracts` runs on both,
//! request flows, queue helpers and fault injection.

mod support;

mod aws_adapters;
mod callback_delivery;
mod callbacks;
mod contracts;
mod embedded_adapters;
mod infra;
mod job_endpoints;
mod jobs_at_scale;
mod local_runner;
mod local_workers;
mod openapi;
mod pipeline;
mod segments_api;
