//! The refresh queue in SQS: one message per step of a refresh to take (a JSON
//! [`RefreshMessage`]), consumed by the refresh applier function (batch size 1). Besides the
//! [`RefreshQueue`] port it offers the receive and delete calls of a runner that polls SQS itself.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use tracing::instrument;

use segments_core::config::{ConfigError, required};
use segments_core::domain::refresh::RefreshMessage;
use segments_core::ports::{RefreshQueue, StoreError};

use crate::queue::received;
use crate::{REFRESH_QUEUE_URL_VAR, ReceivedMessage};

/// SQS long polls at most 20 seconds.
const MAX_WAIT_SECONDS: u32 = 20;

/// The refresh queue.
#[derive(Debug, Clone)]
pub struct SqsRefreshQueue {
    client: Client,
    url: String,
}

impl SqsRefreshQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        SqsRefreshQueue { client, url: url.into() }
    }

    /// The queue URL from `REFRESH_QUEUE_URL`.
    pub fn url_from_env() -> Result<String, ConfigError> {
        required(REFRESH_QUEUE_URL_VAR)
    }

    /// Receives at most one message, waiting up to `wait_seconds` (at most 20) for it: a step of
    /// a refresh may take minutes, so a poller takes one at a time, as the applier function's
    /// event source does (batch size 1).
    #[instrument(skip_all, fields(wait_seconds = wait_seconds))]
    pub async fn receive(&self, wait_seconds: u32) -> Result<Option<ReceivedMessage>, StoreError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(1)
            .wait_time_seconds(wait_seconds.min(MAX_WAIT_SECONDS) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| StoreError::unavailable("receiving from the refresh queue", e.into_service_error()))?;
        out.messages.unwrap_or_default().into_iter().next().map(|m| received(m, "the refresh queue")).transpose()
    }

    /// Deletes a received message: its step is taken, or it is never worth taking again.
    pub async fn delete(&self, receipt_handle: &str) -> Result<(), StoreError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|e| StoreError::unavailable("deleting from the refresh queue", e.into_service_error()))?;
        Ok(())
    }
}

#[async_trait]
impl RefreshQueue for SqsRefreshQueue {
    #[instrument(skip_all, fields(mandator_id = %message.mandator_id, refresh_id = %message.refresh_id))]
    async fn enqueue_refresh(&self, message: &RefreshMessage) -> Result<(), StoreError> {
        let body = serde_json::to_string(message).map_err(|e| {
            StoreError::Corrupt(format!("refresh message {} cannot be encoded: {e}", message.refresh_id))
        })?;
        self.client.send_message().queue_url(&self.url).message_body(body).send().await.map_err(|e| {
            StoreError::unavailable(format!("queueing refresh {}", message.refresh_id), e.into_service_error())
        })?;
        Ok(())
    }
}
