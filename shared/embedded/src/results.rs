//! Result objects by key: in the database, except the uploaded files of imports, which are files
//! in the data directory (`files`).

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use redb::ReadableDatabase;

use super::files::{self, FileWriter};
use super::{EmbeddedStore, OrUnavailable, RESULTS};
use segments_core::ports::{ByteStream, ObjectWriter, ResultStore, StoreError};

/// Size of the pieces an object is streamed in.
const STREAM_PIECE_BYTES: usize = 256 * 1024;

impl EmbeddedStore {
    /// The file of a file object (see [`files`]).
    fn object_file(&self, key: &str) -> Result<std::path::PathBuf, StoreError> {
        files::path_of(self.path.parent().unwrap_or(std::path::Path::new(".")), key)
    }
}

#[async_trait]
impl ResultStore for EmbeddedStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        if files::is_file_object(key) {
            return files::put(self.object_file(key)?, body).await;
        }
        let key = key.to_owned();
        self.blocking("writing a result object", move |db| {
            const WHAT: &str = "writing a result object";
            let write = db.begin_write().or_unavailable(WHAT)?;
            write.open_table(RESULTS).or_unavailable(WHAT)?.insert(key.as_str(), body.as_ref()).or_unavailable(WHAT)?;
            write.commit().or_unavailable(WHAT)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        if files::is_file_object(key) {
            return files::get(&self.object_file(key)?).await;
        }
        let key = key.to_owned();
        self.blocking("reading a result object", move |db| {
            const WHAT: &str = "reading a result object";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let table = read.open_table(RESULTS).or_unavailable(WHAT)?;
            Ok(table.get(key.as_str()).or_unavailable(WHAT)?.map(|v| Bytes::copy_from_slice(v.value())))
        })
        .await
    }

    async fn get_stream(&self, key: &str) -> Result<Option<ByteStream>, StoreError> {
        if files::is_file_object(key) {
            return files::get_stream(self.object_file(key)?).await;
        }
        const WHAT: &str = "reading a result object";
        // A blocking reader holds one read transaction and hands the value over in pieces
        // through a small channel, so the consumer holds a piece or two at a time.
        let (found_tx, found_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, StoreError>>(2);
        let db = std::sync::Arc::clone(&self.db);
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let read = match db.begin_read().or_unavailable(WHAT) {
                Ok(read) => read,
                Err(e) => return drop(found_tx.send(Err(e))),
            };
            let table = match read.open_table(RESULTS).or_unavailable(WHAT) {
                Ok(table) => table,
                Err(e) => return drop(found_tx.send(Err(e))),
            };
            let value = match table.get(key.as_str()).or_unavailable(WHAT) {
                Ok(Some(value)) => value,
                Ok(None) => return drop(found_tx.send(Ok(false))),
                Err(e) => return drop(found_tx.send(Err(e))),
            };
            if found_tx.send(Ok(true)).is_err() {
                return;
            }
            for piece in value.value().chunks(STREAM_PIECE_BYTES) {
                if tx.blocking_send(Ok(Bytes::copy_from_slice(piece))).is_err() {
                    return; // the consumer stopped reading
                }
            }
        });
        let found = found_rx.await.map_err(|e| StoreError::unavailable(WHAT, e))??;
        if !found {
            return Ok(None);
        }
        Ok(Some(Box::pin(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|piece| (piece, rx)) },
        ))))
    }

    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        if files::is_file_object(key) {
            return Ok(Box::new(FileWriter::create(self.object_file(key)?).await?));
        }
        Ok(Box::new(EmbeddedWriter { store: self.clone(), key: key.to_owned(), body: BytesMut::new() }))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        if files::is_file_object(key) {
            return files::size(&self.object_file(key)?).await;
        }
        let key = key.to_owned();
        self.blocking("looking up a result object", move |db| {
            const WHAT: &str = "looking up a result object";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let table = read.open_table(RESULTS).or_unavailable(WHAT)?;
            Ok(table.get(key.as_str()).or_unavailable(WHAT)?.map(|v| v.value().len() as u64))
        })
        .await
    }
}

/// Collects an object and stores it at `finish`. The embedded store serves one machine's local
/// runs: an object is held in memory until it is written (S3 uploads it in parts instead).
struct EmbeddedWriter {
    store: EmbeddedStore,
    key: String,
    body: BytesMut,
}

#[async_trait]
impl ObjectWriter for EmbeddedWriter {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        self.body.extend_from_slice(&bytes);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), StoreError> {
        let EmbeddedWriter { store, key, body } = *self;
        store.put(&key, body.freeze()).await
    }
}
