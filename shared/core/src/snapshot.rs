//! The stored form of one user's account data, the same in both stores (docs/storage.md): every
//! account and transaction of the user in one compact binary record, compressed with zstd, cut
//! into blocks that fit a DynamoDB item. A job reads a user as one to a few items instead of one
//! item per transaction, and a write replaces the user as a unit.
//!
//! Only what the service reads is kept: ids, account type, currency, balance and its date, and per
//! transaction its id, booking date, amount, counterpart name and labels. A transaction's currency
//! is its account's. `purpose` is not stored at all: no segment reads it, and free text about
//! payments is the data a bank least wants copied (data minimisation).
//!
//! Record layout (format 1), all integers LEB128 varints, signed ones zigzag-encoded:
//! ```text
//! format:u8=1
//! strings: count, then each as len + UTF-8 bytes      (counterpart names and labels, each once)
//! accounts: count, then each:
//!   accountId: len + bytes; accountType: u8 (index); currency: 3 bytes
//!   balance: signed cents; balanceDate: signed days since 1970-01-01
//!   transactions: count, then each, ordered by (bookingDate, transactionId):
//!     bookingDate: days after the previous transaction's (the first: signed, after balanceDate)
//!     transactionId: len + bytes; amount: signed cents
//!     counterpart: string index + 1 (0: none); labels: count, then string indexes
//! ```

use std::collections::HashMap;

use chrono::NaiveDate;

use crate::domain::{
    Account, AccountHistory, AccountId, AccountType, Currency, Money, Transaction, TransactionId, UserData, UserId,
};

/// The first byte of every record; a reader refuses any other.
const FORMAT: u8 = 1;
/// Largest stored block: DynamoDB's item limit is 400 KB, names and keys included.
pub const BLOCK_BYTES: usize = 350 * 1024;
/// Most blocks of one user. A write of a user is one DynamoDB transaction (at most 100 items and
/// 4 MB): the new blocks, the old ones it deletes and the account directory entries.
pub const MAX_BLOCKS: usize = 8;
/// Most accounts of one user, for the same transaction (each account has a directory entry, and a
/// replacing write may drop as many as it adds).
pub const MAX_ACCOUNTS: usize = 40;
/// zstd level: 3 is zstd's default; higher levels cost write time for a few percent.
const LEVEL: i32 = 3;

/// Why stored bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the stored data is not a zstd frame: {0}")]
    Compression(String),
    #[error("unknown stored format {0}")]
    Format(u8),
    #[error("the stored record is truncated")]
    Truncated,
    #[error("the stored record has an invalid {0}")]
    Invalid(&'static str),
}

/// Why a user's data cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a user may have at most {MAX_ACCOUNTS} accounts, not {0}")]
    TooManyAccounts(usize),
    #[error("the user's data is {0} bytes compressed; at most {max} fit the store", max = MAX_BLOCKS * BLOCK_BYTES)]
    TooLarge(usize),
}

/// Encodes and compresses a user's data. Accounts are written in accountId order, transactions in
/// (bookingDate, transactionId) order, whatever their order in `user`.
pub fn encode(user: &UserData) -> Result<Vec<u8>, EncodeError> {
    if user.accounts.len() > MAX_ACCOUNTS {
        return Err(EncodeError::TooManyAccounts(user.accounts.len()));
    }
    let raw = encode_raw(user);
    let compressed = zstd::bulk::compress(&raw, LEVEL).expect("compressing into a growable buffer cannot fail");
    if compressed.len() > MAX_BLOCKS * BLOCK_BYTES {
        return Err(EncodeError::TooLarge(compressed.len()));
    }
    Ok(compressed)
}

/// Largest varint: a u64 in 7-bit groups.
const MAX_VARINT: u64 = 10;

/// At most the bytes of a record before compression beyond those of its accounts and
/// transactions ([`account_bound`], [`transaction_bound`]): the format byte and two counts.
pub const RECORD_BOUND: u64 = 1 + 2 * MAX_VARINT;

/// At most the bytes an account adds to its user's record before compression, transactions
/// aside.
pub fn account_bound(account_id: &AccountId) -> u64 {
    // id, type, currency, balance, balance date, transaction count
    MAX_VARINT + account_id.as_str().len() as u64 + 1 + 3 + 3 * MAX_VARINT
}

/// At most the bytes a transaction adds to its user's record before compression, counting its
/// counterpart name and labels in full although the record keeps each distinct string once.
pub fn transaction_bound(transaction_id: &TransactionId, counterpart_name: &str, labels: &[String]) -> u64 {
    let strings: u64 = std::iter::once(counterpart_name)
        .chain(labels.iter().map(String::as_str))
        .map(|s| MAX_VARINT + s.len() as u64)
        .sum();
    // date, id, amount, counterpart index, label count, label indexes, then the strings
    4 * MAX_VARINT + MAX_VARINT + transaction_id.as_str().len() as u64 + MAX_VARINT * labels.len() as u64 + strings
}

/// Whether every record of at most `raw_bound` bytes before compression fits the store: zstd
/// adds at most a small fraction (about 1/256) and a frame header to incompressible data, so a
/// caller that summed the bounds above needs to encode only the users above this.
pub fn always_fits(raw_bound: u64) -> bool {
    raw_bound + raw_bound / 128 + 1024 <= (MAX_BLOCKS * BLOCK_BYTES) as u64
}

/// The compressed record cut into blocks of at most [`BLOCK_BYTES`]; at least one.
pub fn blocks(compressed: &[u8]) -> Vec<&[u8]> {
    if compressed.is_empty() {
        return vec![compressed];
    }
    compressed.chunks(BLOCK_BYTES).collect()
}

/// Decodes a user's record (its blocks joined) back into the user's data.
pub fn decode(user_id: UserId, compressed: &[u8]) -> Result<UserData, DecodeError> {
    thread_local! {
        // A shard's reader decodes users one after another: one decompression context and one
        // buffer per thread, instead of a new context (about 100 KB) per user.
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
        static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // The frame header states the record's size (the encoder writes it); a frame without it, or
    // claiming more than a user can be, is not one of ours.
    let size = zstd::zstd_safe::get_frame_content_size(compressed)
        .map_err(|_| DecodeError::Compression("not a zstd frame".into()))?
        .ok_or_else(|| DecodeError::Compression("the frame does not state its size".into()))?;
    if size > MAX_RAW_BYTES {
        return Err(DecodeError::Compression(format!("the frame claims {size} bytes")));
    }
    DECOMPRESSOR.with_borrow_mut(|decompressor| {
        RAW.with_borrow_mut(|raw| {
            let decompressor = match decompressor {
                Some(d) => d,
                None => decompressor
                    .insert(zstd::bulk::Decompressor::new().map_err(|e| DecodeError::Compression(e.to_string()))?),
            };
            raw.clear();
            raw.reserve(size as usize);
            decompressor.decompress_to_buffer(compressed, raw).map_err(|e| DecodeError::Compression(e.to_string()))?;
            let user = decode_raw(user_id, raw);
            if raw.capacity() > KEPT_RAW_BYTES {
                // A rare large user must not keep its buffer for the rest of the shard.
                *raw = Vec::new();
            }
            user
        })
    })
}

/// The decoding buffer a thread keeps between users.
const KEPT_RAW_BYTES: usize = 1024 * 1024;

/// Largest record before compression a reader accepts: far above any user that fits the store
/// compressed (ids and amounts do not compress 30-fold), far below what would exhaust memory.
const MAX_RAW_BYTES: u64 = 64 * 1024 * 1024;

fn encode_raw(user: &UserData) -> Vec<u8> {
    let mut accounts: Vec<&AccountHistory> = user.accounts.iter().collect();
    accounts.sort_by(|a, b| a.account.account_id.cmp(&b.account.account_id));

    let mut strings: Vec<&str> = Vec::new();
    let mut index: HashMap<&str, u64> = HashMap::new();
    for history in &accounts {
        for t in &history.transactions {
            for s in std::iter::once(t.counterpart_name.as_str()).chain(t.labels.iter().map(String::as_str)) {
                if !s.is_empty() && !index.contains_key(s) {
                    index.insert(s, strings.len() as u64);
                    strings.push(s);
                }
            }
        }
    }

    let transactions: usize = accounts.iter().map(|h| h.transactions.len()).sum();
    let mut out = Vec::with_capacity(64 + accounts.len() * 48 + transactions * 24);
    out.push(FORMAT);
    put_uint(&mut out, strings.len() as u64);
    for s in &strings {
        put_bytes(&mut out, s.as_bytes());
    }
    put_uint(&mut out, accounts.len() as u64);
    for history in accounts {
        let a = &history.account;
        put_bytes(&mut out, a.account_id.as_str().as_bytes());
        out.push(account_type_index(a.account_type));
        out.extend_from_slice(a.currency.as_str().as_bytes());
        put_int(&mut out, cents(a.balance));
        let balance_day = day_number(a.balance_date);
        put_int(&mut out, balance_day);

        let mut ordered: Vec<&Transaction> = history.transactions.iter().collect();
        ordered.sort_by(|x, y| (x.booking_date, &x.transaction_id).cmp(&(y.booking_date, &y.transaction_id)));
        put_uint(&mut out, ordered.len() as u64);
        let mut previous: Option<i64> = None;
        for t in ordered {
            let day = day_number(t.booking_date);
            match previous {
                None => put_int(&mut out, day - balance_day),
                // Ordered by date: the difference is never negative.
                Some(p) => put_uint(&mut out, (day - p) as u64),
            }
            previous = Some(day);
            put_bytes(&mut out, t.transaction_id.as_str().as_bytes());
            put_int(&mut out, cents(t.amount));
            let counterpart = if t.counterpart_name.is_empty() { 0 } else { index[t.counterpart_name.as_str()] + 1 };
            put_uint(&mut out, counterpart);
            put_uint(&mut out, t.labels.len() as u64);
            for label in &t.labels {
                put_uint(&mut out, index[label.as_str()]);
            }
        }
    }
    out
}

fn decode_raw(user_id: UserId, raw: &[u8]) -> Result<UserData, DecodeError> {
    let mut r = Reader { bytes: raw };
    let format = r.byte()?;
    if format != FORMAT {
        return Err(DecodeError::Format(format));
    }
    let string_count = r.len()?;
    let mut strings = Vec::with_capacity(string_count);
    for _ in 0..string_count {
        strings.push(r.str("string")?.to_owned());
    }
    let string = |i: u64| strings.get(i as usize).ok_or(DecodeError::Invalid("string index"));

    let account_count = r.len()?;
    let mut accounts = Vec::with_capacity(account_count);
    for _ in 0..account_count {
        let account_id = AccountId::parse(r.str("accountId")?).map_err(|_| DecodeError::Invalid("accountId"))?;
        let account_type = *AccountType::ALL.get(usize::from(r.byte()?)).ok_or(DecodeError::Invalid("accountType"))?;
        let currency = Currency::parse(std::str::from_utf8(r.take(3)?).map_err(|_| DecodeError::Invalid("currency"))?)
            .ok_or(DecodeError::Invalid("currency"))?;
        let balance = money(r.int()?)?;
        let balance_day = r.int()?;
        let balance_date = date(balance_day)?;

        let count = r.len()?;
        let mut transactions = Vec::with_capacity(count);
        let mut day = balance_day;
        for i in 0..count {
            day = if i == 0 {
                day.checked_add(r.int()?)
            } else {
                i64::try_from(r.uint()?).ok().and_then(|d| day.checked_add(d))
            }
            .ok_or(DecodeError::Invalid("bookingDate"))?;
            let transaction_id =
                TransactionId::parse(r.str("transactionId")?).map_err(|_| DecodeError::Invalid("transactionId"))?;
            let amount = money(r.int()?)?;
            let counterpart_name = match r.uint()? {
                0 => String::new(),
                i => string(i - 1)?.clone(),
            };
            let label_count = r.len()?;
            let mut labels = Vec::with_capacity(label_count);
            for _ in 0..label_count {
                labels.push(string(r.uint()?)?.clone());
            }
            transactions.push(Transaction {
                transaction_id,
                booking_date: date(day)?,
                amount,
                currency,
                counterpart_name,
                labels,
            });
        }
        accounts.push(AccountHistory {
            account: Account { user_id: user_id.clone(), account_id, account_type, currency, balance, balance_date },
            transactions,
        });
    }
    if !r.bytes.is_empty() {
        return Err(DecodeError::Invalid("length: bytes after the last account"));
    }
    Ok(UserData { user_id, accounts })
}

fn account_type_index(t: AccountType) -> u8 {
    AccountType::ALL.iter().position(|&x| x == t).expect("every account type is in ALL") as u8
}

fn cents(m: Money) -> i64 {
    // Money keeps two decimals and stays below 10^16 units: its cents fit an i64.
    let mut d = m.decimal();
    d.rescale(2);
    d.mantissa() as i64
}

/// Cents of a stored amount or balance. Within Money's range (below 10^16 in magnitude, so below
/// 10^18 cents) it is built directly; the general decimal path would normalize every value.
fn money(cents: i64) -> Result<Money, DecodeError> {
    const MAX_CENTS: i64 = 1_000_000_000_000_000_000;
    if cents.unsigned_abs() >= MAX_CENTS as u64 {
        return Err(DecodeError::Invalid("amount"));
    }
    Ok(Money::from_cents(cents))
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");

fn day_number(d: NaiveDate) -> i64 {
    d.signed_duration_since(EPOCH).num_days()
}

/// Days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
const EPOCH_FROM_CE: i64 = 719_163;

fn date(day: i64) -> Result<NaiveDate, DecodeError> {
    day.checked_add(EPOCH_FROM_CE)
        .and_then(|d| i32::try_from(d).ok())
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .ok_or(DecodeError::Invalid("date"))
}

fn put_uint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_int(out: &mut Vec<u8>, v: i64) {
    put_uint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.bytes.split_first().ok_or(DecodeError::Truncated)?;
        self.bytes = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn uint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid("varint"))
    }

    fn int(&mut self) -> Result<i64, DecodeError> {
        let v = self.uint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A count: never more than the bytes left, so a corrupt count cannot make a huge allocation.
    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.uint()?;
        if n > self.bytes.len() as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Invalid(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(id: &str, date: &str, amount: i64, counterpart: &str, labels: &[&str]) -> Transaction {
        Transaction {
            transaction_id: TransactionId::parse(id).unwrap(),
            booking_date: date.parse().unwrap(),
            amount: Money::from_cents(amount),
            currency: Currency::parse("EUR").unwrap(),
            counterpart_name: counterpart.to_owned(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    fn account(id: &str, balance: i64, date: &str, transactions: Vec<Transaction>) -> AccountHistory {
        AccountHistory {
            account: Account {
                user_id: UserId::parse("u1").unwrap(),
                account_id: AccountId::parse(id).unwrap(),
                account_type: AccountType::Savings,
                currency: Currency::parse("EUR").unwrap(),
                balance: Money::from_cents(balance),
                balance_date: date.parse().unwrap(),
            },
            transactions,
        }
    }

    fn user() -> UserData {
        UserData {
            user_id: UserId::parse("u1").unwrap(),
            accounts: vec![
                account(
                    "a2",
                    -1_000_000_000_000_000 + 1,
                    "2024-05-31",
                    vec![
                        tx("t2", "2024-05-02", -4_999, "Allianz  AG", &["INSURANCE", "CONTRACT"]),
                        tx("t1", "2024-05-02", 12, "", &[]),
                        tx("t0", "2023-01-01", 99_999_999_999_999_999 / 10, "Allianz  AG", &["INSURANCE"]),
                        tx("t9", "2024-07-01", -1, "ACME", &["CONTRACT"]),
                    ],
                ),
                account("a1", 0, "1900-02-28", vec![]),
            ],
        }
    }

    #[test]
    fn a_user_decodes_to_what_was_encoded_in_store_order() {
        let mut expected = user();
        expected.accounts.sort_by(|a, b| a.account.account_id.cmp(&b.account.account_id));
        for h in &mut expected.accounts {
            h.transactions
                .sort_by(|x, y| (x.booking_date, &x.transaction_id).cmp(&(y.booking_date, &y.transaction_id)));
        }
        let stored = encode(&user()).unwrap();
        assert_eq!(decode(UserId::parse("u1").unwrap(), &stored).unwrap(), expected);
    }

    #[test]
    fn blocks_rejoin_into_the_record_and_are_never_larger_than_an_item_allows() {
        let record: Vec<u8> = (0..BLOCK_BYTES * 2 + 5).map(|i| i as u8).collect();
        let parts = blocks(&record);
        assert_eq!(parts.iter().map(|b| b.len()).collect::<Vec<_>>(), [BLOCK_BYTES, BLOCK_BYTES, 5]);
        assert_eq!(parts.concat(), record);
        assert_eq!(blocks(&[]).len(), 1);
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let stored = encode(&user()).unwrap();
        let raw = zstd::stream::decode_all(&stored[..]).unwrap();
        let u = || UserId::parse("u1").unwrap();
        for cut in 0..raw.len() {
            assert!(decode_raw(u(), &raw[..cut]).is_err(), "a record cut at {cut} must not decode");
        }
        let mut other = raw.clone();
        other[0] = 2;
        assert_eq!(decode_raw(u(), &other), Err(DecodeError::Format(2)));
        assert!(matches!(decode(u(), b"not zstd"), Err(DecodeError::Compression(_))));
    }

    #[test]
    fn the_size_bounds_hold_for_every_record() {
        let data = user();
        let bound = RECORD_BOUND
            + data
                .accounts
                .iter()
                .map(|h| {
                    account_bound(&h.account.account_id)
                        + h.transactions
                            .iter()
                            .map(|t| transaction_bound(&t.transaction_id, &t.counterpart_name, &t.labels))
                            .sum::<u64>()
                })
                .sum::<u64>();
        assert!(encode_raw(&data).len() as u64 <= bound);
        assert!(always_fits(bound));
        assert!(!always_fits((MAX_BLOCKS * BLOCK_BYTES) as u64));
        // Incompressible data grows a little, never beyond what `always_fits` allows for.
        let mut noise = vec![0u8; 1 << 20];
        rand::fill(&mut noise[..]);
        let compressed = zstd::bulk::compress(&noise, LEVEL).unwrap();
        assert!(compressed.len() as u64 <= noise.len() as u64 + noise.len() as u64 / 128 + 1024);
    }

    #[test]
    fn too_many_accounts_are_refused_before_anything_is_stored() {
        let mut many = user();
        many.accounts = (0..=MAX_ACCOUNTS).map(|i| account(&format!("a{i}"), 0, "2024-01-01", vec![])).collect();
        assert_eq!(encode(&many), Err(EncodeError::TooManyAccounts(MAX_ACCOUNTS + 1)));
    }
}
