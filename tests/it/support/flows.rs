//! The API flow of a highBalance job, driven through the handlers, and an independent reference
//! computation over the NDJSON files; the workers' runs of queued jobs, and the refresh applier's
//! runs of queued refresh messages, as the deployed consumers of the queues do them.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use segments_core::domain::refresh::RefreshMessage;
use segments_core::http::testing::{create_job_request, get_result_request, status_and_json};
use segments_core::usecases::Services;
use segments_core::usecases::run_shard::{Disposition, process_message};
use segments_core::usecases::segments::SegmentsServices;
use segments_core::usecases::segments::refresh::{ApplyOutcome, apply};
use serde_json::Value;

use super::backend::Backend;

/// Runs every message on the backend's job queue through the workers at `now`, until the queue is
/// empty (a run may queue more); returns how many runs there were. Every run must succeed.
pub async fn run_queued_jobs(b: &Backend, s: &Services, now: DateTime<Utc>) -> usize {
    let mut runs = 0;
    loop {
        let messages = b.queue_reader.lock().await.drain().await;
        if messages.is_empty() {
            return runs;
        }
        for m in messages {
            let body = serde_json::to_string(&m).expect("a message serializes");
            let disposition = process_message(&s.runner(), m.segment_type, &body, 1, now).await;
            assert_eq!(disposition, Disposition::Ack, "the run of {body}");
            runs += 1;
        }
    }
}

/// The messages on the refresh queue now.
pub async fn queued_refreshes(b: &Backend) -> Vec<RefreshMessage> {
    b.refresh_reader.lock().await.drain().await
}

/// Hands every message on the refresh queue to the applier at `now`, as its consumer does; each
/// run must succeed. Returns the messages with what their runs came to.
pub async fn apply_queued_refreshes(
    b: &Backend,
    s: &SegmentsServices,
    now: DateTime<Utc>,
) -> Vec<(RefreshMessage, ApplyOutcome)> {
    let mut outcomes = Vec::new();
    for m in queued_refreshes(b).await {
        let outcome = apply(s, &m, now).await.unwrap_or_else(|e| panic!("the run of {m:?} failed: {e}"));
        outcomes.push((m, outcome));
    }
    outcomes
}

/// Every scope of the financial segments.
pub const ALL_TYPE_SCOPES: &[&str] = &[
    "segments/highBalance",
    "segments/lowBalance",
    "segments/incomeSpendingSummary",
    "segments/insuranceSpending",
    "segments/financialBreakdown",
];

/// POSTs a job; returns the job id.
pub async fn post_job(s: &Services, mandator: &str, segment_type: &str, body: &str) -> String {
    let response =
        create_job::handle(&s.intake(), create_job_request(segment_type, body, Some(mandator), ALL_TYPE_SCOPES)).await;
    let (status, body) = status_and_json(response.expect("the handler answers"));
    assert_eq!(status, 202, "{segment_type}: {body}");
    body["jobId"].as_str().expect("a jobId").to_owned()
}

/// GETs one page.
pub async fn get_page(
    s: &Services,
    mandator: &str,
    segment_type: &str,
    job_id: &str,
    page: u32,
    per_page: u32,
) -> (u16, Value) {
    let (page, per_page) = (page.to_string(), per_page.to_string());
    let req = get_result_request(
        segment_type,
        job_id,
        &[("page", page.as_str()), ("perPage", per_page.as_str())],
        Some(mandator),
        ALL_TYPE_SCOPES,
    );
    status_and_json(get_result::handle(&s.reader(), req).await.expect("the handler answers"))
}

/// Reads every page of a completed job and checks the paging fields on the way.
pub async fn all_users(s: &Services, mandator: &str, segment_type: &str, job_id: &str, per_page: u32) -> Vec<Value> {
    let mut users = Vec::new();
    let mut page = 1;
    loop {
        let (status, body) = get_page(s, mandator, segment_type, job_id, page, per_page).await;
        assert_eq!(status, 200, "{body}");
        let total = body["totalElements"].as_u64().expect("totalElements");
        assert_eq!(body["totalPages"].as_u64(), Some(total.div_ceil(u64::from(per_page))));
        let batch = body["users"].as_array().expect("users").clone();
        if batch.is_empty() {
            assert_eq!(users.len() as u64, total);
            return users;
        }
        assert!(batch.len() <= per_page as usize);
        users.extend(batch);
        page += 1;
    }
}

/// highBalance computed directly from the files, by the definition of docs/semantics.md and nothing
/// else: balance − Σ amounts of the account's transactions with asOf < bookingDate ≤ balanceDate.
/// Returns userId → [(accountId, amount as exact decimal text)].
pub fn reference_high_balance(
    dir: &Path,
    mandator: &str,
    account_type: &str,
    threshold: &str,
    as_of: NaiveDate,
) -> BTreeMap<String, Vec<(String, String)>> {
    let threshold: Decimal = threshold.parse().expect("a decimal threshold");
    let read = |name: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(dir.join(name)).expect("the generated file");
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("JSON")).collect()
    };
    let dec = |v: &Value| -> Decimal { v.to_string().parse().expect("an exact decimal") };
    let mut balances: BTreeMap<(String, String), (Decimal, NaiveDate)> = BTreeMap::new();
    for a in read("accounts.ndjson") {
        if a["mandatorId"] != mandator || a["accountType"] != account_type {
            continue;
        }
        let key = (a["userId"].as_str().unwrap().to_owned(), a["accountId"].as_str().unwrap().to_owned());
        let date: NaiveDate = a["balanceDate"].as_str().unwrap().parse().unwrap();
        balances.insert(key, (dec(&a["balance"]), date));
    }
    let mut later: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    for t in read("transactions.ndjson") {
        let key = (t["userId"].as_str().unwrap().to_owned(), t["accountId"].as_str().unwrap().to_owned());
        let Some((_, balance_date)) = balances.get(&key) else { continue };
        let booked: NaiveDate = t["bookingDate"].as_str().unwrap().parse().unwrap();
        if as_of < booked && booked <= *balance_date {
            *later.entry(key).or_default() += dec(&t["amount"]);
        }
    }
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for ((user, account), (balance, balance_date)) in balances {
        let at = if as_of >= balance_date {
            balance
        } else {
            balance - later.get(&(user.clone(), account.clone())).copied().unwrap_or_default()
        };
        if at > threshold {
            out.entry(user).or_default().push((account, format!("{:.2}", at)));
        }
    }
    out
}

/// The service's users in the reference's shape, checking the order on the way.
pub fn as_reference(users: &[Value]) -> BTreeMap<String, Vec<(String, String)>> {
    let ids: Vec<&str> = users.iter().map(|u| u["userId"].as_str().expect("userId")).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "users must be sorted by userId");
    users
        .iter()
        .map(|u| {
            let accounts: Vec<(String, String)> = u["accounts"]
                .as_array()
                .expect("accounts")
                .iter()
                .map(|a| {
                    let amount: Decimal = a["amount"].to_string().parse().expect("an exact amount");
                    (a["accountId"].as_str().expect("accountId").to_owned(), format!("{amount:.2}"))
                })
                .collect();
            (u["userId"].as_str().unwrap().to_owned(), accounts)
        })
        .collect()
}

/// Every user of the NDJSON files in `dir`, assembled as a shard stream would (accounts by
/// accountId, transactions by bookingDate then transactionId).
pub fn users_from_files(dir: &Path) -> Vec<segments_core::domain::UserData> {
    use segments_core::domain::records::{AccountItem, AccountRecord, TransactionRecord};
    use segments_core::domain::{AccountHistory, UserData};
    let mut users: BTreeMap<String, BTreeMap<String, AccountHistory>> = BTreeMap::new();
    for line in std::fs::read_to_string(dir.join("accounts.ndjson")).unwrap().lines() {
        let (_, account) = serde_json::from_str::<AccountRecord>(line).unwrap().into_account();
        users
            .entry(account.user_id.to_string())
            .or_default()
            .insert(account.account_id.to_string(), AccountHistory { account, transactions: Vec::new() });
    }
    for line in std::fs::read_to_string(dir.join("transactions.ndjson")).unwrap().lines() {
        let (_, item) = serde_json::from_str::<TransactionRecord>(line).unwrap().into_item();
        let AccountItem::Transaction { user_id, account_id, transaction } = item else { unreachable!() };
        users.get_mut(user_id.as_str()).unwrap().get_mut(account_id.as_str()).unwrap().transactions.push(transaction);
    }
    users
        .into_values()
        .map(|accounts| {
            let mut accounts: Vec<AccountHistory> = accounts.into_values().collect();
            for a in &mut accounts {
                a.transactions.sort_by(|x, y| {
                    (x.booking_date, x.transaction_id.as_str()).cmp(&(y.booking_date, y.transaction_id.as_str()))
                });
            }
            UserData { user_id: accounts[0].account.user_id.clone(), accounts }
        })
        .collect()
}

/// The entries the computation gives for `body` over `users`, as JSON, in userId order.
pub fn expected_entries(
    users: &[segments_core::domain::UserData],
    segment_type: &str,
    body: &str,
    today: NaiveDate,
) -> Vec<Value> {
    use segments_core::rules::{SegmentRequest, SegmentSpec};
    let t = segment_type.parse().unwrap();
    let request = SegmentRequest::parse(t, body.as_bytes(), today).unwrap();
    let spec = SegmentSpec { as_of: request.as_of, params: request.params };
    users
        .iter()
        .filter_map(|u| spec.evaluate(u).unwrap())
        .map(|e| serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap())
        .collect()
}
