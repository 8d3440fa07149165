//! Which accounts a dynamic segment's rule selects in one user's entry of its job's result
//! (docs/segments.md, "Which accounts a rule selects").
//!
//! - highBalance, lowBalance, insuranceSpending: each listed account whose `amount` compares true
//!   (every listed account without a condition).
//! - incomeSpendingSummary: each listed account whose own figure compares true — the account's,
//!   never the user's totals (every listed account without a condition).
//! - financialBreakdown: the result lists no accounts; a user whose label group statistic
//!   compares true is selected with all their accounts, or those of the rule's `accountType`.
//!
//! Entries are read with exact decimals (serde_json keeps each number's literal text), so
//! `0.30` equals a threshold of `0.3` and amounts beyond a float's precision still compare right.

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::domain::segment::{Condition, Figure, Rule};
use crate::domain::{AccountId, AccountType, Money, SegmentType, UserId};

/// The accounts a rule selects of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub user_id: UserId,
    pub accounts: SelectedAccounts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectedAccounts {
    /// These accounts of the entry.
    Listed(Vec<AccountId>),
    /// Every account the user has (of this type, when given): the entry lists none.
    OfUser(Option<AccountType>),
}

/// Why an entry could not be read against a rule: the stored result or the stored rule is not
/// what validation and the computations produce, so the selection cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    #[error("an entry is not a {segment_type} result entry: {source}")]
    Entry {
        segment_type: SegmentType,
        #[source]
        source: serde_json::Error,
    },
    #[error("the entry of user {user_id} has no label group {alias:?}")]
    MissingLabelGroup { user_id: UserId, alias: String },
    #[error("the {segment_type} rule cannot select: {reason}")]
    Rule { segment_type: SegmentType, reason: &'static str },
}

/// highBalance, lowBalance and insuranceSpending: `{userId, accounts: [{accountId, amount, …}]}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmountsEntry {
    user_id: UserId,
    accounts: Vec<AccountAmount>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountAmount {
    account_id: AccountId,
    amount: Money,
}

/// incomeSpendingSummary: the per-account figures; the user's totals are not read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlowsEntry {
    user_id: UserId,
    accounts: Vec<AccountFlows>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountFlows {
    account_id: AccountId,
    incoming_count: u64,
    outgoing_count: u64,
    incoming_amount: Money,
    outgoing_amount: Money,
}

/// financialBreakdown: the statistics of each label group; the months are not read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BreakdownEntry {
    user_id: UserId,
    label_groups: Vec<GroupStatistics>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupStatistics {
    alias: String,
    total: Money,
    average: Money,
    minimum: Money,
    maximum: Money,
    median: Money,
}

/// A figure's value in an entry.
#[derive(Debug, Clone, Copy)]
enum Value {
    Amount(Money),
    Count(u64),
}

/// Whether `value operator threshold` holds: amounts as exact decimals, counts as whole numbers
/// (validation keeps a count's threshold whole).
fn compares(condition: &Condition, value: Value) -> bool {
    let ordering = match value {
        Value::Amount(amount) => amount.cmp(&condition.threshold),
        Value::Count(count) => Decimal::from(count).cmp(&condition.threshold.decimal()),
    };
    condition.operator.admits(ordering)
}

/// What `rule` selects of `entry` (one user of its result); `None` when nothing. `Err` when the
/// entry lacks what the rule's type reads, or the rule is not one validation lets through.
pub fn select(rule: &Rule, entry: &RawValue) -> Result<Option<Selected>, SelectionError> {
    let segment_type = rule.segment_type;
    let read_error = |source| SelectionError::Entry { segment_type, source };
    let wrong_figure = SelectionError::Rule { segment_type, reason: "its condition names a figure of another type" };
    let condition = rule.condition.as_ref();
    match segment_type {
        SegmentType::HighBalance | SegmentType::LowBalance | SegmentType::InsuranceSpending => {
            if condition.is_some_and(|c| c.figure != Figure::Amount) {
                return Err(wrong_figure);
            }
            let e: AmountsEntry = serde_json::from_str(entry.get()).map_err(read_error)?;
            let ids = e
                .accounts
                .into_iter()
                .filter(|a| condition.is_none_or(|c| compares(c, Value::Amount(a.amount))))
                .map(|a| a.account_id)
                .collect();
            Ok(listed(e.user_id, ids))
        }
        SegmentType::IncomeSpendingSummary => {
            let figure: Option<fn(&AccountFlows) -> Value> = match condition.map(|c| c.figure) {
                None => None,
                Some(Figure::IncomingCount) => Some(|a| Value::Count(a.incoming_count)),
                Some(Figure::OutgoingCount) => Some(|a| Value::Count(a.outgoing_count)),
                Some(Figure::IncomingAmount) => Some(|a| Value::Amount(a.incoming_amount)),
                Some(Figure::OutgoingAmount) => Some(|a| Value::Amount(a.outgoing_amount)),
                Some(_) => return Err(wrong_figure),
            };
            let e: FlowsEntry = serde_json::from_str(entry.get()).map_err(read_error)?;
            let ids = e
                .accounts
                .into_iter()
                .filter(|a| match (condition, figure) {
                    (Some(c), Some(figure)) => compares(c, figure(a)),
                    _ => true,
                })
                .map(|a| a.account_id)
                .collect();
            Ok(listed(e.user_id, ids))
        }
        SegmentType::FinancialBreakdown => {
            let rule_error = |reason| SelectionError::Rule { segment_type, reason };
            let condition = condition.ok_or_else(|| rule_error("it has no condition"))?;
            let alias =
                condition.label_group.as_deref().ok_or_else(|| rule_error("its condition names no label group"))?;
            let statistic: fn(&GroupStatistics) -> Money = match condition.figure {
                Figure::Total => |g| g.total,
                Figure::Average => |g| g.average,
                Figure::Minimum => |g| g.minimum,
                Figure::Maximum => |g| g.maximum,
                Figure::Median => |g| g.median,
                _ => return Err(wrong_figure),
            };
            let e: BreakdownEntry = serde_json::from_str(entry.get()).map_err(read_error)?;
            // Every requested group is listed, even one without matches: a missing one means the
            // entry is not of this rule's job.
            let Some(group) = e.label_groups.iter().find(|g| g.alias == alias) else {
                return Err(SelectionError::MissingLabelGroup { user_id: e.user_id, alias: alias.to_owned() });
            };
            Ok(compares(condition, Value::Amount(statistic(group)))
                .then(|| Selected { user_id: e.user_id, accounts: SelectedAccounts::OfUser(rule.account_type) }))
        }
    }
}

/// The user with the accounts selected of their entry, `None` when there are none.
fn listed(user_id: UserId, ids: Vec<AccountId>) -> Option<Selected> {
    (!ids.is_empty()).then_some(Selected { user_id, accounts: SelectedAccounts::Listed(ids) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::segment::Comparison;

    fn rule(segment_type: SegmentType, condition: Option<Condition>, account_type: Option<AccountType>) -> Rule {
        Rule { segment_type, parameters: "{}".to_owned(), condition, account_type }
    }

    fn when(figure: Figure, operator: Comparison, threshold: &str) -> Option<Condition> {
        Some(Condition { figure, label_group: None, operator, threshold: threshold.parse().unwrap() })
    }

    fn of_group(alias: &str, figure: Figure, operator: Comparison, threshold: &str) -> Option<Condition> {
        when(figure, operator, threshold).map(|c| Condition { label_group: Some(alias.to_owned()), ..c })
    }

    fn entry(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    /// The accountIds `rule` selects of `json`, `None` when the user is not selected.
    fn listed_ids(rule: &Rule, json: &str) -> Option<Vec<String>> {
        let selected = select(rule, &entry(json)).unwrap()?;
        assert_eq!(selected.user_id.as_str(), "u1");
        match selected.accounts {
            SelectedAccounts::Listed(ids) => Some(ids.iter().map(|id| id.as_str().to_owned()).collect()),
            SelectedAccounts::OfUser(t) => panic!("a listing type selected the user's accounts ({t:?})"),
        }
    }

    fn ids(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| (*s).to_owned()).collect())
    }

    const BALANCES: &str = r#"{"userId":"u1","accounts":[{"accountId":"a1","amount":4999.99},{"accountId":"a2","amount":5000.00},{"accountId":"a3","amount":5000.01}]}"#;

    #[test]
    fn without_a_condition_every_listed_account_is_selected() {
        for t in [SegmentType::HighBalance, SegmentType::LowBalance, SegmentType::InsuranceSpending] {
            assert_eq!(listed_ids(&rule(t, None, None), BALANCES), ids(&["a1", "a2", "a3"]), "{t}");
        }
        let flows = r#"{"userId":"u1","incomingCount":1,"outgoingCount":1,"incomingAmount":1.00,"outgoingAmount":2.00,
            "accounts":[{"accountId":"a1","incomingCount":1,"outgoingCount":0,"incomingAmount":1.00,"outgoingAmount":0.00},
                        {"accountId":"a2","incomingCount":0,"outgoingCount":1,"incomingAmount":0.00,"outgoingAmount":2.00}]}"#;
        assert_eq!(listed_ids(&rule(SegmentType::IncomeSpendingSummary, None, None), flows), ids(&["a1", "a2"]));
    }

    #[test]
    fn an_amount_equal_to_the_threshold_passes_gte_lte_and_eq_but_not_gt_or_lt() {
        let cases = [
            (Comparison::Gt, ids(&["a3"])),
            (Comparison::Gte, ids(&["a2", "a3"])),
            (Comparison::Lt, ids(&["a1"])),
            (Comparison::Lte, ids(&["a1", "a2"])),
            (Comparison::Eq, ids(&["a2"])),
        ];
        for t in [SegmentType::HighBalance, SegmentType::LowBalance, SegmentType::InsuranceSpending] {
            for (operator, expected) in &cases {
                let r = rule(t, when(Figure::Amount, *operator, "5000"), None);
                assert_eq!(&listed_ids(&r, BALANCES), expected, "{t} {operator:?}");
            }
        }
        // No account passing: the user is not selected at all.
        let none = rule(SegmentType::HighBalance, when(Figure::Amount, Comparison::Gt, "5000.01"), None);
        assert_eq!(listed_ids(&none, BALANCES), None);
    }

    #[test]
    fn amounts_compare_as_exact_decimals() {
        // 0.1 + 0.2 as a float is 0.30000000000000004; written in a result it is 0.30.
        let tenths = r#"{"userId":"u1","accounts":[{"accountId":"a1","amount":0.30}]}"#;
        let eq = rule(SegmentType::LowBalance, when(Figure::Amount, Comparison::Eq, "0.3"), None);
        assert_eq!(listed_ids(&eq, tenths), ids(&["a1"]));
        let gt = rule(SegmentType::LowBalance, when(Figure::Amount, Comparison::Gt, "0.3"), None);
        assert_eq!(listed_ids(&gt, tenths), None);
        // Beyond 2^53 a float cannot tell these apart: 9007199254740993 and ...992.99 both read as
        // 9007199254740992.0, so gt would fail on floats.
        let big = r#"{"userId":"u1","accounts":[{"accountId":"a1","amount":9007199254740993.00}]}"#;
        let above = rule(SegmentType::HighBalance, when(Figure::Amount, Comparison::Gt, "9007199254740992.99"), None);
        assert_eq!(listed_ids(&above, big), ids(&["a1"]));
        let equal = rule(SegmentType::HighBalance, when(Figure::Amount, Comparison::Eq, "9007199254740993"), None);
        assert_eq!(listed_ids(&equal, big), ids(&["a1"]));
        // Negative amounts, one cent apart.
        let overdrawn =
            r#"{"userId":"u1","accounts":[{"accountId":"a1","amount":-100.01},{"accountId":"a2","amount":-100.00}]}"#;
        let below = rule(SegmentType::LowBalance, when(Figure::Amount, Comparison::Lt, "-100"), None);
        assert_eq!(listed_ids(&below, overdrawn), ids(&["a1"]));
    }

    #[test]
    fn income_spending_summary_compares_each_accounts_own_figures_not_the_users_totals() {
        // The user's totals (3 incoming, 300.00) pass every condition below; no single account does.
        let flows = r#"{"userId":"u1","incomingCount":3,"outgoingCount":2,"incomingAmount":300.00,"outgoingAmount":0.30,
            "accounts":[
              {"accountId":"a1","incomingCount":2,"outgoingCount":1,"incomingAmount":200.00,"outgoingAmount":0.10},
              {"accountId":"a2","incomingCount":1,"outgoingCount":1,"incomingAmount":100.00,"outgoingAmount":0.20}]}"#;
        let r = |figure, operator, threshold| {
            rule(SegmentType::IncomeSpendingSummary, when(figure, operator, threshold), None)
        };
        assert_eq!(listed_ids(&r(Figure::IncomingCount, Comparison::Gte, "3"), flows), None);
        assert_eq!(listed_ids(&r(Figure::IncomingAmount, Comparison::Gt, "200"), flows), None);
        // Counts at the boundary: 2 is not gt 2, but is gte 2.
        assert_eq!(listed_ids(&r(Figure::IncomingCount, Comparison::Gt, "2"), flows), None);
        assert_eq!(listed_ids(&r(Figure::IncomingCount, Comparison::Gte, "2"), flows), ids(&["a1"]));
        assert_eq!(listed_ids(&r(Figure::OutgoingCount, Comparison::Eq, "1"), flows), ids(&["a1", "a2"]));
        assert_eq!(listed_ids(&r(Figure::IncomingAmount, Comparison::Gte, "200.00"), flows), ids(&["a1"]));
        assert_eq!(listed_ids(&r(Figure::OutgoingAmount, Comparison::Lt, "0.2"), flows), ids(&["a1"]));
        assert_eq!(listed_ids(&r(Figure::OutgoingAmount, Comparison::Lte, "0.2"), flows), ids(&["a1", "a2"]));
    }

    const BREAKDOWN: &str = r#"{"userId":"u1","labelGroups":[
        {"alias":"RENT","total":-2400.00,"average":-800.00,"minimum":-800.00,"maximum":-800.00,"median":-800.00,
         "standardDeviation":0.00,"months":[]},
        {"alias":"Income","total":7500.00,"average":2500.00,"minimum":2400.00,"maximum":2600.00,"median":2500.00,
         "standardDeviation":81.65,"months":[{"month":"2025-01","total":2400.00,"count":1}]}]}"#;

    fn breakdown(condition: Option<Condition>, account_type: Option<AccountType>) -> Option<Selected> {
        select(&rule(SegmentType::FinancialBreakdown, condition, account_type), &entry(BREAKDOWN)).unwrap()
    }

    #[test]
    fn financial_breakdown_selects_the_users_accounts_when_the_groups_statistic_compares_true() {
        let all = Some(Selected { user_id: UserId::parse("u1").unwrap(), accounts: SelectedAccounts::OfUser(None) });
        // Average of the Income group exactly at the threshold: gte selects, gt does not.
        assert_eq!(breakdown(of_group("Income", Figure::Average, Comparison::Gte, "2500"), None), all);
        assert_eq!(breakdown(of_group("Income", Figure::Average, Comparison::Gt, "2500"), None), None);
        // With an account type, only the user's accounts of that type.
        let checking =
            breakdown(of_group("Income", Figure::Average, Comparison::Gte, "2500"), Some(AccountType::Checking));
        assert_eq!(checking.map(|s| s.accounts), Some(SelectedAccounts::OfUser(Some(AccountType::Checking))));
        // Each statistic is read from its own field, of the named group only.
        let cases = [
            (Figure::Total, "7500", true),
            (Figure::Total, "7500.01", false),
            (Figure::Minimum, "2400", true),
            (Figure::Minimum, "2400.01", false),
            (Figure::Maximum, "2600", true),
            (Figure::Maximum, "2600.01", false),
            (Figure::Median, "2500", true),
            (Figure::Median, "2500.01", false),
        ];
        for (figure, threshold, selected) in cases {
            let got = breakdown(of_group("Income", figure, Comparison::Gte, threshold), None);
            assert_eq!(got.is_some(), selected, "{figure:?} gte {threshold}");
        }
        assert!(breakdown(of_group("RENT", Figure::Average, Comparison::Lte, "-800"), None).is_some());
        assert!(breakdown(of_group("RENT", Figure::Average, Comparison::Gte, "2500"), None).is_none());
    }

    #[test]
    fn entries_without_the_fields_their_type_needs_are_errors_not_empty_selections() {
        let amount = || when(Figure::Amount, Comparison::Gt, "0");
        let cases = [
            (rule(SegmentType::HighBalance, None, None), r#"{"userId":"u1"}"#),
            (rule(SegmentType::HighBalance, None, None), r#"{"accounts":[]}"#),
            (rule(SegmentType::HighBalance, amount(), None), r#"{"userId":"u1","accounts":[{"accountId":"a1"}]}"#),
            (
                rule(SegmentType::LowBalance, amount(), None),
                r#"{"userId":"u1","accounts":[{"accountId":"a1","amount":"5.00"}]}"#,
            ),
            (
                rule(SegmentType::LowBalance, amount(), None),
                r#"{"userId":"u1","accounts":[{"accountId":"a1","amount":0.001}]}"#,
            ),
            (rule(SegmentType::InsuranceSpending, None, None), r#"{"userId":"u1","accounts":[{"amount":1.00}]}"#),
            // A financialBreakdown entry is no entry of a listing type.
            (rule(SegmentType::InsuranceSpending, None, None), BREAKDOWN),
            (
                rule(SegmentType::IncomeSpendingSummary, when(Figure::IncomingAmount, Comparison::Gt, "0"), None),
                r#"{"userId":"u1","accounts":[{"accountId":"a1","incomingCount":1,"outgoingCount":0,"incomingAmount":1.00}]}"#,
            ),
            (
                rule(SegmentType::IncomeSpendingSummary, None, None),
                r#"{"userId":"u1","accounts":[{"accountId":"a1","incomingCount":-1,"outgoingCount":0,"incomingAmount":1.00,"outgoingAmount":0.00}]}"#,
            ),
            (
                rule(SegmentType::FinancialBreakdown, of_group("Income", Figure::Total, Comparison::Gt, "0"), None),
                BALANCES,
            ),
            (
                rule(SegmentType::FinancialBreakdown, of_group("Income", Figure::Median, Comparison::Gt, "0"), None),
                r#"{"userId":"u1","labelGroups":[{"alias":"Income","total":1.00,"average":1.00,"minimum":1.00,"maximum":1.00}]}"#,
            ),
        ];
        for (r, json) in cases {
            let err = select(&r, &entry(json)).expect_err(json);
            assert!(matches!(err, SelectionError::Entry { .. }), "{json}: {err}");
        }
        // A group the rule names but the entry lacks: the entry is not of this rule's job.
        let missing =
            rule(SegmentType::FinancialBreakdown, of_group("BONUS", Figure::Total, Comparison::Gt, "0"), None);
        let err = select(&missing, &entry(BREAKDOWN)).unwrap_err();
        assert!(matches!(&err, SelectionError::MissingLabelGroup { alias, .. } if alias == "BONUS"), "{err}");
    }

    #[test]
    fn a_rule_validation_would_refuse_is_an_error() {
        let cases = [
            // financialBreakdown without a condition, or without a label group.
            rule(SegmentType::FinancialBreakdown, None, None),
            rule(SegmentType::FinancialBreakdown, when(Figure::Total, Comparison::Gt, "0"), None),
            // Figures of another type.
            rule(SegmentType::FinancialBreakdown, of_group("Income", Figure::Amount, Comparison::Gt, "0"), None),
            rule(SegmentType::HighBalance, when(Figure::IncomingCount, Comparison::Gt, "0"), None),
            rule(SegmentType::IncomeSpendingSummary, when(Figure::Amount, Comparison::Gt, "0"), None),
        ];
        for r in cases {
            let err = select(&r, &entry(BREAKDOWN)).expect_err("refused");
            assert!(matches!(err, SelectionError::Rule { .. }), "{r:?}: {err}");
        }
    }
}
