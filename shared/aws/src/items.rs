//! The DynamoDB item layout (docs/storage.md) and the mapping between items and domain values,
//! written out by hand: a shard's Query decodes millions of items, so decoding moves the strings
//! out of the item instead of copying them, and builds error messages only on failure.
//!
//! AccountData table:
//! - shard count of a mandator: `pk = M#{mandatorId}#META`, `sk = SHARDS`, `shardCount` (N);
//! - account: `pk = M#{mandatorId}#S#{shard:04}`, `sk = U#{userId}#A#{accountId}`;
//! - transaction: same `pk`, `sk = U#{userId}#A#{accountId}#T#{bookingDate}#{transactionId}`.
//!
//! Identifiers never contain `#` and every character they may contain sorts after it, so the sort
//! key order is: users by userId, then each account followed by its transactions, accounts by
//! accountId, transactions by (bookingDate, transactionId). A shard's Query therefore yields
//! each user's items contiguously and in the order the domain wants.
//!
//! Jobs table: `pk = M#{mandatorId}`, `sk = JOB#{jobId}`; `expiresAt` (N, epoch seconds) is the
//! TTL attribute.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use segments_core::domain::records::{AccountItem, shard_of};
use segments_core::domain::{
    Account, AccountId, JobId, MandatorId, Money, SegmentType, Transaction, TransactionId, UserId,
};
use segments_core::jobs::{Job, JobStatus, ResultSummary};
use segments_core::ports::StoreError;
use segments_core::rules::SegmentParams;

pub(super) type Item = HashMap<String, AttributeValue>;

/// Partition key attribute of both tables.
pub const PARTITION_KEY: &str = "pk";
/// Sort key attribute of both tables.
pub const SORT_KEY: &str = "sk";

// AccountData attributes.
pub(super) const ITEM_TYPE: &str = "itemType";
pub(super) const USER_ID: &str = "userId";
pub(super) const ACCOUNT_ID: &str = "accountId";
pub(super) const ACCOUNT_TYPE: &str = "accountType";
pub(super) const CURRENCY: &str = "currency";
pub(super) const BALANCE: &str = "balance";
pub(super) const BALANCE_DATE: &str = "balanceDate";
pub(super) const TRANSACTION_ID: &str = "transactionId";
pub(super) const BOOKING_DATE: &str = "bookingDate";
pub(super) const AMOUNT: &str = "amount";
pub(super) const COUNTERPART_NAME: &str = "counterpartName";
pub(super) const PURPOSE: &str = "purpose";
pub(super) const LABELS: &str = "labels";
pub(super) const SHARD_COUNT: &str = "shardCount";

const ACCOUNT_ITEM: &str = "ACCOUNT";
const TRANSACTION_ITEM: &str = "TRANSACTION";
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

// ---------------------------------------------------------------------------------------------
// Keys

pub(super) fn shard_pk(mandator: &MandatorId, shard: u32) -> String {
    format!("M#{mandator}#S#{shard:04}")
}

fn meta_pk(mandator: &MandatorId) -> String {
    format!("M#{mandator}#META")
}

fn account_sk(user: &UserId, account: &AccountId) -> String {
    format!("U#{user}#A#{account}")
}

fn transaction_sk(user: &UserId, account: &AccountId, t: &Transaction) -> String {
    format!("U#{user}#A#{account}#T#{}#{}", t.booking_date.format("%Y-%m-%d"), t.transaction_id)
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

pub(super) fn job_key(mandator: &MandatorId, job_id: JobId) -> Item {
    HashMap::from([(PARTITION_KEY.to_owned(), s(job_pk(mandator))), (SORT_KEY.to_owned(), s(job_sk(job_id)))])
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
    // `YYYY-MM-DD`, the form every date is written in, read directly: a shard's Query decodes a
    // date per item, and chrono's format-driven parser costs more than the rest of the item.
    if let Some(date) = segments_core::domain::date::iso_date(text.as_bytes()) {
        return Ok(date);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|e| format!("attribute {name}: {e}"))
}

fn parse_money(name: &str, text: &str) -> Result<Money, String> {
    // Only the attribute name: the value is a balance or an amount and stays out of messages.
    Money::parse(text).map_err(|e| format!("attribute {name} {e}"))
}

fn id<T: TryFrom<String>>(name: &str, value: String) -> Result<T, String>
where
    T::Error: Display,
{
    T::try_from(value).map_err(|e| format!("attribute {name} {e}"))
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

/// The item of one account or transaction, placed on the user's shard.
pub(super) fn account_data_item(mandator: &MandatorId, shard_count: u32, data: &AccountItem) -> Item {
    let pk = shard_pk(mandator, shard_of(data.user_id(), shard_count));
    let mut item = HashMap::with_capacity(12);
    item.insert(PARTITION_KEY.to_owned(), s(pk));
    match data {
        AccountItem::Account(a) => {
            item.insert(SORT_KEY.to_owned(), s(account_sk(&a.user_id, &a.account_id)));
            item.insert(ITEM_TYPE.to_owned(), s(ACCOUNT_ITEM));
            item.insert(USER_ID.to_owned(), s(a.user_id.as_str()));
            item.insert(ACCOUNT_ID.to_owned(), s(a.account_id.as_str()));
            item.insert(ACCOUNT_TYPE.to_owned(), s(a.account_type.as_str()));
            item.insert(CURRENCY.to_owned(), s(a.currency.as_str()));
            item.insert(BALANCE.to_owned(), n(a.balance));
            item.insert(BALANCE_DATE.to_owned(), s(date_text(a.balance_date)));
        }
        AccountItem::Transaction { user_id, account_id, transaction: t } => {
            item.insert(SORT_KEY.to_owned(), s(transaction_sk(user_id, account_id, t)));
            item.insert(ITEM_TYPE.to_owned(), s(TRANSACTION_ITEM));
            item.insert(USER_ID.to_owned(), s(user_id.as_str()));
            item.insert(ACCOUNT_ID.to_owned(), s(account_id.as_str()));
            item.insert(TRANSACTION_ID.to_owned(), s(t.transaction_id.as_str()));
            item.insert(BOOKING_DATE.to_owned(), s(date_text(t.booking_date)));
            item.insert(AMOUNT.to_owned(), n(t.amount));
            item.insert(CURRENCY.to_owned(), s(t.currency.as_str()));
            if !t.counterpart_name.is_empty() {
                item.insert(COUNTERPART_NAME.to_owned(), s(t.counterpart_name.as_str()));
            }
            if !t.purpose.is_empty() {
                item.insert(PURPOSE.to_owned(), s(t.purpose.as_str()));
            }
            if !t.labels.is_empty() {
                // A list, not a string set: it keeps the labels' order and may be compared as is.
                item.insert(LABELS.to_owned(), AttributeValue::L(t.labels.iter().map(|l| s(l.as_str())).collect()));
            }
        }
    }
    item
}

/// Decodes an item of a shard's Query.
pub(super) fn decode_account_data(mut item: Item) -> Result<AccountItem, StoreError> {
    let decoded = decode_account_data_fields(&mut item);
    decoded.map_err(|e| {
        let sk = match item.get(SORT_KEY) {
            Some(AttributeValue::S(sk)) => sk.as_str(),
            _ => "?",
        };
        StoreError::Corrupt(format!("account data item {sk}: {e}"))
    })
}

fn decode_account_data_fields(item: &mut Item) -> Result<AccountItem, String> {
    let item_type = take_s(item, ITEM_TYPE)?;
    let user_id: UserId = id(USER_ID, take_s(item, USER_ID)?)?;
    let account_id: AccountId = id(ACCOUNT_ID, take_s(item, ACCOUNT_ID)?)?;
    let currency = take_s(item, CURRENCY)?;
    let currency =
        segments_core::domain::Currency::parse(&currency).ok_or_else(|| format!("attribute {CURRENCY} is invalid"))?;
    match item_type.as_str() {
        ACCOUNT_ITEM => Ok(AccountItem::Account(Account {
            user_id,
            account_id,
            account_type: parse(ACCOUNT_TYPE, &take_s(item, ACCOUNT_TYPE)?)?,
            currency,
            balance: parse_money(BALANCE, &take_n(item, BALANCE)?)?,
            balance_date: parse_date(BALANCE_DATE, &take_s(item, BALANCE_DATE)?)?,
        })),
        TRANSACTION_ITEM => {
            let transaction = Transaction {
                transaction_id: id::<TransactionId>(TRANSACTION_ID, take_s(item, TRANSACTION_ID)?)?,
                booking_date: parse_date(BOOKING_DATE, &take_s(item, BOOKING_DATE)?)?,
                amount: parse_money(AMOUNT, &take_n(item, AMOUNT)?)?,
                currency,
                counterpart_name: take_opt_s(item, COUNTERPART_NAME)?.unwrap_or_default(),
                purpose: take_opt_s(item, PURPOSE)?.unwrap_or_default(),
                labels: take_labels(item)?,
            };
            Ok(AccountItem::Transaction { user_id, account_id, transaction })
        }
        other => Err(format!("attribute {ITEM_TYPE} has unknown value {other:?}")),
    }
}

fn take_labels(item: &mut Item) -> Result<Vec<String>, String> {
    match item.remove(LABELS) {
        None | Some(AttributeValue::Null(_)) => Ok(Vec::new()),
        Some(AttributeValue::L(values)) => values
            .into_iter()
            .map(|v| match v {
                AttributeValue::S(label) => Ok(label),
                _ => Err(format!("attribute {LABELS} holds a value that is not a string")),
            })
            .collect(),
        // Tolerated for items written by other tools; sets have no order, DynamoDB returns them sorted.
        Some(AttributeValue::Ss(labels)) => Ok(labels),
        Some(_) => Err(format!("attribute {LABELS} is not a list of strings")),
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
    use segments_core::domain::{AccountType, Currency};
    use segments_core::rules::params::HighBalanceParams;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    fn mandator() -> MandatorId {
        MandatorId::parse("bank-1").unwrap()
    }

    fn account(user: &str, id: &str, balance: &str) -> AccountItem {
        AccountItem::Account(Account {
            user_id: UserId::parse(user).unwrap(),
            account_id: AccountId::parse(id).unwrap(),
            account_type: AccountType::Savings,
            currency: Currency::parse("EUR").unwrap(),
            balance: m(balance),
            balance_date: "2024-05-31".parse().unwrap(),
        })
    }

    fn transaction(user: &str, account: &str, id: &str, date: &str, amount: &str, labels: &[&str]) -> AccountItem {
        AccountItem::Transaction {
            user_id: UserId::parse(user).unwrap(),
            account_id: AccountId::parse(account).unwrap(),
            transaction: Transaction {
                transaction_id: TransactionId::parse(id).unwrap(),
                booking_date: date.parse().unwrap(),
                amount: m(amount),
                currency: Currency::parse("EUR").unwrap(),
                counterpart_name: if labels.is_empty() { String::new() } else { "ACME Insurance".to_owned() },
                labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            },
        }
    }

    fn sk(item: &Item) -> &str {
        match item.get(SORT_KEY) {
            Some(AttributeValue::S(sk)) => sk,
            _ => panic!("no sort key"),
        }
    }

    #[test]
    fn given_dates_when_decoded_then_the_direct_reading_agrees_with_chrono_and_refuses_the_invalid() {
        for text in ["2024-02-29", "1999-12-31", "0001-01-01", "2026-11-20"] {
            assert_eq!(parse_date("d", text), Ok(NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()));
        }
        for bad in
            ["2023-02-29", "2024-13-01", "2024-00-10", "2024-01-32", "2024-1-01", "20240101", "2024/01/01", "", "x"]
        {
            assert_eq!(parse_date("d", bad).is_err(), NaiveDate::parse_from_str(bad, "%Y-%m-%d").is_err(), "{bad}");
        }
    }

    #[test]
    fn account_data_round_trips_exactly() {
        for data in [
            account("u1", "a1", "1234567.89"),
            account("u1", "a2", "-0.10"),
            transaction("u1", "a1", "t1", "2024-05-01", "-0.10", &["INSURANCE", "CARINSURANCE"]),
            transaction("u1", "a1", "t2", "2024-05-01", "0", &[]),
        ] {
            let item = account_data_item(&mandator(), 16, &data);
            assert_eq!(decode_account_data(item).unwrap(), data);
        }
    }

    #[test]
    fn amounts_are_stored_as_their_exact_decimal_text() {
        let item = account_data_item(&mandator(), 16, &account("u1", "a1", "0.1"));
        assert_eq!(item.get(BALANCE), Some(&AttributeValue::N("0.10".to_owned())));
        // What DynamoDB hands back may be normalized; it still decodes to the same amount.
        let mut item = item;
        item.insert(BALANCE.to_owned(), AttributeValue::N("0.1".to_owned()));
        assert_eq!(decode_account_data(item).unwrap(), account("u1", "a1", "0.10"));
    }

    #[test]
    fn empty_text_and_labels_are_not_stored() {
        let item = account_data_item(&mandator(), 16, &transaction("u1", "a1", "t1", "2024-05-01", "5", &[]));
        assert!(!item.contains_key(LABELS) && !item.contains_key(PURPOSE) && !item.contains_key(COUNTERPART_NAME));
    }

    #[test]
    fn a_user_s_items_are_contiguous_and_in_domain_order_by_sort_key() {
        let in_domain_order = [
            account("u1", "a1", "1"),
            transaction("u1", "a1", "t2", "2024-04-30", "1", &[]),
            transaction("u1", "a1", "t1", "2024-05-01", "1", &[]),
            transaction("u1", "a1", "t1-b", "2024-05-01", "1", &[]),
            transaction("u1", "a1", "t1b", "2024-05-01", "1", &[]),
            account("u1", "a1-x", "1"),
            account("u1", "a1x", "1"),
            transaction("u1", "a1x", "t0", "2023-01-01", "1", &[]),
            account("u1-2", "a0", "1"),
            account("u10", "a0", "1"),
        ];
        let keys: Vec<String> =
            in_domain_order.iter().map(|d| sk(&account_data_item(&mandator(), 1, d)).to_owned()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn items_are_placed_on_the_user_s_shard() {
        let data = account("u1", "a1", "1");
        let item = account_data_item(&mandator(), 16, &data);
        let shard = shard_of(data.user_id(), 16);
        assert_eq!(item.get(PARTITION_KEY), Some(&s(format!("M#bank-1#S#{shard:04}"))));
    }

    #[test]
    fn a_broken_item_is_corrupt_and_names_its_key_but_no_amount() {
        let mut item = account_data_item(&mandator(), 16, &account("u1", "a1", "987.65"));
        item.insert(BALANCE.to_owned(), AttributeValue::S("987.65".to_owned()));
        let err = decode_account_data(item).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)));
        let text = err.to_string();
        assert!(text.contains("U#u1#A#a1") && text.contains("balance"), "{text}");
        assert!(!text.contains("987"), "{text}");
    }

    #[test]
    fn jobs_round_trip_with_second_precision_expiry() {
        let params = SegmentParams::HighBalance(HighBalanceParams {
            account_type: AccountType::Checking,
            threshold: m("5000.10"),
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
