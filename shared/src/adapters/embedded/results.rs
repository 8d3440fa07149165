//! Result objects by key.

use async_trait::async_trait;
use bytes::Bytes;
use redb::ReadableDatabase;

use super::{EmbeddedStore, OrUnavailable, RESULTS};
use crate::ports::{ResultStore, StoreError};

#[async_trait]
impl ResultStore for EmbeddedStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
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
        let key = key.to_owned();
        self.blocking("reading a result object", move |db| {
            const WHAT: &str = "reading a result object";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let table = read.open_table(RESULTS).or_unavailable(WHAT)?;
            Ok(table.get(key.as_str()).or_unavailable(WHAT)?.map(|v| Bytes::copy_from_slice(v.value())))
        })
        .await
    }
}
