//! financialBreakdown (docs/semantics.md): per label group, the signed total and the count of each month
//! of the window of N complete months, and statistics over those N monthly totals.
//!
//! Readings of the rule, chosen where the rule as stated leaves room (see docs/semantics.md):
//! - Labels match exactly and case-sensitively. A transaction belongs to a group when one of its
//!   labels is in `includeLabels` and none is in `excludeLabels`; it may belong to several groups.
//! - A matching transaction with a zero amount is counted (`count`) and makes the user present;
//!   it adds nothing to the totals.
//! - Every account of the user counts, whatever its type or currency; only the booking date
//!   matters (transactions booked after `balanceDate` count).
//! - `months` lists every month of the window, oldest first, empty months with total 0 and
//!   count 0; the groups keep the order of the request.
//! - Statistics are over the N monthly totals (empty months are 0): `average` and an even-count
//!   `median` are rounded half-even to cents; `standardDeviation` is the population deviation,
//!   √(Σ(x − mean)² / N), rounded half-even to cents from its exact value.

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde::Serialize;

use super::params::{FinancialBreakdownParams, LabelGroup};
use crate::domain::{Money, Month, UserData, UserId};

/// One month of a label group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MonthTotal {
    pub month: Month,
    pub total: Money,
    pub count: u64,
}

/// `{alias, total, average, minimum, maximum, median, standardDeviation, months}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelGroupBreakdown {
    pub alias: String,
    pub total: Money,
    pub average: Money,
    pub minimum: Money,
    pub maximum: Money,
    pub median: Money,
    pub standard_deviation: Money,
    pub months: Vec<MonthTotal>,
}

/// `{userId, labelGroups: [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FinancialBreakdownEntry {
    pub user_id: UserId,
    pub label_groups: Vec<LabelGroupBreakdown>,
}

pub fn financial_breakdown(
    params: &FinancialBreakdownParams,
    as_of: NaiveDate,
    user: &UserData,
) -> Option<FinancialBreakdownEntry> {
    let window = Month::window_before(as_of, params.duration_in_month);
    let first_month = *window.first()?;
    let (first, last) = (first_month.first_day(), window.last()?.last_day());

    // sums[g][i]: total and count of group g in month i of the window.
    let mut sums = vec![vec![(Money::ZERO, 0u64); window.len()]; params.label_groups.len()];
    let mut any = false;
    for t in user.accounts.iter().flat_map(|h| &h.transactions) {
        if t.booking_date < first || t.booking_date > last {
            continue;
        }
        let i = months_between(first_month, t.booking_date);
        for (g, group) in params.label_groups.iter().enumerate() {
            if matches(group, &t.labels) {
                let (total, count) = &mut sums[g][i];
                *total += t.amount;
                *count += 1;
                any = true;
            }
        }
    }
    if !any {
        return None;
    }

    let label_groups = params
        .label_groups
        .iter()
        .zip(sums)
        .map(|(group, sums)| {
            let totals: Vec<Money> = sums.iter().map(|(total, _)| *total).collect();
            let stats = Stats::of(&totals);
            LabelGroupBreakdown {
                alias: group.alias.clone(),
                total: stats.total,
                average: stats.average,
                minimum: stats.minimum,
                maximum: stats.maximum,
                median: stats.median,
                standard_deviation: stats.standard_deviation,
                months: window
                    .iter()
                    .zip(sums)
                    .map(|(month, (total, count))| MonthTotal { month: *month, total, count })
                    .collect(),
            }
        })
        .collect();
    Some(FinancialBreakdownEntry { user_id: user.user_id.clone(), label_groups })
}

fn matches(group: &LabelGroup, labels: &[String]) -> bool {
    labels.iter().any(|l| group.include_labels.contains(l)) && !labels.iter().any(|l| group.exclude_labels.contains(l))
}

/// Index of the month of `d` counted from `first` (`d` is not before `first`).
fn months_between(first: Month, d: NaiveDate) -> usize {
    let n = (d.year() - first.year()) * 12 + d.month() as i32 - first.month() as i32;
    usize::try_from(n).unwrap_or(0)
}

/// Statistics over a series of monthly totals, all exact or rounded half-even to cents.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stats {
    total: Money,
    average: Money,
    minimum: Money,
    maximum: Money,
    median: Money,
    standard_deviation: Money,
}

impl Stats {
    /// Computed on whole cents in integers, so no step rounds except the final half-even one.
    /// A window has at least one month; an empty series gives zeros.
    fn of(values: &[Money]) -> Stats {
        let mut cents: Vec<i128> = values.iter().map(|m| to_cents(*m)).collect();
        cents.sort_unstable();
        let n = cents.len();
        if n == 0 {
            let z = Money::ZERO;
            return Stats { total: z, average: z, minimum: z, maximum: z, median: z, standard_deviation: z };
        }
        let sum: i128 = cents.iter().sum();
        let count = n as i128;
        let median = if n % 2 == 1 { cents[n / 2] } else { div_round_half_even(cents[n / 2 - 1] + cents[n / 2], 2) };
        Stats {
            total: values.iter().sum(),
            average: from_cents(div_round_half_even(sum, count)),
            minimum: from_cents(cents[0]),
            maximum: from_cents(cents[n - 1]),
            median: from_cents(median),
            standard_deviation: from_cents(population_std_dev_cents(&cents)),
        }
    }
}

/// A `Money` as a whole number of cents. Money always has two decimals, and its mantissa has at
/// most 96 bits, so the cents fit an `i128` with room to spare.
fn to_cents(m: Money) -> i128 {
    let mut d = m.decimal();
    d.rescale(2);
    d.mantissa()
}

/// Whole cents as `Money`. Every derived value lies within the range of the monthly totals
/// (a mean or a median between the minimum and the maximum, a deviation at most half the range),
/// and those are `Money` already, so the value always fits a `Decimal`.
fn from_cents(cents: i128) -> Money {
    Money::round_half_even(Decimal::from_i128_with_scale(cents, 2))
}

/// `num / den` rounded half-even to an integer; `den > 0`.
fn div_round_half_even(num: i128, den: i128) -> i128 {
    let (q, r) = (num.div_euclid(den), num.rem_euclid(den));
    match (2 * r).cmp(&den) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal if q.rem_euclid(2) == 0 => q,
        std::cmp::Ordering::Equal => q + 1,
    }
}

/// The population standard deviation of `cents`, in cents, rounded half-even.
///
/// With n values, n² · variance = S = Σ_{i<j} (cᵢ − cⱼ)², an exact integer, so the deviation is
/// √S / n and [`round_sqrt_ratio`] rounds it without ever forming an inexact intermediate.
fn population_std_dev_cents(cents: &[i128]) -> i128 {
    let mut s = U256::ZERO;
    for (i, a) in cents.iter().enumerate() {
        for b in &cents[i + 1..] {
            // |a|, |b| < 2^96 (a Decimal mantissa), so (a − b)² < 2^194; even 24 months (276 pairs)
            // keep S below 2^203.
            s = s.add(U256::square((a - b).unsigned_abs()));
        }
    }
    let n = cents.len().max(1) as u128;
    // The result is at most half the range of the values, below 2^97: it fits an i128.
    round_sqrt_ratio(s, n) as i128
}

/// √s / n rounded half-even to an integer, exactly; `n ≥ 1`, `s < 2^250`.
///
/// k = ⌊√s / n⌋ = ⌊⌊√s⌋ / n⌋. The value is below k + ½ exactly when 4s < ((2k + 1)·n)², equal
/// to it (a tie, rounded to the even neighbour) when 4s = ((2k + 1)·n)².
fn round_sqrt_ratio(s: U256, n: u128) -> u128 {
    let k = s.isqrt() / n;
    let midpoint = (2 * k + 1) * n;
    match s.times4().cmp(&U256::square(midpoint)) {
        std::cmp::Ordering::Less => k,
        std::cmp::Ordering::Greater => k + 1,
        std::cmp::Ordering::Equal if k.is_multiple_of(2) => k,
        std::cmp::Ordering::Equal => k + 1,
    }
}

/// The smallest unsigned integer wide enough for sums of squares of money in cents. Only what the
/// deviation needs: squares, sums, ×4, comparison and an integer square root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct U256 {
    // Field order matters: the derived order compares `hi` first.
    hi: u128,
    lo: u128,
}

impl U256 {
    const ZERO: U256 = U256 { hi: 0, lo: 0 };

    /// x², exactly (any u128 squared fits 256 bits).
    fn square(x: u128) -> U256 {
        const MASK: u128 = u64::MAX as u128;
        let (x1, x0) = (x >> 64, x & MASK);
        let low = x0 * x0;
        let cross = x0 * x1; // appears twice
        let high = x1 * x1;
        // The middle column: carries from the low product plus the low halves of both crosses.
        let mid = (low >> 64) + 2 * (cross & MASK);
        U256 { lo: (low & MASK) | (mid << 64), hi: high + 2 * (cross >> 64) + (mid >> 64) }
    }

    fn add(self, other: U256) -> U256 {
        let (lo, carry) = self.lo.overflowing_add(other.lo);
        U256 { lo, hi: self.hi + other.hi + u128::from(carry) }
    }

    fn times4(self) -> U256 {
        U256 { hi: (self.hi << 2) | (self.lo >> 126), lo: self.lo << 2 }
    }

    /// ⌊√self⌋ by bisection on the 128-bit root: 128 exact steps.
    fn isqrt(self) -> u128 {
        let (mut lo, mut hi) = (0u128, u128::MAX);
        while lo < hi {
            let mid = lo + (hi - lo) / 2 + 1;
            if U256::square(mid) <= self {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountType;
    use crate::rules::reference::{self, account, d, labelled, user};
    use proptest::prelude::*;

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    fn group(alias: &str, include: &[&str], exclude: &[&str]) -> LabelGroup {
        LabelGroup {
            alias: alias.into(),
            include_labels: include.iter().map(|s| s.to_string()).collect(),
            exclude_labels: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn params(months: u32, groups: Vec<LabelGroup>) -> FinancialBreakdownParams {
        FinancialBreakdownParams { label_groups: groups, duration_in_month: months }
    }

    fn stats(values: &[&str]) -> Stats {
        Stats::of(&values.iter().map(|s| m(s)).collect::<Vec<_>>())
    }

    fn std_dev(values: &[&str]) -> String {
        stats(values).standard_deviation.to_string()
    }

    /// √x of a non-negative amount in cents², rounded half-even to a whole cent.
    fn sqrt_cents(x: u128) -> u128 {
        round_sqrt_ratio(U256 { hi: 0, lo: x }, 1)
    }

    #[test]
    fn square_root_matches_known_values() {
        assert_eq!(sqrt_cents(0), 0);
        assert_eq!(sqrt_cents(1), 1);
        assert_eq!(sqrt_cents(2), 1); // 1.414…
        assert_eq!(sqrt_cents(3), 2); // 1.732…
        assert_eq!(sqrt_cents(20_000), 141); // √2.00 units = 1.41
        assert_eq!(sqrt_cents(1_000_000), 1_000);
        assert_eq!(sqrt_cents(999_999), 1_000); // 999.9995
        // √2 · 10^18 = 1 414 213 562 373 095 048.80…
        assert_eq!(
            round_sqrt_ratio(U256::square(10u128.pow(18)).add(U256::square(10u128.pow(18))), 1),
            1_414_213_562_373_095_049
        );
        // √(10^60) / 7 = 10^30 / 7 = 142 857 142 857 142 857 142 857 142 857.14…
        assert_eq!(round_sqrt_ratio(U256::square(10u128.pow(30)), 7), 142_857_142_857_142_857_142_857_142_857);
        // The largest square.
        assert_eq!(U256::square(u128::MAX).isqrt(), u128::MAX);
        assert_eq!(U256::square(u128::MAX - 1).add(U256 { hi: 0, lo: 1 }).isqrt(), u128::MAX - 1);
    }

    #[test]
    fn square_root_exactly_on_a_half_cent_rounds_to_even() {
        // √1 / 2 = 0.5 → 0, √9 / 2 = 1.5 → 2, √25 / 2 = 2.5 → 2, √49 / 2 = 3.5 → 4.
        let half = |s: u128| round_sqrt_ratio(U256 { hi: 0, lo: s }, 2);
        assert_eq!([half(1), half(9), half(25), half(49)], [0, 2, 2, 4]);
        // Just off the tie: √(9 ± 1) / 2.
        assert_eq!([half(8), half(10)], [1, 2]);
        // A huge tie: (2·10^25 + 1)² / 4 → 10^25 + ½ → 10^25 (even).
        let odd = 2 * 10u128.pow(25) + 1;
        assert_eq!(round_sqrt_ratio(U256::square(odd), 2), 10u128.pow(25));
    }

    #[test]
    fn given_a_deviation_of_exactly_half_a_cent_then_it_rounds_half_even() {
        // Population deviation of {0, x} is x/2.
        assert_eq!(std_dev(&["0", "0.01"]), "0.00"); // 0.005
        assert_eq!(std_dev(&["0", "0.03"]), "0.02"); // 0.015
        assert_eq!(std_dev(&["0", "0.05"]), "0.02"); // 0.025
        assert_eq!(std_dev(&["-0.07", "0"]), "0.04"); // 0.035
    }

    #[test]
    fn given_known_series_then_the_statistics_are_exact() {
        let s = stats(&["2", "4", "4", "4", "5", "5", "7", "9"]);
        assert_eq!(s.standard_deviation, m("2"));
        assert_eq!((s.total, s.average, s.median), (m("40"), m("5"), m("4.5")));
        assert_eq!((s.minimum, s.maximum), (m("2"), m("9")));
        // {1, 2, 3, 4}: σ = √1.25 = 1.1180…
        assert_eq!(std_dev(&["1", "2", "3", "4"]), "1.12");
        // {0, 0, 1}: σ = √2 / 3 = 0.4714…
        assert_eq!(std_dev(&["0", "0", "1"]), "0.47");
        // Equal values: 0.
        assert_eq!(std_dev(&["-3.33", "-3.33", "-3.33"]), "0.00");
        // Large magnitudes stay exact: the extremes of a single amount, and 10^15 · √2 / 3.
        let wide = stats(&["-9999999999999999.99", "9999999999999999.99"]);
        assert_eq!((wide.standard_deviation, wide.average, wide.median), (m("9999999999999999.99"), m("0"), m("0")));
        assert_eq!(std_dev(&["1000000000000000", "0", "0"]), "471404520791031.68");
    }

    #[test]
    fn given_an_average_or_even_median_on_half_a_cent_then_it_rounds_half_even() {
        // Average 0.005 → 0.00; 0.015 → 0.02; −0.025 → −0.02.
        assert_eq!(stats(&["0.01", "0"]).average, m("0"));
        assert_eq!(stats(&["0.03", "0"]).average, m("0.02"));
        assert_eq!(stats(&["-0.05", "0"]).average, m("-0.02"));
        // Median of an even count is the mean of the middle two.
        assert_eq!(stats(&["0.01", "0", "100", "-100"]).median, m("0"));
        assert_eq!(stats(&["0.03", "0", "100", "-100"]).median, m("0.02"));
        // Odd count: the middle value, no rounding.
        assert_eq!(stats(&["7.77", "-1", "3.33"]).median, m("3.33"));
        // An average that does not terminate: 1/3.
        assert_eq!(stats(&["1", "0", "0"]).average, m("0.33"));
    }

    #[test]
    fn given_months_without_transactions_then_they_count_as_zero_in_the_statistics() {
        // asOf 2024-04-10, 3 months: Jan, Feb, Mar 2024. Only February has rent.
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            0,
            "2024-01-01",
            vec![labelled("t1", "2024-02-29", -90_000, "", &["RENT"])],
        )]);
        let e = financial_breakdown(&params(3, vec![group("RENT", &["RENT"], &[])]), d("2024-04-10"), &u).unwrap();
        let g = &e.label_groups[0];
        assert_eq!(
            (g.total, g.average, g.minimum, g.maximum, g.median),
            (m("-900"), m("-300"), m("-900"), m("0"), m("0"))
        );
        assert_eq!(g.standard_deviation, m("424.26")); // 900·√2/3 = 424.264…
        let months: Vec<(String, Money, u64)> =
            g.months.iter().map(|x| (x.month.to_string(), x.total, x.count)).collect();
        assert_eq!(
            months,
            [("2024-01".into(), m("0"), 0), ("2024-02".into(), m("-900"), 1), ("2024-03".into(), m("0"), 0)]
        );
    }

    #[test]
    fn given_exclude_labels_then_a_transaction_carrying_one_is_not_in_the_group() {
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            0,
            "2024-01-01",
            vec![
                labelled("t1", "2024-03-01", -1_000, "", &["BAR"]),
                labelled("t2", "2024-03-02", 500, "", &["CINEMA", "REFUND"]),
                labelled("t3", "2024-03-03", -200, "", &["cinema"]),
                labelled("t4", "2024-03-04", -300, "", &["REFUND"]),
            ],
        )]);
        let p = params(1, vec![group("fun", &["BAR", "CINEMA"], &["REFUND"]), group("REFUND", &["REFUND"], &[])]);
        let e = financial_breakdown(&p, d("2024-04-01"), &u).unwrap();
        assert_eq!((e.label_groups[0].total, e.label_groups[0].months[0].count), (m("-10"), 1));
        // A transaction may be in several groups; lower-case "cinema" is another label.
        assert_eq!((e.label_groups[1].total, e.label_groups[1].months[0].count), (m("2"), 2));
    }

    #[test]
    fn given_transactions_outside_the_window_then_they_are_ignored_and_the_user_may_be_absent() {
        // asOf 2024-03-01, 1 month: February 2024 only (29 days).
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            0,
            "2024-01-01",
            vec![labelled("t1", "2024-01-31", -1, "", &["RENT"]), labelled("t2", "2024-03-01", -1, "", &["RENT"])],
        )]);
        let p = params(1, vec![group("RENT", &["RENT"], &[])]);
        assert_eq!(financial_breakdown(&p, d("2024-03-01"), &u), None);
        let edge = user(vec![account(
            "a",
            AccountType::Checking,
            0,
            "2024-01-01",
            vec![labelled("t1", "2024-02-01", -1, "", &["RENT"]), labelled("t2", "2024-02-29", -2, "", &["RENT"])],
        )]);
        let e = financial_breakdown(&p, d("2024-03-01"), &edge).unwrap();
        assert_eq!((e.label_groups[0].total, e.label_groups[0].months[0].count), (m("-0.03"), 2));
    }

    #[test]
    fn given_only_a_zero_amount_match_then_the_user_is_present_with_count_one() {
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            0,
            "2024-01-01",
            vec![labelled("t1", "2024-02-10", 0, "", &["RENT"])],
        )]);
        let p = params(1, vec![group("RENT", &["RENT"], &[]), group("FOOD", &["FOOD"], &[])]);
        let e = financial_breakdown(&p, d("2024-03-01"), &u).unwrap();
        // Every requested group is listed, in request order, even one without transactions.
        let aliases: Vec<&str> = e.label_groups.iter().map(|g| g.alias.as_str()).collect();
        assert_eq!(aliases, ["RENT", "FOOD"]);
        assert_eq!((e.label_groups[0].total, e.label_groups[0].months[0].count), (m("0"), 1));
        assert_eq!(e.label_groups[1].months[0].count, 0);
    }

    #[test]
    fn given_several_accounts_then_their_transactions_add_up_per_month() {
        let u = user(vec![
            account(
                "a",
                AccountType::Checking,
                0,
                "2024-01-01",
                vec![labelled("t1", "2023-12-31", -10, "", &["FOOD"])],
            ),
            account(
                "b",
                AccountType::CreditCard,
                0,
                "2024-01-01",
                vec![labelled("t1", "2023-12-01", -20, "", &["FOOD", "FOOD"])],
            ),
        ]);
        let e = financial_breakdown(&params(2, vec![group("FOOD", &["FOOD"], &[])]), d("2024-01-15"), &u).unwrap();
        let g = &e.label_groups[0];
        assert_eq!(
            (g.months[1].month.to_string(), g.months[1].total, g.months[1].count),
            ("2023-12".into(), m("-0.30"), 2)
        );
        assert_eq!(g.median, m("-0.15"));
        assert_eq!(g.standard_deviation, m("0.15"));
    }

    #[test]
    fn entry_serializes_with_the_names_of_design_section_4() {
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            0,
            "2024-01-01",
            vec![labelled("t1", "2024-02-10", -1_050, "", &["RENT"])],
        )]);
        let e = financial_breakdown(&params(1, vec![group("RENT", &["RENT"], &[])]), d("2024-03-01"), &u).unwrap();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"userId":"u1","labelGroups":[{"alias":"RENT","total":-10.50,"average":-10.50,"minimum":-10.50,"maximum":-10.50,"median":-10.50,"standardDeviation":0.00,"months":[{"month":"2024-02","total":-10.50,"count":1}]}]}"#
        );
    }

    proptest! {
        #![proptest_config(reference::config(3000))]

        /// Against a month-by-month, day-by-day scan and textbook statistics in `Decimal`.
        #[test]
        fn matches_the_naive_reference((as_of, u, p) in reference::financial_breakdown_case()) {
            prop_assert_eq!(financial_breakdown(&p, as_of, &u), reference::financial_breakdown(&p, as_of, &u));
        }

        /// The statistics alone, over wide magnitudes and exact half-cent ties.
        #[test]
        fn statistics_match_the_reference(values in reference::monthly_totals()) {
            let s = Stats::of(&values);
            let r = reference::statistics(&values);
            prop_assert_eq!(
                (s.total, s.average, s.minimum, s.maximum, s.median, s.standard_deviation),
                (r.total, r.average, r.minimum, r.maximum, r.median, r.standard_deviation)
            );
        }

        /// The integer square root brackets the value exactly: r² ≤ s < (r + 1)².
        #[test]
        fn integer_square_root_brackets(hi in 0u128..(1u128 << 120), lo in any::<u128>()) {
            let s = U256 { hi, lo };
            let r = s.isqrt();
            prop_assert!(U256::square(r) <= s);
            prop_assert!(r == u128::MAX || U256::square(r + 1) > s);
        }
    }
}
