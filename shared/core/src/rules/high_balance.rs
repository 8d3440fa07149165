//! highBalance (docs/semantics.md): accounts of a type (and currency) whose balance at the end of `asOf`
//! is strictly greater than the threshold.

use chrono::NaiveDate;

use super::params::HighBalanceParams;
use super::{AccountAmount, AccountsEntry};
use crate::domain::UserData;

pub fn high_balance(params: &HighBalanceParams, as_of: NaiveDate, user: &UserData) -> Option<AccountsEntry> {
    let mut accounts: Vec<AccountAmount> = user
        .accounts
        .iter()
        .filter(|h| h.account.account_type == params.account_type)
        .filter(|h| params.currency.is_none_or(|c| h.account.currency == c))
        .map(|h| AccountAmount { account_id: h.account.account_id.clone(), amount: h.balance_at_end_of(as_of) })
        .filter(|a| a.amount > params.threshold)
        .collect();
    if accounts.is_empty() {
        return None;
    }
    accounts.sort_by(|a, b| a.account_id.cmp(&b.account_id));
    Some(AccountsEntry { user_id: user.user_id.clone(), accounts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Account, AccountHistory, AccountId, AccountType, Currency, Money, Transaction, TransactionId, UserId,
    };
    use proptest::prelude::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn account(
        id: &str,
        t: AccountType,
        cur: &str,
        balance: i64,
        balance_date: &str,
        txs: &[(&str, i64)],
    ) -> AccountHistory {
        AccountHistory {
            account: Account {
                user_id: UserId::parse("u1").unwrap(),
                account_id: AccountId::parse(id).unwrap(),
                account_type: t,
                currency: Currency::parse(cur).unwrap(),
                balance: Money::from_cents(balance),
                balance_date: d(balance_date),
            },
            transactions: txs
                .iter()
                .enumerate()
                .map(|(i, (date, cents))| Transaction {
                    transaction_id: TransactionId::parse(&format!("t{i}")).unwrap(),
                    booking_date: d(date),
                    amount: Money::from_cents(*cents),
                    currency: Currency::parse(cur).unwrap(),
                    counterpart_name: String::new(),
                    labels: vec![],
                })
                .collect(),
        }
    }

    fn user(accounts: Vec<AccountHistory>) -> UserData {
        UserData { user_id: UserId::parse("u1").unwrap(), accounts }
    }

    fn params(threshold: i64, currency: Option<&str>) -> HighBalanceParams {
        HighBalanceParams {
            account_type: AccountType::Checking,
            threshold: Money::from_cents(threshold),
            currency: currency.map(|c| Currency::parse(c).unwrap()),
        }
    }

    #[test]
    fn given_a_balance_equal_to_the_threshold_then_the_account_does_not_qualify() {
        let u = user(vec![account("a", AccountType::Checking, "EUR", 500_000, "2024-06-01", &[])]);
        assert_eq!(high_balance(&params(500_000, None), d("2024-06-01"), &u), None);
        let hit = high_balance(&params(499_999, None), d("2024-06-01"), &u).unwrap();
        assert_eq!(hit.accounts[0].amount, Money::from_cents(500_000));
    }

    #[test]
    fn given_as_of_before_the_balance_date_then_later_transactions_are_undone() {
        // 6000 today, but a 2000 salary arrived after asOf: at asOf the balance was 4000.
        let u =
            user(vec![account("a", AccountType::Checking, "EUR", 600_000, "2024-06-10", &[("2024-06-05", 200_000)])]);
        assert_eq!(high_balance(&params(500_000, None), d("2024-06-04"), &u), None);
        assert!(high_balance(&params(500_000, None), d("2024-06-05"), &u).is_some());
    }

    #[test]
    fn given_other_types_and_currencies_then_only_matching_accounts_count_sorted_by_id() {
        let u = user(vec![
            account("z", AccountType::Checking, "EUR", 900_000, "2024-06-01", &[]),
            account("b", AccountType::Savings, "EUR", 900_000, "2024-06-01", &[]),
            account("a", AccountType::Checking, "USD", 900_000, "2024-06-01", &[]),
            account("c", AccountType::Checking, "EUR", 100, "2024-06-01", &[]),
        ]);
        let all = high_balance(&params(500_000, None), d("2024-06-01"), &u).unwrap();
        let ids: Vec<&str> = all.accounts.iter().map(|a| a.account_id.as_str()).collect();
        assert_eq!(ids, ["a", "z"]);
        let eur = high_balance(&params(500_000, Some("EUR")), d("2024-06-01"), &u).unwrap();
        let ids: Vec<&str> = eur.accounts.iter().map(|a| a.account_id.as_str()).collect();
        assert_eq!(ids, ["z"]);
    }

    proptest! {
        /// Against a day-by-day reference: replay every transaction forwards from a start balance
        /// and compare with the backwards rule of docs/semantics.md.
        #[test]
        fn matches_a_forward_replay(
            start in -1_000_000i64..1_000_000,
            txs in proptest::collection::vec((0u32..60, -200_000i64..200_000), 0..20),
            balance_day in 0u32..60,
            as_of_day in 0u32..80,
            threshold in -500_000i64..1_500_000,
        ) {
            let base = d("2024-01-01");
            let day = |n: u32| base + chrono::Days::new(u64::from(n));
            // Forward replay: the balance at the end of day k is start + Σ amounts booked on days ≤ k.
            let at = |k: u32| start + txs.iter().filter(|(t, _)| *t <= k).map(|(_, c)| c).sum::<i64>();
            // The stored balance is the replayed balance at the balance date; transactions after it
            // are not in the stored balance and must not count at all.
            let stored = at(balance_day);
            let expected_at_as_of = at(as_of_day.min(balance_day));
            let owned: Vec<(String, i64)> = txs.iter().map(|(t, c)| (day(*t).to_string(), *c)).collect();
            let tx_refs: Vec<(&str, i64)> = owned.iter().map(|(s, c)| (s.as_str(), *c)).collect();
            let u = user(vec![account("a", AccountType::Checking, "EUR", stored, &day(balance_day).to_string(), &tx_refs)]);
            let got = high_balance(&params(threshold, None), day(as_of_day), &u);
            if expected_at_as_of > threshold {
                prop_assert_eq!(got.unwrap().accounts[0].amount, Money::from_cents(expected_at_as_of));
            } else {
                prop_assert!(got.is_none());
            }
        }
    }
}
