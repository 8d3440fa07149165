//! Callback signing secrets in the Jobs table, beside the mandator's jobs: `pk = M#{mandatorId}`,
//! `sk = CALLBACK_SECRET`, Binary attribute `secret` (32 bytes). Created on first use by a
//! conditional put, so concurrent first uses agree on one secret.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use tracing::instrument;

use super::items::{Item, PARTITION_KEY, SORT_KEY, s};
use segments_core::domain::CallbackSecret;
use segments_core::domain::MandatorId;
use segments_core::ports::{CallbackSecrets, StoreError};

pub const CALLBACK_SECRET_SORT_KEY: &str = "CALLBACK_SECRET";
pub const CALLBACK_SECRET_ATTRIBUTE: &str = "secret";

/// The callback secrets over the Jobs table.
#[derive(Debug, Clone)]
pub struct DynamoCallbackSecrets {
    client: Client,
    table: String,
}

fn key(mandator: &MandatorId) -> Item {
    Item::from([
        (PARTITION_KEY.to_owned(), s(format!("M#{mandator}"))),
        (SORT_KEY.to_owned(), s(CALLBACK_SECRET_SORT_KEY)),
    ])
}

impl DynamoCallbackSecrets {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoCallbackSecrets { client, table: table.into() }
    }

    async fn read(&self, mandator: &MandatorId) -> Result<Option<CallbackSecret>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(mandator)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::unavailable("reading a callback secret", e.into_service_error()))?;
        let Some(item) = out.item else { return Ok(None) };
        match item.get(CALLBACK_SECRET_ATTRIBUTE) {
            Some(AttributeValue::B(blob)) => CallbackSecret::from_slice(blob.as_ref())
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt(format!("callback secret of {mandator}: not 32 bytes"))),
            _ => Err(StoreError::Corrupt(format!("callback secret of {mandator}: attribute secret is not binary"))),
        }
    }
}

#[async_trait]
impl CallbackSecrets for DynamoCallbackSecrets {
    #[instrument(skip_all, fields(mandator_id = %mandator))]
    async fn secret(&self, mandator: &MandatorId) -> Result<CallbackSecret, StoreError> {
        if let Some(secret) = self.read(mandator).await? {
            return Ok(secret);
        }
        let secret = CallbackSecret::generate();
        let mut item = key(mandator);
        item.insert(CALLBACK_SECRET_ATTRIBUTE.to_owned(), AttributeValue::B(Blob::new(secret.as_bytes().to_vec())));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .send()
            .await;
        match put {
            Ok(_) => Ok(secret),
            Err(e) => match e.into_service_error() {
                // Another caller created it first: theirs is the secret.
                PutItemError::ConditionalCheckFailedException(_) => self
                    .read(mandator)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt(format!("callback secret of {mandator} vanished"))),
                other => Err(StoreError::unavailable("creating a callback secret", other)),
            },
        }
    }
}
