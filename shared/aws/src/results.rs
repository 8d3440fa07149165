//! Result objects (parts, chunks, manifests) in S3.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tracing::instrument;

use segments_core::ports::{ByteStream as Pieces, ObjectWriter, ResultStore, StoreError};

/// Size of the parts a large object is uploaded in (S3 wants at least 5 MiB but for the last).
pub const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;

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

    #[instrument(skip_all, fields(key = %key))]
    async fn get_stream(&self, key: &str) -> Result<Option<Pieces>, StoreError> {
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if is_missing_key(e.err(), e.raw().status().as_u16()) => return Ok(None),
            Err(e) => {
                return Err(StoreError::unavailable(format!("reading result object {key}"), e.into_service_error()));
            }
        };
        let key = key.to_owned();
        let pieces = futures::stream::unfold((out.body, key), |(mut body, key)| async move {
            match body.next().await? {
                Ok(piece) => Some((Ok(piece), (body, key))),
                Err(e) => Some((Err(StoreError::unavailable(format!("reading result object {key}"), e)), (body, key))),
            }
        });
        Ok(Some(Box::pin(pieces)))
    }

    #[instrument(skip_all, fields(key = %key))]
    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(out.content_length.unwrap_or_default().max(0) as u64)),
            Err(e) => match e.into_service_error() {
                HeadObjectError::NotFound(_) => Ok(None),
                other => Err(StoreError::unavailable(format!("looking up object {key}"), other)),
            },
        }
    }

    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        Ok(Box::new(S3Writer {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            buffer: BytesMut::new(),
            upload: None,
        }))
    }
}

/// A multipart upload in progress: its id and the parts uploaded so far.
struct Upload {
    id: String,
    parts: Vec<CompletedPart>,
}

/// Writes an object piece by piece: one PutObject when it stays below a part, else a multipart
/// upload of [`UPLOAD_PART_BYTES`] parts, so memory stays at about one part. An upload that
/// fails is aborted; one whose process dies is removed by the bucket's lifecycle rule
/// (AbortIncompleteMultipartUpload).
struct S3Writer {
    client: Client,
    bucket: String,
    key: String,
    buffer: BytesMut,
    upload: Option<Upload>,
}

impl S3Writer {
    fn unavailable(&self, e: impl Into<segments_core::ports::BoxError>) -> StoreError {
        StoreError::unavailable(format!("writing result object {}", self.key), e)
    }

    async fn upload_part(&mut self, body: Bytes) -> Result<(), StoreError> {
        let (id, number) = match &self.upload {
            Some(upload) => (upload.id.clone(), upload.parts.len() as i32 + 1),
            None => {
                let created = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type(content_type(&self.key))
                    .send()
                    .await
                    .map_err(|e| self.unavailable(e.into_service_error()))?;
                let id = created.upload_id.ok_or_else(|| self.unavailable("S3 returned no upload id"))?;
                self.upload = Some(Upload { id: id.clone(), parts: Vec::new() });
                (id, 1)
            }
        };
        let sent = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await;
        match sent {
            Ok(part) => {
                let part = CompletedPart::builder().part_number(number).set_e_tag(part.e_tag).build();
                if let Some(upload) = self.upload.as_mut() {
                    upload.parts.push(part);
                }
                Ok(())
            }
            Err(e) => {
                let e = self.unavailable(e.into_service_error());
                self.abort().await;
                Err(e)
            }
        }
    }

    async fn abort(&mut self) {
        if let Some(upload) = self.upload.take() {
            let aborted = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&upload.id)
                .send()
                .await;
            if let Err(e) = aborted {
                tracing::warn!(key = %self.key, error = %e.into_service_error(), "aborting an upload failed; the lifecycle rule removes it");
            }
        }
    }
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        self.buffer.extend_from_slice(&bytes);
        while self.buffer.len() >= UPLOAD_PART_BYTES {
            let part = self.buffer.split_to(UPLOAD_PART_BYTES).freeze();
            self.upload_part(part).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        let rest = std::mem::take(&mut self.buffer).freeze();
        if self.upload.is_none() {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .content_type(content_type(&self.key))
                .body(ByteStream::from(rest))
                .send()
                .await
                .map_err(|e| self.unavailable(e.into_service_error()))?;
            return Ok(());
        }
        if !rest.is_empty() {
            self.upload_part(rest).await?;
        }
        let Some(upload) = self.upload.take() else {
            return Err(self.unavailable("the multipart upload was aborted"));
        };
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(upload.parts)).build())
            .send()
            .await;
        if let Err(e) = completed {
            let e = self.unavailable(e.into_service_error());
            self.upload = Some(Upload { id: upload.id, parts: Vec::new() });
            self.abort().await;
            return Err(e);
        }
        Ok(())
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
