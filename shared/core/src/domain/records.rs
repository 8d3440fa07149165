//! The NDJSON interchange records of docs/data.md, as the importer reads and the generator writes
//! them, and the placement of a user's data on a mandator's shards.

use serde::{Deserialize, Serialize};

use chrono::NaiveDate;

use crate::domain::{Account, AccountId, AccountType, Currency, MandatorId, Money, Transaction, TransactionId, UserId};

// The records spell every field out instead of flattening the domain types: serde's `flatten`
// buffers values, which loses the exact literal of JSON numbers, and forbids `deny_unknown_fields`.

/// A line of `accounts.ndjson`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountRecord {
    pub mandator_id: MandatorId,
    pub user_id: UserId,
    pub account_id: AccountId,
    pub account_type: AccountType,
    pub currency: Currency,
    pub balance: Money,
    #[serde(deserialize_with = "crate::domain::date::deserialize")]
    pub balance_date: NaiveDate,
}

/// A line of `transactions.ndjson`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransactionRecord {
    pub mandator_id: MandatorId,
    pub user_id: UserId,
    pub account_id: AccountId,
    pub transaction_id: TransactionId,
    #[serde(deserialize_with = "crate::domain::date::deserialize")]
    pub booking_date: NaiveDate,
    pub amount: Money,
    pub currency: Currency,
    #[serde(default)]
    pub counterpart_name: String,
    #[serde(default)]
    pub purpose: String,
    #[serde(default)]
    pub labels: Vec<String>,
}

impl AccountRecord {
    pub fn into_account(self) -> (MandatorId, Account) {
        let account = Account {
            user_id: self.user_id,
            account_id: self.account_id,
            account_type: self.account_type,
            currency: self.currency,
            balance: self.balance,
            balance_date: self.balance_date,
        };
        (self.mandator_id, account)
    }

    pub fn from_account(mandator_id: MandatorId, a: Account) -> Self {
        AccountRecord {
            mandator_id,
            user_id: a.user_id,
            account_id: a.account_id,
            account_type: a.account_type,
            currency: a.currency,
            balance: a.balance,
            balance_date: a.balance_date,
        }
    }
}

impl TransactionRecord {
    /// The record's owner (mandator, user, account) and the transaction itself.
    pub fn into_parts(self) -> (MandatorId, UserId, AccountId, Transaction) {
        let transaction = Transaction {
            transaction_id: self.transaction_id,
            booking_date: self.booking_date,
            amount: self.amount,
            currency: self.currency,
            counterpart_name: self.counterpart_name,
            labels: self.labels,
        };
        (self.mandator_id, self.user_id, self.account_id, transaction)
    }

    pub fn into_item(self) -> (MandatorId, AccountItem) {
        let (mandator_id, user_id, account_id, transaction) = self.into_parts();
        (mandator_id, AccountItem::Transaction { user_id, account_id, transaction })
    }

    pub fn from_transaction(mandator_id: MandatorId, user_id: UserId, account_id: AccountId, t: Transaction) -> Self {
        TransactionRecord {
            mandator_id,
            user_id,
            account_id,
            transaction_id: t.transaction_id,
            booking_date: t.booking_date,
            amount: t.amount,
            currency: t.currency,
            counterpart_name: t.counterpart_name,
            purpose: String::new(),
            labels: t.labels,
        }
    }
}

/// Bounds on a transaction's free text, the same whichever way the data comes in (the data API,
/// an import): the longest counterpart name, purpose (checked, then dropped) and label, and the
/// most labels. A label group of financialBreakdown names labels of at most 64 characters.
pub const MAX_COUNTERPART_CHARS: usize = 256;
pub const MAX_PURPOSE_CHARS: usize = 1024;
pub const MAX_LABELS: usize = 20;
pub const MAX_LABEL_CHARS: usize = 64;

impl TransactionRecord {
    /// The field whose text is out of bounds and why, as the data API words it.
    pub fn check_free_text(&self) -> Result<(), (&'static str, String)> {
        let too_long = |max: usize| format!("must be at most {max} characters");
        if self.counterpart_name.chars().count() > MAX_COUNTERPART_CHARS {
            return Err(("counterpartName", too_long(MAX_COUNTERPART_CHARS)));
        }
        if self.purpose.chars().count() > MAX_PURPOSE_CHARS {
            return Err(("purpose", too_long(MAX_PURPOSE_CHARS)));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(("labels", format!("must have at most {MAX_LABELS} items")));
        }
        let bad_label =
            |l: &String| l.is_empty() || l.chars().count() > MAX_LABEL_CHARS || l.chars().any(char::is_control);
        if self.labels.iter().any(bad_label) {
            return Err((
                "labels",
                format!("must be labels of 1 to {MAX_LABEL_CHARS} characters without control characters"),
            ));
        }
        Ok(())
    }
}

/// One item of account data as the stores keep it: the mandator is part of every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountItem {
    Account(Account),
    Transaction { user_id: UserId, account_id: AccountId, transaction: Transaction },
}

impl AccountItem {
    pub fn user_id(&self) -> &UserId {
        match self {
            AccountItem::Account(a) => &a.user_id,
            AccountItem::Transaction { user_id, .. } => user_id,
        }
    }
}

/// Default number of shards a mandator's account data is spread over.
pub const DEFAULT_SHARD_COUNT: u32 = 16;
/// Upper bound on a mandator's shard count (one SQS message and one Query stream per shard).
pub const MAX_SHARD_COUNT: u32 = 1024;

/// The shard of a user: 64-bit FNV-1a of the userId's bytes modulo the shard count. FNV-1a is
/// written out here rather than taken from a hasher whose output may change between releases:
/// the shard of a stored item must never change.
pub fn shard_of(user_id: &UserId, shard_count: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = user_id.as_str().bytes().fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    (hash % u64::from(shard_count.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_of_is_stable_across_releases() {
        // Pinned values: changing them would strand stored data on the wrong shards.
        let u = |s: &str| UserId::parse(s).unwrap();
        let fnv =
            |s: &str| s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        // Known FNV-1a 64 test vector.
        assert_eq!(fnv("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(shard_of(&u("a"), 1000), (0xaf63_dc4c_8601_ec8cu64 % 1000) as u32);
        assert_eq!(shard_of(&u("a"), 1), 0);
    }

    #[test]
    fn account_record_parses_the_design_format_exactly() {
        let line = r#"{"mandatorId":"m1","userId":"u1","accountId":"a1","accountType":"checking","currency":"EUR","balance":1234.56,"balanceDate":"2024-05-31"}"#;
        let r: AccountRecord = serde_json::from_str(line).unwrap();
        assert_eq!(r.balance.to_string(), "1234.56");
        let unknown = line.replace("\"currency\"", "\"extra\":1,\"currency\"");
        assert!(serde_json::from_str::<AccountRecord>(&unknown).is_err());
    }

    #[test]
    fn transaction_record_parses_the_design_format_exactly() {
        let line = r#"{"mandatorId":"m1","userId":"u1","accountId":"a1","transactionId":"t1","bookingDate":"2024-05-01","amount":-0.1,"currency":"EUR","counterpartName":"ACME","purpose":"rent","labels":["RENT"]}"#;
        let r: TransactionRecord = serde_json::from_str(line).unwrap();
        assert_eq!(r.amount.to_string(), "-0.10");
        assert_eq!(r.labels, ["RENT"]);
    }
}
