//! Keys of the embedded tables. They follow docs/storage.md with the partition and sort key joined:
//! `M#{mandator}#S#{shard}#` + `U#{userId}#A#{accountId}` (an account) or
//! `…#T#{bookingDate}#{transactionId}` (one of its transactions).
//!
//! Identifiers never contain `#` and every character they may contain sorts after it, so the byte
//! order of the keys is: shard by shard, users in userId order, each account followed by its
//! transactions in (bookingDate, transactionId) order, accounts in accountId order.

use chrono::NaiveDate;

use segments_core::domain::{AccountId, JobId, MandatorId, TransactionId, UserId};

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

pub(super) fn account_key(mandator: &MandatorId, shard: u32, user: &UserId, account: &AccountId) -> String {
    format!("{}U#{user}#A#{account}", shard_prefix(mandator, shard))
}

pub(super) fn transaction_key(
    mandator: &MandatorId,
    shard: u32,
    user: &UserId,
    account: &AccountId,
    booking_date: NaiveDate,
    transaction: &TransactionId,
) -> String {
    // `%Y-%m-%d` is fixed-width for the years 0000–9999, so dates sort as text.
    format!("{}#T#{}#{transaction}", account_key(mandator, shard, user, account), booking_date.format("%Y-%m-%d"))
}

/// The key of a mandator's own records (its shard count).
pub(super) fn mandator_key(mandator: &MandatorId) -> String {
    format!("M#{mandator}")
}

pub(super) fn job_key(mandator: &MandatorId, job_id: JobId) -> String {
    format!("M#{mandator}#JOB#{job_id}")
}

pub(super) fn idempotency_key(mandator: &MandatorId, key: &segments_core::jobs::IdempotencyKey) -> String {
    format!("M#{mandator}#{}", segments_core::jobs::idempotency_sort_key(key))
}

/// The part of an account data key after the shard prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SortKey<'a> {
    Account { user: &'a str, account: &'a str },
    Transaction { user: &'a str, account: &'a str, booking_date: &'a str, transaction: &'a str },
}

impl<'a> SortKey<'a> {
    pub(super) fn parse(s: &'a str) -> Option<Self> {
        let mut parts = s.split('#');
        let mut next = || parts.next();
        let (u, user, a, account) = (next()?, next()?, next()?, next()?);
        if u != "U" || a != "A" {
            return None;
        }
        let key = match next() {
            None => SortKey::Account { user, account },
            Some("T") => {
                let (booking_date, transaction) = (next()?, next()?);
                SortKey::Transaction { user, account, booking_date, transaction }
            }
            Some(_) => return None,
        };
        next().is_none().then_some(key)
    }
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
    fn keys_sort_users_accounts_then_transactions() {
        let (b, d) = (m("b"), |s: &str| s.parse::<NaiveDate>().unwrap());
        let u = |s: &str| UserId::parse(s).unwrap();
        let a = |s: &str| AccountId::parse(s).unwrap();
        let t = |s: &str| TransactionId::parse(s).unwrap();
        let ordered = [
            account_key(&b, 0, &u("u1"), &a("a1")),
            transaction_key(&b, 0, &u("u1"), &a("a1"), d("2024-01-02"), &t("t9")),
            transaction_key(&b, 0, &u("u1"), &a("a1"), d("2024-01-10"), &t("t1")),
            transaction_key(&b, 0, &u("u1"), &a("a1"), d("2024-01-10"), &t("t1x")),
            account_key(&b, 0, &u("u1"), &a("a1x")),
            account_key(&b, 0, &u("u1x"), &a("a0")),
        ];
        for w in ordered.windows(2) {
            assert!(w[0] < w[1], "{w:?}");
        }
        let end = prefix_end(&shard_prefix(&b, 0));
        assert!(ordered.iter().all(|k| *k < end));
    }

    #[test]
    fn sort_keys_parse_back() {
        let p = shard_prefix(&m("b"), 3);
        let k = account_key(&m("b"), 3, &UserId::parse("u").unwrap(), &AccountId::parse("a").unwrap());
        assert_eq!(SortKey::parse(k.strip_prefix(&p).unwrap()), Some(SortKey::Account { user: "u", account: "a" }));
        assert_eq!(
            SortKey::parse("U#u#A#a#T#2024-01-01#t"),
            Some(SortKey::Transaction { user: "u", account: "a", booking_date: "2024-01-01", transaction: "t" })
        );
        assert_eq!(SortKey::parse("U#u#A"), None);
        assert_eq!(SortKey::parse("U#u#A#a#X#1#2"), None);
        assert_eq!(SortKey::parse("U#u#A#a#T#1#2#3"), None);
    }
}
