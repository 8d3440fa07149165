//! Segment parameters and the segment computations (docs/api.md, docs/semantics.md). Pure: typed records in,
//! typed entries out; no I/O.
//!
//! Every computation looks at one user at a time ([`UserData`]), so a worker streams a shard and
//! holds one user in memory.

pub mod body;
mod financial_breakdown;
mod high_balance;
mod income_spending_summary;
mod insurance_spending;
mod low_balance;
pub mod params;
#[cfg(test)]
mod reference;

use chrono::NaiveDate;
use serde::Serialize;

pub use financial_breakdown::{FinancialBreakdownEntry, LabelGroupBreakdown, MonthTotal, financial_breakdown};
pub use high_balance::high_balance;
pub use income_spending_summary::{AccountFlows, IncomeSpendingSummaryEntry, income_spending_summary};
pub use insurance_spending::{
    Insurance, InsuranceAccount, InsuranceSpendingEntry, InsuranceType, PaymentFrequency, insurance_spending,
};
pub use low_balance::low_balance;
pub use params::{SegmentParams, SegmentRequest};

use crate::domain::{AccountId, Money, SegmentType, UserData, UserId};

/// `{accountId, amount}` of highBalance and lowBalance entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountAmount {
    pub account_id: AccountId,
    pub amount: Money,
}

/// `{userId, accounts: [{accountId, amount}]}` of highBalance and lowBalance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountsEntry {
    pub user_id: UserId,
    pub accounts: Vec<AccountAmount>,
}

/// One user's entry in a result, of whichever segment type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum UserEntry {
    /// highBalance and lowBalance.
    Accounts(AccountsEntry),
    IncomeSpendingSummary(IncomeSpendingSummaryEntry),
    InsuranceSpending(InsuranceSpendingEntry),
    FinancialBreakdown(FinancialBreakdownEntry),
}

impl UserEntry {
    pub fn user_id(&self) -> &UserId {
        match self {
            UserEntry::Accounts(e) => &e.user_id,
            UserEntry::IncomeSpendingSummary(e) => &e.user_id,
            UserEntry::InsuranceSpending(e) => &e.user_id,
            UserEntry::FinancialBreakdown(e) => &e.user_id,
        }
    }
}

/// A segment type whose computation is not available in this release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("segment type {0} is not available yet")]
pub struct NotAvailable(pub SegmentType);

/// A computation ready to run over users: the validated parameters and the job's `asOf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpec {
    pub as_of: NaiveDate,
    pub params: SegmentParams,
}

impl SegmentSpec {
    /// Whether this release computes the segment type.
    pub fn is_available(segment_type: SegmentType) -> bool {
        matches!(
            segment_type,
            SegmentType::HighBalance
                | SegmentType::LowBalance
                | SegmentType::IncomeSpendingSummary
                | SegmentType::InsuranceSpending
                | SegmentType::FinancialBreakdown
        )
    }

    /// The user's entry, or `None` when the user is not in the segment.
    pub fn evaluate(&self, user: &UserData) -> Result<Option<UserEntry>, NotAvailable> {
        match &self.params {
            SegmentParams::HighBalance(p) => Ok(high_balance(p, self.as_of, user).map(UserEntry::Accounts)),
            SegmentParams::LowBalance(p) => Ok(low_balance(p, self.as_of, user).map(UserEntry::Accounts)),
            SegmentParams::IncomeSpendingSummary(p) => {
                Ok(income_spending_summary(p, user).map(UserEntry::IncomeSpendingSummary))
            }
            SegmentParams::InsuranceSpending(p) => {
                Ok(insurance_spending(p, self.as_of, user).map(UserEntry::InsuranceSpending))
            }
            SegmentParams::FinancialBreakdown(p) => {
                Ok(financial_breakdown(p, self.as_of, user).map(UserEntry::FinancialBreakdown))
            }
        }
    }
}
