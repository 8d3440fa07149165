//! Callback signing secrets in the `callback_secrets` table: `{mandator}` → 32 bytes, created on
//! first use inside one write transaction (redb runs one at a time, so first uses agree).

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition};

use super::{EmbeddedStore, OrUnavailable};
use segments_core::domain::CallbackSecret;
use segments_core::domain::MandatorId;
use segments_core::ports::{CallbackSecrets, StoreError};

const CALLBACK_SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("callback_secrets");

#[async_trait]
impl CallbackSecrets for EmbeddedStore {
    async fn secret(&self, mandator: &MandatorId) -> Result<CallbackSecret, StoreError> {
        let key = mandator.as_str().to_owned();
        self.blocking("reading a callback secret", move |db| {
            const WHAT: &str = "reading a callback secret";
            let write = db.begin_write().or_unavailable(WHAT)?;
            let secret = {
                let mut table = write.open_table(CALLBACK_SECRETS).or_unavailable(WHAT)?;
                let stored = table.get(key.as_str()).or_unavailable(WHAT)?.map(|v| v.value().to_vec());
                match stored {
                    Some(bytes) => {
                        return CallbackSecret::from_slice(&bytes)
                            .ok_or_else(|| StoreError::Corrupt(format!("callback secret of {key}: not 32 bytes")));
                    }
                    None => {
                        let secret = CallbackSecret::generate();
                        table.insert(key.as_str(), secret.as_bytes().as_slice()).or_unavailable(WHAT)?;
                        secret
                    }
                }
            };
            write.commit().or_unavailable(WHAT)?;
            Ok(secret)
        })
        .await
    }
}
