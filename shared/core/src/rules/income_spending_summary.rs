//! incomeSpendingSummary (docs/semantics.md): per account and in total, the count and sum of incoming and
//! of outgoing transactions booked between `dateFrom` and `dateTo`, both inclusive.
//!
//! Readings of the rule, chosen where the rule as stated leaves room (see docs/semantics.md):
//! - Only the booking date matters: `asOf` and `balanceDate` do not bound the period (a booked
//!   transaction is income or spending whatever the stored balance includes).
//! - An account is listed only when it has at least one counted transaction; the user is present
//!   only when some account is listed. Without `accountType` every account counts.
//! - A zero amount is neither incoming nor outgoing, so an account with only zero amounts in the
//!   period is not listed.

use serde::Serialize;

use super::params::IncomeSpendingSummaryParams;
use crate::domain::{AccountHistory, AccountId, Money, UserData, UserId};

/// The flows of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountFlows {
    pub account_id: AccountId,
    pub incoming_count: u64,
    pub outgoing_count: u64,
    pub incoming_amount: Money,
    pub outgoing_amount: Money,
}

/// `{userId, incomingCount, outgoingCount, incomingAmount, outgoingAmount, accounts: [...]}`:
/// the user's totals over the listed accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IncomeSpendingSummaryEntry {
    pub user_id: UserId,
    pub incoming_count: u64,
    pub outgoing_count: u64,
    pub incoming_amount: Money,
    pub outgoing_amount: Money,
    pub accounts: Vec<AccountFlows>,
}

pub fn income_spending_summary(
    params: &IncomeSpendingSummaryParams,
    user: &UserData,
) -> Option<IncomeSpendingSummaryEntry> {
    let mut accounts: Vec<AccountFlows> = user
        .accounts
        .iter()
        .filter(|h| params.account_type.is_none_or(|t| h.account.account_type == t))
        .filter_map(|h| flows(params, h))
        .collect();
    if accounts.is_empty() {
        return None;
    }
    accounts.sort_by(|a, b| a.account_id.cmp(&b.account_id));
    Some(IncomeSpendingSummaryEntry {
        user_id: user.user_id.clone(),
        incoming_count: accounts.iter().map(|a| a.incoming_count).sum(),
        outgoing_count: accounts.iter().map(|a| a.outgoing_count).sum(),
        incoming_amount: accounts.iter().map(|a| a.incoming_amount).sum(),
        outgoing_amount: accounts.iter().map(|a| a.outgoing_amount).sum(),
        accounts,
    })
}

/// The account's flows in the period, `None` when no transaction counts.
fn flows(params: &IncomeSpendingSummaryParams, h: &AccountHistory) -> Option<AccountFlows> {
    let mut f = AccountFlows {
        account_id: h.account.account_id.clone(),
        incoming_count: 0,
        outgoing_count: 0,
        incoming_amount: Money::ZERO,
        outgoing_amount: Money::ZERO,
    };
    for t in h.transactions.iter().filter(|t| params.date_from <= t.booking_date && t.booking_date <= params.date_to) {
        if t.amount.is_positive() {
            f.incoming_count += 1;
            f.incoming_amount += t.amount;
        } else if t.amount.is_negative() {
            f.outgoing_count += 1;
            f.outgoing_amount += t.amount.abs();
        }
    }
    (f.incoming_count + f.outgoing_count > 0).then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountType;
    use crate::rules::reference::{self, account, d, tx, user};
    use proptest::prelude::*;

    fn params(from: &str, to: &str, account_type: Option<AccountType>) -> IncomeSpendingSummaryParams {
        IncomeSpendingSummaryParams { date_from: d(from), date_to: d(to), account_type }
    }

    fn m(cents: i64) -> Money {
        Money::from_cents(cents)
    }

    #[test]
    fn given_transactions_on_date_from_and_date_to_then_both_count_and_the_days_outside_do_not() {
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            0,
            "2024-01-01",
            vec![
                tx("t1", "2024-01-31", 1_000),
                tx("t2", "2024-02-01", 2_000),
                tx("t3", "2024-02-29", -300),
                tx("t4", "2024-03-01", 4_000),
            ],
        )]);
        let e = income_spending_summary(&params("2024-02-01", "2024-02-29", None), &u).unwrap();
        assert_eq!((e.incoming_count, e.outgoing_count), (1, 1));
        assert_eq!((e.incoming_amount, e.outgoing_amount), (m(2_000), m(300)));
    }

    #[test]
    fn given_zero_amounts_then_they_count_in_neither_direction() {
        let u = user(vec![
            account("a", AccountType::Checking, 0, "2024-01-01", vec![tx("t1", "2024-02-10", 0)]),
            account(
                "b",
                AccountType::Checking,
                0,
                "2024-01-01",
                vec![tx("t1", "2024-02-10", 0), tx("t2", "2024-02-11", -1)],
            ),
        ]);
        let e = income_spending_summary(&params("2024-02-01", "2024-02-29", None), &u).unwrap();
        // Account a has only a zero amount: not listed.
        assert_eq!(e.accounts.len(), 1);
        assert_eq!(e.accounts[0].account_id.as_str(), "b");
        assert_eq!((e.incoming_count, e.outgoing_count, e.outgoing_amount), (0, 1, m(1)));
        let only_zero =
            user(vec![account("a", AccountType::Checking, 0, "2024-01-01", vec![tx("t1", "2024-02-10", 0)])]);
        assert_eq!(income_spending_summary(&params("2024-02-01", "2024-02-29", None), &only_zero), None);
    }

    #[test]
    fn given_several_accounts_then_the_user_totals_add_up_and_accounts_are_sorted_by_id() {
        let u = user(vec![
            account(
                "z",
                AccountType::Checking,
                0,
                "2024-01-01",
                vec![tx("t1", "2024-02-10", 10_000), tx("t2", "2024-02-11", -2_550)],
            ),
            account(
                "m",
                AccountType::Savings,
                0,
                "2024-01-01",
                vec![tx("t1", "2024-02-12", 5), tx("t2", "2024-02-12", -5)],
            ),
        ]);
        let e = income_spending_summary(&params("2024-02-01", "2024-02-29", None), &u).unwrap();
        let ids: Vec<&str> = e.accounts.iter().map(|a| a.account_id.as_str()).collect();
        assert_eq!(ids, ["m", "z"]);
        assert_eq!((e.incoming_count, e.outgoing_count), (2, 2));
        assert_eq!((e.incoming_amount, e.outgoing_amount), (m(10_005), m(2_555)));
        let checking =
            income_spending_summary(&params("2024-02-01", "2024-02-29", Some(AccountType::Checking)), &u).unwrap();
        assert_eq!(checking.accounts.len(), 1);
        assert_eq!((checking.incoming_amount, checking.outgoing_amount), (m(10_000), m(2_550)));
    }

    #[test]
    fn given_transactions_after_the_balance_date_then_they_still_count() {
        let u = user(vec![account("a", AccountType::Checking, 0, "2024-01-01", vec![tx("t1", "2024-02-10", 700)])]);
        let e = income_spending_summary(&params("2024-02-01", "2024-02-29", None), &u).unwrap();
        assert_eq!(e.incoming_amount, m(700));
    }

    #[test]
    fn given_no_transaction_in_the_period_then_the_user_is_absent() {
        let u = user(vec![account("a", AccountType::Checking, 0, "2024-01-01", vec![tx("t1", "2024-03-01", 700)])]);
        assert_eq!(income_spending_summary(&params("2024-02-01", "2024-02-29", None), &u), None);
    }

    #[test]
    fn entry_serializes_with_camel_case_fields() {
        let u = user(vec![account(
            "a",
            AccountType::Checking,
            0,
            "2024-01-01",
            vec![tx("t1", "2024-02-10", 1_050), tx("t2", "2024-02-11", -2)],
        )]);
        let e = income_spending_summary(&params("2024-02-01", "2024-02-29", None), &u).unwrap();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"userId":"u1","incomingCount":1,"outgoingCount":1,"incomingAmount":10.50,"outgoingAmount":0.02,"accounts":[{"accountId":"a","incomingCount":1,"outgoingCount":1,"incomingAmount":10.50,"outgoingAmount":0.02}]}"#
        );
    }

    proptest! {
        #![proptest_config(reference::config(3000))]

        /// Against a day-by-day scan of the period.
        #[test]
        fn matches_the_naive_reference((u, p) in reference::income_spending_summary_case()) {
            prop_assert_eq!(income_spending_summary(&p, &u), reference::income_spending_summary(&p, &u));
        }
    }
}
