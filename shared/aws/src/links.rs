//! Presigned S3 URLs: GETs of result objects, for the client to download straight from S3 with
//! the function's own permission (`s3:GetObject`) for a few minutes, and PUTs of import uploads,
//! for the client to upload straight into S3 with the function's `s3:PutObject`.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::presigning::PresigningConfig;
use tracing::instrument;

use segments_core::ports::{ResultLinks, StoreError, UploadLinks};

/// Presigned URLs of the results bucket (results and import uploads).
#[derive(Debug, Clone)]
pub struct S3Links {
    client: Client,
    bucket: String,
}

impl S3Links {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        S3Links { client, bucket: bucket.into() }
    }
}

#[async_trait]
impl ResultLinks for S3Links {
    #[instrument(skip_all, fields(key = %key))]
    async fn link(&self, key: &str, ttl: Duration) -> Result<Option<String>, StoreError> {
        // A redirect to a missing object would answer the client with S3's 404 page: look first.
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => {}
            Err(e) => match e.into_service_error() {
                HeadObjectError::NotFound(_) => return Ok(None),
                other => return Err(StoreError::unavailable(format!("looking up {key}"), other)),
            },
        }
        let config = PresigningConfig::expires_in(ttl).map_err(|e| StoreError::unavailable("presigning", e))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| StoreError::unavailable(format!("presigning {key}"), e.into_service_error()))?;
        Ok(Some(request.uri().to_owned()))
    }
}

#[async_trait]
impl UploadLinks for S3Links {
    /// A presigned PUT without a signed content type or checksum (the SDK adds neither to a
    /// presigned request), so any client's plain `PUT` of the file body is accepted. A single PUT
    /// takes up to 5 GB.
    #[instrument(skip_all, fields(key = %key))]
    async fn upload_link(&self, key: &str, ttl: Duration) -> Result<String, StoreError> {
        let config = PresigningConfig::expires_in(ttl).map_err(|e| StoreError::unavailable("presigning", e))?;
        let request =
            self.client.put_object().bucket(&self.bucket).key(key).presigned(config).await.map_err(|e| {
                StoreError::unavailable(format!("presigning an upload of {key}"), e.into_service_error())
            })?;
        Ok(request.uri().to_owned())
    }
}
