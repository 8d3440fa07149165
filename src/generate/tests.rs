use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate, TimeDelta};

use super::*;
use segments_core::domain::{Account, AccountHistory, AccountType, Month, Transaction};

/// A history from May 2023 to 20 June 2025: it holds 29 February 2024, and the end date's month
/// is incomplete.
fn end() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 6, 20).unwrap()
}

fn config(users: u64) -> GenerateConfig {
    GenerateConfig::new(users, end())
}

fn ndjson(config: &GenerateConfig) -> (Vec<u8>, Vec<u8>, GenerateSummary) {
    let (mut accounts, mut transactions) = (Vec::new(), Vec::new());
    let summary = write_ndjson(config, &mut accounts, &mut transactions, |_| {}).unwrap();
    (accounts, transactions, summary)
}

fn lines<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Vec<T> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Users shared by the tests that look at the shape of the data, with each account's history as
/// the segment computations see it.
struct Sample {
    users: Vec<Vec<AccountHistory>>,
    records: Vec<GeneratedUser>,
    /// Each account's balance before the first day of the history, as the generator chose it.
    starts: Vec<Vec<Money>>,
}

const SAMPLE_USERS: u64 = 1_000;

fn sample() -> &'static Sample {
    static SAMPLE: OnceLock<Sample> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let generator = Generator::new(&config(SAMPLE_USERS));
        let (mut records, mut starts) = (Vec::new(), Vec::new());
        for index in 0..SAMPLE_USERS {
            let (user_id, accounts) = generator.accounts(index);
            starts.push(accounts.iter().map(|a| Money::from_cents(a.start)).collect());
            records.push(generator.records(&user_id, accounts));
        }
        let users = records.iter().map(histories).collect();
        Sample { users, records, starts }
    })
}

fn histories(user: &GeneratedUser) -> Vec<AccountHistory> {
    user.accounts
        .iter()
        .map(|a| {
            let (_, account) = a.clone().into_account();
            let transactions = user
                .transactions
                .iter()
                .filter(|t| t.account_id == a.account_id)
                .map(|t| Transaction {
                    transaction_id: t.transaction_id.clone(),
                    booking_date: t.booking_date,
                    amount: t.amount,
                    currency: t.currency,
                    counterpart_name: t.counterpart_name.clone(),
                    labels: t.labels.clone(),
                })
                .collect();
            AccountHistory { account, transactions }
        })
        .collect()
}

fn accounts() -> impl Iterator<Item = &'static AccountHistory> {
    sample().users.iter().flatten()
}

fn transactions() -> impl Iterator<Item = (&'static Account, &'static Transaction)> {
    accounts().flat_map(|h| h.transactions.iter().map(move |t| (&h.account, t)))
}

fn has(t: &Transaction, label: &str) -> bool {
    t.labels.iter().any(|l| l == label)
}

fn history_start() -> NaiveDate {
    Month::of(end()).first_day() - chrono::Months::new(DEFAULT_MONTHS - 1)
}

/// The 24 complete months before the end date's month.
fn window() -> Vec<Month> {
    Month::window_before(end(), 24)
}

/// End-of-day balances of every day from the day before the history to the end date, walked day
/// by day from the account's balance at the start.
fn daily_balances(h: &AccountHistory) -> Vec<(NaiveDate, Money)> {
    let mut day = history_start() - TimeDelta::days(1);
    let mut balance = h.balance_at_end_of(day);
    let mut txs = h.transactions.iter().peekable();
    let mut out = Vec::new();
    while day <= end() {
        while let Some(t) = txs.next_if(|t| t.booking_date <= day) {
            if t.booking_date == day {
                balance += t.amount;
            }
        }
        out.push((day, balance));
        day = day.succ_opt().unwrap();
    }
    out
}

// --- Determinism ---

#[test]
fn the_same_config_writes_the_same_bytes_and_another_seed_other_bytes() {
    let c = config(30);
    let (a1, t1, s1) = ndjson(&c);
    let (a2, t2, s2) = ndjson(&c);
    assert_eq!((a1.as_slice(), t1.as_slice(), s1), (a2.as_slice(), t2.as_slice(), s2));
    let (a3, t3, _) = ndjson(&GenerateConfig { seed: c.seed + 1, ..c });
    assert_ne!(a1, a3);
    assert_ne!(t1, t3);
}

#[test]
fn a_users_data_depends_only_on_the_seed_and_its_index() {
    let small = config(10);
    let large = config(5_000);
    let seventh = user(&small, 7);
    assert_eq!(seventh, user(&large, 7));
    assert_eq!(Some(&seventh), users(&small).collect::<Vec<_>>().get(7));
    assert_eq!(seventh.accounts[0].user_id.as_str(), "user-0000008");
    assert_ne!(seventh, user(&GenerateConfig { seed: 7, ..small }, 7));
}

#[test]
fn the_written_lines_are_exactly_the_serialized_records() {
    let c = config(30);
    let (accounts, transactions, summary) = ndjson(&c);
    let (mut expected_accounts, mut expected_transactions) = (Vec::new(), Vec::new());
    for u in users(&c) {
        for a in &u.accounts {
            serde_json::to_writer(&mut expected_accounts, a).unwrap();
            expected_accounts.push(b'\n');
        }
        for t in &u.transactions {
            serde_json::to_writer(&mut expected_transactions, t).unwrap();
            expected_transactions.push(b'\n');
        }
    }
    assert!(accounts == expected_accounts, "accounts.ndjson differs from the records");
    assert!(transactions == expected_transactions, "transactions.ndjson differs from the records");

    let parsed_accounts: Vec<AccountRecord> = lines(&accounts);
    let parsed_transactions: Vec<TransactionRecord> = lines(&transactions);
    let records: Vec<GeneratedUser> = users(&c).collect();
    assert_eq!(parsed_accounts, records.iter().flat_map(|u| u.accounts.clone()).collect::<Vec<_>>());
    assert_eq!(parsed_transactions, records.iter().flat_map(|u| u.transactions.clone()).collect::<Vec<_>>());
    assert_eq!(
        summary,
        GenerateSummary {
            users: 30,
            accounts: parsed_accounts.len() as u64,
            transactions: parsed_transactions.len() as u64
        }
    );
}

#[test]
fn amounts_and_dates_serialize_like_money_and_naive_date() {
    for cents in [0, 1, -1, 5, -50, 99, -100, 12_345, -123_456_789, 999_999_999_999_999] {
        let expected = serde_json::to_string(&Money::from_cents(cents)).unwrap();
        assert_eq!(serde_json::to_string(&Cents(cents)).unwrap(), expected);
    }
    for (y, m, d) in [(2024, 2, 29), (1999, 12, 31), (1, 1, 1), (9999, 12, 31), (10_000, 1, 1), (-5, 3, 4)] {
        let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(serde_json::to_string(&Day(date)).unwrap(), serde_json::to_string(&date).unwrap());
    }
}

#[test]
fn progress_counts_up_to_the_number_of_users() {
    let mut seen = Vec::new();
    let summary = write_ndjson(&config(100), io::sink(), io::sink(), |n| seen.push(n)).unwrap();
    assert_eq!(summary.users, 100);
    assert_eq!(seen.last(), Some(&100));
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

    let mut seen = Vec::new();
    let summary = write_ndjson(&config(0), io::sink(), io::sink(), |n| seen.push(n)).unwrap();
    assert_eq!(summary, GenerateSummary::default());
    assert!(seen.is_empty());
}

#[test]
fn a_short_history_still_generates() {
    for months in [0, 1, 2, 3] {
        let c = GenerateConfig { months, ..config(40) };
        let first = Month::of(end()).first_day();
        for u in users(&c) {
            let months_back = months.max(1) - 1;
            assert!(u.transactions.iter().all(|t| t.booking_date >= first - chrono::Months::new(months_back)));
        }
    }
}

// --- Consistency ---

#[test]
fn balances_are_the_start_plus_the_transactions_up_to_the_balance_date() {
    let first_day = history_start();
    let mut after_balance_date = 0;
    for (histories, starts) in sample().users.iter().zip(&sample().starts) {
        assert_eq!(starts.len(), histories.len());
        for (&start, h) in starts.iter().zip(histories) {
            let a = &h.account;
            assert_eq!(a.balance_date, end());
            let booked: Money =
                h.transactions.iter().filter(|t| t.booking_date <= a.balance_date).map(|t| t.amount).sum();
            assert_eq!(a.balance, start + booked, "{}", a.account_id);
            // The same, through the domain's definition of an end-of-day balance.
            assert_eq!(h.balance_at_end_of(first_day.pred_opt().unwrap()), start);
            assert!(h.transactions.iter().all(|t| t.booking_date >= first_day && t.currency == a.currency));
            if h.transactions.iter().any(|t| t.booking_date > a.balance_date) {
                after_balance_date += 1;
            }
        }
    }
    // Some accounts have bookings after the balance date, but few.
    let accounts = accounts().count();
    assert!(after_balance_date > 0 && after_balance_date * 50 < accounts, "{after_balance_date} of {accounts}");
}

#[test]
fn ids_are_unique_valid_and_in_storage_order() {
    let mut users_seen = Vec::new();
    for (u, histories) in sample().records.iter().zip(&sample().users) {
        let user_id = &u.accounts[0].user_id;
        users_seen.push(user_id.clone());
        assert!(u.accounts.iter().all(|a| &a.user_id == user_id && a.mandator_id.as_str() == "demo"));
        assert!(u.transactions.iter().all(|t| &t.user_id == user_id));
        assert!(u.accounts.windows(2).all(|w| w[0].account_id < w[1].account_id));
        let order: Vec<_> = u.transactions.iter().map(|t| (&t.account_id, t.booking_date, &t.transaction_id)).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{user_id}: transactions not in storage order");
        for h in histories {
            let ids: HashSet<_> = h.transactions.iter().map(|t| &t.transaction_id).collect();
            assert_eq!(ids.len(), h.transactions.len());
            // Transaction ids ascend with the booking date.
            assert!(h.transactions.windows(2).all(|w| w[0].transaction_id < w[1].transaction_id));
        }
    }
    assert!(users_seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(users_seen[0].as_str(), "user-0000001");
    assert_eq!(users_seen.last().unwrap().as_str(), "user-0001000");
}

#[test]
fn amounts_are_cents_within_range() {
    let limit = Money::from_cents(10_000_000_000);
    for (a, t) in transactions() {
        assert!(t.amount.abs() < limit && t.amount.decimal().scale() == 2, "{}: {}", a.account_id, t.amount);
    }
    assert!(accounts().all(|h| h.account.balance.abs() < Money::from_cents(100_000_000_000)));
}

// --- Coverage ---

#[test]
fn every_account_type_and_some_foreign_currencies_appear() {
    let types: BTreeSet<AccountType> = accounts().map(|h| h.account.account_type).collect();
    assert_eq!(types.len(), AccountType::ALL.len(), "{types:?}");
    let checking_users =
        sample().users.iter().filter(|u| u.iter().any(|h| h.account.account_type == AccountType::Checking)).count();
    assert!(checking_users * 100 > SAMPLE_USERS as usize * 90);
    for code in ["USD", "CHF"] {
        let high = accounts()
            .filter(|h| h.account.currency.as_str() == code && h.account.balance > Money::from_cents(500_000))
            .count();
        assert!(high >= 5, "{code}: {high} accounts above 5000");
    }
    assert!(accounts().any(|h| h.transactions.is_empty()));
    let per_user = sample().users.iter().map(Vec::len).sum::<usize>() as f64 / SAMPLE_USERS as f64;
    assert!((1.8..=3.5).contains(&per_user), "{per_user} accounts per user");
}

#[test]
fn volume_per_user_suits_benchmarks() {
    let per_user = transactions().count() as f64 / SAMPLE_USERS as f64;
    assert!((150.0..=400.0).contains(&per_user), "{per_user} transactions per user");
}

#[test]
fn balance_profiles_cover_high_low_and_recovered_overdrafts() {
    let checking: Vec<&AccountHistory> =
        accounts().filter(|h| h.account.account_type == AccountType::Checking && !h.transactions.is_empty()).collect();
    let window = window();
    let (mut high, mut low, mut recovered) = (0, 0, 0);
    for h in &checking {
        if h.account.balance > Money::from_cents(500_000) {
            high += 1;
        }
        let daily = daily_balances(h);
        // lowBalance with threshold 250 over 24 months: some day of every month below it.
        let threshold = Money::from_cents(25_000);
        if window.iter().all(|m| daily.iter().any(|(d, b)| m.contains(*d) && *b < threshold)) {
            low += 1;
        }
        // An overdraft followed by a non-negative balance within a month.
        let overdrawn = daily.iter().position(|(_, b)| b.is_negative());
        if let Some(i) = overdrawn
            && daily[i..].iter().take(31).any(|(_, b)| !b.is_negative())
        {
            recovered += 1;
        }
    }
    let n = checking.len();
    assert!(high * 100 > n * 10, "{high} of {n} above 5000");
    assert!(low * 100 > n * 8 && low * 100 < n * 40, "{low} of {n} low in every month");
    assert!(recovered * 100 > n * 5, "{recovered} of {n} recovered from an overdraft");
}

#[test]
fn salaries_come_monthly_in_some_months_or_never() {
    let window = window();
    let (mut every, mut some, mut none, mut twice) = (0, 0, 0, 0);
    for u in &sample().users {
        let Some(main) = u.iter().find(|h| h.account.account_type == AccountType::Checking) else { continue };
        if main.transactions.is_empty() {
            continue;
        }
        let mut per_month: BTreeMap<Month, usize> = BTreeMap::new();
        for t in main.transactions.iter().filter(|t| has(t, "SALARY") && !has(t, "BONUS")) {
            *per_month.entry(Month::of(t.booking_date)).or_default() += 1;
        }
        let months = window.iter().filter(|m| per_month.contains_key(m)).count();
        match months {
            0 => none += 1,
            m if m == window.len() => every += 1,
            _ => some += 1,
        }
        if per_month.values().any(|&c| c >= 2) {
            twice += 1;
        }
    }
    assert!(every > 0 && some > 0 && none > 0, "every {every}, some {some}, none {none}");
    assert!(some * 100 > SAMPLE_USERS as usize * 5, "{some} paid in some months only");
    // Paydays moved before a weekend shift a salary into the previous month now and then.
    assert!(twice > 0);
}

/// The insurance type labels of docs/semantics.md in order of precedence, with their types.
const TYPES: [(&str, &str); 6] = [
    ("HEALTHINSURANCE", "HEALTH"),
    ("LIFEINSURANCE", "LIFE"),
    ("LIABILITYINSURANCE", "LIABILITY"),
    ("CARINSURANCE", "CAR"),
    ("HOUSEHOLDINSURANCE", "HOUSEHOLD"),
    ("LEGALINSURANCE", "LEGAL_PROTECTION"),
];

fn insurance_type(t: &Transaction) -> Option<&'static str> {
    TYPES.iter().find(|(label, _)| has(t, label)).map(|(_, ty)| *ty).or(has(t, "INSURANCE").then_some("OTHER"))
}

fn provider_key(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ").to_uppercase()
}

fn frequency(dates: &BTreeSet<NaiveDate>) -> &'static str {
    let days: Vec<i64> = dates.iter().collect::<Vec<_>>().windows(2).map(|w| (*w[1] - *w[0]).num_days()).collect();
    if days.is_empty() {
        return "UNKNOWN";
    }
    let mut gaps = days;
    gaps.sort_unstable();
    // Twice the median, to stay in integers.
    let n = gaps.len();
    let twice = if n % 2 == 1 { 2 * gaps[n / 2] } else { gaps[n / 2 - 1] + gaps[n / 2] };
    match twice {
        50..=70 => "MONTHLY",
        160..=200 => "QUARTERLY",
        340..=400 => "HALF_YEARLY",
        700..=760 => "YEARLY",
        _ => "IRREGULAR",
    }
}

#[test]
fn insurance_payments_cover_every_type_frequency_and_provider_spelling() {
    let window = window();
    let (from, to) = (window[0].first_day(), window[window.len() - 1].last_day());
    let mut types = BTreeSet::new();
    let mut label_sets = BTreeSet::new();
    // Per (account, provider key, type): the payment dates and the provider's spellings.
    type Payments = (BTreeSet<NaiveDate>, BTreeSet<&'static str>);
    let mut groups: BTreeMap<(&str, String, &str), Payments> = BTreeMap::new();
    let (mut incoming, mut zero) = (0, 0);
    for (a, t) in transactions() {
        let Some(ty) = insurance_type(t) else { continue };
        if t.amount.is_positive() {
            incoming += 1;
        }
        if t.amount.is_zero() {
            zero += 1;
        }
        if !t.amount.is_negative() || t.booking_date < from || t.booking_date > to {
            continue;
        }
        types.insert(ty);
        label_sets.insert(t.labels.iter().filter(|l| l.ends_with("INSURANCE")).cloned().collect::<Vec<_>>());
        let group = groups.entry((a.account_id.as_str(), provider_key(&t.counterpart_name), ty)).or_default();
        group.0.insert(t.booking_date);
        group.1.insert(t.counterpart_name.as_str());
    }
    let frequencies: BTreeMap<&str, usize> = groups.values().fold(BTreeMap::new(), |mut m, (dates, _)| {
        *m.entry(frequency(dates)).or_default() += 1;
        m
    });
    assert_eq!(types.len(), 7, "{types:?}");
    assert!(label_sets.contains(&vec!["INSURANCE".to_owned()]), "plain INSURANCE alone");
    let several = label_sets.iter().filter(|s| s.iter().filter(|l| *l != "INSURANCE").count() >= 2).count();
    assert!(several >= 2, "{label_sets:?}");
    // Type labels listed against their precedence, so the first label listed is not the type.
    let precedence = |label: &String| TYPES.iter().position(|(l, _)| l == label);
    assert!(label_sets.iter().any(|s| {
        let ranks: Vec<usize> = s.iter().filter_map(precedence).collect();
        ranks.windows(2).any(|w| w[0] > w[1])
    }));
    for f in ["MONTHLY", "QUARTERLY", "HALF_YEARLY", "YEARLY", "IRREGULAR", "UNKNOWN"] {
        assert!(frequencies.get(f).is_some_and(|&c| c >= 5), "{f}: {frequencies:?}");
    }
    // One insurer spelled in several ways within one group, so provider keys must be normalised.
    let spelled = groups.values().filter(|(_, names)| names.len() > 1).count();
    assert!(spelled >= 10, "{spelled} groups with several spellings");
    assert!(groups.values().flat_map(|(_, names)| names).any(|n| n.contains('\t') || n.contains("  ")));
    assert!(incoming > 0 && zero > 0, "incoming {incoming}, zero {zero}");
}

#[test]
fn labels_and_dates_cover_the_edges_of_the_computations() {
    let all: Vec<&Transaction> = transactions().map(|(_, t)| t).collect();
    for label in ["SALARY", "RENT", "GROCERIES", "RESTAURANT", "TRAVEL", "REFUND", "INSURANCE", "CASH", "TRANSFER"] {
        assert!(all.iter().any(|t| has(t, label)), "{label}");
    }
    assert!(all.iter().any(|t| has(t, "GROCERIES") && has(t, "RESTAURANT")));
    assert!(all.iter().any(|t| has(t, "TRAVEL") && has(t, "REFUND") && t.amount.is_positive()));
    assert!(all.iter().any(|t| t.labels.is_empty()));
    assert!(all.iter().any(|t| t.labels.len() != t.labels.iter().collect::<BTreeSet<_>>().len()), "a repeated label");
    let zero = all.iter().filter(|t| t.amount.is_zero()).count();
    assert!(zero > 0 && zero * 200 < all.len(), "{zero} zero amounts of {}", all.len());

    let leap_day = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    assert!(all.iter().any(|t| t.booking_date == leap_day));
    assert!(all.iter().any(|t| t.booking_date == Month::of(t.booking_date).last_day()));
    assert!(all.iter().any(|t| t.booking_date.day() == 1));
    assert!(all.iter().any(|t| t.booking_date == end()));
    // Same-day bookings on one account.
    assert!(accounts().any(|h| h.transactions.windows(2).any(|w| w[0].booking_date == w[1].booking_date)));
}
