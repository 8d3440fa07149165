//! Import records and the import lock of each mandator:
//! - `imports`: `M#{mandator}#IMPORT#{importId}` → the import record (JSON);
//! - `import_locks`: `M#{mandator}` → the import holding the lock and until when (JSON).
//!
//! Every change is a read-check-write inside one write transaction; redb runs one at a time, so
//! the check and the write are atomic like DynamoDB's conditional writes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{EmbeddedStore, OrUnavailable, corrupt};
use segments_core::domain::MandatorId;
use segments_core::imports::{ImportId, ImportRecord};
use segments_core::ports::{ImportStore, StoreError};

pub(super) const IMPORTS: TableDefinition<&str, &[u8]> = TableDefinition::new("imports");
pub(super) const IMPORT_LOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("import_locks");

fn import_key(mandator: &MandatorId, id: ImportId) -> String {
    format!("M#{mandator}#IMPORT#{id}")
}

fn lock_key(mandator: &MandatorId) -> String {
    format!("M#{mandator}")
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredLock {
    import_id: ImportId,
    until: DateTime<Utc>,
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::unavailable(format!("encoding {what}"), e))
}

fn decode_record(key: &str, bytes: &[u8]) -> Result<ImportRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("import record", key, e))
}

fn decode_lock(key: &str, bytes: &[u8]) -> Result<StoredLock, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("import lock", key, e))
}

#[async_trait]
impl ImportStore for EmbeddedStore {
    async fn create_import(&self, record: &ImportRecord) -> Result<(), StoreError> {
        let key = import_key(&record.mandator_id, record.import_id);
        let value = encode(record, "an import record")?;
        self.blocking("creating an import", move |db| {
            const WHAT: &str = "creating an import";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut table = write.open_table(IMPORTS).or_unavailable(WHAT)?;
                if table.get(key.as_str()).or_unavailable(WHAT)?.is_some() {
                    return Err(StoreError::Conflict(format!("import {key} exists already")));
                }
                table.insert(key.as_str(), value.as_slice()).or_unavailable(WHAT)?;
            }
            write.commit().or_unavailable(WHAT)
        })
        .await
    }

    async fn get_import(&self, mandator: &MandatorId, id: ImportId) -> Result<Option<ImportRecord>, StoreError> {
        let key = import_key(mandator, id);
        self.blocking("reading an import", move |db| {
            const WHAT: &str = "reading an import";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let table = read.open_table(IMPORTS).or_unavailable(WHAT)?;
            table.get(key.as_str()).or_unavailable(WHAT)?.map(|v| decode_record(&key, v.value())).transpose()
        })
        .await
    }

    async fn lock_mandator(
        &self,
        mandator: &MandatorId,
        id: ImportId,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let key = lock_key(mandator);
        let value = encode(&StoredLock { import_id: id, until }, "an import lock")?;
        self.blocking("taking the import lock", move |db| {
            const WHAT: &str = "taking the import lock";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut table = write.open_table(IMPORT_LOCKS).or_unavailable(WHAT)?;
                let held = table.get(key.as_str()).or_unavailable(WHAT)?.map(|v| decode_lock(&key, v.value()));
                if let Some(lock) = held.transpose()?
                    && lock.import_id != id
                    && lock.until > now
                {
                    return Err(StoreError::Conflict(format!("import {} holds the lock of {key}", lock.import_id)));
                }
                table.insert(key.as_str(), value.as_slice()).or_unavailable(WHAT)?;
            }
            write.commit().or_unavailable(WHAT)
        })
        .await
    }

    async fn lock_holder(&self, mandator: &MandatorId, now: DateTime<Utc>) -> Result<Option<ImportId>, StoreError> {
        let key = lock_key(mandator);
        self.blocking("reading the import lock", move |db| {
            const WHAT: &str = "reading the import lock";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let table = read.open_table(IMPORT_LOCKS).or_unavailable(WHAT)?;
            let held = table.get(key.as_str()).or_unavailable(WHAT)?.map(|v| decode_lock(&key, v.value()));
            Ok(held.transpose()?.filter(|lock| lock.until > now).map(|lock| lock.import_id))
        })
        .await
    }

    async fn unlock_mandator(&self, mandator: &MandatorId, id: ImportId) -> Result<(), StoreError> {
        let key = lock_key(mandator);
        self.blocking("releasing the import lock", move |db| {
            const WHAT: &str = "releasing the import lock";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut table = write.open_table(IMPORT_LOCKS).or_unavailable(WHAT)?;
                let held = table.get(key.as_str()).or_unavailable(WHAT)?.map(|v| decode_lock(&key, v.value()));
                if held.transpose()?.is_none_or(|lock| lock.import_id != id) {
                    return Ok(());
                }
                table.remove(key.as_str()).or_unavailable(WHAT)?;
            }
            write.commit().or_unavailable(WHAT)
        })
        .await
    }

    async fn update_import(&self, record: &ImportRecord) -> Result<bool, StoreError> {
        let key = import_key(&record.mandator_id, record.import_id);
        let value = encode(record, "an import record")?;
        self.blocking("updating an import", move |db| {
            const WHAT: &str = "updating an import";
            let write = db.begin_write().or_unavailable(WHAT)?;
            {
                let mut table = write.open_table(IMPORTS).or_unavailable(WHAT)?;
                let stored = table.get(key.as_str()).or_unavailable(WHAT)?.map(|v| decode_record(&key, v.value()));
                // A record that is gone (expired) is not brought back.
                if stored.transpose()?.is_none_or(|stored| stored.status.is_final()) {
                    return Ok(false);
                }
                table.insert(key.as_str(), value.as_slice()).or_unavailable(WHAT)?;
            }
            write.commit().or_unavailable(WHAT)?;
            Ok(true)
        })
        .await
    }
}
