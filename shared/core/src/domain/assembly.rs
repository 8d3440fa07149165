//! Turning account data items, read in key order, into users: the one place where a stream of
//! accounts and transactions becomes [`UserData`]. Key order is a user's items together, each
//! account followed directly by its transactions; both stores read a shard in that order, and the
//! benchmark feeds its files through the same code.

use super::records::AccountItem;
use super::{AccountHistory, AccountId, UserData, UserId};

/// Why items do not assemble into users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    /// A transaction whose account item does not directly precede it (the account is missing).
    #[error("transaction {transaction_id} of account {account_id} of user {user_id}: the account item is missing")]
    Orphan { user_id: UserId, account_id: AccountId, transaction_id: String },
}

/// Assembles users from items in key order, holding one user at a time.
#[derive(Debug, Default)]
pub struct UserAssembler {
    /// The user being assembled: complete once an item of another user (or the end) arrives.
    current: Option<UserData>,
    /// An error found with the item that started a new user; reported after the user before it.
    pending: Option<AssemblyError>,
}

impl UserAssembler {
    pub fn new() -> Self {
        UserAssembler::default()
    }

    /// Adds the next item. Returns the previous user when `item` is the first of another user.
    /// When that item cannot start a user, the previous user is still returned and the error
    /// comes with the next call.
    pub fn push(&mut self, item: AccountItem) -> Result<Option<UserData>, AssemblyError> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        if let Some(current) = &mut self.current
            && current.user_id == *item.user_id()
        {
            add(current, item)?;
            return Ok(None);
        }
        let done = self.current.take();
        match start(item) {
            Ok(next) => {
                self.current = Some(next);
                Ok(done)
            }
            Err(e) => match done {
                Some(done) => {
                    self.pending = Some(e);
                    Ok(Some(done))
                }
                None => Err(e),
            },
        }
    }

    /// The last user, at the end of the items.
    pub fn finish(&mut self) -> Result<Option<UserData>, AssemblyError> {
        match self.pending.take() {
            Some(e) => Err(e),
            None => Ok(self.current.take()),
        }
    }
}

fn start(item: AccountItem) -> Result<UserData, AssemblyError> {
    match item {
        AccountItem::Account(account) => Ok(UserData {
            user_id: account.user_id.clone(),
            accounts: vec![AccountHistory { account, transactions: Vec::new() }],
        }),
        AccountItem::Transaction { user_id, account_id, transaction } => {
            Err(AssemblyError::Orphan { user_id, account_id, transaction_id: transaction.transaction_id.to_string() })
        }
    }
}

fn add(user: &mut UserData, item: AccountItem) -> Result<(), AssemblyError> {
    match item {
        AccountItem::Account(account) => {
            user.accounts.push(AccountHistory { account, transactions: Vec::new() });
            Ok(())
        }
        AccountItem::Transaction { user_id, account_id, transaction } => match user.accounts.last_mut() {
            Some(last) if last.account.account_id == account_id => {
                last.transactions.push(transaction);
                Ok(())
            }
            _ => Err(AssemblyError::Orphan {
                user_id,
                account_id,
                transaction_id: transaction.transaction_id.to_string(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::domain::{Account, AccountType, Currency, Money, Transaction};

    fn account(user: &str, id: &str) -> AccountItem {
        AccountItem::Account(Account {
            account_id: id.parse().unwrap(),
            user_id: user.parse().unwrap(),
            account_type: AccountType::Checking,
            currency: Currency::parse("EUR").unwrap(),
            balance: Money::from_cents(100),
            balance_date: NaiveDate::from_ymd_opt(2024, 5, 31).unwrap(),
        })
    }

    fn transaction(user: &str, account: &str, id: &str) -> AccountItem {
        AccountItem::Transaction {
            user_id: user.parse().unwrap(),
            account_id: account.parse().unwrap(),
            transaction: Transaction {
                transaction_id: id.parse().unwrap(),
                booking_date: NaiveDate::from_ymd_opt(2024, 5, 2).unwrap(),
                amount: Money::from_cents(-5),
                currency: Currency::parse("EUR").unwrap(),
                counterpart_name: String::new(),
                labels: Vec::new(),
            },
        }
    }

    fn shape(user: &UserData) -> Vec<(String, usize)> {
        user.accounts.iter().map(|h| (h.account.account_id.to_string(), h.transactions.len())).collect()
    }

    #[test]
    fn items_in_key_order_become_one_user_at_a_time() {
        let mut a = UserAssembler::new();
        assert_eq!(a.push(account("u1", "a1")).unwrap(), None);
        assert_eq!(a.push(transaction("u1", "a1", "t1")).unwrap(), None);
        assert_eq!(a.push(transaction("u1", "a1", "t2")).unwrap(), None);
        assert_eq!(a.push(account("u1", "a2")).unwrap(), None);
        let u1 = a.push(account("u2", "b1")).unwrap().expect("u1 is complete");
        assert_eq!(u1.user_id.as_str(), "u1");
        assert_eq!(shape(&u1), [("a1".to_owned(), 2), ("a2".to_owned(), 0)]);
        let u2 = a.finish().unwrap().expect("u2 at the end");
        assert_eq!(shape(&u2), [("b1".to_owned(), 0)]);
        assert_eq!(a.finish().unwrap(), None);
    }

    #[test]
    fn a_transaction_without_its_account_is_an_error_after_the_user_before_it() {
        let mut a = UserAssembler::new();
        assert!(matches!(a.push(transaction("u1", "a1", "t1")), Err(AssemblyError::Orphan { .. })));

        let mut a = UserAssembler::new();
        a.push(account("u1", "a1")).unwrap();
        assert!(matches!(a.push(transaction("u1", "a2", "t1")), Err(AssemblyError::Orphan { .. })));

        let mut a = UserAssembler::new();
        a.push(account("u1", "a1")).unwrap();
        let done = a.push(transaction("u2", "b1", "t1")).unwrap();
        assert_eq!(done.map(|u| u.user_id.to_string()), Some("u1".to_owned()));
        assert!(matches!(a.finish(), Err(AssemblyError::Orphan { .. })));
    }
}
