//! The segments management API (docs/architecture.md): named segments — clusters of accounts a bank tags to
//! apply benefits and conditions — at organization or ledger level, their membership, and dynamic
//! segments whose membership is refreshed from a financial-segment job.
//!
//! - this module: the segment record and its typed values;
//! - `usecases::segments::body`: request bodies and query parameters turned into those values,
//!   once, at the edge;
//! - `usecases::segments`: the use cases over the segment store and account directory ports.
//!
//! The organization of every path is the caller's mandator (docs/security.md): a path naming another
//! organization is answered like an unknown segment, so nothing about other tenants leaks.
//!
//! Accounts are referenced by their bare `accountId`: an accountId is unique within a mandator.
//! The account data is keyed by user (`U#{userId}#A#{accountId}`, docs/storage.md), so the importer
//! also records, per account, the user holding it (the account directory, one item per account:
//! `M#{mandatorId}#ACCOUNT#{accountId}` on AWS), and refuses a file that gives an accountId to a
//! second user of the mandator — within the file or against the directory — reporting the line as
//! bad and writing nothing. A membership change resolves its ids through that directory in batches of
//! point reads; ids the directory does not know are refused with 422, naming them. Answers show
//! each member as `{accountId, userId}`. Account data written before the directory existed is
//! found again after importing its files once more (imports are upserts).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::domain::SegmentId;
use crate::domain::refresh::{RefreshSummary, Schedule};
pub use crate::domain::rule::{Comparison, Condition, Figure, Rule};
use crate::domain::{AccountId, MandatorId, UserId};

/// Longest segment name, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest status description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 256;
/// Longest metadata key, in characters.
pub const MAX_METADATA_KEY_CHARS: usize = 100;
/// Longest metadata string value (or number text), in characters.
pub const MAX_METADATA_VALUE_CHARS: usize = 2000;
/// Most accounts one membership change may name (`add` and `remove` together).
pub const MAX_MEMBERSHIP_CHANGE: usize = 1000;
/// Page size bounds of the list endpoints.
pub const DEFAULT_LIMIT: u32 = 10;
pub const MAX_LIMIT: u32 = 100;

/// A ledger of the organization. Same character rules as every other identifier, so it can sit in
/// storage keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LedgerId(String);

impl LedgerId {
    pub fn parse(s: &str) -> Option<Self> {
        // The identifier rules of the domain: reuse them rather than restate them.
        UserId::parse(s).ok().map(|_| LedgerId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a segment lives: the organization itself or one of its ledgers. Names are unique per scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Organization,
    Ledger(LedgerId),
}

impl Scope {
    pub fn ledger(&self) -> Option<&LedgerId> {
        match self {
            Scope::Organization => None,
            Scope::Ledger(l) => Some(l),
        }
    }

    /// The scope's part of storage keys: `ORG` or `L#{ledgerId}` (ledger ids never contain `#`).
    pub fn key(&self) -> String {
        match self {
            Scope::Organization => "ORG".to_owned(),
            Scope::Ledger(l) => format!("L#{}", l.as_str()),
        }
    }
}

/// What a store's list of segments selects: the live segments of one scope, created within
/// `[from, to)` when `created` is given, ordered by (createdAt, id), newest first when
/// `newest_first`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentQuery {
    pub scope: Scope,
    pub created: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub newest_first: bool,
}

impl SegmentQuery {
    /// Every live segment of the scope, oldest first.
    pub fn scope(scope: Scope) -> Self {
        SegmentQuery { scope, created: None, newest_first: false }
    }

    /// Whether a segment is one the query selects (the embedded store filters with this).
    pub fn selects(&self, segment: &Segment) -> bool {
        !segment.is_deleted()
            && segment.scope() == self.scope
            && self.created.is_none_or(|(from, to)| segment.created_at >= from && segment.created_at < to)
    }
}

/// `status.code` of a segment: any text of 1 to 100 characters without control characters, as
/// Midaz takes it. Four codes mean something here: `ACTIVE` (the default), `PENDING`, and
/// `INACTIVE` and `SUSPENDED`, whose segments take no new members. Stored as the plain string,
/// so the records of the earlier four-value form read unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StatusCode(String);

impl StatusCode {
    pub const MAX_CHARS: usize = 100;
    /// The codes with a meaning, in the order a form offers them.
    pub const KNOWN: [&'static str; 4] = ["ACTIVE", "INACTIVE", "PENDING", "SUSPENDED"];

    pub fn active() -> Self {
        StatusCode("ACTIVE".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The code as written, when it is 1–100 characters without control characters.
    pub fn parse(s: &str) -> Option<Self> {
        let length = s.chars().count();
        ((1..=Self::MAX_CHARS).contains(&length) && !s.trim().is_empty() && !s.chars().any(char::is_control))
            .then(|| StatusCode(s.to_owned()))
    }

    /// Whether accounts may be tagged with a segment in this status.
    pub fn accepts_members(&self) -> bool {
        !matches!(self.0.as_str(), "INACTIVE" | "SUSPENDED")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub code: StatusCode,
    pub description: Option<String>,
}

impl Default for Status {
    fn default() -> Self {
        Status { code: StatusCode::active(), description: None }
    }
}

/// A metadata value: flat, never an object or array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaValue {
    String(String),
    /// The number as written (exact; no float rounding).
    Number(serde_json::Number),
    Bool(bool),
}

impl MetaValue {
    /// The text a `metadata.<key>=<value>` filter compares with.
    pub fn filter_text(&self) -> String {
        match self {
            MetaValue::String(s) => s.clone(),
            MetaValue::Number(n) => n.to_string(),
            MetaValue::Bool(b) => b.to_string(),
        }
    }
}

impl Serialize for MetaValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MetaValue::String(v) => v.serialize(s),
            MetaValue::Number(v) => v.serialize(s),
            MetaValue::Bool(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for MetaValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through `Value`: exact numbers survive (an untagged enum would lose them).
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(v) => Ok(MetaValue::String(v)),
            serde_json::Value::Number(v) => Ok(MetaValue::Number(v)),
            serde_json::Value::Bool(v) => Ok(MetaValue::Bool(v)),
            _ => Err(serde::de::Error::custom("a metadata value is a string, number or boolean")),
        }
    }
}

pub type Metadata = BTreeMap<String, MetaValue>;

/// An account and its user. Ordered by accountId, which alone identifies the account within a
/// mandator; the user is shown because the account data is the user's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRef {
    pub account_id: AccountId,
    pub user_id: UserId,
}

/// A segment as stored. `version` rises by one with every change: writes are conditional on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub id: SegmentId,
    pub mandator: MandatorId,
    pub ledger_id: Option<LedgerId>,
    pub name: String,
    pub status: Status,
    pub metadata: Metadata,
    pub rule: Option<Rule>,
    /// The last refresh started (its record holds the details; this copy is what the segment
    /// shows). Records written before refreshes had their own records carry an older `refresh`
    /// field instead, which is not read.
    #[serde(default)]
    pub last_refresh: Option<RefreshSummary>,
    /// When a segment with a rule is refreshed on its own.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// The next scheduled refresh; the stores index segments by it (only scheduled, live
    /// segments carry it), so the scheduler never reads every segment.
    #[serde(default)]
    pub next_refresh_at: Option<DateTime<Utc>>,
    /// Where the segment's events are POSTed, signed like job callbacks.
    #[serde(default)]
    pub callback_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: u64,
}

impl Segment {
    pub fn scope(&self) -> Scope {
        match &self.ledger_id {
            None => Scope::Organization,
            Some(l) => Scope::Ledger(l.clone()),
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountType, SegmentType};

    #[test]
    fn ids_are_uuid_v7_and_sort_by_creation() {
        let a = SegmentId::new();
        let b = SegmentId::new();
        assert!(a < b);
        assert_eq!(SegmentId::parse(&a.to_string()), Some(a));
        assert_eq!(SegmentId::parse("metrics"), None);
    }

    #[test]
    fn metadata_numbers_stay_exact() {
        let v: MetaValue = serde_json::from_str("12345678901234567890.125").unwrap();
        assert_eq!(v.filter_text(), "12345678901234567890.125");
        assert_eq!(serde_json::to_string(&v).unwrap(), "12345678901234567890.125");
        assert!(serde_json::from_str::<MetaValue>("{}").is_err());
    }

    #[test]
    fn a_rule_is_stored_with_its_condition_exactly_and_older_rules_read_without_one() {
        let rule = Rule {
            segment_type: SegmentType::FinancialBreakdown,
            parameters: r#"{"labelGroups":["SALARY"],"durationInMonth":3}"#.to_owned(),
            condition: Some(Condition {
                figure: Figure::Average,
                label_group: Some("SALARY".to_owned()),
                operator: Comparison::Gte,
                threshold: "2500.1".parse().unwrap(),
            }),
            account_type: Some(AccountType::Checking),
        };
        let stored = serde_json::to_string(&rule).unwrap();
        assert!(
            stored.contains(
                r#""condition":{"figure":"average","labelGroup":"SALARY","operator":"gte","threshold":2500.10}"#
            ),
            "{stored}"
        );
        assert!(stored.contains(r#""accountType":"checking""#), "{stored}");
        assert_eq!(serde_json::from_str::<Rule>(&stored).unwrap(), rule);
        let older: Rule = serde_json::from_str(r#"{"segmentType":"insuranceSpending","parameters":"{}"}"#).unwrap();
        assert_eq!((older.condition, older.account_type), (None, None));
    }

    #[test]
    fn names_of_figures_and_operators_parse_back() {
        for figure in Figure::ALL {
            assert_eq!(Figure::parse(figure.as_str()), Some(figure));
        }
        for operator in Comparison::ALL {
            assert_eq!(Comparison::parse(operator.as_str()), Some(operator));
        }
        assert_eq!((Figure::parse("Amount"), Comparison::parse(">")), (None, None));
        assert_eq!(Comparison::names(), "gt, gte, lt, lte, eq");
        let counts: Vec<Figure> = Figure::ALL.into_iter().filter(|f| f.is_count()).collect();
        assert_eq!(counts, [Figure::IncomingCount, Figure::OutgoingCount]);
    }

    #[test]
    fn scope_keys_never_collide() {
        assert_eq!(Scope::Organization.key(), "ORG");
        assert_eq!(Scope::Ledger(LedgerId::parse("ORG").unwrap()).key(), "L#ORG");
        assert!(LedgerId::parse("a#b").is_none());
    }
}
