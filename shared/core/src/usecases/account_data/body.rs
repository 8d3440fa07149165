//! The bodies of the data API (`/data/users/{userId}`, docs/api.md): a user's account data to
//! store (PUT), a day's changes to it (PATCH), and the stored data as GET answers it.
//!
//! A body holds thousands of transactions, so every refusal names the field at fault as a JSON
//! pointer into the body (`/accounts/0/transactions/12/amount`); a field name alone would not say
//! which one. Values follow the rules of the importer (docs/data.md): identifiers, exact money read
//! from the number's literal (a string is a type error), `YYYY-MM-DD` dates, labels as strings;
//! unknown fields are refused.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use serde_json::Value;

use super::patch::{AccountPatch, UserPatch};
use crate::domain::{
    Account, AccountHistory, AccountId, AccountType, Currency, Transaction, TransactionId, UserData, UserId,
};
use crate::rules::body::{BodyError, FieldError, Fields, kind};
pub use crate::snapshot::MAX_ACCOUNTS;

/// Largest PUT or PATCH body. API Gateway takes 10 MB, but a Lambda function is invoked with at
/// most 6 MB, the event's headers and the body's JSON escaping included.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Largest user as GET answers it ([`UserDocument`]), so that every stored user can be read back
/// within the same 6 MB a response may have. A PATCH that would grow the user beyond it is refused.
pub const MAX_USER_BYTES: usize = MAX_BODY_BYTES;
/// Most transactions one request names (a PATCH counts the upserted and the deleted ones): a few
/// years of a busy account's history, and well inside [`MAX_BODY_BYTES`] at a usual size.
pub const MAX_TRANSACTIONS: usize = 20_000;
/// Bounds of a transaction's free text, shared with the importer. `purpose` is read to be checked
/// and dropped: it is never stored (docs/data.md).
pub use crate::domain::records::{MAX_COUNTERPART_CHARS, MAX_LABEL_CHARS, MAX_LABELS, MAX_PURPOSE_CHARS};

/// The body of `PUT /data/users/{userId}`: everything to store for `user_id`, accounts in the
/// order of the body (pointers into the body follow it; the store orders what it writes),
/// transactions ordered by (bookingDate, transactionId), each in its account's currency.
pub fn user_data(user_id: UserId, body: &[u8]) -> Result<UserData, BodyError> {
    let mut root = Fields::parse(body)?.with_pointer_names();
    let items = root.array("accounts")?.ok_or_else(|| FieldError::new("/accounts", "is required"))?;
    root.finish()?;
    if items.is_empty() {
        return Err(FieldError::new("/accounts", "must hold at least one account (DELETE erases a user)").into());
    }
    bounded(items.len(), MAX_ACCOUNTS, "/accounts", "accounts (a user's limit)")?;
    let mut requested = Budget::default();
    let mut first_of = HashMap::new();
    let mut accounts = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("/accounts/{i}");
        let mut f = object(item, &at)?;
        let account_id = required(&mut f, "accountId", |f, name| f.parsed(name, AccountId::parse))?;
        once(&mut first_of, account_id.clone(), i, |first| {
            FieldError::new(f.name("accountId"), format!("repeats the accountId of /accounts/{first}"))
        })?;
        let account_type = required(&mut f, "accountType", account_type)?;
        let currency = required(&mut f, "currency", |f, name| f.currency(name))?;
        let balance = f.required_money("balance")?;
        let balance_date = f.required_date("balanceDate")?;
        let listed = f.array("transactions")?.unwrap_or_default();
        requested.take(listed.len(), &f.name("transactions"))?;
        f.finish()?;
        let mut transactions = transaction_list(listed, &format!("{at}/transactions"), currency)?;
        transactions.sort_by(|a, b| (a.booking_date, &a.transaction_id).cmp(&(b.booking_date, &b.transaction_id)));
        let account = Account { user_id: user_id.clone(), account_id, account_type, currency, balance, balance_date };
        accounts.push(AccountHistory { account, transactions });
    }
    let user = UserData { user_id, accounts };
    check_size(&user)?;
    Ok(user)
}

/// The body of `PATCH /data/users/{userId}`, checked for shape: no account both changed and
/// deleted or named twice, no transaction both upserted and deleted or named twice in its
/// account. Whether it fits the stored data is [`UserPatch::apply`]'s to say.
pub fn user_patch(body: &[u8]) -> Result<UserPatch, BodyError> {
    let mut root = Fields::parse(body)?.with_pointer_names();
    let changed = root.array("accounts")?.unwrap_or_default();
    let deleted = root.array("deleteAccounts")?.unwrap_or_default();
    root.finish()?;
    if changed.is_empty() && deleted.is_empty() {
        return Err(
            FieldError::new("/accounts", "is empty and so is /deleteAccounts: the patch changes nothing").into()
        );
    }
    bounded(changed.len(), MAX_ACCOUNTS, "/accounts", "accounts (a user's limit)")?;
    bounded(deleted.len(), MAX_ACCOUNTS, "/deleteAccounts", "accounts (a user's limit)")?;
    let mut requested = Budget::default();
    let mut first_of = HashMap::new();
    let mut accounts = Vec::with_capacity(changed.len());
    for (i, item) in changed.into_iter().enumerate() {
        let at = format!("/accounts/{i}");
        let mut f = object(item, &at)?;
        let account_id = required(&mut f, "accountId", |f, name| f.parsed(name, AccountId::parse))?;
        once(&mut first_of, account_id.clone(), i, |first| {
            FieldError::new(f.name("accountId"), format!("repeats the accountId of /accounts/{first}"))
        })?;
        let balance = f.required_money("balance")?;
        let balance_date = f.required_date("balanceDate")?;
        let account_type = account_type(&mut f, "accountType")?;
        let currency = f.currency("currency")?;
        let upserted = f.array("upsertTransactions")?.unwrap_or_default();
        let removed = f.array("deleteTransactions")?.unwrap_or_default();
        requested.take(upserted.len(), &f.name("upsertTransactions"))?;
        requested.take(removed.len(), &f.name("deleteTransactions"))?;
        f.finish()?;
        // The account's stored currency replaces this one when the patch is applied.
        let provisional = currency.unwrap_or_else(no_currency);
        let upsert_transactions = transaction_list(upserted, &format!("{at}/upsertTransactions"), provisional)?;
        let upserted_at: HashMap<&TransactionId, usize> =
            upsert_transactions.iter().enumerate().map(|(j, t)| (&t.transaction_id, j)).collect();
        let delete_transactions = id_list(removed, &format!("{at}/deleteTransactions"), TransactionId::parse, |id| {
            upserted_at.get(id).map(|j| format!("{at}/upsertTransactions/{j}"))
        })?;
        accounts.push(AccountPatch {
            account_id,
            balance,
            balance_date,
            account_type,
            currency,
            upsert_transactions,
            delete_transactions,
        });
    }
    let delete_accounts =
        id_list(deleted, "/deleteAccounts", AccountId::parse, |id| first_of.get(id).map(|i| format!("/accounts/{i}")))?;
    Ok(UserPatch { accounts, delete_accounts })
}

/// Refuses a user whose data, as GET answers it, would be larger than [`MAX_USER_BYTES`], naming
/// the account at which the size passes the bound.
pub fn check_size(user: &UserData) -> Result<(), FieldError> {
    match running_size(user).position(|total| total > MAX_USER_BYTES) {
        None => Ok(()),
        Some(i) => Err(FieldError::new(
            format!("/accounts/{i}"),
            format!(
                "makes the user's data larger than {MAX_USER_BYTES} bytes as GET answers it; a user's data must \
                 fit one response"
            ),
        )),
    }
}

/// The size of the user's [`UserDocument`] up to and including each account, without writing it.
fn running_size(user: &UserData) -> impl Iterator<Item = usize> + '_ {
    // `{"userId":"…","accounts":[…]}`; ids need no escaping.
    let mut total = r#"{"userId":"","accounts":[]}"#.len() + user.user_id.as_str().len();
    user.accounts.iter().enumerate().map(move |(i, account)| {
        let mut size = ByteCount(0);
        // Writing into a counter cannot fail.
        let _ = serde_json::to_writer(&mut size, &AccountDocument(account));
        total += size.0 + usize::from(i > 0);
        total
    })
}

/// A user's stored data as GET answers it: the shape of a PUT body, with the `userId` and without
/// `purpose` (never stored); `counterpartName` and `labels` are always present (`""` and `[]`
/// when the transaction has none).
pub struct UserDocument<'a>(pub &'a UserData);

struct AccountDocument<'a>(&'a AccountHistory);
struct AccountList<'a>(&'a [AccountHistory]);
struct TransactionDocument<'a>(&'a Transaction);
struct TransactionList<'a>(&'a [Transaction]);

impl Serialize for UserDocument<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut user = s.serialize_struct("User", 2)?;
        user.serialize_field("userId", &self.0.user_id)?;
        user.serialize_field("accounts", &AccountList(&self.0.accounts))?;
        user.end()
    }
}

impl Serialize for AccountList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(AccountDocument))
    }
}

impl Serialize for AccountDocument<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = &self.0.account;
        let mut account = s.serialize_struct("Account", 6)?;
        account.serialize_field("accountId", &a.account_id)?;
        account.serialize_field("accountType", &a.account_type)?;
        account.serialize_field("currency", &a.currency)?;
        account.serialize_field("balance", &a.balance)?;
        account.serialize_field("balanceDate", &a.balance_date)?;
        account.serialize_field("transactions", &TransactionList(&self.0.transactions))?;
        account.end()
    }
}

impl Serialize for TransactionList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(TransactionDocument))
    }
}

impl Serialize for TransactionDocument<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut transaction = s.serialize_struct("Transaction", 5)?;
        transaction.serialize_field("transactionId", &t.transaction_id)?;
        transaction.serialize_field("bookingDate", &t.booking_date)?;
        transaction.serialize_field("amount", &t.amount)?;
        transaction.serialize_field("counterpartName", &t.counterpart_name)?;
        transaction.serialize_field("labels", &t.labels)?;
        transaction.end()
    }
}

/// Counts what is written, keeping nothing.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The transactions a request names so far, against [`MAX_TRANSACTIONS`].
#[derive(Default)]
struct Budget(usize);

impl Budget {
    fn take(&mut self, n: usize, pointer: &str) -> Result<(), FieldError> {
        self.0 += n;
        if self.0 > MAX_TRANSACTIONS {
            return Err(FieldError::new(
                pointer,
                format!("brings the request over {MAX_TRANSACTIONS} transactions; send the rest in another request"),
            ));
        }
        Ok(())
    }
}

/// ISO 4217's code for "no currency": what an upserted transaction carries until the patch gives
/// it its account's currency.
fn no_currency() -> Currency {
    Currency::parse("XXX").expect("XXX is three upper-case letters")
}

fn bounded(n: usize, max: usize, pointer: &str, what: &str) -> Result<(), FieldError> {
    if n > max { Err(FieldError::new(pointer, format!("may hold at most {max} {what}, not {n}"))) } else { Ok(()) }
}

/// The member at `pointer`, which must be an object.
fn object(value: Value, pointer: &str) -> Result<Fields, FieldError> {
    match value {
        Value::Object(map) => Ok(Fields::at_pointer(pointer.to_owned(), map)),
        other => Err(FieldError::new(pointer, format!("must be an object, not {}", kind(&other)))),
    }
}

/// A field that must be present, read by `read`.
fn required<T>(
    f: &mut Fields,
    name: &str,
    read: impl FnOnce(&mut Fields, &str) -> Result<Option<T>, FieldError>,
) -> Result<T, FieldError> {
    read(f, name)?.ok_or_else(|| FieldError::new(f.name(name), "is required"))
}

fn account_type(f: &mut Fields, name: &str) -> Result<Option<AccountType>, FieldError> {
    f.parsed(name, |s| s.parse::<AccountType>().map_err(|_| format!("must be one of {}", AccountType::names())))
}

/// Records the first position of `key`; a second one is refused with `repeated(first)`.
fn once<K: Eq + Hash>(
    first_of: &mut HashMap<K, usize>,
    key: K,
    at: usize,
    repeated: impl FnOnce(usize) -> FieldError,
) -> Result<(), FieldError> {
    match first_of.entry(key) {
        Entry::Occupied(first) => Err(repeated(*first.get())),
        Entry::Vacant(slot) => {
            slot.insert(at);
            Ok(())
        }
    }
}

/// The transactions of the array at `pointer`, each in `currency`, no transactionId twice.
fn transaction_list(items: Vec<Value>, pointer: &str, currency: Currency) -> Result<Vec<Transaction>, FieldError> {
    let mut first_of = HashMap::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for (j, item) in items.into_iter().enumerate() {
        let at = format!("{pointer}/{j}");
        let mut f = object(item, &at)?;
        let transaction_id = required(&mut f, "transactionId", |f, name| f.parsed(name, TransactionId::parse))?;
        once(&mut first_of, transaction_id.clone(), j, |first| {
            FieldError::new(f.name("transactionId"), format!("repeats the transactionId of {pointer}/{first}"))
        })?;
        let booking_date = f.required_date("bookingDate")?;
        let amount = f.required_money("amount")?;
        let counterpart_name = text(&mut f, "counterpartName", MAX_COUNTERPART_CHARS)?.unwrap_or_default();
        text(&mut f, "purpose", MAX_PURPOSE_CHARS)?;
        let labels = labels(&mut f)?;
        f.finish()?;
        out.push(Transaction { transaction_id, booking_date, amount, currency, counterpart_name, labels });
    }
    Ok(out)
}

/// An optional string of at most `max` characters.
fn text(f: &mut Fields, name: &str, max: usize) -> Result<Option<String>, FieldError> {
    match f.string(name)? {
        Some(s) if s.chars().count() > max => {
            Err(FieldError::new(f.name(name), format!("must be at most {max} characters")))
        }
        other => Ok(other),
    }
}

fn labels(f: &mut Fields) -> Result<Vec<String>, FieldError> {
    let pointer = f.name("labels");
    let items = f.array("labels")?.unwrap_or_default();
    bounded(items.len(), MAX_LABELS, &pointer, "labels")?;
    items
        .into_iter()
        .enumerate()
        .map(|(k, item)| match item {
            Value::String(s)
                if !s.is_empty() && s.chars().count() <= MAX_LABEL_CHARS && !s.chars().any(char::is_control) =>
            {
                Ok(s)
            }
            Value::String(_) => Err(FieldError::new(
                format!("{pointer}/{k}"),
                format!("must be a label of 1 to {MAX_LABEL_CHARS} characters without control characters"),
            )),
            other => Err(FieldError::new(format!("{pointer}/{k}"), format!("must be a string, not {}", kind(&other)))),
        })
        .collect()
}

/// The ids of the array at `pointer`, none twice; `conflict` names where else the request names an
/// id that must not be there too.
fn id_list<T: Clone + Eq + Hash, E: std::fmt::Display>(
    items: Vec<Value>,
    pointer: &str,
    parse: impl Fn(&str) -> Result<T, E>,
    conflict: impl Fn(&T) -> Option<String>,
) -> Result<Vec<T>, FieldError> {
    let mut first_of = HashMap::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for (k, item) in items.into_iter().enumerate() {
        let at = format!("{pointer}/{k}");
        let Value::String(text) = item else {
            return Err(FieldError::new(at, format!("must be an id (a string), not {}", kind(&item))));
        };
        let id = parse(&text).map_err(|e| FieldError::new(&at, e.to_string()))?;
        if let Some(elsewhere) = conflict(&id) {
            return Err(FieldError::new(at, format!("names {text}, which {elsewhere} names too")));
        }
        once(&mut first_of, id.clone(), k, |first| {
            FieldError::new(&at, format!("repeats {text}, named at {pointer}/{first}"))
        })?;
        out.push(id);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Money;
    use serde_json::json;

    fn user() -> UserId {
        UserId::parse("u-1").unwrap()
    }

    fn put(body: &Value) -> Result<UserData, BodyError> {
        user_data(user(), body.to_string().as_bytes())
    }

    fn pointer(e: BodyError) -> String {
        match e {
            BodyError::Field(f) => f.field,
            BodyError::Malformed(m) => panic!("malformed: {}", m.0),
        }
    }

    fn transaction(id: &str) -> Value {
        json!({"transactionId": id, "bookingDate": "2024-05-02", "amount": -950.00,
               "counterpartName": "ACME Estates", "purpose": "rent May", "labels": ["RENT"]})
    }

    fn account(id: &str, transactions: Vec<Value>) -> Value {
        json!({"accountId": id, "accountType": "checking", "currency": "EUR", "balance": 1234.56,
               "balanceDate": "2024-05-31", "transactions": transactions})
    }

    #[test]
    fn a_put_body_becomes_the_user_in_its_accounts_currency_without_purpose() {
        let body = json!({"accounts": [
            account("a-2", vec![transaction("t-2"), json!({"transactionId": "t-1", "bookingDate": "2024-05-01", "amount": 1e3})]),
            account("a-1", vec![]),
        ]});
        let data = put(&body).unwrap();
        assert_eq!(data.user_id, user());
        let ids: Vec<&str> = data.accounts.iter().map(|a| a.account.account_id.as_str()).collect();
        assert_eq!(ids, ["a-2", "a-1"], "the body's order, which the pointers of later errors follow");
        let a2 = &data.accounts[0];
        assert_eq!((a2.account.user_id.as_str(), a2.account.balance), ("u-1", Money::parse("1234.56").unwrap()));
        let t: Vec<(&str, String, &str)> = a2
            .transactions
            .iter()
            .map(|t| (t.transaction_id.as_str(), t.amount.to_string(), t.currency.as_str()))
            .collect();
        assert_eq!(t, [("t-1", "1000.00".to_owned(), "EUR"), ("t-2", "-950.00".to_owned(), "EUR")]);
        assert_eq!((a2.transactions[0].counterpart_name.as_str(), a2.transactions[0].labels.len()), ("", 0));
        assert_eq!(a2.transactions[1].labels, ["RENT"]);
    }

    #[test]
    fn every_bad_put_field_is_named_by_its_pointer() {
        let with = |f: &dyn Fn(&mut Value)| {
            let mut body = json!({"accounts": [account("a-1", vec![transaction("t-1"), transaction("t-2")])]});
            f(&mut body);
            body
        };
        let tx = "/accounts/0/transactions/1";
        let long = "x".repeat(MAX_COUNTERPART_CHARS + 1);
        let cases: Vec<(Value, String)> = vec![
            (json!({}), "/accounts".into()),
            (json!({"accounts": []}), "/accounts".into()),
            (json!({"accounts": [], "user": 1}), "/user".into()),
            (json!({"accounts": {}}), "/accounts".into()),
            (json!({"accounts": [1]}), "/accounts/0".into()),
            (with(&|b| b["accounts"][0]["accountId"] = json!("a#1")), "/accounts/0/accountId".into()),
            (with(&|b| b["accounts"][0]["accountType"] = json!("giro")), "/accounts/0/accountType".into()),
            (with(&|b| b["accounts"][0]["currency"] = json!("eur")), "/accounts/0/currency".into()),
            (with(&|b| b["accounts"][0]["balance"] = json!("12.00")), "/accounts/0/balance".into()),
            (with(&|b| b["accounts"][0]["balanceDate"] = json!("2024-5-31")), "/accounts/0/balanceDate".into()),
            (with(&|b| b["accounts"][0]["iban"] = json!("DE00")), "/accounts/0/iban".into()),
            (with(&|b| b["accounts"][0]["a/b~c"] = json!(1)), "/accounts/0/a~1b~0c".into()),
            (
                with(&|b| {
                    b["accounts"][0].as_object_mut().unwrap().remove("currency");
                }),
                "/accounts/0/currency".into(),
            ),
            (with(&|b| b["accounts"][0]["transactions"][1]["amount"] = json!(1.001)), format!("{tx}/amount")),
            (with(&|b| b["accounts"][0]["transactions"][1]["amount"] = json!("1.00")), format!("{tx}/amount")),
            (
                with(&|b| b["accounts"][0]["transactions"][1]["bookingDate"] = json!("2024-02-30")),
                format!("{tx}/bookingDate"),
            ),
            (
                with(&|b| b["accounts"][0]["transactions"][1]["transactionId"] = json!("t-1")),
                format!("{tx}/transactionId"),
            ),
            (with(&|b| b["accounts"][0]["transactions"][1]["currency"] = json!("EUR")), format!("{tx}/currency")),
            (with(&|b| b["accounts"][0]["transactions"][1]["labels"] = json!(["RENT", 7])), format!("{tx}/labels/1")),
            (with(&|b| b["accounts"][0]["transactions"][1]["labels"] = json!([""])), format!("{tx}/labels/0")),
            (with(&|b| b["accounts"][0]["transactions"][1]["labels"] = json!("RENT")), format!("{tx}/labels")),
            (
                with(&|b| b["accounts"][0]["transactions"][1]["counterpartName"] = json!(long)),
                format!("{tx}/counterpartName"),
            ),
            (with(&|b| b["accounts"][0]["transactions"][1]["purpose"] = json!(7)), format!("{tx}/purpose")),
            (
                with(&|b| {
                    let again = b["accounts"][0].clone();
                    b["accounts"].as_array_mut().unwrap().push(again);
                }),
                "/accounts/1/accountId".into(),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(pointer(put(&body).unwrap_err()), expected, "{body}");
        }
        assert!(matches!(user_data(user(), b"[1]"), Err(BodyError::Malformed(_))));
        assert!(matches!(user_data(user(), b"{\"accounts\":"), Err(BodyError::Malformed(_))));
    }

    #[test]
    fn the_limits_of_a_put_are_enforced_at_the_first_field_past_them() {
        let accounts: Vec<Value> = (0..=MAX_ACCOUNTS).map(|i| account(&format!("a-{i}"), vec![])).collect();
        assert_eq!(pointer(put(&json!({"accounts": accounts[..MAX_ACCOUNTS + 1]})).unwrap_err()), "/accounts");
        assert!(put(&json!({"accounts": accounts[..MAX_ACCOUNTS]})).is_ok());

        let half = MAX_TRANSACTIONS / 2;
        let many = |n: usize, prefix: &str| -> Vec<Value> {
            (0..n)
                .map(|j| json!({"transactionId": format!("{prefix}{j}"), "bookingDate": "2024-01-01", "amount": 1}))
                .collect()
        };
        let at_limit =
            json!({"accounts": [account("a-1", many(half, "t")), account("a-2", many(MAX_TRANSACTIONS - half, "t"))]});
        assert!(put(&at_limit).is_ok());
        let over = json!({"accounts": [account("a-1", many(half, "t")), account("a-2", many(MAX_TRANSACTIONS - half + 1, "t"))]});
        assert_eq!(pointer(put(&over).unwrap_err()), "/accounts/1/transactions");

        let labels: Vec<String> = (0..=MAX_LABELS).map(|k| format!("L{k}")).collect();
        let mut t = transaction("t-1");
        t["labels"] = json!(labels);
        assert_eq!(
            pointer(put(&json!({"accounts": [account("a-1", vec![t])]})).unwrap_err()),
            "/accounts/0/transactions/0/labels"
        );
    }

    #[test]
    fn a_user_that_would_not_fit_one_response_is_refused_at_the_account_that_overflows() {
        let name = "n".repeat(MAX_COUNTERPART_CHARS);
        let big = |prefix: &str| -> Vec<Value> {
            (0..MAX_TRANSACTIONS / 2)
                .map(|j| json!({"transactionId": format!("{prefix}{j}"), "bookingDate": "2024-01-01", "amount": 1, "counterpartName": name}))
                .collect()
        };
        let body = json!({"accounts": [account("a-1", big("t")), account("a-2", big("t"))]});
        assert_eq!(pointer(put(&body).unwrap_err()), "/accounts/1");
        let data = put(&json!({"accounts": [account("a-1", big("t"))]})).unwrap();
        let size = serde_json::to_vec(&UserDocument(&data)).unwrap().len();
        assert!(size > MAX_USER_BYTES / 2 && size <= MAX_USER_BYTES, "{size}");
    }

    #[test]
    fn the_counted_size_is_the_written_size() {
        let body = json!({"accounts": [account("a-1", vec![transaction("t-1")]), account("a-2", vec![]), account("a-3", vec![transaction("t-2")])]});
        let data = put(&body).unwrap();
        let written = serde_json::to_vec(&UserDocument(&data)).unwrap().len();
        assert_eq!(running_size(&data).last(), Some(written));
    }

    #[test]
    fn a_patch_body_becomes_the_patch() {
        let body = json!({
            "accounts": [
                {"accountId": "a-1", "balance": 10, "balanceDate": "2024-06-01",
                 "upsertTransactions": [transaction("t-9")], "deleteTransactions": ["t-1"]},
                {"accountId": "a-3", "balance": 0, "balanceDate": "2024-06-01", "accountType": "savings", "currency": "CHF"}
            ],
            "deleteAccounts": ["a-2"]
        });
        let patch = user_patch(body.to_string().as_bytes()).unwrap();
        assert_eq!(patch.delete_accounts, [AccountId::parse("a-2").unwrap()]);
        let a1 = &patch.accounts[0];
        assert_eq!((a1.account_type, a1.currency), (None, None));
        assert_eq!(a1.upsert_transactions[0].transaction_id.as_str(), "t-9");
        assert_eq!(a1.delete_transactions, [TransactionId::parse("t-1").unwrap()]);
        let a3 = &patch.accounts[1];
        assert_eq!(
            (a3.account_type, a3.currency.map(|c| c.to_string())),
            (Some(AccountType::Savings), Some("CHF".into()))
        );
        assert!(user_patch(br#"{"deleteAccounts":["a-1"]}"#).is_ok());
    }

    #[test]
    fn every_bad_patch_field_is_named_by_its_pointer() {
        let a = |extra: Value| {
            let mut account = json!({"accountId": "a-1", "balance": 10, "balanceDate": "2024-06-01"});
            for (k, v) in extra.as_object().unwrap() {
                account[k] = v.clone();
            }
            account
        };
        let cases: Vec<(Value, &str)> = vec![
            (json!({}), "/accounts"),
            (json!({"accounts": [], "deleteAccounts": []}), "/accounts"),
            (json!({"accounts": [a(json!({"transactions": []}))]}), "/accounts/0/transactions"),
            (json!({"accounts": [{"accountId": "a-1", "balanceDate": "2024-06-01"}]}), "/accounts/0/balance"),
            (json!({"accounts": [a(json!({"currency": "EURO"}))]}), "/accounts/0/currency"),
            (json!({"accounts": [a(json!({"accountType": "x"}))]}), "/accounts/0/accountType"),
            (json!({"accounts": [a(json!({})), a(json!({}))]}), "/accounts/1/accountId"),
            (json!({"accounts": [a(json!({}))], "deleteAccounts": ["a-1"]}), "/deleteAccounts/0"),
            (json!({"deleteAccounts": ["a-2", "a-2"]}), "/deleteAccounts/1"),
            (json!({"deleteAccounts": [{"accountId": "a-2"}]}), "/deleteAccounts/0"),
            (json!({"deleteAccounts": ["a 2"]}), "/deleteAccounts/0"),
            (
                json!({"accounts": [a(json!({"upsertTransactions": [transaction("t-1")], "deleteTransactions": ["t-1"]}))]}),
                "/accounts/0/deleteTransactions/0",
            ),
            (
                json!({"accounts": [a(json!({"deleteTransactions": ["t-1", "t-2", "t-1"]}))]}),
                "/accounts/0/deleteTransactions/2",
            ),
            (
                json!({"accounts": [a(json!({"upsertTransactions": [transaction("t-1"), transaction("t-1")]}))]}),
                "/accounts/0/upsertTransactions/1/transactionId",
            ),
            (
                json!({"accounts": [a(json!({"upsertTransactions": [{"transactionId": "t-1", "bookingDate": "2024-01-01", "amount": 1, "currency": "EUR"}]}))]}),
                "/accounts/0/upsertTransactions/0/currency",
            ),
        ];
        for (body, expected) in cases {
            let e = user_patch(body.to_string().as_bytes()).unwrap_err();
            assert_eq!(pointer(e), expected, "{body}");
        }
        let ids: Vec<String> = (0..=MAX_TRANSACTIONS).map(|j| format!("t{j}")).collect();
        let over = json!({"accounts": [a(json!({"deleteTransactions": ids}))]});
        assert_eq!(pointer(user_patch(over.to_string().as_bytes()).unwrap_err()), "/accounts/0/deleteTransactions");
    }

    #[test]
    fn the_document_has_the_put_shape_with_the_user_id_and_round_trips() {
        let body = json!({"accounts": [account("a-1", vec![transaction("t-1"), json!({"transactionId": "t-0", "bookingDate": "2024-04-30", "amount": 0.1})])]});
        let data = put(&body).unwrap();
        let document = serde_json::to_value(UserDocument(&data)).unwrap();
        // Parsed from text: `json!` would read 0.10 through a float.
        let expected: Value = serde_json::from_str(
            r#"{"userId": "u-1", "accounts": [{"accountId": "a-1", "accountType": "checking", "currency": "EUR",
                "balance": 1234.56, "balanceDate": "2024-05-31", "transactions": [
                {"transactionId": "t-0", "bookingDate": "2024-04-30", "amount": 0.10, "counterpartName": "", "labels": []},
                {"transactionId": "t-1", "bookingDate": "2024-05-02", "amount": -950.00, "counterpartName": "ACME Estates",
                 "labels": ["RENT"]}]}]}"#,
        )
        .unwrap();
        assert_eq!(document, expected);
        assert!(serde_json::to_string(&UserDocument(&data)).unwrap().contains(r#""amount":0.10"#));
        let mut again = document.clone();
        again.as_object_mut().unwrap().remove("userId");
        assert_eq!(put(&again).unwrap(), data);
    }
}
