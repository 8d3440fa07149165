//! The DynamoDB item layout (docs/storage.md) and the mapping between items and domain values,
//! written out by hand.
//!
//! AccountData table:
//! - shard count of a mandator: `pk = M#{mandatorId}#META`, `sk = SHARDS`, `shardCount` (N);
//! - a user's account data, one compressed record (`segments_core::snapshot`) cut into blocks of
//!   at most 350 KiB, one item per block: `pk = M#{mandatorId}#S#{shard:04}` (the user's shard),
//!   `sk = U#{userId}#B{index:02}` for index 0 to n − 1, attributes `v` (N, the user's version),
//!   `n` (N, the block count n) and `b` (B, the block's bytes). Every block of a write carries
//!   the same `v` and `n`, so a reader knows when it sees two writes at once. The attribute names
//!   are short on purpose: DynamoDB bills them as item bytes;
//! - account directory: `pk = M#{mandatorId}#ACCOUNT#{accountId}`, `sk = USER`, `userId` (S), the
//!   user holding the account (written by the `accounts` module).
//!
//! Identifiers never contain `#` and every character they may contain sorts after it, so in sort
//! key order the users of a shard come by userId, each user's blocks together and in index order:
//! a shard's Query yields one user after the other.
//!
//! The layout before this one kept an item per account and per transaction under the same
//! partition keys (`sk = U#{userId}#A#{accountId}[#T#…]`, no `b` attribute). Such an item is
//! never read as data: the mandator must be imported again.
//!
//! Jobs table: `pk = M#{mandatorId}`, `sk = JOB#{jobId}`; `expiresAt` (N, epoch seconds) is the
//! TTL attribute.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use segments_core::domain::{JobId, MandatorId, SegmentType, UserId};
use segments_core::jobs::{Job, JobStatus, ResultSummary};
use segments_core::ports::StoreError;
use segments_core::rules::SegmentParams;
use segments_core::snapshot::MAX_BLOCKS;

pub(super) type Item = HashMap<String, AttributeValue>;

/// Partition key attribute of both tables.
pub const PARTITION_KEY: &str = "pk";
/// Sort key attribute of both tables.
pub const SORT_KEY: &str = "sk";

// AccountData attributes.
pub(super) const SHARD_COUNT: &str = "shardCount";
/// The version of the user a block belongs to (N).
pub(super) const BLOCK_VERSION: &str = "v";
/// How many blocks the user's record has (N).
pub(super) const BLOCK_COUNT: &str = "n";
/// The block's bytes (B).
pub(super) const BLOCK_DATA: &str = "b";

const META_SORT_KEY: &str = "SHARDS";

// Jobs attributes.
pub(super) const STATUS: &str = "status";
pub(super) const SEGMENT_TYPE: &str = "segmentType";
pub(super) const AS_OF: &str = "asOf";
pub(super) const PARAMETERS: &str = "parameters";
pub(super) const CALLBACK_URL: &str = "callbackURL";
pub(super) const CREATED_AT: &str = "createdAt";
/// The TTL attribute of the Jobs table: epoch seconds (N).
pub const JOBS_TTL_ATTRIBUTE: &str = "expiresAt";
pub(super) const EXPIRES_AT: &str = JOBS_TTL_ATTRIBUTE;
pub(super) const SHARDS_TOTAL: &str = "shardsTotal";
pub(super) const SHARDS_DONE: &str = "shardsDone";
/// The shards whose part is recorded (NS); `shardsDone` follows its size.
pub(super) const DONE_SHARDS: &str = "doneShards";
pub(super) const TOTAL_ELEMENTS: &str = "totalElements";
pub(super) const CHUNK_SIZE: &str = "chunkSize";
pub(super) const CHUNK_COUNT: &str = "chunkCount";
pub(super) const ERROR: &str = "error";

// The progress watch on a job's live marker (`sk = LIVE#{jobId}`), and the sparse index of the
// Jobs table over it: only live markers carry these attributes, so the index holds live jobs
// only, ordered by when each last progressed.
/// The Jobs table's index of live jobs by progress: hash [`SWEEP_PARTITION`], range [`PROGRESS_AT`].
pub const PROGRESS_INDEX: &str = "ProgressIndex";
/// The index's partition (S): `SWEEP#0` … `SWEEP#7`, by the job id. Several partitions, because
/// every live job's watch is written there when the job is created and at each sweep: one
/// partition would take every write of the index.
pub const SWEEP_PARTITION: &str = "sweepPartition";
/// When the job last progressed, epoch seconds (N).
pub const PROGRESS_AT: &str = "progressAt";
/// Shards done at `progressAt` (N); projected into the index.
pub const SHARDS_SEEN: &str = "shardsSeen";
/// Sweeps since `progressAt` that found no progress (N); projected into the index.
pub const IDLE_SWEEPS: &str = "idleSweeps";
/// How many index partitions each list of a sparse time index has (`ProgressIndex`, `DueIndex`).
pub(super) const SWEEP_PARTITIONS: u32 = 8;

// The Segments table's sparse index of what is due: unfinished refreshes by their next look
// (`check_at`) and live scheduled segments by their next run (`next_refresh_at`). Only such items
// carry these attributes, so the index holds nothing else.
/// The Segments table's index of due work: hash [`DUE_PARTITION`], range [`DUE_AT`], keys only.
pub const DUE_INDEX: &str = "DueIndex";
/// The index's partition (S): `REFRESH#0` … `REFRESH#7` by the refresh id, `SCHEDULE#0` …
/// `SCHEDULE#7` by the segment id.
pub const DUE_PARTITION: &str = "duePartition";
/// When the item is due, epoch seconds (N).
pub const DUE_AT: &str = "dueAt";

// ---------------------------------------------------------------------------------------------
// Keys

pub(super) fn shard_pk(mandator: &MandatorId, shard: u32) -> String {
    format!("M#{mandator}#S#{shard:04}")
}

fn meta_pk(mandator: &MandatorId) -> String {
    format!("M#{mandator}#META")
}

/// The start of the sort key of every block of the user, and of nothing else: a userId never
/// contains `#`.
pub(super) fn user_sk_prefix(user: &UserId) -> String {
    format!("U#{user}#")
}

pub(super) fn block_sk(user: &UserId, index: usize) -> String {
    format!("U#{user}#B{index:02}")
}

pub(super) fn job_pk(mandator: &MandatorId) -> String {
    format!("M#{mandator}")
}

fn job_sk(job_id: JobId) -> String {
    format!("JOB#{job_id}")
}

pub(super) fn meta_key(mandator: &MandatorId) -> Item {
    HashMap::from([(PARTITION_KEY.to_owned(), s(meta_pk(mandator))), (SORT_KEY.to_owned(), s(META_SORT_KEY))])
}

pub(super) fn block_key(pk: &str, user: &UserId, index: usize) -> Item {
    HashMap::from([(PARTITION_KEY.to_owned(), s(pk)), (SORT_KEY.to_owned(), s(block_sk(user, index)))])
}

pub(super) fn job_key(mandator: &MandatorId, job_id: JobId) -> Item {
    HashMap::from([(PARTITION_KEY.to_owned(), s(job_pk(mandator))), (SORT_KEY.to_owned(), s(job_sk(job_id)))])
}

/// The index partition of a job's watch: spread by the job id ([`partition_of`]).
pub(super) fn sweep_partition(job_id: JobId) -> String {
    sweep_partition_name(partition_of(job_id))
}

pub(super) fn sweep_partition_name(index: u32) -> String {
    format!("SWEEP#{index}")
}

/// The index partition of a pending callback: the same index holds the sweeper's other work
/// list, the callbacks of the outbox by their next retry (`progressAt` is the due time there),
/// in partitions of their own.
pub(super) fn outbox_partition(job_id: JobId) -> String {
    outbox_partition_name(partition_of(job_id))
}

pub(super) fn outbox_partition_name(index: u32) -> String {
    format!("OUTBOX#{index}")
}

/// One of [`SWEEP_PARTITIONS`], by the id's last hex digit, which is random in a UUIDv7 (its
/// first digits are the time, which would put the ids of a minute together).
pub(super) fn partition_of(id: impl Display) -> u32 {
    id.to_string().chars().last().and_then(|c| c.to_digit(16)).unwrap_or(0) % SWEEP_PARTITIONS
}

// ---------------------------------------------------------------------------------------------
// Attribute values

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn take_s(item: &mut Item, name: &str) -> Result<String, String> {
    match item.remove(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(_) => Err(format!("attribute {name} is not a string")),
        None => Err(format!("attribute {name} is missing")),
    }
}

fn take_opt_s(item: &mut Item, name: &str) -> Result<Option<String>, String> {
    match item.remove(name) {
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        Some(AttributeValue::Null(_)) | None => Ok(None),
        Some(_) => Err(format!("attribute {name} is not a string")),
    }
}

fn take_n(item: &mut Item, name: &str) -> Result<String, String> {
    match item.remove(name) {
        Some(AttributeValue::N(v)) => Ok(v),
        Some(_) => Err(format!("attribute {name} is not a number")),
        None => Err(format!("attribute {name} is missing")),
    }
}

fn take_opt_n(item: &mut Item, name: &str) -> Result<Option<String>, String> {
    match item.remove(name) {
        Some(AttributeValue::N(v)) => Ok(Some(v)),
        Some(AttributeValue::Null(_)) | None => Ok(None),
        Some(_) => Err(format!("attribute {name} is not a number")),
    }
}

fn parse<T: FromStr>(name: &str, text: &str) -> Result<T, String>
where
    T::Err: Display,
{
    text.parse().map_err(|e| format!("attribute {name}: {e}"))
}

fn parse_date(name: &str, text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|e| format!("attribute {name}: {e}"))
}

fn date_text(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

// ---------------------------------------------------------------------------------------------
// AccountData

/// The item of the mandator's shard count.
pub(super) fn shard_count_item(mandator: &MandatorId, shard_count: u32) -> Item {
    let mut item = meta_key(mandator);
    item.insert(SHARD_COUNT.to_owned(), n(shard_count));
    item
}

pub(super) fn decode_shard_count(mut item: Item) -> Result<u32, StoreError> {
    let count = take_n(&mut item, SHARD_COUNT).and_then(|t| parse::<u32>(SHARD_COUNT, &t));
    match count {
        Ok(c) if c > 0 => Ok(c),
        Ok(_) => Err(StoreError::Corrupt("shard count item: attribute shardCount is 0".to_owned())),
        Err(e) => Err(StoreError::Corrupt(format!("shard count item: {e}"))),
    }
}

/// The item of block `index` of the `count` blocks of the user's record at `version`, in the
/// partition `pk` of the user's shard.
pub(super) fn block_item(pk: &str, user: &UserId, index: usize, count: usize, version: u64, bytes: &[u8]) -> Item {
    let mut item = block_key(pk, user, index);
    item.insert(BLOCK_VERSION.to_owned(), n(version));
    item.insert(BLOCK_COUNT.to_owned(), n(count));
    item.insert(BLOCK_DATA.to_owned(), AttributeValue::B(Blob::new(bytes)));
    item
}

/// One block of a user's record, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Block {
    /// The userId of the sort key, not yet validated: blocks are grouped by it first.
    pub user: String,
    pub index: usize,
    pub count: usize,
    pub version: u64,
    pub bytes: Vec<u8>,
}

/// Why an item of a shard is not a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BlockError {
    /// Account data in the layout before this one (an item per account and per transaction).
    EarlierLayout,
    Invalid(String),
}

/// The user and block index of a block's sort key.
pub(super) fn parse_block_sk(sk: &str) -> Result<(&str, usize), BlockError> {
    let invalid = || BlockError::Invalid(format!("sort key {sk} is not a block's"));
    let (user, block) = sk.strip_prefix("U#").and_then(|rest| rest.split_once('#')).ok_or_else(invalid)?;
    if block.starts_with("A#") {
        return Err(BlockError::EarlierLayout);
    }
    let index = block.strip_prefix('B').filter(|i| i.len() == 2 && i.bytes().all(|b| b.is_ascii_digit()));
    let index: usize = index.ok_or_else(invalid)?.parse().map_err(|_| invalid())?;
    if user.is_empty() || index >= MAX_BLOCKS {
        return Err(invalid());
    }
    Ok((user, index))
}

/// Decodes an item of a shard's Query, moving the bytes out of it.
/// An item's size as DynamoDB counts it for capacity: attribute names plus values (strings and
/// binaries by their bytes, numbers by their digits), close enough for the `BytesRead` metric.
pub(super) fn stored_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
                    AttributeValue::B(b) => b.as_ref().len(),
                    _ => 1,
                }
        })
        .sum()
}

pub(super) fn decode_block(mut item: Item) -> Result<Block, BlockError> {
    let sk = match item.remove(SORT_KEY) {
        Some(AttributeValue::S(sk)) => sk,
        _ => return Err(BlockError::Invalid(format!("an item without a string {SORT_KEY}"))),
    };
    let (user, index) = parse_block_sk(&sk)?;
    let bytes = match item.remove(BLOCK_DATA) {
        Some(AttributeValue::B(b)) => b.into_inner(),
        None => return Err(BlockError::EarlierLayout),
        Some(_) => return Err(BlockError::Invalid(format!("block {sk}: attribute {BLOCK_DATA} is not binary"))),
    };
    let numbers = |item: &mut Item| -> Result<(u64, usize), String> {
        let version = parse(BLOCK_VERSION, &take_n(item, BLOCK_VERSION)?)?;
        Ok((version, parse(BLOCK_COUNT, &take_n(item, BLOCK_COUNT)?)?))
    };
    let (version, count) = numbers(&mut item).map_err(|e| BlockError::Invalid(format!("block {sk}: {e}")))?;
    if count == 0 || count > MAX_BLOCKS {
        return Err(BlockError::Invalid(format!("block {sk}: attribute {BLOCK_COUNT} is {count}")));
    }
    Ok(Block { user: user.to_owned(), index, count, version, bytes })
}

/// What the blocks read of one user make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Record {
    /// No block: nothing is stored.
    Absent,
    /// Every block of one version, none missing: the record, joined.
    Whole { version: u64, blocks: usize, bytes: Vec<u8> },
    /// Blocks of two versions, or some missing: the read met a write (a Query is not a snapshot
    /// of a transaction).
    Torn,
}

impl Record {
    /// `blocks` of one user, in sort key order.
    pub(super) fn of(blocks: Vec<Block>) -> Record {
        let Some(first) = blocks.first() else {
            return Record::Absent;
        };
        let (version, count) = (first.version, first.count);
        let whole = blocks.len() == count
            && blocks.iter().enumerate().all(|(i, b)| b.index == i && b.version == version && b.count == count);
        if !whole {
            return Record::Torn;
        }
        let mut parts = blocks.into_iter().map(|b| b.bytes);
        let mut bytes = parts.next().unwrap_or_default();
        for part in parts {
            bytes.extend_from_slice(&part);
        }
        Record::Whole { version, blocks: count, bytes }
    }
}

// ---------------------------------------------------------------------------------------------
// Jobs

/// The item of a new job.
pub(super) fn job_item(job: &Job) -> Result<Item, StoreError> {
    let parameters = serde_json::to_string(&job.params)
        .map_err(|e| StoreError::Corrupt(format!("parameters of job {} cannot be encoded: {e}", job.job_id)))?;
    let mut item = job_key(&job.mandator_id, job.job_id);
    item.insert(STATUS.to_owned(), s(job.status.as_str()));
    item.insert(SEGMENT_TYPE.to_owned(), s(job.segment_type.as_str()));
    item.insert(AS_OF.to_owned(), s(date_text(job.as_of)));
    item.insert(PARAMETERS.to_owned(), s(parameters));
    if let Some(url) = &job.callback_url {
        item.insert(CALLBACK_URL.to_owned(), s(url.as_str()));
    }
    item.insert(CREATED_AT.to_owned(), s(timestamp_text(job.created_at)));
    item.insert(EXPIRES_AT.to_owned(), n(job.expires_at.timestamp()));
    item.insert(SHARDS_TOTAL.to_owned(), n(job.shards_total));
    item.insert(SHARDS_DONE.to_owned(), n(job.shards_done));
    if !job.done_shards.is_empty() {
        item.insert(DONE_SHARDS.to_owned(), AttributeValue::Ns(job.done_shards.iter().map(u32::to_string).collect()));
    }
    if let Some(r) = &job.result {
        item.extend(result_attributes(r));
    }
    if let Some(error) = &job.error {
        item.insert(ERROR.to_owned(), s(error.as_str()));
    }
    Ok(item)
}

/// The attributes of a result summary, as `(name, value)`.
pub(super) fn result_attributes(r: &ResultSummary) -> [(String, AttributeValue); 3] {
    [
        (TOTAL_ELEMENTS.to_owned(), n(r.total_elements)),
        (CHUNK_SIZE.to_owned(), n(r.chunk_size)),
        (CHUNK_COUNT.to_owned(), n(r.chunk_count)),
    ]
}

/// Creation time with full precision, so a stored job reads back as it was written.
fn timestamp_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(super) fn decode_job(mut item: Item) -> Result<Job, StoreError> {
    let decoded = decode_job_fields(&mut item);
    decoded.map_err(|e| {
        let key = match (item.get(PARTITION_KEY), item.get(SORT_KEY)) {
            (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => format!("{pk}/{sk}"),
            _ => "?".to_owned(),
        };
        StoreError::Corrupt(format!("job item {key}: {e}"))
    })
}

fn decode_job_fields(item: &mut Item) -> Result<Job, String> {
    let pk = match item.get(PARTITION_KEY) {
        Some(AttributeValue::S(pk)) => pk,
        _ => return Err(format!("attribute {PARTITION_KEY} is missing")),
    };
    let mandator_id = pk
        .strip_prefix("M#")
        .and_then(|m| MandatorId::parse(m).ok())
        .ok_or_else(|| format!("attribute {PARTITION_KEY} is not a mandator key"))?;
    let sk = match item.get(SORT_KEY) {
        Some(AttributeValue::S(sk)) => sk,
        _ => return Err(format!("attribute {SORT_KEY} is missing")),
    };
    let job_id = sk
        .strip_prefix("JOB#")
        .and_then(|j| JobId::parse(j).ok())
        .ok_or_else(|| format!("attribute {SORT_KEY} is not a job key"))?;

    let status_text = take_s(item, STATUS)?;
    let status = JobStatus::parse(&status_text).ok_or_else(|| format!("attribute {STATUS} is {status_text:?}"))?;
    let segment_type: SegmentType = parse(SEGMENT_TYPE, &take_s(item, SEGMENT_TYPE)?)?;
    let parameters = take_s(item, PARAMETERS)?;
    let parameters: serde_json::Value =
        serde_json::from_str(&parameters).map_err(|e| format!("attribute {PARAMETERS} is not JSON: {e}"))?;
    let params =
        SegmentParams::from_stored(segment_type, parameters).map_err(|e| format!("attribute {PARAMETERS}: {e}"))?;
    let created_at = take_s(item, CREATED_AT)?;
    let created_at = DateTime::parse_from_rfc3339(&created_at)
        .map_err(|e| format!("attribute {CREATED_AT}: {e}"))?
        .with_timezone(&Utc);
    let expires_at: i64 = parse(EXPIRES_AT, &take_n(item, EXPIRES_AT)?)?;
    let expires_at =
        DateTime::from_timestamp(expires_at, 0).ok_or_else(|| format!("attribute {EXPIRES_AT} is out of range"))?;

    // `shardsDone` is kept for readers of the raw item; the set is the truth.
    take_opt_n(item, SHARDS_DONE)?;
    let done_shards = match item.remove(DONE_SHARDS) {
        None => std::collections::BTreeSet::new(),
        Some(AttributeValue::Ns(shards)) => {
            shards.iter().map(|n| parse::<u32>(DONE_SHARDS, n)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(format!("attribute {DONE_SHARDS} is not a number set")),
    };
    let total_elements = take_opt_n(item, TOTAL_ELEMENTS)?;
    let chunk_size = take_opt_n(item, CHUNK_SIZE)?;
    let chunk_count = take_opt_n(item, CHUNK_COUNT)?;
    let result = match (total_elements, chunk_size, chunk_count) {
        (Some(t), Some(s), Some(c)) => Some(ResultSummary {
            total_elements: parse(TOTAL_ELEMENTS, &t)?,
            chunk_size: parse(CHUNK_SIZE, &s)?,
            chunk_count: parse(CHUNK_COUNT, &c)?,
        }),
        (None, None, None) => None,
        _ => return Err("result summary is incomplete".to_owned()),
    };

    Ok(Job {
        mandator_id,
        job_id,
        segment_type,
        status,
        as_of: parse_date(AS_OF, &take_s(item, AS_OF)?)?,
        params,
        callback_url: take_opt_s(item, CALLBACK_URL)?,
        created_at,
        expires_at,
        shards_total: parse(SHARDS_TOTAL, &take_n(item, SHARDS_TOTAL)?)?,
        shards_done: done_shards.len() as u32,
        done_shards,
        result,
        error: take_opt_s(item, ERROR)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use segments_core::domain::AccountType;
    use segments_core::domain::Money;
    use segments_core::rules::params::HighBalanceParams;

    fn mandator() -> MandatorId {
        MandatorId::parse("bank-1").unwrap()
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn sk(item: &Item) -> &str {
        match item.get(SORT_KEY) {
            Some(AttributeValue::S(sk)) => sk,
            _ => panic!("no sort key"),
        }
    }

    fn block(user_id: &str, index: usize, count: usize, version: u64, bytes: &[u8]) -> Block {
        Block { user: user_id.to_owned(), index, count, version, bytes: bytes.to_vec() }
    }

    #[test]
    fn a_block_round_trips_and_its_attributes_are_short() {
        let pk = shard_pk(&mandator(), 7);
        let item = block_item(&pk, &user("u1"), 1, 3, 1_700_000_000_000_001, &[0, 1, 255]);
        assert_eq!(item.get(PARTITION_KEY), Some(&s("M#bank-1#S#0007")));
        assert_eq!(sk(&item), "U#u1#B01");
        let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["b", "n", "pk", "sk", "v"]);
        assert_eq!(decode_block(item), Ok(block("u1", 1, 3, 1_700_000_000_000_001, &[0, 1, 255])));
    }

    #[test]
    fn a_user_s_blocks_are_contiguous_in_index_order_and_users_in_id_order() {
        let in_order = [("u1", 0), ("u1", 1), ("u1", 7), ("u1-2", 0), ("u1.x", 0), ("u10", 0), ("u1x", 0), ("v", 0)];
        let keys: Vec<String> = in_order.iter().map(|(u, i)| block_sk(&user(u), *i)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(keys.iter().all(|k| k.starts_with("U#")));
        assert!(!block_sk(&user("u10"), 0).starts_with(&user_sk_prefix(&user("u1"))), "the prefix ends the id");
    }

    #[test]
    fn items_of_the_earlier_layout_are_recognised() {
        assert_eq!(parse_block_sk("U#u1#A#acc-1"), Err(BlockError::EarlierLayout));
        assert_eq!(parse_block_sk("U#u1#A#acc-1#T#2024-05-01#t1"), Err(BlockError::EarlierLayout));
        // An account item: no bytes.
        let mut item = block_key("M#bank-1#S#0000", &user("u1"), 0);
        item.insert("itemType".to_owned(), s("ACCOUNT"));
        assert_eq!(decode_block(item), Err(BlockError::EarlierLayout));
    }

    #[test]
    fn malformed_blocks_are_invalid() {
        for bad in ["U#u1#B", "U#u1#B1", "U#u1#B001", "U#u1#Bx1", "U##B00", "X#u1#B00", "U#u1", "U#u1#B08"] {
            assert!(matches!(parse_block_sk(bad), Err(BlockError::Invalid(_))), "{bad}");
        }
        assert_eq!(parse_block_sk("U#u-1.x#B07"), Ok(("u-1.x", 7)));
        let pk = "M#bank-1#S#0000";
        let mut no_count = block_item(pk, &user("u1"), 0, 1, 5, b"x");
        no_count.remove(BLOCK_COUNT);
        let mut zero_count = block_item(pk, &user("u1"), 0, 1, 5, b"x");
        zero_count.insert(BLOCK_COUNT.to_owned(), n(0));
        let mut text_bytes = block_item(pk, &user("u1"), 0, 1, 5, b"x");
        text_bytes.insert(BLOCK_DATA.to_owned(), s("x"));
        for item in [no_count, zero_count, text_bytes] {
            assert!(matches!(decode_block(item), Err(BlockError::Invalid(e)) if e.contains("U#u1#B00")));
        }
    }

    #[test]
    fn blocks_of_one_version_join_and_any_other_mix_is_torn() {
        assert_eq!(Record::of(Vec::new()), Record::Absent);
        let whole = vec![block("u", 0, 3, 9, b"ab"), block("u", 1, 3, 9, b"cd"), block("u", 2, 3, 9, b"e")];
        assert_eq!(Record::of(whole), Record::Whole { version: 9, blocks: 3, bytes: b"abcde".to_vec() });
        let torn = [
            // a block of the previous write left to read
            vec![block("u", 0, 1, 10, b"ab"), block("u", 1, 3, 9, b"cd"), block("u", 2, 3, 9, b"e")],
            // the new first block, the old others
            vec![block("u", 0, 2, 10, b"ab"), block("u", 1, 2, 9, b"cd")],
            // a missing block
            vec![block("u", 0, 3, 9, b"ab"), block("u", 2, 3, 9, b"e")],
            vec![block("u", 1, 2, 9, b"cd")],
            vec![block("u", 0, 2, 9, b"ab")],
        ];
        for blocks in torn {
            assert_eq!(Record::of(blocks.clone()), Record::Torn, "{blocks:?}");
        }
    }

    #[test]
    fn jobs_round_trip_with_second_precision_expiry() {
        let params = SegmentParams::HighBalance(HighBalanceParams {
            account_type: AccountType::Checking,
            threshold: "5000.10".parse::<Money>().unwrap(),
            currency: None,
        });
        let now = DateTime::parse_from_rfc3339("2024-06-01T10:00:00.123456789Z").unwrap().with_timezone(&Utc);
        let mut job = Job::new(mandator(), "2024-05-31".parse().unwrap(), params, None, 16, now);
        job.result = Some(ResultSummary { total_elements: 3, chunk_size: 1000, chunk_count: 1 });
        job.error = Some("boom".to_owned());
        let decoded = decode_job(job_item(&job).unwrap()).unwrap();
        assert_eq!(decoded.created_at, job.created_at);
        assert_eq!(decoded.expires_at.timestamp(), job.expires_at.timestamp());
        assert_eq!(Job { expires_at: job.expires_at, ..decoded }, job);
    }
}
