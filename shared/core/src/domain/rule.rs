//! A dynamic segment's rule (docs/segments.md): the financial segment it runs, and the condition on
//! the result's figures that selects the members.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::domain::{AccountType, Money, SegmentType};

/// A dynamic segment's rule: a financial segment, and which accounts of its result become the
/// membership (docs/segments.md, "Which accounts a rule selects").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub segment_type: SegmentType,
    /// The request body of `POST /segments/{segmentType}`, as validated JSON text: a refresh
    /// starts its job with exactly this body.
    pub parameters: String,
    /// A condition on the result's figures; without one every account the result lists is
    /// selected. Required for financialBreakdown, whose result lists no accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// financialBreakdown only: of a selected user, only the accounts of this type (all when
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_type: Option<AccountType>,
}

/// `figure operator threshold`, e.g. `average gte 2500.00` of one label group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub figure: Figure,
    /// financialBreakdown: the alias of the label group whose statistic is compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_group: Option<String>,
    pub operator: Comparison,
    pub threshold: Money,
}

/// The figures a condition may compare, by segment type (docs/segments.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Figure {
    /// highBalance, lowBalance, insuranceSpending: the account's `amount`.
    Amount,
    /// incomeSpendingSummary: the account's figures.
    IncomingCount,
    OutgoingCount,
    IncomingAmount,
    OutgoingAmount,
    /// financialBreakdown: a statistic of the label group's monthly totals.
    Total,
    Average,
    Minimum,
    Maximum,
    Median,
}

impl Figure {
    pub const ALL: [Figure; 10] = [
        Figure::Amount,
        Figure::IncomingCount,
        Figure::OutgoingCount,
        Figure::IncomingAmount,
        Figure::OutgoingAmount,
        Figure::Total,
        Figure::Average,
        Figure::Minimum,
        Figure::Maximum,
        Figure::Median,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Figure::Amount => "amount",
            Figure::IncomingCount => "incomingCount",
            Figure::OutgoingCount => "outgoingCount",
            Figure::IncomingAmount => "incomingAmount",
            Figure::OutgoingAmount => "outgoingAmount",
            Figure::Total => "total",
            Figure::Average => "average",
            Figure::Minimum => "minimum",
            Figure::Maximum => "maximum",
            Figure::Median => "median",
        }
    }

    /// The figure named `name`, of any type.
    pub fn parse(name: &str) -> Option<Figure> {
        Figure::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// Whether the figure is a count of transactions (a whole number) rather than an amount.
    pub fn is_count(self) -> bool {
        matches!(self, Figure::IncomingCount | Figure::OutgoingCount)
    }

    /// The names of `figures`, for messages: `total, average, minimum`.
    pub fn names(figures: &[Figure]) -> String {
        figures.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// The figures a condition of `segment_type` may name.
    pub fn of(segment_type: SegmentType) -> &'static [Figure] {
        match segment_type {
            SegmentType::HighBalance | SegmentType::LowBalance | SegmentType::InsuranceSpending => &[Figure::Amount],
            SegmentType::IncomeSpendingSummary => {
                &[Figure::IncomingCount, Figure::OutgoingCount, Figure::IncomingAmount, Figure::OutgoingAmount]
            }
            SegmentType::FinancialBreakdown => {
                &[Figure::Total, Figure::Average, Figure::Minimum, Figure::Maximum, Figure::Median]
            }
        }
    }
}

/// How a figure is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Comparison {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
}

impl Comparison {
    pub const ALL: [Comparison; 5] = [Comparison::Gt, Comparison::Gte, Comparison::Lt, Comparison::Lte, Comparison::Eq];

    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Gt => "gt",
            Comparison::Gte => "gte",
            Comparison::Lt => "lt",
            Comparison::Lte => "lte",
            Comparison::Eq => "eq",
        }
    }

    /// The operator named `name`.
    pub fn parse(name: &str) -> Option<Comparison> {
        Comparison::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The operator names, for messages.
    pub fn names() -> String {
        Comparison::ALL.map(Comparison::as_str).join(", ")
    }

    /// Whether `figure operator threshold` holds, exactly.
    pub fn holds(self, figure: Money, threshold: Money) -> bool {
        self.admits(figure.cmp(&threshold))
    }

    /// Whether the operator holds for a figure that compares with the threshold as `ordering`
    /// (`figure.cmp(&threshold)`): one place for amounts and counts alike.
    pub fn admits(self, ordering: Ordering) -> bool {
        match self {
            Comparison::Gt => ordering == Ordering::Greater,
            Comparison::Gte => ordering != Ordering::Less,
            Comparison::Lt => ordering == Ordering::Less,
            Comparison::Lte => ordering != Ordering::Greater,
            Comparison::Eq => ordering == Ordering::Equal,
        }
    }
}
