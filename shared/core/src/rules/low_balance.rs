//! lowBalance (docs/semantics.md): accounts of a type whose end-of-day balance drops strictly below the
//! threshold at least once in **every** month of the window of N complete months.
//!
//! Readings of the rule, chosen where the rule as stated leaves room (see docs/semantics.md):
//! - Every calendar day of the window counts, whether or not something was booked that day: a
//!   day without transactions carries the previous day's balance.
//! - Balances are reconstructed backwards from `balance`/`balanceDate` for every day of the
//!   window, also before the account's first transaction: the account data has no opening date,
//!   so the earliest known state is extended backwards. Transactions booked after `balanceDate`
//!   are not in the stored balance and never count; days on or after `balanceDate` have the
//!   stored balance.
//! - The account's currency plays no part (lowBalance has no `currency` parameter).
//! - `amount` is the lowest end-of-day balance over all days of the window, not only of the
//!   days below the threshold (they coincide: the lowest day is below the threshold whenever the
//!   account qualifies).

use chrono::NaiveDate;

use super::params::LowBalanceParams;
use super::{AccountAmount, AccountsEntry};
use crate::domain::{AccountHistory, Money, Month, UserData};

pub fn low_balance(params: &LowBalanceParams, as_of: NaiveDate, user: &UserData) -> Option<AccountsEntry> {
    let window = Month::window_before(as_of, params.duration_in_month);
    let mut accounts: Vec<AccountAmount> = user
        .accounts
        .iter()
        .filter(|h| h.account.account_type == params.account_type)
        .filter_map(|h| {
            lowest_if_below_every_month(h, &window, params.threshold)
                .map(|amount| AccountAmount { account_id: h.account.account_id.clone(), amount })
        })
        .collect();
    if accounts.is_empty() {
        return None;
    }
    accounts.sort_by(|a, b| a.account_id.cmp(&b.account_id));
    Some(AccountsEntry { user_id: user.user_id.clone(), accounts })
}

/// The lowest end-of-day balance of the window when every month of `window` (consecutive months,
/// oldest first) has a day that ends strictly below `threshold`; `None` otherwise or for an empty
/// window.
///
/// One pass over the transactions builds the net amount booked on each day of the window, one
/// pass over the days replays them forwards: O(days + transactions), independent of their order.
fn lowest_if_below_every_month(h: &AccountHistory, window: &[Month], threshold: Money) -> Option<Money> {
    let first_day = window.first()?.first_day();
    let last_day = window.last()?.last_day();
    let balance_date = h.account.balance_date;
    let day_index = |d: NaiveDate| usize::try_from((d - first_day).num_days()).unwrap_or(0);

    // booked[i]: Σ amounts booked on day first_day + i that the stored balance includes.
    let mut booked = vec![Money::ZERO; day_index(last_day) + 1];
    // Σ amounts with first_day < bookingDate ≤ balanceDate: what separates the end of the window's
    // first day from the stored balance.
    let mut after_first_day = Money::ZERO;
    for t in &h.transactions {
        let d = t.booking_date;
        if first_day < d && d <= balance_date {
            after_first_day += t.amount;
            if d <= last_day {
                booked[day_index(d)] += t.amount;
            }
        }
    }

    let mut balance = h.account.balance - after_first_day;
    let mut lowest = balance;
    let mut day = 0usize;
    for month in window {
        let days_in_month = day_index(month.last_day()) + 1 - day;
        let mut below = false;
        for _ in 0..days_in_month {
            // booked[0] stays zero: the first day's bookings are already in `balance`.
            balance += booked[day];
            below |= balance < threshold;
            lowest = lowest.min(balance);
            day += 1;
        }
        if !below {
            return None;
        }
    }
    Some(lowest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountType;
    use crate::rules::reference::{self, account, d, tx, user};
    use proptest::prelude::*;

    fn params(threshold: i64, months: u32) -> LowBalanceParams {
        LowBalanceParams {
            threshold: Money::from_cents(threshold),
            duration_in_month: months,
            account_type: AccountType::Checking,
        }
    }

    fn amounts(e: &Option<AccountsEntry>) -> Vec<(String, Money)> {
        e.iter().flat_map(|e| &e.accounts).map(|a| (a.account_id.to_string(), a.amount)).collect()
    }

    #[test]
    fn given_a_balance_equal_to_the_threshold_on_its_lowest_day_then_the_account_does_not_qualify() {
        // Constant 100.00 all window long: not strictly below 100.00, strictly below 100.01.
        let u = user(vec![account("a", AccountType::Checking, 10_000, "2024-03-01", vec![])]);
        assert_eq!(low_balance(&params(10_000, 2), d("2024-03-15"), &u), None);
        assert_eq!(
            amounts(&low_balance(&params(10_001, 2), d("2024-03-15"), &u)),
            [("a".into(), Money::from_cents(10_000))]
        );
    }

    #[test]
    fn given_one_month_of_the_window_never_below_then_the_account_does_not_qualify() {
        // Window Jan–Feb 2024. Balance 50 until a salary of 1000 on Feb 1st, stored on Mar 10th.
        // January is below 100 every day, February never.
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            105_000,
            "2024-03-10",
            vec![tx("t1", "2024-02-01", 100_000)],
        )]);
        assert_eq!(low_balance(&params(10_000, 2), d("2024-03-15"), &u), None);
        // With a one-month window (February only) still nothing; with the window ending in
        // January it qualifies.
        assert_eq!(low_balance(&params(10_000, 1), d("2024-03-15"), &u), None);
        assert_eq!(
            amounts(&low_balance(&params(10_000, 1), d("2024-02-29"), &u)),
            [("a".into(), Money::from_cents(5_000))]
        );
    }

    #[test]
    fn given_a_single_low_day_per_month_then_it_qualifies_with_the_lowest_day_of_the_window() {
        // Stored 500.00 on 2024-03-31. January dips to 40 on its last day only (−460 on Jan 31,
        // +460 on Feb 1); February dips to −10.50 on its last day (29th: leap year).
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            50_000,
            "2024-03-31",
            vec![
                tx("t1", "2024-01-31", -46_000),
                tx("t2", "2024-02-01", 46_000),
                tx("t3", "2024-02-29", -51_050),
                tx("t4", "2024-03-01", 51_050),
            ],
        )]);
        let got = low_balance(&params(5_000, 2), d("2024-03-01"), &u);
        assert_eq!(amounts(&got), [("a".into(), Money::from_cents(-1_050))]);
    }

    #[test]
    fn given_a_dip_on_the_first_day_of_the_month_after_the_window_then_it_does_not_count() {
        // Window is February 2024 only; the dip is on March 1st (asOf's month).
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            50_000,
            "2024-03-31",
            vec![tx("t1", "2024-03-01", -49_000), tx("t2", "2024-03-02", 49_000)],
        )]);
        assert_eq!(low_balance(&params(5_000, 1), d("2024-03-20"), &u), None);
    }

    #[test]
    fn given_a_dip_on_the_first_day_of_the_window_then_it_counts() {
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            50_000,
            "2024-03-31",
            vec![tx("t1", "2024-02-01", -49_000), tx("t2", "2024-02-02", 49_000)],
        )]);
        assert_eq!(
            amounts(&low_balance(&params(5_000, 1), d("2024-03-20"), &u)),
            [("a".into(), Money::from_cents(1_000))]
        );
    }

    #[test]
    fn given_transactions_after_the_balance_date_then_they_never_count() {
        // Stored 20.00 on 2024-01-15; a later −500 (booked after the balance date) is not part of
        // it. The window ends after the balance date: those days carry the stored balance.
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            2_000,
            "2024-01-15",
            vec![tx("t1", "2024-01-10", 1_000), tx("t2", "2024-02-10", -50_000)],
        )]);
        let got = low_balance(&params(5_000, 2), d("2024-03-10"), &u);
        // Before Jan 10th: 10.00; from Jan 10th: 20.00, for the rest of the window.
        assert_eq!(amounts(&got), [("a".into(), Money::from_cents(1_000))]);
    }

    #[test]
    fn given_a_balance_date_after_as_of_then_transactions_after_as_of_are_undone_to_reach_the_window() {
        // Stored 1000.00 on 2024-06-30; a salary of 990.00 arrived on 2024-05-02, after asOf.
        // In the window (February 2024) the balance was 10.00.
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            100_000,
            "2024-06-30",
            vec![tx("t1", "2024-05-02", 99_000)],
        )]);
        assert_eq!(
            amounts(&low_balance(&params(5_000, 1), d("2024-03-10"), &u)),
            [("a".into(), Money::from_cents(1_000))]
        );
    }

    #[test]
    fn given_a_window_before_the_first_transaction_then_the_balance_is_carried_backwards() {
        let u =
            user(vec![account("a", AccountType::Checking, -2_500, "2024-06-30", vec![tx("t1", "2024-06-01", -1_000)])]);
        // Window Jan–Mar 2024, long before any transaction: −15.00 every day.
        assert_eq!(
            amounts(&low_balance(&params(0, 3), d("2024-04-02"), &u)),
            [("a".into(), Money::from_cents(-1_500))]
        );
    }

    #[test]
    fn given_same_day_transactions_then_only_the_end_of_day_balance_counts() {
        // An intraday dip (−900 then +900 the same day) never shows in an end-of-day balance.
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            10_000,
            "2024-02-29",
            vec![tx("t1", "2024-02-10", -90_000), tx("t2", "2024-02-10", 90_000)],
        )]);
        assert_eq!(low_balance(&params(5_000, 1), d("2024-03-01"), &u), None);
    }

    #[test]
    fn given_accounts_of_other_types_then_only_the_requested_type_is_listed_sorted_by_id() {
        let u = user(vec![
            account("b", AccountType::Checking, -100, "2024-01-01", vec![]),
            account("a", AccountType::Checking, -200, "2024-01-01", vec![]),
            account("c", AccountType::Savings, -300, "2024-01-01", vec![]),
            account("d", AccountType::Checking, 100, "2024-01-01", vec![]),
        ]);
        let got = low_balance(&params(0, 3), d("2024-06-01"), &u);
        assert_eq!(amounts(&got), [("a".into(), Money::from_cents(-200)), ("b".into(), Money::from_cents(-100))]);
        let savings = LowBalanceParams { account_type: AccountType::Savings, ..params(0, 3) };
        assert_eq!(amounts(&low_balance(&savings, d("2024-06-01"), &u)), [("c".into(), Money::from_cents(-300))]);
    }

    #[test]
    fn given_a_window_across_a_leap_day_then_february_29th_is_a_day_of_its_own() {
        // Only the end of Feb 29th 2024 is below: Feb has a low day, so a one-month window
        // qualifies with exactly that balance.
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            10_000,
            "2024-03-05",
            vec![tx("t1", "2024-02-29", -20_000), tx("t2", "2024-03-01", 20_000)],
        )]);
        assert_eq!(
            amounts(&low_balance(&params(0, 1), d("2024-03-05"), &u)),
            [("a".into(), Money::from_cents(-10_000))]
        );
    }

    #[test]
    fn given_no_account_qualifies_then_the_user_is_absent() {
        let u = user(vec![]);
        assert_eq!(low_balance(&params(0, 3), d("2024-06-01"), &u), None);
    }

    #[test]
    fn entry_serializes_as_user_id_and_accounts() {
        let u = user(vec![account("a", AccountType::Checking, -1_050, "2024-01-01", vec![])]);
        let e = low_balance(&params(0, 1), d("2024-06-01"), &u).unwrap();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"userId":"u1","accounts":[{"accountId":"a","amount":-10.50}]}"#
        );
    }

    proptest! {
        #![proptest_config(reference::config(3000))]

        /// Against the definition, day by day: every end-of-day balance of the window recomputed
        /// from `balance − Σ later transactions`.
        #[test]
        fn matches_the_naive_reference((as_of, u, months, threshold) in reference::low_balance_case()) {
            let p = LowBalanceParams { threshold, duration_in_month: months, account_type: AccountType::Checking };
            prop_assert_eq!(low_balance(&p, as_of, &u), reference::low_balance(&p, as_of, &u));
        }
    }
}
