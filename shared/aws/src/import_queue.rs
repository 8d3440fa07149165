//! The import queue in SQS: one message per started import, consumed by the import worker
//! function (batch size 1). Besides the [`ImportQueue`] port it offers the receive and delete
//! calls of a runner that polls SQS itself.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use tracing::instrument;

use segments_core::config::{ConfigError, required};
use segments_core::imports::ImportMessage;
use segments_core::ports::{ImportQueue, StoreError};

use crate::ReceivedMessage;
use crate::queue::received;

/// The variable naming the import queue's URL.
pub const IMPORT_QUEUE_URL_VAR: &str = "IMPORT_QUEUE_URL";

/// The import queue.
#[derive(Debug, Clone)]
pub struct SqsImportQueue {
    client: Client,
    url: String,
}

impl SqsImportQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        SqsImportQueue { client, url: url.into() }
    }

    /// The queue URL from `IMPORT_QUEUE_URL`.
    pub fn url_from_env() -> Result<String, ConfigError> {
        required(IMPORT_QUEUE_URL_VAR)
    }

    /// Receives at most one message, waiting up to `wait_seconds` (at most 20) for it: an import
    /// takes minutes, so a poller takes one at a time, as the function's event source does.
    #[instrument(skip_all, fields(wait_seconds = wait_seconds))]
    pub async fn receive(&self, wait_seconds: u32) -> Result<Option<ReceivedMessage>, StoreError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(1)
            .wait_time_seconds(wait_seconds.min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| StoreError::unavailable("receiving from the import queue", e.into_service_error()))?;
        out.messages.unwrap_or_default().into_iter().next().map(|m| received(m, "the import queue")).transpose()
    }

    /// Deletes a received message: its import is final.
    pub async fn delete(&self, receipt_handle: &str) -> Result<(), StoreError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|e| StoreError::unavailable("deleting from the import queue", e.into_service_error()))?;
        Ok(())
    }
}

#[async_trait]
impl ImportQueue for SqsImportQueue {
    #[instrument(skip_all, fields(mandator_id = %message.mandator_id, import_id = %message.import_id))]
    async fn enqueue_import(&self, message: &ImportMessage) -> Result<(), StoreError> {
        let body = serde_json::to_string(message)
            .map_err(|e| StoreError::Corrupt(format!("import message {} cannot be encoded: {e}", message.import_id)))?;
        self.client.send_message().queue_url(&self.url).message_body(body).send().await.map_err(|e| {
            StoreError::unavailable(format!("queueing import {}", message.import_id), e.into_service_error())
        })?;
        Ok(())
    }
}
