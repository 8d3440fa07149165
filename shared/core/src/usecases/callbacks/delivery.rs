//! Delivering callbacks over HTTP: signed, with timeouts, retried with exponential backoff, never
//! following redirects, each attempt connecting only to addresses the policy accepted just before.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use super::policy::{CallbackPolicy, CallbackUrlError};
use super::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};
use super::{CallbackSecret, Notifier, NotifyError};
use crate::telemetry;

/// How a delivery is attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled before each further one.
    pub first_backoff: Duration,
    /// Connecting to the receiver.
    pub connect_timeout: Duration,
    /// One attempt, from connecting to the end of the response.
    pub attempt_timeout: Duration,
}

impl Default for DeliverySettings {
    /// Five attempts over about 15 s (1, 2, 4, 8 s apart): within one worker invocation.
    fn default() -> Self {
        DeliverySettings {
            attempts: 5,
            first_backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// The HTTP [`Notifier`].
#[derive(Debug, Clone, Default)]
pub struct HttpNotifier {
    policy: CallbackPolicy,
    settings: DeliverySettings,
}

/// Installs aws-lc-rs as the process-wide rustls provider, once. reqwest is built without a
/// provider of its own (`rustls-tls-webpki-roots-no-provider`, so ring stays out of the build) and
/// panics building a client when none is installed: call this before building any reqwest client.
pub fn install_tls_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Err only when a provider was installed before: that one is then used.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

const USER_AGENT: &str = concat!("financial-segments-callbacks/", env!("CARGO_PKG_VERSION"));

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// Worth another attempt: a network error, a timeout, 408, 429 or a 5xx answer.
    Transient(String),
    /// Another attempt would fail the same way: a refused URL, a redirect, another 4xx answer.
    Permanent(NotifyError),
}

impl HttpNotifier {
    pub fn new(policy: CallbackPolicy, settings: DeliverySettings) -> Self {
        HttpNotifier { policy, settings }
    }

    async fn attempt(&self, url: &str, secret: &CallbackSecret, body: &[u8]) -> Attempt {
        // Checked again on every attempt: the name may resolve elsewhere by now.
        let target = match self.policy.check(url).await {
            Ok(t) => t,
            Err(e @ CallbackUrlError::Unresolvable(_)) => return Attempt::Transient(e.to_string()),
            Err(e) => return Attempt::Permanent(NotifyError::Refused(e)),
        };
        install_tls_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.settings.connect_timeout)
            .timeout(self.settings.attempt_timeout)
            .user_agent(USER_AGENT)
            .no_proxy();
        if let Some(domain) = &target.domain {
            // The connection goes to the checked addresses only, never to a fresh DNS answer.
            builder = builder.resolve_to_addrs(domain, &target.addrs);
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => return Attempt::Transient(format!("cannot build an HTTP client: {e}")),
        };
        let timestamp = Utc::now().timestamp();
        let sent = client
            .post(target.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature(secret, timestamp, body))
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Err(e) => Attempt::Transient(format!("request failed: {}", without_url(&e))),
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    Attempt::Delivered
                } else if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                    Attempt::Transient(format!("receiver answered {status}"))
                } else {
                    Attempt::Permanent(NotifyError::Rejected(status.as_u16()))
                }
            }
        }
    }
}

/// A reqwest error's description without the URL (it may carry a client's token in its query).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    kind.to_owned()
}

#[async_trait]
impl Notifier for HttpNotifier {
    async fn deliver(&self, url: &str, secret: &CallbackSecret, body: &[u8]) -> Result<u32, NotifyError> {
        let delivered = self.deliver_with_retries(url, secret, body).await;
        let job_id = job_of(body);
        match &delivered {
            Ok(attempts) => telemetry::callback_delivered(job_id.as_deref(), *attempts),
            Err(_) => telemetry::callback_failed(job_id.as_deref()),
        }
        delivered
    }
}

impl HttpNotifier {
    async fn deliver_with_retries(&self, url: &str, secret: &CallbackSecret, body: &[u8]) -> Result<u32, NotifyError> {
        let attempts = self.settings.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.attempt(url, secret, body).await {
                Attempt::Delivered => return Ok(attempt),
                Attempt::Permanent(e) => return Err(e),
                Attempt::Transient(reason) => {
                    tracing::warn!(attempt, attempts, reason = %reason, "callback attempt failed");
                    last = reason;
                }
            }
            if attempt < attempts {
                tokio::time::sleep(self.settings.first_backoff * 2u32.saturating_pow(attempt - 1)).await;
            }
        }
        Err(NotifyError::GaveUp { attempts, last })
    }
}

/// The job a callback body reports (its `jobId`), for the delivery's metric; `None` for a body
/// that names none.
fn job_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Reported {
        #[serde(rename = "jobId")]
        job_id: String,
    }
    serde_json::from_slice::<Reported>(body).ok().map(|r| r.job_id)
}
