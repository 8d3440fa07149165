//! insuranceSpending (docs/semantics.md): the insurances a user pays for, found from the outgoing
//! transactions of the window of N complete months that carry an insurance label.
//!
//! Readings of the rule, chosen where the rule as stated leaves room (see docs/semantics.md):
//! - Labels match exactly and case-sensitively (`INSURANCE`, not `insurance`), as the labels of
//!   the account data are fixed upper-case codes. A duplicated label changes nothing.
//! - Only the booking date matters: transactions booked after `balanceDate` count like any other.
//! - The provider key uses Unicode whitespace and Unicode upper-casing (`ß` → `SS`); an empty or
//!   blank counterpart name is a provider of its own, shown as `""`.
//! - "Latest payment" is the greatest (bookingDate, transactionId), ids compared in byte order;
//!   it gives the shown `provider`, `amount` and `lastPaymentDate`.
//! - Gaps are whole days between consecutive distinct payment dates; the median of an even number
//!   of gaps is the mean of the middle two and is compared with the inclusive bounds exactly
//!   (35.5 days is not MONTHLY). Several payments on a single date are UNKNOWN.
//! - Insurances are sorted by the name of their type (`CAR` < `HEALTH` < … < `OTHER`), then by the
//!   shown provider in byte order.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;

use super::params::InsuranceSpendingParams;
use crate::domain::{AccountHistory, AccountId, Money, Month, Transaction, UserData, UserId};

/// The kind of insurance, from the transaction's labels. (The derived order only serves as a map
/// key; results sort by [`InsuranceType::as_str`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InsuranceType {
    Health,
    Life,
    Liability,
    Car,
    Household,
    LegalProtection,
    Other,
}

/// The label of each specific type, in the order of precedence of docs/semantics.md.
const TYPE_LABELS: [(&str, InsuranceType); 6] = [
    ("HEALTHINSURANCE", InsuranceType::Health),
    ("LIFEINSURANCE", InsuranceType::Life),
    ("LIABILITYINSURANCE", InsuranceType::Liability),
    ("CARINSURANCE", InsuranceType::Car),
    ("HOUSEHOLDINSURANCE", InsuranceType::Household),
    ("LEGALINSURANCE", InsuranceType::LegalProtection),
];

/// The generic label: an insurance of no specific type.
const GENERIC_LABEL: &str = "INSURANCE";

impl InsuranceType {
    pub fn as_str(self) -> &'static str {
        match self {
            InsuranceType::Health => "HEALTH",
            InsuranceType::Life => "LIFE",
            InsuranceType::Liability => "LIABILITY",
            InsuranceType::Car => "CAR",
            InsuranceType::Household => "HOUSEHOLD",
            InsuranceType::LegalProtection => "LEGAL_PROTECTION",
            InsuranceType::Other => "OTHER",
        }
    }

    /// The type of a transaction's labels: the first specific type label in precedence order,
    /// else `OTHER` for the generic label, else `None` (not an insurance payment).
    pub fn from_labels(labels: &[String]) -> Option<Self> {
        let has = |label: &str| labels.iter().any(|l| l == label);
        TYPE_LABELS
            .iter()
            .find(|(label, _)| has(label))
            .map(|(_, t)| *t)
            .or_else(|| has(GENERIC_LABEL).then_some(InsuranceType::Other))
    }
}

/// How often an insurance is paid, from the median gap between payment dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentFrequency {
    Monthly,
    Quarterly,
    HalfYearly,
    Yearly,
    Irregular,
    Unknown,
}

/// Inclusive bounds of the median gap in days of each regular frequency.
const FREQUENCY_BOUNDS: [(i64, i64, PaymentFrequency); 4] = [
    (25, 35, PaymentFrequency::Monthly),
    (80, 100, PaymentFrequency::Quarterly),
    (170, 200, PaymentFrequency::HalfYearly),
    (350, 380, PaymentFrequency::Yearly),
];

impl PaymentFrequency {
    /// The frequency of a set of payment dates (in any order, duplicates allowed).
    pub fn of_dates(dates: &[NaiveDate]) -> Self {
        let mut distinct = dates.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let mut gaps: Vec<i64> = distinct.windows(2).map(|w| (w[1] - w[0]).num_days()).collect();
        if gaps.is_empty() {
            return PaymentFrequency::Unknown;
        }
        gaps.sort_unstable();
        let mid = gaps.len() / 2;
        // Twice the median, so that the mean of the two middle gaps stays an exact integer.
        let twice_median = if gaps.len() % 2 == 1 { 2 * gaps[mid] } else { gaps[mid - 1] + gaps[mid] };
        FREQUENCY_BOUNDS
            .iter()
            .find(|(lo, hi, _)| 2 * lo <= twice_median && twice_median <= 2 * hi)
            .map_or(PaymentFrequency::Irregular, |(_, _, f)| *f)
    }
}

/// One insurance of an account: the payments to one provider for one type of insurance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Insurance {
    pub insurance_type: InsuranceType,
    pub provider: String,
    /// The latest payment, as a positive amount.
    pub amount: Money,
    pub payments_count: u64,
    pub total_amount: Money,
    pub last_payment_date: NaiveDate,
    pub frequency: PaymentFrequency,
}

/// `{accountId, amount, insurances}`; `amount` is the sum of the insurances' `totalAmount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InsuranceAccount {
    pub account_id: AccountId,
    pub amount: Money,
    pub insurances: Vec<Insurance>,
}

/// `{userId, accounts: [{accountId, amount, insurances: [...]}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InsuranceSpendingEntry {
    pub user_id: UserId,
    pub accounts: Vec<InsuranceAccount>,
}

pub fn insurance_spending(
    params: &InsuranceSpendingParams,
    as_of: NaiveDate,
    user: &UserData,
) -> Option<InsuranceSpendingEntry> {
    let window = Month::window_before(as_of, params.duration_in_month);
    let (first, last) = (window.first()?.first_day(), window.last()?.last_day());
    let mut accounts: Vec<InsuranceAccount> = user.accounts.iter().filter_map(|h| insurances(h, first, last)).collect();
    if accounts.is_empty() {
        return None;
    }
    accounts.sort_by(|a, b| a.account_id.cmp(&b.account_id));
    Some(InsuranceSpendingEntry { user_id: user.user_id.clone(), accounts })
}

/// The account's insurances paid between `first` and `last` (inclusive), `None` when there are
/// none.
fn insurances(h: &AccountHistory, first: NaiveDate, last: NaiveDate) -> Option<InsuranceAccount> {
    let mut groups: BTreeMap<(InsuranceType, String), Vec<&Transaction>> = BTreeMap::new();
    for t in &h.transactions {
        if !t.amount.is_negative() || t.booking_date < first || t.booking_date > last {
            continue;
        }
        if let Some(kind) = InsuranceType::from_labels(&t.labels) {
            groups.entry((kind, provider_key(&t.counterpart_name))).or_default().push(t);
        }
    }
    let mut insurances: Vec<Insurance> =
        groups.into_iter().filter_map(|((kind, _), payments)| insurance(kind, &payments)).collect();
    if insurances.is_empty() {
        return None;
    }
    insurances.sort_by(|a, b| {
        (a.insurance_type.as_str(), a.provider.as_str()).cmp(&(b.insurance_type.as_str(), b.provider.as_str()))
    });
    Some(InsuranceAccount {
        account_id: h.account.account_id.clone(),
        amount: insurances.iter().map(|i| i.total_amount).sum(),
        insurances,
    })
}

/// One group's insurance; `None` only for an empty group, which grouping never produces.
fn insurance(insurance_type: InsuranceType, payments: &[&Transaction]) -> Option<Insurance> {
    let latest =
        payments.iter().max_by(|a, b| (a.booking_date, &a.transaction_id).cmp(&(b.booking_date, &b.transaction_id)))?;
    let dates: Vec<NaiveDate> = payments.iter().map(|t| t.booking_date).collect();
    Some(Insurance {
        insurance_type,
        provider: collapse_whitespace(&latest.counterpart_name),
        amount: latest.amount.abs(),
        payments_count: payments.len() as u64,
        total_amount: payments.iter().map(|t| t.amount.abs()).sum(),
        last_payment_date: latest.booking_date,
        frequency: PaymentFrequency::of_dates(&dates),
    })
}

/// The name trimmed, with every run of inner whitespace replaced by one space.
fn collapse_whitespace(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The key that groups a provider's payments despite spelling variants of spacing and case.
fn provider_key(name: &str) -> String {
    collapse_whitespace(name).to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountType;
    use crate::rules::reference::{self, account, d, labelled, user};
    use proptest::prelude::*;

    fn params(months: u32) -> InsuranceSpendingParams {
        InsuranceSpendingParams { duration_in_month: months }
    }

    fn pay(id: &str, date: &str, cents: i64, name: &str, labels: &[&str]) -> Transaction {
        labelled(id, date, cents, name, labels)
    }

    fn only(e: &Option<InsuranceSpendingEntry>) -> Vec<&Insurance> {
        e.iter().flat_map(|e| &e.accounts).flat_map(|a| &a.insurances).collect()
    }

    fn freq(dates: &[&str]) -> PaymentFrequency {
        PaymentFrequency::of_dates(&dates.iter().map(|s| d(s)).collect::<Vec<_>>())
    }

    #[test]
    fn given_type_labels_then_the_type_follows_the_precedence_list_and_insurance_alone_is_other() {
        let t = |labels: &[&str]| InsuranceType::from_labels(&labels.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(t(&["HEALTHINSURANCE"]), Some(InsuranceType::Health));
        assert_eq!(t(&["LEGALINSURANCE"]), Some(InsuranceType::LegalProtection));
        assert_eq!(t(&["CARINSURANCE", "LIFEINSURANCE"]), Some(InsuranceType::Life));
        assert_eq!(t(&["INSURANCE", "HOUSEHOLDINSURANCE", "LIABILITYINSURANCE"]), Some(InsuranceType::Liability));
        assert_eq!(t(&["INSURANCE"]), Some(InsuranceType::Other));
        assert_eq!(t(&["RENT", "INSURANCE"]), Some(InsuranceType::Other));
        assert_eq!(t(&["insurance", "HealthInsurance"]), None);
        assert_eq!(t(&[]), None);
    }

    #[test]
    fn given_one_payment_date_then_the_frequency_is_unknown() {
        assert_eq!(freq(&["2024-01-15"]), PaymentFrequency::Unknown);
        // Two payments on the same date: still a single distinct date.
        assert_eq!(freq(&["2024-01-15", "2024-01-15"]), PaymentFrequency::Unknown);
    }

    #[test]
    fn given_gaps_of_25_and_35_days_then_monthly_and_24_or_36_not() {
        assert_eq!(freq(&["2024-01-01", "2024-01-26"]), PaymentFrequency::Monthly); // 25
        assert_eq!(freq(&["2024-01-01", "2024-02-05"]), PaymentFrequency::Monthly); // 35
        assert_eq!(freq(&["2024-01-01", "2024-01-25"]), PaymentFrequency::Irregular); // 24
        assert_eq!(freq(&["2024-01-01", "2024-02-06"]), PaymentFrequency::Irregular); // 36
    }

    #[test]
    fn given_the_frequency_bounds_then_each_is_inclusive() {
        let base = d("2023-01-01");
        let after = |days: u64| base + chrono::Days::new(days);
        let of = |days: u64| PaymentFrequency::of_dates(&[base, after(days)]);
        for (days, f) in [
            (79, PaymentFrequency::Irregular),
            (80, PaymentFrequency::Quarterly),
            (100, PaymentFrequency::Quarterly),
            (101, PaymentFrequency::Irregular),
            (169, PaymentFrequency::Irregular),
            (170, PaymentFrequency::HalfYearly),
            (200, PaymentFrequency::HalfYearly),
            (201, PaymentFrequency::Irregular),
            (349, PaymentFrequency::Irregular),
            (350, PaymentFrequency::Yearly),
            (380, PaymentFrequency::Yearly),
            (381, PaymentFrequency::Irregular),
            (1, PaymentFrequency::Irregular),
        ] {
            assert_eq!(of(days), f, "{days} days");
        }
    }

    #[test]
    fn given_an_even_number_of_gaps_then_the_median_is_the_mean_of_the_middle_two_compared_exactly() {
        // Gaps 35 and 36: median 35.5 is above 35, not MONTHLY.
        assert_eq!(freq(&["2024-01-01", "2024-02-05", "2024-03-12"]), PaymentFrequency::Irregular);
        // Gaps 24 and 25: median 24.5 is below 25.
        assert_eq!(freq(&["2024-01-01", "2024-01-25", "2024-02-19"]), PaymentFrequency::Irregular);
        // Gaps 20 and 50: median 35 is MONTHLY although neither gap is.
        assert_eq!(freq(&["2024-01-01", "2024-01-21", "2024-03-11"]), PaymentFrequency::Monthly);
        // Gaps 30, 31, 29, 90 (sorted 29, 30, 31, 90): median 30.5, MONTHLY.
        assert_eq!(
            freq(&["2024-01-01", "2024-01-31", "2024-03-02", "2024-03-31", "2024-06-29"]),
            PaymentFrequency::Monthly
        );
    }

    #[test]
    fn given_an_odd_number_of_gaps_then_the_median_is_the_middle_one() {
        // Gaps 1, 91, 200 → median 91: QUARTERLY.
        assert_eq!(freq(&["2023-01-01", "2023-01-02", "2023-04-03", "2023-10-20"]), PaymentFrequency::Quarterly);
    }

    #[test]
    fn given_a_leap_year_then_gaps_count_february_29th() {
        // 2024-02-01 → 2024-03-02 is 30 days in a leap year; 2023-02-01 → 2023-03-02 is 29.
        assert_eq!((d("2024-03-02") - d("2024-02-01")).num_days(), 30);
        // Yearly across a leap day: 366 days.
        assert_eq!(freq(&["2024-01-10", "2025-01-10"]), PaymentFrequency::Yearly);
    }

    #[test]
    fn given_provider_spelling_variants_then_they_group_and_the_latest_payment_names_the_provider() {
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            0,
            "2024-01-01",
            vec![
                pay("t1", "2024-01-15", -5_000, "  allianz   versicherung ", &["HEALTHINSURANCE"]),
                pay("t2", "2024-02-15", -5_000, "ALLIANZ\tVersicherung", &["HEALTHINSURANCE"]),
                pay("t3", "2024-03-15", -5_500, "Allianz Versicherung  ", &["HEALTHINSURANCE", "INSURANCE"]),
            ],
        )]);
        let e = insurance_spending(&params(12), d("2024-04-02"), &u);
        let all = only(&e);
        assert_eq!(all.len(), 1);
        let i = all[0];
        assert_eq!(i.provider, "Allianz Versicherung");
        assert_eq!(
            (i.amount, i.total_amount, i.payments_count),
            (Money::from_cents(5_500), Money::from_cents(15_500), 3)
        );
        assert_eq!(i.last_payment_date, d("2024-03-15"));
        assert_eq!(i.frequency, PaymentFrequency::Monthly);
        assert_eq!(e.unwrap().accounts[0].amount, Money::from_cents(15_500));
    }

    #[test]
    fn given_two_payments_on_the_latest_date_then_the_greatest_transaction_id_is_the_latest() {
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            0,
            "2024-01-01",
            vec![
                pay("t2", "2024-03-15", -100, "axa", &["CARINSURANCE"]),
                pay("t10", "2024-03-15", -200, "AXA", &["CARINSURANCE"]),
            ],
        )]);
        // "t2" > "t10" in byte order.
        let e = insurance_spending(&params(12), d("2024-04-02"), &u);
        let i = only(&e)[0];
        assert_eq!((i.provider.as_str(), i.amount), ("axa", Money::from_cents(100)));
        assert_eq!(i.frequency, PaymentFrequency::Unknown);
    }

    #[test]
    fn given_incoming_zero_and_unlabelled_transactions_then_only_outgoing_insurance_payments_count() {
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            0,
            "2024-01-01",
            vec![
                pay("t1", "2024-01-15", 5_000, "AXA", &["CARINSURANCE"]),
                pay("t2", "2024-01-16", 0, "AXA", &["CARINSURANCE"]),
                pay("t3", "2024-01-17", -700, "AXA", &["RENT"]),
                pay("t4", "2024-01-18", -700, "AXA", &["insurance"]),
            ],
        )]);
        assert_eq!(insurance_spending(&params(12), d("2024-04-02"), &u), None);
    }

    #[test]
    fn given_payments_outside_the_window_then_they_do_not_count() {
        // asOf 2024-04-02, 2 months: window is 2024-02-01 ..= 2024-03-31.
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            0,
            "2024-01-01",
            vec![
                pay("t1", "2024-01-31", -1, "AXA", &["INSURANCE"]),
                pay("t2", "2024-02-01", -10, "AXA", &["INSURANCE"]),
                pay("t3", "2024-03-31", -100, "AXA", &["INSURANCE"]),
                pay("t4", "2024-04-01", -1_000, "AXA", &["INSURANCE"]),
            ],
        )]);
        let e = insurance_spending(&params(2), d("2024-04-02"), &u);
        let i = only(&e)[0];
        assert_eq!((i.payments_count, i.total_amount, i.amount), (2, Money::from_cents(110), Money::from_cents(100)));
        assert_eq!(i.last_payment_date, d("2024-03-31"));
        assert_eq!(i.frequency, PaymentFrequency::Irregular); // 59 days
    }

    #[test]
    fn given_several_types_providers_and_accounts_then_insurances_sort_by_type_name_then_provider() {
        let u = user(vec![
            account(
                "b",
                AccountType::Checking,
                0,
                "2024-01-01",
                vec![pay("t1", "2024-02-01", -1, "x", &["INSURANCE"])],
            ),
            account(
                "a",
                AccountType::Savings,
                0,
                "2024-01-01",
                vec![
                    pay("t1", "2024-02-01", -100, "Zurich", &["LIFEINSURANCE"]),
                    pay("t2", "2024-02-02", -200, "Allianz", &["LIFEINSURANCE"]),
                    pay("t3", "2024-02-03", -300, "Zurich", &["CARINSURANCE"]),
                    pay("t4", "2024-02-04", -400, "Zurich", &["LEGALINSURANCE"]),
                    // Same provider, other type: a separate insurance.
                    pay("t5", "2024-02-05", -500, "zurich", &["INSURANCE"]),
                    pay("t6", "2024-02-06", -600, "", &["HEALTHINSURANCE"]),
                ],
            ),
            account("c", AccountType::Checking, 0, "2024-01-01", vec![pay("t1", "2024-02-01", -1, "x", &["RENT"])]),
        ]);
        let e = insurance_spending(&params(1), d("2024-03-02"), &u).unwrap();
        let ids: Vec<&str> = e.accounts.iter().map(|a| a.account_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let order: Vec<(&str, &str)> =
            e.accounts[0].insurances.iter().map(|i| (i.insurance_type.as_str(), i.provider.as_str())).collect();
        assert_eq!(
            order,
            [
                ("CAR", "Zurich"),
                ("HEALTH", ""),
                ("LEGAL_PROTECTION", "Zurich"),
                ("LIFE", "Allianz"),
                ("LIFE", "Zurich"),
                ("OTHER", "zurich")
            ]
        );
        assert_eq!(e.accounts[0].amount, Money::from_cents(2_100));
    }

    #[test]
    fn entry_serializes_with_the_names_of_design_section_4() {
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            0,
            "2024-01-01",
            vec![
                pay("t1", "2024-01-15", -1_999, "HUK  Coburg", &["LEGALINSURANCE"]),
                pay("t2", "2024-07-15", -1_999, "HUK Coburg", &["LEGALINSURANCE"]),
            ],
        )]);
        let e = insurance_spending(&params(12), d("2024-08-01"), &u).unwrap();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"userId":"u1","accounts":[{"accountId":"a","amount":39.98,"insurances":[{"insuranceType":"LEGAL_PROTECTION","provider":"HUK Coburg","amount":19.99,"paymentsCount":2,"totalAmount":39.98,"lastPaymentDate":"2024-07-15","frequency":"HALF_YEARLY"}]}]}"#
        );
    }

    proptest! {
        #![proptest_config(reference::config(3000))]

        /// Against a naive grouping with a day-by-day scan for the distinct payment dates.
        #[test]
        fn matches_the_naive_reference((as_of, u, months) in reference::insurance_spending_case()) {
            let p = params(months);
            prop_assert_eq!(insurance_spending(&p, as_of, &u), reference::insurance_spending(&p, as_of, &u));
        }
    }
}
