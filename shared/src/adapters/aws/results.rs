//! Result objects (parts, chunks, manifests) in S3.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tracing::instrument;

use crate::ports::{ResultStore, StoreError};

/// The results bucket. Keys are laid out by [`crate::jobs::ResultLayout`].
#[derive(Debug, Clone)]
pub struct S3Results {
    client: Client,
    bucket: String,
}

impl S3Results {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        S3Results { client, bucket: bucket.into() }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

fn content_type(key: &str) -> &'static str {
    if key.ends_with(".ndjson") {
        "application/x-ndjson"
    } else if key.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

/// A missing key, but not a missing bucket (also a 404): that is a configuration error, and
/// must not read as "no result yet".
fn is_missing_key(err: &GetObjectError, status: u16) -> bool {
    match err {
        GetObjectError::NoSuchKey(_) => true,
        other => status == 404 && matches!(other.code(), None | Some("NoSuchKey")),
    }
}

#[async_trait]
impl ResultStore for S3Results {
    #[instrument(skip_all, fields(key = %key, bytes = body.len()))]
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type(key))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| StoreError::unavailable(format!("writing result object {key}"), e.into_service_error()))?;
        Ok(())
    }

    #[instrument(skip_all, fields(key = %key))]
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if is_missing_key(e.err(), e.raw().status().as_u16()) => return Ok(None),
            Err(e) => {
                return Err(StoreError::unavailable(format!("reading result object {key}"), e.into_service_error()));
            }
        };
        let body =
            out.body.collect().await.map_err(|e| StoreError::unavailable(format!("reading result object {key}"), e))?;
        Ok(Some(body.into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_key() {
        assert_eq!(content_type("results/m/highBalance/j/chunks/000001.ndjson"), "application/x-ndjson");
        assert_eq!(content_type("results/m/highBalance/j/manifest.json"), "application/json");
        assert_eq!(content_type("results/m/x"), "application/octet-stream");
    }
}
