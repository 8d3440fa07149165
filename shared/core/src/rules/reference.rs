//! Test support for the segment computations: builders for hand-written cases, proptest
//! generators of random users, and deliberately naive reference implementations of docs/semantics.md.
//!
//! The references favour obviousness over speed: they walk every calendar day, recompute each
//! end-of-day balance from its definition, group with linear searches and compute statistics with
//! the textbook formulas in `Decimal` (never binary floating point). They share no code with the
//! production computations beyond the domain types.

use chrono::{Datelike, Days, NaiveDate};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::RngAlgorithm;
use rust_decimal::Decimal;

use super::params::{
    FinancialBreakdownParams, IncomeSpendingSummaryParams, InsuranceSpendingParams, LabelGroup, LowBalanceParams,
};
use super::{
    AccountAmount, AccountFlows, AccountsEntry, FinancialBreakdownEntry, IncomeSpendingSummaryEntry, Insurance,
    InsuranceAccount, InsuranceSpendingEntry, InsuranceType, LabelGroupBreakdown, MonthTotal, PaymentFrequency,
};
use crate::domain::{
    Account, AccountHistory, AccountId, AccountType, Currency, Money, Month, Transaction, TransactionId, UserData,
    UserId,
};

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

pub fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

pub fn tx(id: &str, date: &str, cents: i64) -> Transaction {
    labelled(id, date, cents, "", &[])
}

pub fn labelled(id: &str, date: &str, cents: i64, counterpart: &str, labels: &[&str]) -> Transaction {
    Transaction {
        transaction_id: TransactionId::parse(id).unwrap(),
        booking_date: d(date),
        amount: Money::from_cents(cents),
        currency: eur(),
        counterpart_name: counterpart.to_owned(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
    }
}

/// An account with its transactions put in the order of the account data (bookingDate, id).
pub fn account(
    id: &str,
    account_type: AccountType,
    balance_cents: i64,
    balance_date: &str,
    transactions: Vec<Transaction>,
) -> AccountHistory {
    history(id, account_type, Money::from_cents(balance_cents), d(balance_date), transactions)
}

/// A user whose accounts are put in accountId order, as the account data yields them.
pub fn user(mut accounts: Vec<AccountHistory>) -> UserData {
    accounts.sort_by(|a, b| a.account.account_id.cmp(&b.account.account_id));
    UserData { user_id: UserId::parse("u1").unwrap(), accounts }
}

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn history(
    id: &str,
    account_type: AccountType,
    balance: Money,
    balance_date: NaiveDate,
    mut transactions: Vec<Transaction>,
) -> AccountHistory {
    transactions.sort_by(|a, b| (a.booking_date, &a.transaction_id).cmp(&(b.booking_date, &b.transaction_id)));
    AccountHistory {
        account: Account {
            user_id: UserId::parse("u1").unwrap(),
            account_id: AccountId::parse(id).unwrap(),
            account_type,
            currency: eur(),
            balance,
            balance_date,
        },
        transactions,
    }
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// `cases` cases with the fast XorShift generator: the default ChaCha is slow in debug builds,
/// and generating users dominates the run time of the differential tests.
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, rng_algorithm: RngAlgorithm::XorShift, ..ProptestConfig::default() }
}

/// Labels in odd combinations: every insurance label, a lower-case look-alike and ordinary ones.
const LABELS: &[&str] = &[
    "INSURANCE",
    "HEALTHINSURANCE",
    "LIFEINSURANCE",
    "LIABILITYINSURANCE",
    "CARINSURANCE",
    "HOUSEHOLDINSURANCE",
    "LEGALINSURANCE",
    "insurance",
    "RENT",
    "FOOD",
    "BAR",
    "REFUND",
    "SALARY",
];

/// Counterpart names in spelling variants of spacing and case, and blanks.
const NAMES: &[&str] = &[
    "Allianz",
    "  allianz ",
    "ALLIANZ",
    "Allianz  SE",
    "allianz\tse",
    "Allianz SE ",
    "AXA",
    "axa",
    "HUK-Coburg",
    "Straße Versicherung",
    "STRASSE  VERSICHERUNG",
    "",
    "   ",
];

/// Account ids in byte order ('A' < 'a' < "a0" < "ab" < 'b').
const ACCOUNT_IDS: &[&str] = &["A", "a", "a0", "ab", "b"];

#[derive(Debug, Clone)]
struct TxSpec {
    /// Days relative to asOf.
    offset: i64,
    /// 0–1: the day as is, 2: the first of its month, 3: the last of its month.
    snap: u8,
    cents: i64,
    labels: Vec<&'static str>,
    name: &'static str,
    id_key: u16,
}

#[derive(Debug, Clone)]
struct AccountSpec {
    account_type: AccountType,
    balance: i64,
    /// balanceDate in days relative to asOf.
    balance_offset: i64,
    txs: Vec<TxSpec>,
}

fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        // Coarse amounts: equal balances, thresholds hit exactly, totals that tie.
        3 => (-5i64..=5).prop_map(|x| x * 1_000),
        1 => Just(0i64),
        4 => -100_000i64..100_000,
        1 => -10_000_000_000i64..10_000_000_000,
    ]
}

fn labels() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(select(LABELS), 0..4)
}

fn tx_spec(span: i64) -> impl Strategy<Value = TxSpec> {
    let offset = prop_oneof![
        3 => -(span + 20)..=40i64,
        // A coarse grid of days: several transactions on the same day.
        1 => (-(span + 20) / 10..=4i64).prop_map(|x| x * 10),
    ];
    (offset, 0u8..4, amount(), labels(), select(NAMES), 0u16..2_000)
        .prop_map(|(offset, snap, cents, labels, name, id_key)| TxSpec { offset, snap, cents, labels, name, id_key })
}

/// Periods of regular payments in days: on, inside and just outside the bounds of each frequency.
const PERIODS: &[i64] = &[1, 7, 24, 25, 28, 30, 31, 35, 36, 79, 80, 91, 100, 101, 182, 200, 365, 366, 381];

/// Regular outgoing payments with one label set (mostly insurance labels) and the provider's
/// spelling varying, to exercise the frequencies.
fn series(span: i64) -> impl Strategy<Value = Vec<TxSpec>> {
    let labels = prop_oneof![3 => prop::collection::vec(select(&LABELS[..8]), 1..3), 1 => labels()];
    (-(span + 20)..=0i64, select(PERIODS), 1usize..7, labels).prop_flat_map(|(start, period, count, labels)| {
        prop::collection::vec((-1i64..=1, amount(), select(NAMES), 0u16..2_000), count).prop_map(move |items| {
            items
                .into_iter()
                .enumerate()
                .map(|(i, (jitter, cents, name, id_key))| TxSpec {
                    offset: start + i as i64 * period + jitter,
                    snap: 0,
                    cents: -cents.abs(),
                    labels: labels.clone(),
                    name,
                    id_key,
                })
                .collect()
        })
    })
}

fn account_spec(span: i64, max_txs: usize, max_series: usize) -> impl Strategy<Value = AccountSpec> {
    (
        prop_oneof![3 => Just(AccountType::Checking), 1 => Just(AccountType::Savings), 1 => Just(AccountType::CreditCard)],
        prop_oneof![3 => (-20i64..=20).prop_map(|x| x * 1_000), 2 => -10_000_000i64..10_000_000],
        -(span + 40)..=60i64,
        prop::collection::vec(tx_spec(span), 0..max_txs),
        prop::collection::vec(series(span), 0..=max_series),
    )
        .prop_map(|(account_type, balance, balance_offset, mut txs, series)| {
            txs.extend(series.into_iter().flatten());
            AccountSpec { account_type, balance, balance_offset, txs }
        })
}

/// A user's accounts (none to four) as specs relative to asOf, with distinct ids.
fn user_spec(span: i64, max_txs: usize, max_series: usize) -> impl Strategy<Value = Vec<(&'static str, AccountSpec)>> {
    subsequence(ACCOUNT_IDS, 0..=4).prop_flat_map(move |ids| {
        let n = ids.len();
        prop::collection::vec(account_spec(span, max_txs, max_series), n)
            .prop_map(move |specs| ids.clone().into_iter().zip(specs).collect())
    })
}

/// asOf across several years (2024 is a leap year), often on a month's first or last day.
fn as_of() -> impl Strategy<Value = NaiveDate> {
    (0u64..1_500, 0u8..4).prop_map(|(days, snap)| snap_day(d("2022-06-01") + Days::new(days), snap))
}

fn snap_day(day: NaiveDate, snap: u8) -> NaiveDate {
    match snap {
        2 => Month::of(day).first_day(),
        3 => Month::of(day).last_day(),
        _ => day,
    }
}

fn add_days(day: NaiveDate, offset: i64) -> NaiveDate {
    if offset >= 0 { day + Days::new(offset as u64) } else { day - Days::new(offset.unsigned_abs()) }
}

fn build_user(as_of: NaiveDate, spec: Vec<(&'static str, AccountSpec)>) -> UserData {
    let accounts = spec
        .into_iter()
        .map(|(id, a)| {
            let txs = a
                .txs
                .into_iter()
                .enumerate()
                .map(|(i, t)| Transaction {
                    // Ids of varying length, so byte order and numeric order disagree.
                    transaction_id: TransactionId::parse(&format!("t{}.{i}", t.id_key)).unwrap(),
                    booking_date: snap_day(add_days(as_of, t.offset), t.snap),
                    amount: Money::from_cents(t.cents),
                    currency: eur(),
                    counterpart_name: t.name.to_owned(),
                    labels: t.labels.iter().map(|s| s.to_string()).collect(),
                })
                .collect();
            history(id, a.account_type, Money::from_cents(a.balance), add_days(as_of, a.balance_offset), txs)
        })
        .collect();
    user(accounts)
}

/// (asOf, user, durationInMonth, threshold) for lowBalance. Short windows are more frequent to
/// keep the day-by-day reference fast; every duration up to 24 occurs.
pub fn low_balance_case() -> impl Strategy<Value = (NaiveDate, UserData, u32, Money)> {
    prop_oneof![2 => 1u32..=3, 1 => 1u32..=24].prop_flat_map(|months| {
        let span = i64::from(months) * 31;
        (
            as_of(),
            user_spec(span, 10, 1),
            prop_oneof![2 => (-20i64..=20).prop_map(|x| x * 1_000), 1 => -200_000i64..200_000],
        )
            .prop_map(move |(as_of, spec, threshold)| {
                (as_of, build_user(as_of, spec), months, Money::from_cents(threshold))
            })
    })
}

/// (user, params) for incomeSpendingSummary; the period is placed relative to a random asOf.
pub fn income_spending_summary_case() -> impl Strategy<Value = (UserData, IncomeSpendingSummaryParams)> {
    (
        as_of(),
        user_spec(400, 12, 1),
        -420i64..=30,
        0u64..=731,
        0u8..4,
        prop::option::of(prop_oneof![
            Just(AccountType::Checking),
            Just(AccountType::Savings),
            Just(AccountType::CreditCard)
        ]),
    )
        .prop_map(|(as_of, spec, from, length, snap, account_type)| {
            let date_from = snap_day(add_days(as_of, from), snap);
            let date_to = date_from + Days::new(length);
            (build_user(as_of, spec), IncomeSpendingSummaryParams { date_from, date_to, account_type })
        })
}

/// (asOf, user, durationInMonth) for insuranceSpending.
pub fn insurance_spending_case() -> impl Strategy<Value = (NaiveDate, UserData, u32)> {
    (1u32..=24).prop_flat_map(|months| {
        let span = i64::from(months) * 31;
        (as_of(), user_spec(span, 8, 3)).prop_map(move |(as_of, spec)| (as_of, build_user(as_of, spec), months))
    })
}

fn label_group() -> impl Strategy<Value = LabelGroup> {
    (prop::collection::vec(select(LABELS), 1..4), prop::collection::vec(select(LABELS), 0..3)).prop_map(
        |(include, exclude)| LabelGroup {
            alias: String::new(),
            include_labels: include.iter().map(|s| s.to_string()).collect(),
            exclude_labels: exclude.iter().map(|s| s.to_string()).collect(),
        },
    )
}

/// (asOf, user, params) for financialBreakdown.
pub fn financial_breakdown_case() -> impl Strategy<Value = (NaiveDate, UserData, FinancialBreakdownParams)> {
    (1u32..=12).prop_flat_map(|months| {
        let span = i64::from(months) * 31;
        (as_of(), user_spec(span, 12, 1), prop::collection::vec(label_group(), 1..5)).prop_map(
            move |(as_of, spec, groups)| {
                let label_groups =
                    groups.into_iter().enumerate().map(|(i, g)| LabelGroup { alias: format!("g{i}"), ..g }).collect();
                (as_of, build_user(as_of, spec), FinancialBreakdownParams { label_groups, duration_in_month: months })
            },
        )
    })
}

/// Series of 1–12 monthly totals: small values that tie on half cents, duplicates, and large
/// magnitudes.
pub fn monthly_totals() -> impl Strategy<Value = Vec<Money>> {
    let value = prop_oneof![
        3 => -20i64..=20,
        2 => -100_000i64..100_000,
        1 => -100_000_000_000i64..100_000_000_000,
    ];
    (prop::collection::vec(value, 1..=6), any::<bool>()).prop_map(|(v, doubled)| {
        // Doubling a series ({a, b} → {a, a, b, b}) keeps its deviation: more exact ties.
        let mut v = if doubled { v.iter().chain(v.iter()).copied().collect() } else { v };
        v.truncate(12);
        v.into_iter().map(Money::from_cents).collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Naive references
// ---------------------------------------------------------------------------------------------

/// The days of each month of the window of `n` complete months before asOf's month, oldest month
/// first, found by stepping back one day at a time from asOf.
fn window_days(as_of: NaiveDate, n: u32) -> Vec<Vec<NaiveDate>> {
    let mut day = as_of;
    while day.day() != 1 {
        day = day.pred_opt().unwrap();
    }
    let mut months = Vec::new();
    for _ in 0..n {
        let mut days = Vec::new();
        loop {
            day = day.pred_opt().unwrap();
            days.push(day);
            if day.day() == 1 {
                break;
            }
        }
        days.reverse();
        months.push(days);
    }
    months.reverse();
    months
}

/// The definition, literally: `balance − Σ amounts with day < bookingDate ≤ balanceDate`.
fn end_of_day_balance(h: &AccountHistory, day: NaiveDate) -> Decimal {
    let mut balance = h.account.balance.decimal();
    if day >= h.account.balance_date {
        return balance;
    }
    for t in &h.transactions {
        if day < t.booking_date && t.booking_date <= h.account.balance_date {
            balance -= t.amount.decimal();
        }
    }
    balance
}

fn money(d: Decimal) -> Money {
    Money::from_decimal(d).unwrap()
}

pub fn low_balance(p: &LowBalanceParams, as_of: NaiveDate, u: &UserData) -> Option<AccountsEntry> {
    let window = window_days(as_of, p.duration_in_month);
    let mut accounts = Vec::new();
    for h in &u.accounts {
        if h.account.account_type != p.account_type || window.is_empty() {
            continue;
        }
        let mut every_month_below = true;
        let mut lowest: Option<Decimal> = None;
        for days in &window {
            let mut below = false;
            for day in days {
                let b = end_of_day_balance(h, *day);
                if b < p.threshold.decimal() {
                    below = true;
                }
                if lowest.is_none_or(|l| b < l) {
                    lowest = Some(b);
                }
            }
            if !below {
                every_month_below = false;
            }
        }
        if every_month_below {
            accounts.push(AccountAmount { account_id: h.account.account_id.clone(), amount: money(lowest.unwrap()) });
        }
    }
    accounts.sort_by(|a, b| a.account_id.as_str().as_bytes().cmp(b.account_id.as_str().as_bytes()));
    (!accounts.is_empty()).then(|| AccountsEntry { user_id: u.user_id.clone(), accounts })
}

pub fn income_spending_summary(p: &IncomeSpendingSummaryParams, u: &UserData) -> Option<IncomeSpendingSummaryEntry> {
    let mut accounts = Vec::new();
    for h in &u.accounts {
        if let Some(t) = p.account_type
            && h.account.account_type != t
        {
            continue;
        }
        let (mut inc_n, mut out_n, mut inc, mut out) = (0u64, 0u64, Decimal::ZERO, Decimal::ZERO);
        let mut day = p.date_from;
        while day <= p.date_to {
            for t in h.transactions.iter().filter(|t| t.booking_date == day) {
                let a = t.amount.decimal();
                if a > Decimal::ZERO {
                    inc_n += 1;
                    inc += a;
                }
                if a < Decimal::ZERO {
                    out_n += 1;
                    out -= a;
                }
            }
            day = day.succ_opt().unwrap();
        }
        if inc_n + out_n > 0 {
            accounts.push(AccountFlows {
                account_id: h.account.account_id.clone(),
                incoming_count: inc_n,
                outgoing_count: out_n,
                incoming_amount: money(inc),
                outgoing_amount: money(out),
            });
        }
    }
    if accounts.is_empty() {
        return None;
    }
    accounts.sort_by(|a, b| a.account_id.as_str().as_bytes().cmp(b.account_id.as_str().as_bytes()));
    let mut e = IncomeSpendingSummaryEntry {
        user_id: u.user_id.clone(),
        incoming_count: 0,
        outgoing_count: 0,
        incoming_amount: Money::ZERO,
        outgoing_amount: Money::ZERO,
        accounts: Vec::new(),
    };
    for a in &accounts {
        e.incoming_count += a.incoming_count;
        e.outgoing_count += a.outgoing_count;
        e.incoming_amount += a.incoming_amount;
        e.outgoing_amount += a.outgoing_amount;
    }
    e.accounts = accounts;
    Some(e)
}

fn insurance_type_of(labels: &[String]) -> Option<(InsuranceType, &'static str)> {
    let list = [
        ("HEALTHINSURANCE", InsuranceType::Health, "HEALTH"),
        ("LIFEINSURANCE", InsuranceType::Life, "LIFE"),
        ("LIABILITYINSURANCE", InsuranceType::Liability, "LIABILITY"),
        ("CARINSURANCE", InsuranceType::Car, "CAR"),
        ("HOUSEHOLDINSURANCE", InsuranceType::Household, "HOUSEHOLD"),
        ("LEGALINSURANCE", InsuranceType::LegalProtection, "LEGAL_PROTECTION"),
    ];
    for (label, t, name) in list {
        for l in labels {
            if l == label {
                return Some((t, name));
            }
        }
    }
    for l in labels {
        if l == "INSURANCE" {
            return Some((InsuranceType::Other, "OTHER"));
        }
    }
    None
}

/// Trims and collapses whitespace one character at a time.
fn tidy(name: &str) -> String {
    let mut out = String::new();
    let mut pending_space = false;
    for c in name.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

struct Group<'a> {
    key: String,
    type_name: &'static str,
    insurance_type: InsuranceType,
    payments: Vec<&'a Transaction>,
}

pub fn insurance_spending(
    p: &InsuranceSpendingParams,
    as_of: NaiveDate,
    u: &UserData,
) -> Option<InsuranceSpendingEntry> {
    let window = window_days(as_of, p.duration_in_month);
    let all_days: Vec<NaiveDate> = window.iter().flatten().copied().collect();
    let in_window = |day: NaiveDate| all_days.contains(&day);
    let mut accounts = Vec::new();
    for h in &u.accounts {
        let mut groups: Vec<Group> = Vec::new();
        for t in &h.transactions {
            if t.amount.decimal() >= Decimal::ZERO || !in_window(t.booking_date) {
                continue;
            }
            let Some((insurance_type, type_name)) = insurance_type_of(&t.labels) else { continue };
            let key = tidy(&t.counterpart_name).to_uppercase();
            match groups.iter_mut().find(|g| g.key == key && g.type_name == type_name) {
                Some(g) => g.payments.push(t),
                None => groups.push(Group { key, type_name, insurance_type, payments: vec![t] }),
            }
        }
        let mut insurances: Vec<(&'static str, Insurance)> = Vec::new();
        for g in &groups {
            let mut latest = g.payments[0];
            for t in &g.payments {
                if t.booking_date > latest.booking_date
                    || (t.booking_date == latest.booking_date
                        && t.transaction_id.as_str().as_bytes() > latest.transaction_id.as_str().as_bytes())
                {
                    latest = t;
                }
            }
            let mut total = Decimal::ZERO;
            for t in &g.payments {
                total -= t.amount.decimal();
            }
            // Distinct payment dates: every day of the window on which something was paid.
            let paid_days: Vec<NaiveDate> =
                all_days.iter().copied().filter(|day| g.payments.iter().any(|t| t.booking_date == *day)).collect();
            let mut gaps: Vec<i64> = Vec::new();
            for i in 1..paid_days.len() {
                let mut n = 0;
                let mut day = paid_days[i - 1];
                while day < paid_days[i] {
                    day = day.succ_opt().unwrap();
                    n += 1;
                }
                gaps.push(n);
            }
            let frequency = if gaps.is_empty() {
                PaymentFrequency::Unknown
            } else {
                gaps.sort();
                let median = if gaps.len() % 2 == 1 {
                    Decimal::from(gaps[gaps.len() / 2])
                } else {
                    (Decimal::from(gaps[gaps.len() / 2 - 1]) + Decimal::from(gaps[gaps.len() / 2])) / Decimal::TWO
                };
                let within = |lo: i64, hi: i64| Decimal::from(lo) <= median && median <= Decimal::from(hi);
                if within(25, 35) {
                    PaymentFrequency::Monthly
                } else if within(80, 100) {
                    PaymentFrequency::Quarterly
                } else if within(170, 200) {
                    PaymentFrequency::HalfYearly
                } else if within(350, 380) {
                    PaymentFrequency::Yearly
                } else {
                    PaymentFrequency::Irregular
                }
            };
            insurances.push((
                g.type_name,
                Insurance {
                    insurance_type: g.insurance_type,
                    provider: tidy(&latest.counterpart_name),
                    amount: money(-latest.amount.decimal()),
                    payments_count: g.payments.len() as u64,
                    total_amount: money(total),
                    last_payment_date: latest.booking_date,
                    frequency,
                },
            ));
        }
        if insurances.is_empty() {
            continue;
        }
        insurances.sort_by(|(ta, a), (tb, b)| {
            (ta.as_bytes(), a.provider.as_bytes()).cmp(&(tb.as_bytes(), b.provider.as_bytes()))
        });
        let mut amount = Decimal::ZERO;
        for (_, i) in &insurances {
            amount += i.total_amount.decimal();
        }
        accounts.push(InsuranceAccount {
            account_id: h.account.account_id.clone(),
            amount: money(amount),
            insurances: insurances.into_iter().map(|(_, i)| i).collect(),
        });
    }
    accounts.sort_by(|a, b| a.account_id.as_str().as_bytes().cmp(b.account_id.as_str().as_bytes()));
    (!accounts.is_empty()).then(|| InsuranceSpendingEntry { user_id: u.user_id.clone(), accounts })
}

pub fn financial_breakdown(
    p: &FinancialBreakdownParams,
    as_of: NaiveDate,
    u: &UserData,
) -> Option<FinancialBreakdownEntry> {
    let window = window_days(as_of, p.duration_in_month);
    let mut any = false;
    let mut label_groups = Vec::new();
    for g in &p.label_groups {
        let in_group = |t: &Transaction| {
            let mut included = false;
            let mut excluded = false;
            for l in &t.labels {
                for i in &g.include_labels {
                    if l == i {
                        included = true;
                    }
                }
                for e in &g.exclude_labels {
                    if l == e {
                        excluded = true;
                    }
                }
            }
            included && !excluded
        };
        let mut months = Vec::new();
        for days in &window {
            let (first, last) = (days[0], days[days.len() - 1]);
            let mut total = Decimal::ZERO;
            let mut count = 0u64;
            for h in &u.accounts {
                for t in &h.transactions {
                    if first <= t.booking_date && t.booking_date <= last && in_group(t) {
                        total += t.amount.decimal();
                        count += 1;
                        any = true;
                    }
                }
            }
            let month = format!("{:04}-{:02}", first.year(), first.month()).parse().unwrap();
            months.push(MonthTotal { month, total: money(total), count });
        }
        let totals: Vec<Money> = months.iter().map(|m| m.total).collect();
        let s = statistics(&totals);
        label_groups.push(LabelGroupBreakdown {
            alias: g.alias.clone(),
            total: s.total,
            average: s.average,
            minimum: s.minimum,
            maximum: s.maximum,
            median: s.median,
            standard_deviation: s.standard_deviation,
            months,
        });
    }
    any.then(|| FinancialBreakdownEntry { user_id: u.user_id.clone(), label_groups })
}

pub struct Statistics {
    pub total: Money,
    pub average: Money,
    pub minimum: Money,
    pub maximum: Money,
    pub median: Money,
    pub standard_deviation: Money,
}

/// Textbook statistics in `Decimal`: mean = Σx / N, median of the sorted values, and the
/// population deviation √((N·Σx² − (Σx)²) / N²) by Newton's method, its rounding then checked
/// against the definition of half-even rounding with exact squares.
pub fn statistics(values: &[Money]) -> Statistics {
    let xs: Vec<Decimal> = values.iter().map(|m| m.decimal()).collect();
    let n = Decimal::from(xs.len());
    let mut sum = Decimal::ZERO;
    let mut sum_sq = Decimal::ZERO;
    let (mut min, mut max) = (xs[0], xs[0]);
    for x in &xs {
        sum += x;
        sum_sq += x * x;
        min = min.min(*x);
        max = max.max(*x);
    }
    let mut sorted = xs.clone();
    sorted.sort();
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / Decimal::TWO };
    // n² · variance, exact.
    let s = n * sum_sq - sum * sum;
    Statistics {
        total: money(sum),
        average: Money::round_half_even(sum / n),
        minimum: money(min),
        maximum: money(max),
        median: Money::round_half_even(median),
        standard_deviation: money(deviation_cents(s, n)),
    }
}

/// The population deviation √s / n rounded half-even to cents, as a `Decimal` with two decimals.
fn deviation_cents(s: Decimal, n: Decimal) -> Decimal {
    if s.is_zero() {
        return Decimal::ZERO;
    }
    // Newton's method on the variance, to the precision of `Decimal`.
    let variance = s / (n * n);
    let mut x = if variance > Decimal::ONE { variance } else { Decimal::ONE };
    for _ in 0..400 {
        let next = (x + variance / x) / Decimal::TWO;
        if next == x {
            break;
        }
        x = next;
    }
    let approx = Money::round_half_even(x).decimal();
    let half = Decimal::new(5, 3);
    let cent = Decimal::new(1, 2);
    // The rounded value c is the one with (c − ½¢)² · n² ≤ s ≤ (c + ½¢)² · n², an upper tie going
    // to the even cent.
    for c in [approx - cent, approx, approx + cent] {
        if c < Decimal::ZERO {
            continue;
        }
        let lower = if c.is_zero() { Decimal::ZERO } else { (c - half) * (c - half) * n * n };
        let upper = (c + half) * (c + half) * n * n;
        let even = (c * Decimal::ONE_HUNDRED) % Decimal::TWO == Decimal::ZERO;
        let above_lower = if even { lower <= s } else { lower < s };
        let below_upper = if even { s <= upper } else { s < upper };
        if above_lower && below_upper {
            return c;
        }
    }
    panic!("Newton's estimate {x} of √{variance} is off by more than a cent");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{TestRng, TestRunner};

    fn runner() -> TestRunner {
        TestRunner::new_with_rng(config(1), TestRng::deterministic_rng(RngAlgorithm::XorShift))
    }

    fn sample<S: Strategy>(strategy: S, n: usize) -> Vec<S::Value> {
        let mut r = runner();
        (0..n).map(|_| strategy.new_tree(&mut r).unwrap().current()).collect()
    }

    /// The differential tests only mean something when the generators reach the interesting
    /// outcomes: users in and out of each segment, every frequency, long windows that qualify.
    #[test]
    fn generators_reach_the_interesting_cases() {
        let low: Vec<_> = sample(low_balance_case(), 400)
            .into_iter()
            .map(|(as_of, u, months, threshold)| {
                let p = LowBalanceParams { threshold, duration_in_month: months, account_type: AccountType::Checking };
                (months, low_balance(&p, as_of, &u).is_some())
            })
            .collect();
        assert!(low.iter().filter(|(_, hit)| *hit).count() >= 80, "lowBalance hits");
        assert!(low.iter().filter(|(_, hit)| !*hit).count() >= 80, "lowBalance misses");
        assert!(low.iter().any(|(months, hit)| *hit && *months > 6), "lowBalance long windows");

        let income = sample(income_spending_summary_case(), 400);
        let hits = income.iter().filter(|(u, p)| income_spending_summary(p, u).is_some()).count();
        assert!((80..=320).contains(&hits), "incomeSpendingSummary hits: {hits}");

        let mut frequencies = Vec::new();
        let mut insurance_hits = 0;
        for (as_of, u, months) in sample(insurance_spending_case(), 400) {
            if let Some(e) = insurance_spending(&InsuranceSpendingParams { duration_in_month: months }, as_of, &u) {
                insurance_hits += 1;
                frequencies.extend(e.accounts.iter().flat_map(|a| &a.insurances).map(|i| i.frequency));
            }
        }
        assert!((80..=360).contains(&insurance_hits), "insuranceSpending hits: {insurance_hits}");
        for f in [
            PaymentFrequency::Monthly,
            PaymentFrequency::Quarterly,
            PaymentFrequency::HalfYearly,
            PaymentFrequency::Yearly,
            PaymentFrequency::Irregular,
            PaymentFrequency::Unknown,
        ] {
            assert!(frequencies.contains(&f), "no {f:?} insurance generated");
        }

        let breakdown = sample(financial_breakdown_case(), 400);
        let hits = breakdown.iter().filter(|(as_of, u, p)| financial_breakdown(p, *as_of, u).is_some()).count();
        assert!((80..=360).contains(&hits), "financialBreakdown hits: {hits}");
    }

    #[test]
    fn window_days_are_the_complete_months_before_as_of() {
        let w = window_days(d("2024-03-15"), 2);
        assert_eq!((w[0][0], *w[0].last().unwrap()), (d("2024-01-01"), d("2024-01-31")));
        assert_eq!((w[1][0], *w[1].last().unwrap(), w[1].len()), (d("2024-02-01"), d("2024-02-29"), 29));
        assert_eq!(window_days(d("2024-03-01"), 1)[0].len(), 29);
    }
}
