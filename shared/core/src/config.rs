//! Configuration read from the environment once per cold start. A missing or malformed variable
//! is named in the error.

use std::env;
use std::str::FromStr;

use crate::jobs::{DEFAULT_CHUNK_SIZE, MAX_PER_PAGE};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(String),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: String, reason: String },
}

/// Reads a required variable.
pub fn required(name: &str) -> Result<String, ConfigError> {
    match env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(ConfigError::Missing(name.to_owned())),
    }
}

/// Reads an optional variable; unset, empty or blank is `None`.
pub fn optional(name: &str) -> Option<String> {
    env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Reads an optional variable, parsed, with a default.
pub fn parsed_or<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid { name: name.to_owned(), reason: e.to_string() })
        }
        _ => Ok(default),
    }
}

/// Settings of the application itself, independent of where data is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The verified token claim that names the mandator (docs/security.md).
    pub mandator_claim: String,
    /// The app client of the web console, when it signs in through Cognito: its users' tokens
    /// carry this `client_id`, and their mandator is their one Cognito group instead
    /// (docs/security.md).
    pub console_client_id: Option<String>,
    /// Users per result chunk; at least the largest page.
    pub chunk_size: u32,
    /// Receives of a message after which its job is marked FAILED instead of retried again. Keep
    /// it equal to the queue's `maxReceiveCount`, so the job fails before the message goes to
    /// the DLQ.
    pub max_receive_count: u32,
    /// Live (QUEUED or RUNNING) jobs a mandator may have, all segment types together; a create
    /// beyond it is refused with 429 (docs/api.md), so one mandator cannot fill the queues.
    pub max_live_jobs_per_mandator: u32,
}

/// The variable that sets [`ServiceConfig::max_live_jobs_per_mandator`] (create-job, segments-api).
pub const MAX_LIVE_JOBS_PER_MANDATOR_VAR: &str = "MAX_LIVE_JOBS_PER_MANDATOR";

/// The default of [`ServiceConfig::max_live_jobs_per_mandator`].
pub const DEFAULT_MAX_LIVE_JOBS_PER_MANDATOR: u32 = 20;

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            mandator_claim: "client_id".to_owned(),
            console_client_id: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_receive_count: 5,
            max_live_jobs_per_mandator: DEFAULT_MAX_LIVE_JOBS_PER_MANDATOR,
        }
    }
}

impl ServiceConfig {
    /// `MANDATOR_CLAIM` (default `client_id`), `CONSOLE_CLIENT_ID` (default none; empty is none),
    /// `RESULT_CHUNK_SIZE` (default 1000, at least 500), `MAX_RECEIVE_COUNT` (default 5),
    /// `MAX_LIVE_JOBS_PER_MANDATOR` (default 20, at least 1).
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = ServiceConfig::default();
        let chunk_size = parsed_or("RESULT_CHUNK_SIZE", d.chunk_size)?;
        if chunk_size < MAX_PER_PAGE {
            return Err(ConfigError::Invalid {
                name: "RESULT_CHUNK_SIZE".into(),
                reason: format!("must be at least {MAX_PER_PAGE}, the largest page"),
            });
        }
        let max_receive_count = parsed_or("MAX_RECEIVE_COUNT", d.max_receive_count)?;
        if max_receive_count == 0 {
            return Err(ConfigError::Invalid { name: "MAX_RECEIVE_COUNT".into(), reason: "must be at least 1".into() });
        }
        let max_live_jobs_per_mandator = parsed_or(MAX_LIVE_JOBS_PER_MANDATOR_VAR, d.max_live_jobs_per_mandator)?;
        if max_live_jobs_per_mandator == 0 {
            return Err(ConfigError::Invalid {
                name: MAX_LIVE_JOBS_PER_MANDATOR_VAR.into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(ServiceConfig {
            mandator_claim: parsed_or("MANDATOR_CLAIM", d.mandator_claim)?,
            console_client_id: optional("CONSOLE_CLIENT_ID"),
            chunk_size,
            max_receive_count,
            max_live_jobs_per_mandator,
        })
    }
}
