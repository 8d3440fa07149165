//! The stored layout: what a user's record costs in DynamoDB item bytes, and computing all five
//! segment types from records read out of the embedded store (which holds the same encoding).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use futures::TryStreamExt;
use segments_core::domain::{MandatorId, SegmentType};
use segments_core::ports::{AccountSource, UserStore};
use segments_core::rules::SegmentSpec;
use segments_embedded::EmbeddedStore;
use serde::Serialize;

use crate::data::{Counts, UserReader};
use crate::dynamo::stored_size;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageReport {
    pub users: u64,
    pub accounts: u64,
    pub transactions: u64,
    /// DynamoDB items of all records (blocks).
    pub items: u64,
    /// Item data by DynamoDB's size rules (names and values of pk, sk, v, n, b).
    pub item_bytes: u64,
    pub bytes_per_transaction: f64,
    pub bytes_per_user: f64,
    /// The largest user's item data, and how many users needed more than one block.
    pub largest_user_bytes: u64,
    pub users_with_several_blocks: u64,
    pub seconds: f64,
}

/// Encodes every user of the data set as the stores keep it and sizes the DynamoDB items.
pub fn storage(data: &Path) -> anyhow::Result<StorageReport> {
    let started = Instant::now();
    let mut reader = UserReader::open(data)?;
    let (mut items, mut item_bytes, mut largest, mut several) = (0, 0, 0, 0);
    while let Some(user) = reader.next_user()? {
        let (bytes, blocks) = stored_size(&user)?;
        items += blocks;
        item_bytes += bytes;
        largest = largest.max(bytes);
        several += u64::from(blocks > 1);
    }
    let Counts { users, accounts, transactions } = reader.counts();
    Ok(StorageReport {
        users,
        accounts,
        transactions,
        items,
        item_bytes,
        bytes_per_transaction: item_bytes as f64 / transactions.max(1) as f64,
        bytes_per_user: item_bytes as f64 / users.max(1) as f64,
        largest_user_bytes: largest,
        users_with_several_blocks: several,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredReport {
    pub users: u64,
    pub shards: u32,
    /// Writing every user into the embedded store (not part of the comparison).
    pub load_seconds: f64,
    /// Reading every shard's records, decoding, computing the five types, writing each type's
    /// entries in userId order.
    pub seconds: f64,
    pub entries: BTreeMap<String, u64>,
}

/// Loads the data set into a new embedded store in `store_dir`, then computes every type from the
/// store and writes OUT/{segmentType}.ndjson.
pub async fn compute_stored(
    data: &Path,
    store_dir: &Path,
    shards: u32,
    specs: &[(SegmentType, SegmentSpec)],
    out: &Path,
) -> anyhow::Result<StoredReport> {
    let _ = std::fs::remove_dir_all(store_dir);
    let store = EmbeddedStore::open(store_dir)?;
    let load_started = Instant::now();
    let mut reader = UserReader::open(data)?;
    let mut mandator: Option<MandatorId> = None;
    let mut users = 0u64;
    while let Some(user) = reader.next_user()? {
        if mandator.is_none() {
            let m = reader.mandator().cloned().context("no mandator")?;
            store.ensure_shard_count(&m, shards).await?;
            mandator = Some(m);
        }
        let m = mandator.as_ref().context("no mandator")?;
        store.put_user(m, shards, &user, None).await.map_err(|e| anyhow::anyhow!("storing {}: {e}", user.user_id))?;
        users += 1;
    }
    let load_seconds = load_started.elapsed().as_secs_f64();
    let mandator = mandator.context("the data set has no users")?;

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let started = Instant::now();
    let mut lines: Vec<Vec<(String, String)>> = vec![Vec::new(); specs.len()];
    for shard in 0..shards {
        let mut stream = store.users(&mandator, shard);
        while let Some(user) = stream.try_next().await? {
            for (i, (_, spec)) in specs.iter().enumerate() {
                if let Some(entry) = spec.evaluate(&user)? {
                    lines[i].push((user.user_id.as_str().to_owned(), serde_json::to_string(&entry)?));
                }
            }
        }
    }
    let mut entries = BTreeMap::new();
    for ((segment_type, _), mut type_lines) in specs.iter().zip(lines) {
        // A job's result lists users in userId order across shards.
        type_lines.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let path = out.join(format!("{segment_type}.ndjson"));
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        for (_, line) in &type_lines {
            w.write_all(line.as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        entries.insert(segment_type.to_string(), type_lines.len() as u64);
    }
    Ok(StoredReport { users, shards, load_seconds, seconds: started.elapsed().as_secs_f64(), entries })
}
