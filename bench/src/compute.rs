//! The compute path: parse both NDJSON files and compute all five segment types in one pass over
//! the users, on one core, writing each type's entries as NDJSON in userId order — the same
//! entries, serialized the same way, as a job's result chunks.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use segments_core::domain::SegmentType;
use segments_core::rules::SegmentSpec;
use serde::Serialize;

use crate::data::{Counts, Ordered, UserReader};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeReport {
    pub users: u64,
    pub accounts: u64,
    pub transactions: u64,
    /// Users in each type's result.
    pub entries: BTreeMap<String, u64>,
    /// Wall time of the whole run: reading, parsing, computing, writing.
    pub seconds: f64,
}

/// What [`read`] reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadReport {
    pub users: u64,
    pub accounts: u64,
    pub transactions: u64,
    /// Wall time of reading and parsing both files into users.
    pub seconds: f64,
}

/// Reads every user of the data set, as [`run`] does, and computes nothing.
pub fn read(data: &Path) -> anyhow::Result<ReadReport> {
    let started = Instant::now();
    let mut reader = UserReader::open(data)?;
    let mut order = Ordered::default();
    while let Some(user) = reader.next_user()? {
        order.check(&user.user_id)?;
        std::hint::black_box(&user);
    }
    let seconds = started.elapsed().as_secs_f64();
    let Counts { users, accounts, transactions } = reader.counts();
    Ok(ReadReport { users, accounts, transactions, seconds })
}

pub fn run(data: &Path, specs: &[(SegmentType, SegmentSpec)], out: &Path) -> anyhow::Result<ComputeReport> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let started = Instant::now();
    let mut writers = specs
        .iter()
        .map(|(t, _)| {
            let path = out.join(format!("{t}.ndjson"));
            let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            Ok(BufWriter::with_capacity(1 << 20, file))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut entries = vec![0u64; specs.len()];
    let mut reader = UserReader::open(data)?;
    let mut order = Ordered::default();
    while let Some(user) = reader.next_user()? {
        order.check(&user.user_id)?;
        for (i, (_, spec)) in specs.iter().enumerate() {
            if let Some(entry) = spec.evaluate(&user)? {
                serde_json::to_writer(&mut writers[i], &entry)?;
                writers[i].write_all(b"\n")?;
                entries[i] += 1;
            }
        }
    }
    for w in &mut writers {
        w.flush()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let Counts { users, accounts, transactions } = reader.counts();
    Ok(ComputeReport {
        users,
        accounts,
        transactions,
        entries: specs.iter().zip(entries).map(|((t, _), n)| (t.to_string(), n)).collect(),
        seconds,
    })
}
