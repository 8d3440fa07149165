//! The worker's hot path and its memory: DynamoDB Query pages → SDK → the worker's adapter
//! (`DynamoAccounts::users`) → the segment computation → the entry's JSON line, on one core.

use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use segments_aws::DynamoAccounts;
use segments_core::domain::{MandatorId, SegmentType};
use segments_core::ports::AccountSource;
use segments_core::rules::SegmentSpec;
use serde::Serialize;

use crate::data::UserReader;
use crate::dynamo::{FakeDynamo, PageSource, Prebuilt, Served, Streamed};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    /// The segment type computed, `decodeOnly` (records decoded into users) or `sdkOnly` (the
    /// SDK's parsing of the Query pages alone).
    pub what: String,
    pub users: u64,
    pub transactions: u64,
    pub seconds: f64,
    /// CPU time of the pass (user + system, this process; the runtime has one thread).
    pub cpu_seconds: f64,
    /// Item data (DynamoDB's sizes) per CPU second: what a partition must deliver to keep up.
    pub item_bytes_per_cpu_second: f64,
    pub transactions_per_cpu_second: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HotpathReport {
    pub items: u64,
    pub users: u64,
    pub transactions: u64,
    /// Item data of one pass, DynamoDB's sizes.
    pub item_bytes: u64,
    pub pages: u64,
    /// Average DynamoDB item size (bytes of item data).
    pub average_item_bytes: f64,
    /// Average HTTP body bytes per item.
    pub average_wire_bytes: f64,
    /// Eventually consistent read units of one pass.
    pub read_units: f64,
    pub rates: Vec<Rate>,
}

/// One pass of the SDK alone: the Query pages parsed into the SDK's items, nothing decoded.
async fn sdk_pass(fake: &FakeDynamo, mandator: &MandatorId) -> anyhow::Result<(u64, u64)> {
    let client = fake.client();
    let mut pages = client
        .query()
        .table_name("AccountData")
        .key_condition_expression("#pk = :pk")
        .expression_attribute_names("#pk", "pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("M#{mandator}#S#0000")))
        .into_paginator()
        .send();
    let mut items = 0u64;
    while let Some(page) = pages.next().await {
        items += page?.items.map_or(0, |i| i.len() as u64);
    }
    std::hint::black_box(items);
    Ok((0, 0))
}

/// One pass of the worker's loop over a shard: users, entries as JSON lines. The lines go into a
/// buffer that is emptied at every multipart piece, as the worker's part writer does, so memory
/// holds one piece at most, never the shard's part.
async fn pass(fake: &FakeDynamo, mandator: &MandatorId, spec: Option<&SegmentSpec>) -> anyhow::Result<(u64, u64)> {
    let accounts = DynamoAccounts::new(fake.client(), "AccountData");
    let mut users = accounts.users(mandator, 0);
    let mut piece: Vec<u8> = Vec::new();
    let (mut n, mut entries) = (0, 0);
    while let Some(user) = users.try_next().await? {
        n += 1;
        if let Some(spec) = spec
            && let Some(entry) = spec.evaluate(&user)?
        {
            serde_json::to_writer(&mut piece, &entry)?;
            piece.push(b'\n');
            entries += 1;
            if piece.len() >= segments_aws::UPLOAD_PART_BYTES {
                std::hint::black_box(&piece);
                piece.clear();
            }
        }
    }
    std::hint::black_box(&piece);
    Ok((n, entries))
}

pub async fn rates(
    data: &std::path::Path,
    specs: &[(SegmentType, SegmentSpec)],
    min_transactions: u64,
    repeats: u32,
) -> anyhow::Result<HotpathReport> {
    let mut reader = UserReader::open(data)?;
    let (pages, mandator) = Prebuilt::load(&mut reader, min_transactions)?;
    let transactions = pages.transactions;
    let pages = Arc::new(pages);
    let mut rates = Vec::new();
    let mut first: Option<Arc<Served>> = None;
    let modes: Vec<(String, Option<&SegmentSpec>)> = [("sdkOnly".to_owned(), None), ("decodeOnly".to_owned(), None)]
        .into_iter()
        .chain(specs.iter().map(|(t, s)| (t.to_string(), Some(s))))
        .collect();
    for (what, spec) in modes {
        let mut best: Option<Rate> = None;
        for _ in 0..repeats.max(1) {
            pages.rewind();
            let fake = FakeDynamo::new(pages.clone() as Arc<dyn PageSource>);
            let started = Instant::now();
            let cpu_before = cpu_seconds()?;
            let (users, _) = if what == "sdkOnly" {
                sdk_pass(&fake, &mandator).await?
            } else {
                pass(&fake, &mandator, spec).await?
            };
            let seconds = started.elapsed().as_secs_f64();
            let cpu = cpu_seconds()? - cpu_before;
            let items = fake.served.items.load(std::sync::atomic::Ordering::Relaxed);
            if items != pages.items() {
                anyhow::bail!("a pass read {items} of {} items", pages.items());
            }
            let item_bytes = fake.served.item_bytes.load(std::sync::atomic::Ordering::Relaxed);
            let rate = Rate {
                what: what.clone(),
                users,
                transactions,
                seconds,
                cpu_seconds: cpu,
                item_bytes_per_cpu_second: item_bytes as f64 / cpu.max(0.01),
                transactions_per_cpu_second: transactions as f64 / cpu.max(0.01),
            };
            if best.as_ref().is_none_or(|b| rate.seconds < b.seconds) {
                best = Some(rate);
            }
            first.get_or_insert_with(|| fake.served.clone());
        }
        rates.extend(best);
    }
    let served = first.ok_or_else(|| anyhow::anyhow!("no pass ran"))?;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let items = load(&served.items);
    let users = rates.iter().map(|r| r.users).max().unwrap_or(0);
    Ok(HotpathReport {
        items,
        users,
        transactions,
        item_bytes: load(&served.item_bytes),
        pages: load(&served.calls),
        average_item_bytes: load(&served.item_bytes) as f64 / items as f64,
        average_wire_bytes: load(&served.wire_bytes) as f64 / items as f64,
        read_units: served.read_units(),
        rates,
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryReport {
    pub segment_type: String,
    pub users: u64,
    pub items: u64,
    pub transactions_limit: u64,
    pub query_calls: u64,
    pub read_units: f64,
    pub entries: u64,
    /// Peak resident set size of this process (VmHWM), KiB.
    pub peak_rss_kib: u64,
    pub seconds: f64,
}

/// One shard of at least `transactions` transactions through the worker's loop, with the pages
/// made when the SDK asks for them; then this process's peak RSS.
pub async fn shard_memory(
    data: &std::path::Path,
    segment_type: SegmentType,
    spec: &SegmentSpec,
    transactions: u64,
) -> anyhow::Result<MemoryReport> {
    let (source, mandator) = Streamed::new(UserReader::open(data)?, transactions)?;
    let fake = FakeDynamo::new(Arc::new(source));
    let started = Instant::now();
    let (users, entries) = pass(&fake, &mandator, Some(spec)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    Ok(MemoryReport {
        segment_type: segment_type.to_string(),
        users,
        items: load(&fake.served.items),
        transactions_limit: transactions,
        query_calls: load(&fake.served.calls),
        read_units: fake.served.read_units(),
        entries,
        peak_rss_kib: peak_rss_kib()?,
        seconds,
    })
}

/// User + system CPU time of this process so far, from /proc/self/stat (clock ticks of 1/100 s,
/// the Linux default).
pub fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    Ok((ticks(11) + ticks(12)) as f64 / 100.0)
}

/// VmHWM of /proc/self/status.
pub fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))
}
