use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{AccountId, AccountType, Currency, Money, TransactionId, UserId};

/// An account as the account data holds it (docs/data.md), without its mandator: within the domain
/// the mandator is always the context, never a field that could disagree with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub user_id: UserId,
    pub account_id: AccountId,
    pub account_type: AccountType,
    pub currency: Currency,
    pub balance: Money,
    pub balance_date: NaiveDate,
}

/// A booked transaction of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    pub transaction_id: TransactionId,
    pub booking_date: NaiveDate,
    pub amount: Money,
    pub currency: Currency,
    #[serde(default)]
    pub counterpart_name: String,
    #[serde(default)]
    pub labels: Vec<String>,
}

/// One account with its transactions, ordered by (bookingDate, transactionId) as a shard's
/// Query yields them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountHistory {
    pub account: Account,
    pub transactions: Vec<Transaction>,
}

/// Everything a segment computation sees of one user: accounts ordered by accountId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserData {
    pub user_id: UserId,
    pub accounts: Vec<AccountHistory>,
}

impl AccountHistory {
    /// Balance at the end of day `d` (docs/semantics.md): `balance` − Σ amounts of the transactions with
    /// `d < bookingDate ≤ balanceDate`; for `d ≥ balanceDate` it is `balance`.
    pub fn balance_at_end_of(&self, d: NaiveDate) -> Money {
        let balance_date = self.account.balance_date;
        if d >= balance_date {
            return self.account.balance;
        }
        let later: Money = self
            .transactions
            .iter()
            .filter(|t| d < t.booking_date && t.booking_date <= balance_date)
            .map(|t| t.amount)
            .sum();
        self.account.balance - later
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn m(s: &str) -> Money {
        s.parse().unwrap()
    }

    fn tx(id: &str, date: &str, amount: &str) -> Transaction {
        Transaction {
            transaction_id: TransactionId::parse(id).unwrap(),
            booking_date: d(date),
            amount: m(amount),
            currency: Currency::parse("EUR").unwrap(),
            counterpart_name: String::new(),
            labels: vec![],
        }
    }

    fn history(balance: &str, balance_date: &str, txs: Vec<Transaction>) -> AccountHistory {
        AccountHistory {
            account: Account {
                user_id: UserId::parse("u1").unwrap(),
                account_id: AccountId::parse("a1").unwrap(),
                account_type: AccountType::Checking,
                currency: Currency::parse("EUR").unwrap(),
                balance: m(balance),
                balance_date: d(balance_date),
            },
            transactions: txs,
        }
    }

    #[test]
    fn given_a_day_on_or_after_the_balance_date_when_asked_then_the_balance_is_the_stored_one() {
        let h = history("100.00", "2024-05-10", vec![tx("t1", "2024-05-11", "-50")]);
        assert_eq!(h.balance_at_end_of(d("2024-05-10")), m("100"));
        assert_eq!(h.balance_at_end_of(d("2024-06-01")), m("100"));
    }

    #[test]
    fn given_earlier_days_when_asked_then_later_transactions_up_to_the_balance_date_are_undone() {
        let h = history(
            "100.00",
            "2024-05-10",
            vec![
                tx("t1", "2024-05-01", "20"),
                tx("t2", "2024-05-05", "-30.50"),
                tx("t3", "2024-05-10", "10"),
                tx("t4", "2024-05-12", "999"),
            ],
        );
        // End of 05-09: undo t3 only.
        assert_eq!(h.balance_at_end_of(d("2024-05-09")), m("90"));
        // End of 05-05: t2 happened that day and stays; undo t3.
        assert_eq!(h.balance_at_end_of(d("2024-05-05")), m("90"));
        // End of 05-04: undo t2 and t3.
        assert_eq!(h.balance_at_end_of(d("2024-05-04")), m("120.50"));
        // End of 04-30: undo t1, t2, t3; t4 is after the balance date and never counts.
        assert_eq!(h.balance_at_end_of(d("2024-04-30")), m("100.50"));
    }
}
