//! The `segments` command line: the local runner, dev tokens, synthetic data and import.

pub mod cli;
pub mod cognito;
pub mod events;
pub mod generate;
pub mod progress;
pub mod server;
pub mod token;
pub mod workers;
