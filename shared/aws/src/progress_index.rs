//! Reading the Jobs table's sparse index `ProgressIndex`: the sweeper's two work lists (live jobs
//! by last progress, pending callbacks by next retry), each spread over [`SWEEP_PARTITIONS`]
//! partitions of its own.

use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

use super::items::{Item, PROGRESS_AT, PROGRESS_INDEX, SWEEP_PARTITION, SWEEP_PARTITIONS, n, s};
use segments_core::ports::StoreError;

/// The index entries of one list — its partitions named by `partition_name` — whose
/// `progressAt` is at or before `bound`, at most `limit`, as the index projects them (the table's
/// keys and the projected attributes). One Query per partition, paginated; nothing is scanned.
pub(super) async fn entries_up_to(
    client: &Client,
    table: &str,
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
                .index_name(PROGRESS_INDEX)
                .key_condition_expression("#partition = :partition AND #progress <= :bound")
                .expression_attribute_names("#partition", SWEEP_PARTITION)
                .expression_attribute_names("#progress", PROGRESS_AT)
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
