//! The callback outbox: table `callback_outbox`, key `M#{mandator}#OUTBOX#{jobId}` → the pending
//! callback (JSON), and table `callback_outbox_due`, key `{nextAt, 20 digits}#{entry key}` → the
//! entry key, which orders the entries by due time so the sweeper reads only the due ones. As on
//! DynamoDB, an entry is forgotten a day after the first failure (the sweeper removes it then).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{EmbeddedStore, OrUnavailable, corrupt, keys};
use segments_core::domain::{JobId, MandatorId, PendingCallback};
use segments_core::ports::{CallbackOutbox, StoreError};

const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("callback_outbox");
const DUE: TableDefinition<&str, &str> = TableDefinition::new("callback_outbox_due");

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredCallback {
    mandator_id: MandatorId,
    job_id: JobId,
    url: String,
    body: String,
    retries: u32,
    next_at: DateTime<Utc>,
    failed_at: DateTime<Utc>,
}

impl StoredCallback {
    fn of(p: &PendingCallback) -> StoredCallback {
        StoredCallback {
            mandator_id: p.mandator_id.clone(),
            job_id: p.job_id,
            url: p.url.clone(),
            body: p.body.clone(),
            retries: p.retries,
            next_at: p.next_at,
            failed_at: p.failed_at,
        }
    }

    fn pending(self) -> PendingCallback {
        PendingCallback {
            mandator_id: self.mandator_id,
            job_id: self.job_id,
            url: self.url,
            body: self.body,
            retries: self.retries,
            next_at: self.next_at,
            failed_at: self.failed_at,
        }
    }
}

fn entry_key(mandator: &MandatorId, job_id: JobId) -> String {
    format!("M#{mandator}#OUTBOX#{job_id}")
}

fn due_key(next_at: DateTime<Utc>, entry: &str) -> String {
    keys::due_key(next_at, entry)
}

fn read(write: &WriteTransaction, entry: &str) -> Result<Option<PendingCallback>, StoreError> {
    const WHAT: &str = "reading a pending callback";
    let table = write.open_table(OUTBOX).or_unavailable(WHAT)?;
    let Some(stored) = table.get(entry).or_unavailable(WHAT)? else { return Ok(None) };
    let stored: StoredCallback =
        serde_json::from_slice(stored.value()).map_err(|e| corrupt("pending callback", entry, e))?;
    Ok(Some(stored.pending()))
}

fn remove(write: &WriteTransaction, entry: &str) -> Result<(), StoreError> {
    const WHAT: &str = "removing a pending callback";
    if let Some(kept) = read(write, entry)? {
        write
            .open_table(DUE)
            .or_unavailable(WHAT)?
            .remove(due_key(kept.next_at, entry).as_str())
            .or_unavailable(WHAT)?;
        write.open_table(OUTBOX).or_unavailable(WHAT)?.remove(entry).or_unavailable(WHAT)?;
    }
    Ok(())
}

fn put(write: &WriteTransaction, pending: &PendingCallback) -> Result<(), StoreError> {
    const WHAT: &str = "keeping a pending callback";
    let entry = entry_key(&pending.mandator_id, pending.job_id);
    remove(write, &entry)?;
    let value = serde_json::to_vec(&StoredCallback::of(pending))
        .map_err(|e| StoreError::unavailable("encoding a pending callback", e))?;
    write.open_table(OUTBOX).or_unavailable(WHAT)?.insert(entry.as_str(), value.as_slice()).or_unavailable(WHAT)?;
    let due = due_key(pending.next_at, &entry);
    write.open_table(DUE).or_unavailable(WHAT)?.insert(due.as_str(), entry.as_str()).or_unavailable(WHAT)?;
    Ok(())
}

#[async_trait]
impl CallbackOutbox for EmbeddedStore {
    async fn put_callback(&self, pending: &PendingCallback) -> Result<(), StoreError> {
        let pending = pending.clone();
        self.blocking("keeping a pending callback", move |db| {
            let write = db.begin_write().or_unavailable("keeping a pending callback")?;
            put(&write, &pending)?;
            write.commit().or_unavailable("keeping a pending callback")
        })
        .await
    }

    async fn due_callbacks(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<PendingCallback>, StoreError> {
        // Every due key of a time up to `now` sorts before this bound.
        let bound = keys::due_bound(now);
        self.blocking("reading due callbacks", move |db| {
            const WHAT: &str = "reading due callbacks";
            let read = db.begin_read().or_unavailable(WHAT)?;
            let (due, outbox) = match (read.open_table(DUE), read.open_table(OUTBOX)) {
                (Ok(due), Ok(outbox)) => (due, outbox),
                // No callback was ever kept here.
                (Err(TableError::TableDoesNotExist(_)), _) | (_, Err(TableError::TableDoesNotExist(_))) => {
                    return Ok(Vec::new());
                }
                (Err(e), _) | (_, Err(e)) => return Err(StoreError::unavailable(WHAT, e)),
            };
            let mut found = Vec::new();
            for entry in due.range::<&str>(..bound.as_str()).or_unavailable(WHAT)? {
                if found.len() >= limit as usize {
                    break;
                }
                let (_, entry) = entry.or_unavailable(WHAT)?;
                let entry = entry.value();
                let Some(stored) = outbox.get(entry).or_unavailable(WHAT)? else {
                    return Err(StoreError::Corrupt(format!("the due index names {entry}, which is not kept")));
                };
                let stored: StoredCallback =
                    serde_json::from_slice(stored.value()).map_err(|e| corrupt("pending callback", entry, e))?;
                found.push(stored.pending());
            }
            Ok(found)
        })
        .await
    }

    async fn replace_callback(&self, previous: &PendingCallback, next: &PendingCallback) -> Result<bool, StoreError> {
        let (previous, next) = (previous.clone(), next.clone());
        self.blocking("retrying a pending callback", move |db| {
            const WHAT: &str = "retrying a pending callback";
            let write = db.begin_write().or_unavailable(WHAT)?;
            let entry = entry_key(&previous.mandator_id, previous.job_id);
            if read(&write, &entry)?.as_ref() != Some(&previous) {
                return Ok(false);
            }
            put(&write, &next)?;
            write.commit().or_unavailable(WHAT)?;
            Ok(true)
        })
        .await
    }

    async fn remove_callback(&self, pending: &PendingCallback) -> Result<bool, StoreError> {
        let pending = pending.clone();
        self.blocking("removing a pending callback", move |db| {
            const WHAT: &str = "removing a pending callback";
            let write = db.begin_write().or_unavailable(WHAT)?;
            let entry = entry_key(&pending.mandator_id, pending.job_id);
            if read(&write, &entry)?.as_ref() != Some(&pending) {
                return Ok(false);
            }
            remove(&write, &entry)?;
            write.commit().or_unavailable(WHAT)?;
            Ok(true)
        })
        .await
    }
}
