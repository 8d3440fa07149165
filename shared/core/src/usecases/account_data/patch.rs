//! A day's changes to one user's data (`PATCH /data/users/{userId}`), applied to what is stored.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;

use crate::domain::{
    Account, AccountHistory, AccountId, AccountType, Currency, Money, Transaction, TransactionId, UserData,
};

/// The changes to one account: its new balance, and transactions upserted or deleted by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPatch {
    pub account_id: AccountId,
    pub balance: Money,
    pub balance_date: NaiveDate,
    /// Required for an account not yet stored; for a stored one it may change the type.
    pub account_type: Option<AccountType>,
    /// Required for an account not yet stored; for a stored one it must be the stored currency.
    pub currency: Option<Currency>,
    /// Replace the stored transaction of the same id (whatever its date), or add it. The
    /// `currency` of each is ignored: a transaction's currency is its account's.
    pub upsert_transactions: Vec<Transaction>,
    pub delete_transactions: Vec<TransactionId>,
}

/// The changes to one user. Validated for shape by the body parser (ids unique within the patch,
/// no account both changed and deleted); [`UserPatch::apply`] checks it against the stored data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPatch {
    pub accounts: Vec<AccountPatch>,
    /// Accounts to remove with all their transactions; an account not stored is ignored, so a
    /// repeated patch is harmless.
    pub delete_accounts: Vec<AccountId>,
}

/// A change that does not fit the stored data, named by its JSON pointer in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError {
    pub pointer: String,
    pub message: String,
}

impl UserPatch {
    /// The stored data with the changes applied. Transactions a patch does not name stay as they
    /// are; deleting an id that is not stored changes nothing.
    pub fn apply(&self, stored: &UserData) -> Result<UserData, PatchError> {
        let mut accounts: BTreeMap<AccountId, AccountHistory> =
            stored.accounts.iter().map(|a| (a.account.account_id.clone(), a.clone())).collect();
        for (i, change) in self.accounts.iter().enumerate() {
            let at = |field: &str| format!("/accounts/{i}/{field}");
            let history = match accounts.get_mut(&change.account_id) {
                Some(history) => {
                    if let Some(currency) = change.currency
                        && currency != history.account.currency
                    {
                        return Err(PatchError {
                            pointer: at("currency"),
                            message: format!(
                                "must be the account's currency {} (a stored account cannot change currency; PUT the user to replace it)",
                                history.account.currency
                            ),
                        });
                    }
                    history
                }
                None => {
                    let missing = |field: &str| PatchError {
                        pointer: at(field),
                        message: "is required for an account that is not stored yet".into(),
                    };
                    let account = Account {
                        user_id: stored.user_id.clone(),
                        account_id: change.account_id.clone(),
                        account_type: change.account_type.ok_or_else(|| missing("accountType"))?,
                        currency: change.currency.ok_or_else(|| missing("currency"))?,
                        balance: change.balance,
                        balance_date: change.balance_date,
                    };
                    accounts
                        .entry(change.account_id.clone())
                        .or_insert(AccountHistory { account, transactions: vec![] })
                }
            };
            history.account.balance = change.balance;
            history.account.balance_date = change.balance_date;
            if let Some(account_type) = change.account_type {
                history.account.account_type = account_type;
            }
            let currency = history.account.currency;
            let replaced: BTreeSet<&TransactionId> = change
                .upsert_transactions
                .iter()
                .map(|t| &t.transaction_id)
                .chain(change.delete_transactions.iter())
                .collect();
            history.transactions.retain(|t| !replaced.contains(&t.transaction_id));
            history
                .transactions
                .extend(change.upsert_transactions.iter().map(|t| Transaction { currency, ..t.clone() }));
            history
                .transactions
                .sort_by(|a, b| (a.booking_date, &a.transaction_id).cmp(&(b.booking_date, &b.transaction_id)));
        }
        for account in &self.delete_accounts {
            accounts.remove(account);
        }
        Ok(UserData { user_id: stored.user_id.clone(), accounts: accounts.into_values().collect() })
    }

    /// Where the patch names `account`, as a JSON pointer (for an account another user holds).
    pub fn pointer_of(&self, account: &AccountId) -> String {
        match self.accounts.iter().position(|a| &a.account_id == account) {
            Some(i) => format!("/accounts/{i}/accountId"),
            None => "/accounts".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn tx(id: &str, date: &str, cents: i64) -> Transaction {
        Transaction {
            transaction_id: TransactionId::parse(id).unwrap(),
            booking_date: date.parse().unwrap(),
            amount: Money::from_cents(cents),
            currency: Currency::parse("USD").unwrap(),
            counterpart_name: String::new(),
            labels: vec![],
        }
    }

    fn stored() -> UserData {
        let account = |id: &str| Account {
            user_id: UserId::parse("u1").unwrap(),
            account_id: AccountId::parse(id).unwrap(),
            account_type: AccountType::Checking,
            currency: Currency::parse("EUR").unwrap(),
            balance: Money::from_cents(100),
            balance_date: "2024-05-31".parse().unwrap(),
        };
        let eur = |t: Transaction| Transaction { currency: Currency::parse("EUR").unwrap(), ..t };
        UserData {
            user_id: UserId::parse("u1").unwrap(),
            accounts: vec![
                AccountHistory {
                    account: account("a1"),
                    transactions: vec![eur(tx("t1", "2024-05-01", -10)), eur(tx("t2", "2024-05-02", -20))],
                },
                AccountHistory { account: account("a2"), transactions: vec![eur(tx("t9", "2024-05-03", 5))] },
            ],
        }
    }

    fn change(id: &str) -> AccountPatch {
        AccountPatch {
            account_id: AccountId::parse(id).unwrap(),
            balance: Money::from_cents(999),
            balance_date: "2024-06-01".parse().unwrap(),
            account_type: None,
            currency: None,
            upsert_transactions: vec![],
            delete_transactions: vec![],
        }
    }

    #[test]
    fn an_upsert_with_a_new_date_replaces_the_transaction_and_a_delete_removes_one() {
        let mut a1 = change("a1");
        a1.upsert_transactions = vec![tx("t1", "2024-05-20", -15), tx("t3", "2024-05-21", 7)];
        a1.delete_transactions = vec![TransactionId::parse("t2").unwrap(), TransactionId::parse("t404").unwrap()];
        let patch = UserPatch { accounts: vec![a1], delete_accounts: vec![AccountId::parse("a2").unwrap()] };
        let next = patch.apply(&stored()).unwrap();
        assert_eq!(next.accounts.len(), 1);
        let a1 = &next.accounts[0];
        assert_eq!(a1.account.balance, Money::from_cents(999));
        let ids: Vec<(&str, String, &str)> = a1
            .transactions
            .iter()
            .map(|t| (t.transaction_id.as_str(), t.booking_date.to_string(), t.currency.as_str()))
            .collect();
        assert_eq!(ids, [("t1", "2024-05-20".to_owned(), "EUR"), ("t3", "2024-05-21".to_owned(), "EUR")]);
    }

    #[test]
    fn a_new_account_needs_its_type_and_currency_and_a_stored_one_keeps_its_currency() {
        let patch = UserPatch { accounts: vec![change("a3")], delete_accounts: vec![] };
        assert_eq!(patch.apply(&stored()).unwrap_err().pointer, "/accounts/0/accountType");

        let mut a3 = change("a3");
        a3.account_type = Some(AccountType::Savings);
        a3.currency = Some(Currency::parse("CHF").unwrap());
        let next = UserPatch { accounts: vec![a3], delete_accounts: vec![] }.apply(&stored()).unwrap();
        assert_eq!(next.accounts.iter().map(|a| a.account.account_id.as_str()).collect::<Vec<_>>(), ["a1", "a2", "a3"]);

        let mut a1 = change("a1");
        a1.currency = Some(Currency::parse("CHF").unwrap());
        let patch = UserPatch { accounts: vec![change("a2"), a1], delete_accounts: vec![] };
        assert_eq!(patch.apply(&stored()).unwrap_err().pointer, "/accounts/1/currency");
    }
}
