//! Reading the sparse time indexes: the Jobs table's `ProgressIndex` (the sweeper's two work
//! lists: live jobs by last progress, pending callbacks by next retry) and the Segments table's
//! `DueIndex` (unfinished refreshes by their next look, scheduled segments by their next run).
//! Each list is spread over [`SWEEP_PARTITIONS`] partitions of its own, so the writes of one list
//! never all land on one index partition.

use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

use super::items::{
    DUE_AT, DUE_INDEX, DUE_PARTITION, Item, PROGRESS_AT, PROGRESS_INDEX, SWEEP_PARTITION, SWEEP_PARTITIONS, n, s,
};
use segments_core::ports::StoreError;

/// A sparse index over a time: its name, its hash key (the partition of a list, S) and its range
/// key (epoch seconds, N).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimeIndex {
    pub name: &'static str,
    pub partition: &'static str,
    pub time: &'static str,
}

/// The Jobs table's index of live jobs by progress and of pending callbacks by due time.
pub(super) const PROGRESS: TimeIndex =
    TimeIndex { name: PROGRESS_INDEX, partition: SWEEP_PARTITION, time: PROGRESS_AT };

/// The Segments table's index of unfinished refreshes by `check_at` and of live scheduled
/// segments by `next_refresh_at`.
pub(super) const DUE: TimeIndex = TimeIndex { name: DUE_INDEX, partition: DUE_PARTITION, time: DUE_AT };

/// The entries of one list of `index` — its partitions named by `partition_name` — whose time is
/// at or before `bound`, at most `limit`, as the index projects them (the table's keys and the
/// projected attributes). One Query per partition, paginated; nothing is scanned.
pub(super) async fn entries_up_to(
    client: &Client,
    table: &str,
    index: TimeIndex,
    partition_name: fn(u32) -> String,
    bound: DateTime<Utc>,
    limit: u32,
    what: &str,
) -> Result<Vec<Item>, StoreError> {
    let mut found = Vec::new();
    for partition in 0..SWEEP_PARTITIONS {
        let mut start: Option<Item> = None;
        loop {
            let remaining = limit.saturating_sub(u32::try_from(found.len()).unwrap_or(u32::MAX));
            if remaining == 0 {
                return Ok(found);
            }
            let out = client
                .query()
                .table_name(table)
                .index_name(index.name)
                .key_condition_expression("#partition = :partition AND #time <= :bound")
                .expression_attribute_names("#partition", index.partition)
                .expression_attribute_names("#time", index.time)
                .expression_attribute_values(":partition", s(partition_name(partition)))
                .expression_attribute_values(":bound", n(bound.timestamp()))
                .limit(i32::try_from(remaining).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::unavailable(what.to_owned(), e.into_service_error()))?;
            found.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
    }
    Ok(found)
}
