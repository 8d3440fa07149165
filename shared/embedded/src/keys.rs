//! Keys of the embedded tables. They follow docs/storage.md with the partition and sort key joined:
//! `M#{mandator}#S#{shard}#` + `U#{userId}` for a user's record.
//!
//! Identifiers never contain `#` and every character they may contain sorts after it, so the byte
//! order of the keys is shard by shard, users in userId order.

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
}
