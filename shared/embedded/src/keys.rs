//! Keys of the embedded tables. They follow docs/storage.md with the partition and sort key joined:
//! `M#{mandator}#S#{shard}#` + `U#{userId}` for a user's record.
//!
//! Identifiers never contain `#` and every character they may contain sorts after it, so the byte
//! order of the keys is shard by shard, users in userId order.

use chrono::{DateTime, Utc};
use segments_core::domain::{JobId, MandatorId, UserId};

/// The prefix of every item of one shard, ending in the separator.
pub(super) fn shard_prefix(mandator: &MandatorId, shard: u32) -> String {
    format!("M#{mandator}#S#{shard}#")
}

/// The first key after every key that starts with `prefix` (which ends in `#`).
pub(super) fn prefix_end(prefix: &str) -> String {
    // `$` is the byte after `#`: no key with the prefix reaches it.
    match prefix.strip_suffix('#') {
        Some(stem) => format!("{stem}$"),
        None => format!("{prefix}\u{10FFFF}"),
    }
}

/// The key of a user's record.
pub(super) fn user_key(mandator: &MandatorId, shard: u32, user: &UserId) -> String {
    format!("{}U#{user}", shard_prefix(mandator, shard))
}

/// The key of a mandator's own records (its shard count).
pub(super) fn mandator_key(mandator: &MandatorId) -> String {
    format!("M#{mandator}")
}

pub(super) fn job_key(mandator: &MandatorId, job_id: JobId) -> String {
    format!("M#{mandator}#JOB#{job_id}")
}

/// The prefix of the live-job markers of a mandator, ending in the separator.
pub(super) fn live_prefix(mandator: &MandatorId) -> String {
    format!("M#{mandator}#{}", segments_core::jobs::LIVE_SORT_PREFIX)
}

/// The key of a job's live marker: `M#{mandator}#LIVE#{jobId}`.
pub(super) fn live_key(mandator: &MandatorId, job_id: JobId) -> String {
    format!("M#{mandator}#{}", segments_core::jobs::live_sort_key(job_id))
}

pub(super) fn idempotency_key(mandator: &MandatorId, key: &segments_core::jobs::IdempotencyKey) -> String {
    format!("M#{mandator}#{}", segments_core::jobs::idempotency_sort_key(key))
}

/// The key of an entry of an index of due times: `{at, epoch seconds, 20 digits}#{record key}`,
/// so key order is time order, to the second (the due times are whole seconds; times before 1970
/// do not occur, and would sort as 1970).
pub(super) fn due_key(at: DateTime<Utc>, record_key: &str) -> String {
    format!("{:020}#{record_key}", at.timestamp().max(0))
}

/// The first key after every [`due_key`] of a time up to `now`, `now`'s second included.
pub(super) fn due_bound(now: DateTime<Utc>) -> String {
    format!("{:020}$", now.timestamp().max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> MandatorId {
        MandatorId::parse(s).unwrap()
    }

    #[test]
    fn shard_prefixes_do_not_overlap() {
        let p1 = shard_prefix(&m("bank"), 1);
        let p10 = shard_prefix(&m("bank"), 10);
        assert!(!p10.starts_with(&p1));
        assert!(!shard_prefix(&m("bank-2"), 1).starts_with(&shard_prefix(&m("bank"), 1)));
        let end = prefix_end(&p1);
        assert!(!(p1 <= p10 && p10 < end), "shard 10 must be outside the range of shard 1");
    }

    #[test]
    fn user_keys_sort_by_user_id_within_a_shard() {
        let b = m("b");
        let u = |s: &str| UserId::parse(s).unwrap();
        let ordered = [user_key(&b, 0, &u("u1")), user_key(&b, 0, &u("u1x")), user_key(&b, 0, &u("u2"))];
        for w in ordered.windows(2) {
            assert!(w[0] < w[1], "{w:?}");
        }
        let end = prefix_end(&shard_prefix(&b, 0));
        assert!(ordered.iter().all(|k| *k < end));
        assert!(user_key(&b, 1, &u("u1")) >= end);
    }

    #[test]
    fn due_keys_sort_by_time_and_the_bound_includes_its_second() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let record = "M#bank#SEG#x";
        let early = due_key(at("2026-01-01T00:00:09Z"), "M#zzz");
        let late = due_key(at("2026-01-01T00:00:10Z"), "M#aaa");
        assert!(early < late, "time orders before the record key");
        let bound = due_bound(at("2026-01-01T00:00:10.900Z"));
        assert!(late < bound, "a time in the bound's second is due");
        assert!(due_key(at("2026-01-01T00:00:11Z"), record) > bound);
        assert!(due_key(at("1960-01-01T00:00:00Z"), record) < bound);
    }
}
