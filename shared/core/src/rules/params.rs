//! The parameters of each segment type (docs/api.md), validated once at the edge.

use chrono::{Months, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::{BodyError, FieldError, Fields};
use crate::domain::{AccountType, Currency, Money, SegmentType};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HighBalanceParams {
    pub account_type: AccountType,
    pub threshold: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LowBalanceParams {
    pub threshold: Money,
    pub duration_in_month: u32,
    pub account_type: AccountType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncomeSpendingSummaryParams {
    pub date_from: NaiveDate,
    pub date_to: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_type: Option<AccountType>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InsuranceSpendingParams {
    pub duration_in_month: u32,
}

/// A label group of financialBreakdown; the string shorthand `"X"` is stored in its long form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelGroup {
    pub alias: String,
    pub include_labels: Vec<String>,
    #[serde(default)]
    pub exclude_labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinancialBreakdownParams {
    pub label_groups: Vec<LabelGroup>,
    pub duration_in_month: u32,
}

/// Validated parameters of one segment type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SegmentParams {
    HighBalance(HighBalanceParams),
    LowBalance(LowBalanceParams),
    IncomeSpendingSummary(IncomeSpendingSummaryParams),
    InsuranceSpending(InsuranceSpendingParams),
    FinancialBreakdown(FinancialBreakdownParams),
}

/// A validated `POST /segments/{segmentType}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRequest {
    pub as_of: NaiveDate,
    pub callback_url: Option<String>,
    pub params: SegmentParams,
}

pub const MAX_LABEL_GROUPS: usize = 10;
const MAX_LABEL_LEN: usize = 64;
const MAX_LABELS_PER_LIST: usize = 50;
const MAX_URL_LEN: usize = 2048;

impl SegmentParams {
    pub fn segment_type(&self) -> SegmentType {
        match self {
            SegmentParams::HighBalance(_) => SegmentType::HighBalance,
            SegmentParams::LowBalance(_) => SegmentType::LowBalance,
            SegmentParams::IncomeSpendingSummary(_) => SegmentType::IncomeSpendingSummary,
            SegmentParams::InsuranceSpending(_) => SegmentType::InsuranceSpending,
            SegmentParams::FinancialBreakdown(_) => SegmentType::FinancialBreakdown,
        }
    }

    /// `durationInMonth` for the types that have one; the result echoes it at top level.
    pub fn duration_in_month(&self) -> Option<u32> {
        match self {
            SegmentParams::LowBalance(p) => Some(p.duration_in_month),
            SegmentParams::InsuranceSpending(p) => Some(p.duration_in_month),
            SegmentParams::FinancialBreakdown(p) => Some(p.duration_in_month),
            SegmentParams::HighBalance(_) | SegmentParams::IncomeSpendingSummary(_) => None,
        }
    }

    /// Reads stored parameters back. They were validated when the job was created; this is the
    /// typed decoding of that canonical form, driven by the job's segment type.
    pub fn from_stored(segment_type: SegmentType, value: Value) -> Result<Self, serde_json::Error> {
        Ok(match segment_type {
            SegmentType::HighBalance => SegmentParams::HighBalance(serde_json::from_value(value)?),
            SegmentType::LowBalance => SegmentParams::LowBalance(serde_json::from_value(value)?),
            SegmentType::IncomeSpendingSummary => SegmentParams::IncomeSpendingSummary(serde_json::from_value(value)?),
            SegmentType::InsuranceSpending => SegmentParams::InsuranceSpending(serde_json::from_value(value)?),
            SegmentType::FinancialBreakdown => SegmentParams::FinancialBreakdown(serde_json::from_value(value)?),
        })
    }
}

impl SegmentRequest {
    /// Validates a request body for `segment_type` (docs/api.md). `today` is the current UTC date:
    /// the default `asOf` and the latest one allowed.
    pub fn parse(segment_type: SegmentType, body: &[u8], today: NaiveDate) -> Result<Self, BodyError> {
        let mut f = Fields::parse(body)?;
        let as_of = match f.date("asOf")? {
            None => today,
            Some(d) if d > today => return Err(FieldError::new("asOf", "must not be in the future").into()),
            Some(d) if d < earliest_date() => {
                return Err(FieldError::new("asOf", "must not be before 1900-01-01").into());
            }
            Some(d) => d,
        };
        let callback_url = f.parsed("callbackURL", check_callback_url)?;
        let params = match segment_type {
            SegmentType::HighBalance => SegmentParams::HighBalance(HighBalanceParams {
                account_type: f
                    .parsed("accountType", str::parse::<AccountType>)?
                    .ok_or_else(|| FieldError::new("accountType", "is required"))?,
                threshold: f.required_money("threshold")?,
                currency: f.currency("currency")?,
            }),
            SegmentType::LowBalance => SegmentParams::LowBalance(LowBalanceParams {
                threshold: f.required_money("threshold")?,
                duration_in_month: f.required_integer("durationInMonth", 1, 24)?,
                account_type: f.parsed("accountType", str::parse::<AccountType>)?.unwrap_or(AccountType::Checking),
            }),
            SegmentType::IncomeSpendingSummary => {
                let date_from = f.required_date("dateFrom")?;
                let date_to = f.required_date("dateTo")?;
                if date_from > date_to {
                    return Err(FieldError::new("dateFrom", "must not be after dateTo").into());
                }
                if date_from.checked_add_months(Months::new(24)).is_none_or(|limit| date_to > limit) {
                    return Err(FieldError::new("dateTo", "must be at most 24 months after dateFrom").into());
                }
                SegmentParams::IncomeSpendingSummary(IncomeSpendingSummaryParams {
                    date_from,
                    date_to,
                    account_type: f.parsed("accountType", str::parse::<AccountType>)?,
                })
            }
            SegmentType::InsuranceSpending => SegmentParams::InsuranceSpending(InsuranceSpendingParams {
                duration_in_month: f.integer("durationInMonth", 1, 24)?.unwrap_or(12),
            }),
            SegmentType::FinancialBreakdown => SegmentParams::FinancialBreakdown(FinancialBreakdownParams {
                label_groups: label_groups(&mut f)?,
                duration_in_month: f.required_integer("durationInMonth", 1, 12)?,
            }),
        };
        f.finish()?;
        Ok(SegmentRequest { as_of, callback_url, params })
    }
}

fn earliest_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(1900, 1, 1).expect("a valid constant date")
}

/// The form of the URL: absolute, web scheme, a host, no credentials. Whether it may be called
/// (https only in production, every resolved address public) is the callback policy's to say,
/// at job creation and before every delivery (`crate::usecases::callbacks::policy`).
fn check_callback_url(s: &str) -> Result<String, &'static str> {
    if s.len() > MAX_URL_LEN {
        return Err("must be at most 2048 characters");
    }
    let uri: http::Uri = s.parse().map_err(|_| "must be an absolute https URL")?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) {
        return Err("must use https");
    }
    match uri.host() {
        Some(h) if !h.is_empty() => {}
        _ => return Err("must be an absolute https URL"),
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("must not contain credentials");
    }
    Ok(s.to_owned())
}

fn label(field: &str, v: Value) -> Result<String, FieldError> {
    match v {
        Value::String(s) if !s.is_empty() && s.len() <= MAX_LABEL_LEN && !s.chars().any(char::is_control) => Ok(s),
        Value::String(_) => Err(FieldError::new(field, format!("must be a label of 1 to {MAX_LABEL_LEN} characters"))),
        _ => Err(FieldError::new(field, "must be a string")),
    }
}

fn labels(field: &str, values: Vec<Value>) -> Result<Vec<String>, FieldError> {
    if values.len() > MAX_LABELS_PER_LIST {
        return Err(FieldError::new(field, format!("must have at most {MAX_LABELS_PER_LIST} labels")));
    }
    values.into_iter().enumerate().map(|(i, v)| label(&format!("{field}[{i}]"), v)).collect()
}

fn label_groups(f: &mut Fields) -> Result<Vec<LabelGroup>, FieldError> {
    let groups = f.array("labelGroups")?.ok_or_else(|| FieldError::new("labelGroups", "is required"))?;
    if groups.is_empty() || groups.len() > MAX_LABEL_GROUPS {
        return Err(FieldError::new("labelGroups", format!("must have 1 to {MAX_LABEL_GROUPS} groups")));
    }
    let mut out: Vec<LabelGroup> = Vec::with_capacity(groups.len());
    for (i, g) in groups.into_iter().enumerate() {
        let name = format!("labelGroups[{i}]");
        let group = match g {
            Value::String(_) => {
                let l = label(&name, g)?;
                LabelGroup { alias: l.clone(), include_labels: vec![l], exclude_labels: vec![] }
            }
            Value::Object(map) => {
                let mut gf = Fields::nested(name.clone(), map);
                let alias = gf.string("alias")?.ok_or_else(|| FieldError::new(gf.name("alias"), "is required"))?;
                let alias = label(&gf.name("alias"), Value::String(alias))?;
                let include = gf
                    .array("includeLabels")?
                    .ok_or_else(|| FieldError::new(gf.name("includeLabels"), "is required"))?;
                if include.is_empty() {
                    return Err(FieldError::new(gf.name("includeLabels"), "must not be empty"));
                }
                let include_labels = labels(&gf.name("includeLabels"), include)?;
                let exclude_labels = labels(&gf.name("excludeLabels"), gf.array("excludeLabels")?.unwrap_or_default())?;
                gf.finish()?;
                LabelGroup { alias, include_labels, exclude_labels }
            }
            _ => {
                return Err(FieldError::new(
                    name,
                    "must be a label string or an object {alias, includeLabels, excludeLabels}",
                ));
            }
        };
        if out.iter().any(|o| o.alias == group.alias) {
            return Err(FieldError::new(format!("labelGroups[{i}].alias"), "must be unique among the groups"));
        }
        out.push(group);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        "2024-06-15".parse().unwrap()
    }

    fn parse(t: SegmentType, body: &str) -> Result<SegmentRequest, BodyError> {
        SegmentRequest::parse(t, body.as_bytes(), today())
    }

    fn field_of(r: Result<SegmentRequest, BodyError>) -> String {
        match r {
            Err(BodyError::Field(e)) => e.field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn high_balance_minimal_body_defaults_as_of_to_today() {
        let r = parse(SegmentType::HighBalance, r#"{"accountType":"checking","threshold":5000}"#).unwrap();
        assert_eq!(r.as_of, today());
        let SegmentParams::HighBalance(p) = r.params else { panic!() };
        assert_eq!(p.threshold, Money::from_cents(500_000));
        assert_eq!(p.currency, None);
    }

    #[test]
    fn high_balance_errors_name_the_field() {
        let hb = SegmentType::HighBalance;
        assert_eq!(field_of(parse(hb, r#"{"accountType":"checking","threshold":"abc"}"#)), "threshold");
        assert_eq!(field_of(parse(hb, r#"{"accountType":"checking","threshold":1.005}"#)), "threshold");
        assert_eq!(field_of(parse(hb, r#"{"accountType":"checking"}"#)), "threshold");
        assert_eq!(field_of(parse(hb, r#"{"accountType":"girokonto","threshold":1}"#)), "accountType");
        assert_eq!(field_of(parse(hb, r#"{"threshold":1}"#)), "accountType");
        assert_eq!(field_of(parse(hb, r#"{"accountType":"checking","threshold":1,"currency":"eur"}"#)), "currency");
        assert_eq!(field_of(parse(hb, r#"{"accountType":"checking","threshold":1,"treshold":2}"#)), "treshold");
        assert_eq!(field_of(parse(hb, r#"{"accountType":"checking","threshold":1,"asOf":"2024-06-16"}"#)), "asOf");
        assert_eq!(field_of(parse(hb, r#"{"accountType":"checking","threshold":1,"asOf":"2024-6-1"}"#)), "asOf");
        assert_eq!(
            field_of(parse(hb, r#"{"accountType":"checking","threshold":1,"callbackURL":"ftp://x.example"}"#)),
            "callbackURL"
        );
    }

    #[test]
    fn malformed_bodies_are_not_field_errors() {
        assert!(matches!(parse(SegmentType::HighBalance, "{"), Err(BodyError::Malformed(_))));
        assert!(matches!(parse(SegmentType::HighBalance, "[1]"), Err(BodyError::Malformed(_))));
        assert!(matches!(parse(SegmentType::HighBalance, r#"{"threshold":NaN}"#), Err(BodyError::Malformed(_))));
    }

    #[test]
    fn low_balance_duration_bounds() {
        let lb = SegmentType::LowBalance;
        assert_eq!(field_of(parse(lb, r#"{"threshold":0,"durationInMonth":0}"#)), "durationInMonth");
        assert_eq!(field_of(parse(lb, r#"{"threshold":0,"durationInMonth":25}"#)), "durationInMonth");
        assert_eq!(field_of(parse(lb, r#"{"threshold":0,"durationInMonth":2.5}"#)), "durationInMonth");
        let r = parse(lb, r#"{"threshold":-100.5,"durationInMonth":24}"#).unwrap();
        let SegmentParams::LowBalance(p) = r.params else { panic!() };
        assert_eq!(p.account_type, AccountType::Checking);
    }

    #[test]
    fn income_spending_summary_dates() {
        let t = SegmentType::IncomeSpendingSummary;
        assert_eq!(field_of(parse(t, r#"{"dateFrom":"2024-02-01","dateTo":"2024-01-31"}"#)), "dateFrom");
        assert_eq!(field_of(parse(t, r#"{"dateFrom":"2022-01-01","dateTo":"2024-01-02"}"#)), "dateTo");
        assert!(parse(t, r#"{"dateFrom":"2022-01-01","dateTo":"2024-01-01"}"#).is_ok());
        assert!(parse(t, r#"{"dateFrom":"2024-01-01","dateTo":"2024-01-01"}"#).is_ok());
    }

    #[test]
    fn insurance_spending_defaults_to_twelve_months() {
        let r = parse(SegmentType::InsuranceSpending, "").unwrap();
        assert_eq!(r.params.duration_in_month(), Some(12));
    }

    #[test]
    fn financial_breakdown_label_groups() {
        let t = SegmentType::FinancialBreakdown;
        let ok = parse(
            t,
            r#"{"durationInMonth":3,"labelGroups":["RENT",{"alias":"fun","includeLabels":["BAR","CINEMA"],"excludeLabels":["REFUND"]}]}"#,
        )
        .unwrap();
        let SegmentParams::FinancialBreakdown(p) = ok.params else { panic!() };
        assert_eq!(
            p.label_groups[0],
            LabelGroup { alias: "RENT".into(), include_labels: vec!["RENT".into()], exclude_labels: vec![] }
        );
        assert_eq!(p.label_groups[1].exclude_labels, ["REFUND"]);

        assert_eq!(field_of(parse(t, r#"{"durationInMonth":3,"labelGroups":[]}"#)), "labelGroups");
        let eleven = format!(r#"{{"durationInMonth":3,"labelGroups":[{}]}}"#, ["\"A\""; 11].join(","));
        assert_eq!(field_of(parse(t, &eleven)), "labelGroups");
        assert_eq!(
            field_of(parse(
                t,
                r#"{"durationInMonth":3,"labelGroups":[{"alias":"x","includeLabels":["A"],"colour":1}]}"#
            )),
            "labelGroups[0].colour"
        );
        assert_eq!(
            field_of(parse(t, r#"{"durationInMonth":3,"labelGroups":[{"alias":"x","includeLabels":[]}]}"#)),
            "labelGroups[0].includeLabels"
        );
        assert_eq!(field_of(parse(t, r#"{"durationInMonth":3,"labelGroups":["A","A"]}"#)), "labelGroups[1].alias");
        assert_eq!(field_of(parse(t, r#"{"durationInMonth":13,"labelGroups":["A"]}"#)), "durationInMonth");
        assert_eq!(field_of(parse(t, r#"{"labelGroups":[5]}"#)), "labelGroups[0]");
    }

    #[test]
    fn stored_parameters_round_trip() {
        for (t, body) in [
            (SegmentType::HighBalance, r#"{"accountType":"savings","threshold":0.1,"currency":"EUR"}"#),
            (SegmentType::LowBalance, r#"{"threshold":-5,"durationInMonth":3}"#),
            (
                SegmentType::IncomeSpendingSummary,
                r#"{"dateFrom":"2024-01-01","dateTo":"2024-03-31","accountType":"loan"}"#,
            ),
            (SegmentType::InsuranceSpending, r#"{"durationInMonth":6}"#),
            (
                SegmentType::FinancialBreakdown,
                r#"{"durationInMonth":2,"labelGroups":["A",{"alias":"B","includeLabels":["B"]}]}"#,
            ),
        ] {
            let r = parse(t, body).unwrap();
            let stored = serde_json::to_value(&r.params).unwrap();
            assert_eq!(SegmentParams::from_stored(t, stored).unwrap(), r.params, "{t}");
        }
    }
}
