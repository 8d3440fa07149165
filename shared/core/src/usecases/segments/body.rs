//! Request bodies and query parameters of the segments API, turned into typed values once.
//! Unknown fields are refused, like everywhere else in the API: a misspelled field never passes
//! silently.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use crate::domain::refresh::{Schedule, ScheduleForm};
use crate::domain::segment::{
    Comparison, Condition, Figure, MAX_DESCRIPTION_CHARS, MAX_MEMBERSHIP_CHANGE, MAX_METADATA_KEY_CHARS,
    MAX_METADATA_VALUE_CHARS, MAX_NAME_CHARS, MetaValue, Rule, Status, StatusCode,
};
use crate::domain::{AccountId, AccountType, SegmentType};
use crate::rules::body::{BodyError, FieldError, Fields, MalformedBody};
use crate::rules::{SegmentParams, SegmentRequest};

/// A validated `POST …/segments` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSegment {
    pub name: String,
    pub status: Status,
    pub metadata: Vec<(String, MetaValue)>,
    pub rule: Option<Rule>,
    /// `refresh`: the schedule of a segment with a rule.
    pub schedule: Option<Schedule>,
    /// `callbackURL`: where the segment's events are POSTed (checked against the URL policy by
    /// the use case, which may resolve it).
    pub callback_url: Option<String>,
}

/// A validated `PATCH …/segments/{segmentId}` body. `None`: leave unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatchSegment {
    pub name: Option<String>,
    pub status: Option<Status>,
    /// Keys to set (`Some`) or remove (`None`); the others stay.
    pub metadata: Option<Vec<(String, Option<MetaValue>)>>,
    /// `Some(None)`: remove the rule.
    pub rule: Option<Option<Rule>>,
    /// `Some(None)`: remove the schedule.
    pub schedule: Option<Option<Schedule>>,
    /// `Some(None)`: remove the callback URL.
    pub callback_url: Option<Option<String>>,
}

/// A validated `PUT …/segments/{segmentId}/accounts` body: bare accountIds, each list sorted and
/// without repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub add: Vec<AccountId>,
    pub remove: Vec<AccountId>,
}

fn object(body: &[u8]) -> Result<Map<String, Value>, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(MalformedBody("a JSON object body is required".into()).into());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(MalformedBody("request body must be a JSON object".into()).into()),
        Err(e) => Err(MalformedBody(format!("request body is not valid JSON: {e}")).into()),
    }
}

fn refuse_unknown(map: &Map<String, Value>, prefix: &str) -> Result<(), FieldError> {
    match map.keys().next() {
        Some(k) => Err(FieldError::new(format!("{prefix}{k}"), "is not a known field")),
        None => Ok(()),
    }
}

fn name(v: Value) -> Result<String, FieldError> {
    match v {
        Value::String(s) if s.trim().is_empty() => Err(FieldError::new("name", "must not be blank")),
        Value::String(s) if s.chars().count() > MAX_NAME_CHARS => {
            Err(FieldError::new("name", format!("must be at most {MAX_NAME_CHARS} characters")))
        }
        Value::String(s) => Ok(s),
        _ => Err(FieldError::new("name", "must be a string")),
    }
}

fn status(v: Value) -> Result<Status, FieldError> {
    let Value::Object(mut m) = v else { return Err(FieldError::new("status", "must be an object")) };
    let code = match m.remove("code") {
        None | Some(Value::Null) => StatusCode::active(),
        Some(Value::String(s)) => StatusCode::parse(&s).ok_or_else(|| {
            FieldError::new(
                "status.code",
                format!("must be 1 to {} characters without control characters", StatusCode::MAX_CHARS),
            )
        })?,
        Some(_) => return Err(FieldError::new("status.code", "must be a string")),
    };
    let description = match m.remove("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() > MAX_DESCRIPTION_CHARS => {
            return Err(FieldError::new(
                "status.description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(FieldError::new("status.description", "must be a string")),
    };
    refuse_unknown(&m, "status.")?;
    Ok(Status { code, description })
}

/// Metadata entries; `null` values only where `allow_null` (PATCH removes those keys).
fn metadata(v: Value, allow_null: bool) -> Result<Vec<(String, Option<MetaValue>)>, FieldError> {
    let Value::Object(m) = v else { return Err(FieldError::new("metadata", "must be an object")) };
    let mut out = Vec::with_capacity(m.len());
    for (key, value) in m {
        let field = format!("metadata.{key}");
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(FieldError::new(field, format!("keys must be 1 to {MAX_METADATA_KEY_CHARS} characters")));
        }
        let too_long = |text: &str| text.chars().count() > MAX_METADATA_VALUE_CHARS;
        let value = match value {
            Value::Null if allow_null => None,
            Value::String(s) if !too_long(&s) => Some(MetaValue::String(s)),
            Value::Number(n) if !too_long(&n.to_string()) => Some(MetaValue::Number(n)),
            Value::Bool(b) => Some(MetaValue::Bool(b)),
            Value::String(_) | Value::Number(_) => {
                return Err(FieldError::new(field, format!("must be at most {MAX_METADATA_VALUE_CHARS} characters")));
            }
            _ => return Err(FieldError::new(field, "must be a string, number or boolean (metadata is flat)")),
        };
        out.push((key, value));
    }
    Ok(out)
}

/// A rule, its parameters validated exactly like a `POST /segments/{segmentType}` body, with the
/// condition that says which accounts of the result become members (docs/segments.md, "Which
/// accounts a rule selects").
fn rule(v: Value, today: NaiveDate) -> Result<Option<Rule>, FieldError> {
    let mut m = match v {
        Value::Null => return Ok(None),
        Value::Object(m) => m,
        _ => return Err(FieldError::new("rule", "must be an object or null")),
    };
    let segment_type: SegmentType = match m.remove("segmentType") {
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| FieldError::new("rule.segmentType", format!("must be one of {}", SegmentType::names())))?,
        None | Some(Value::Null) => return Err(FieldError::new("rule.segmentType", "is required")),
        Some(_) => return Err(FieldError::new("rule.segmentType", "must be a string")),
    };
    let parameters = match m.remove("parameters") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p,
        Some(_) => return Err(FieldError::new("rule.parameters", "must be an object")),
    };
    let condition = m.remove("condition");
    let account_type = m.remove("accountType");
    refuse_unknown(&m, "rule.")?;
    let text = parameters.to_string();
    let request = SegmentRequest::parse(segment_type, text.as_bytes(), today).map_err(|e| match e {
        BodyError::Field(f) => FieldError::new(format!("rule.parameters.{}", f.field), f.message),
        BodyError::Malformed(m) => FieldError::new("rule.parameters", m.0),
    })?;
    let condition = match condition {
        None | Some(Value::Null) if segment_type == SegmentType::FinancialBreakdown => {
            return Err(FieldError::new(
                "rule.condition",
                "is required for financialBreakdown: its result lists label groups per user, not accounts, so a \
                 condition on one group says which users are selected",
            ));
        }
        None | Some(Value::Null) => None,
        Some(v) => Some(rule_condition(v, &request.params)?),
    };
    let account_type = match account_type {
        None | Some(Value::Null) => None,
        Some(v) => Some(rule_account_type(v, segment_type)?),
    };
    Ok(Some(Rule { segment_type, parameters: text, condition, account_type }))
}

/// The fields a `rule.condition` may have.
const CONDITION_FIELDS: [&str; 4] = ["figure", "labelGroup", "operator", "threshold"];

/// `rule.condition`: `{figure, labelGroup?, operator, threshold}`, checked against the rule's
/// validated parameters (the figures of its type, the aliases of its label groups).
fn rule_condition(v: Value, params: &SegmentParams) -> Result<Condition, FieldError> {
    let segment_type = params.segment_type();
    let Value::Object(map) = v else {
        return Err(FieldError::new("rule.condition", "must be an object {figure, labelGroup, operator, threshold}"));
    };
    // Unknown fields first: a misspelled `treshold` is named as such, not as a missing `threshold`.
    let mut unknown: Vec<&String> = map.keys().filter(|k| !CONDITION_FIELDS.contains(&k.as_str())).collect();
    unknown.sort();
    if let Some(k) = unknown.first() {
        return Err(FieldError::new(
            format!("rule.condition.{k}"),
            format!("is not a known field (allowed: {})", CONDITION_FIELDS.join(", ")),
        ));
    }
    let mut f = Fields::nested("rule.condition".to_owned(), map);
    let allowed = Figure::of(segment_type);
    let figures = format!("one of {} for {segment_type}", Figure::names(allowed));
    let one_of_figures = || format!("must be {figures}");
    let figure = match f.take("figure") {
        None => return Err(FieldError::new("rule.condition.figure", format!("is required: {figures}"))),
        Some(Value::String(name)) => Figure::parse(&name)
            .filter(|figure| allowed.contains(figure))
            .ok_or_else(|| FieldError::new("rule.condition.figure", one_of_figures()))?,
        Some(_) => return Err(FieldError::new("rule.condition.figure", one_of_figures())),
    };
    let label_group = match (params, f.take("labelGroup")) {
        (SegmentParams::FinancialBreakdown(p), given) => {
            let aliases: Vec<&str> = p.label_groups.iter().map(|g| g.alias.as_str()).collect();
            let which = format!("the alias of one of rule.parameters.labelGroups ({})", aliases.join(", "));
            match given {
                None => return Err(FieldError::new("rule.condition.labelGroup", format!("is required: {which}"))),
                Some(Value::String(alias)) if aliases.contains(&alias.as_str()) => Some(alias),
                Some(_) => return Err(FieldError::new("rule.condition.labelGroup", format!("must be {which}"))),
            }
        }
        (_, None) => None,
        (_, Some(_)) => {
            return Err(FieldError::new(
                "rule.condition.labelGroup",
                format!(
                    "is only allowed for financialBreakdown; a {segment_type} condition compares each listed account"
                ),
            ));
        }
    };
    let operators = format!("one of {}", Comparison::names());
    let one_of_operators = || format!("must be {operators}");
    let operator = match f.take("operator") {
        None => {
            return Err(FieldError::new("rule.condition.operator", format!("is required: {operators}")));
        }
        Some(Value::String(name)) => {
            Comparison::parse(&name).ok_or_else(|| FieldError::new("rule.condition.operator", one_of_operators()))?
        }
        Some(_) => return Err(FieldError::new("rule.condition.operator", one_of_operators())),
    };
    let threshold = f.required_money("threshold")?;
    if figure.is_count() && !threshold.decimal().fract().is_zero() {
        return Err(FieldError::new(
            "rule.condition.threshold",
            format!("must be a whole number: {} is a count of transactions", figure.as_str()),
        ));
    }
    f.finish()?;
    Ok(Condition { figure, label_group, operator, threshold })
}

/// `rule.accountType`: of the users a financialBreakdown rule selects, only the accounts of this
/// type become members. The other types select listed accounts and have no use for it.
fn rule_account_type(v: Value, segment_type: SegmentType) -> Result<AccountType, FieldError> {
    if segment_type != SegmentType::FinancialBreakdown {
        return Err(FieldError::new(
            "rule.accountType",
            format!(
                "is only allowed for financialBreakdown; a {segment_type} rule selects the accounts its result lists"
            ),
        ));
    }
    let one_of = || format!("must be one of {}", AccountType::names());
    match v {
        Value::String(s) => s.parse().map_err(|_| FieldError::new("rule.accountType", one_of())),
        _ => Err(FieldError::new("rule.accountType", format!("{} (a string)", one_of()))),
    }
}

/// `refresh`: `{"every": "day"|"week"|"month", "on": …, "at": "HH:MM"}` (docs/segments.md).
fn schedule(v: Value) -> Result<Schedule, FieldError> {
    let Value::Object(mut m) = v else { return Err(FieldError::new("refresh", "must be an object")) };
    let text = |m: &mut Map<String, Value>, key: &'static str| match m.remove(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(FieldError::new(format!("refresh.{key}"), "is required")),
        Some(_) => Err(FieldError::new(format!("refresh.{key}"), "must be a string")),
    };
    let every = text(&mut m, "every")?;
    let at = text(&mut m, "at")?;
    let on = m.remove("on");
    refuse_unknown(&m, "refresh.")?;
    Schedule::try_from(ScheduleForm { every, on, at })
        .map_err(|(field, why)| FieldError::new(format!("refresh.{field}"), why))
}

/// `callbackURL`: an absolute https URL of at most 2048 characters (the policy checks the rest).
fn callback_url(v: Value) -> Result<String, FieldError> {
    match v {
        Value::String(s) if s.chars().count() <= 2048 => Ok(s),
        Value::String(_) => Err(FieldError::new("callbackURL", "must be at most 2048 characters")),
        _ => Err(FieldError::new("callbackURL", "must be a string")),
    }
}

impl CreateSegment {
    pub fn parse(body: &[u8], today: NaiveDate) -> Result<Self, BodyError> {
        let mut m = object(body)?;
        let name = match m.remove("name") {
            None | Some(Value::Null) => return Err(FieldError::new("name", "is required").into()),
            Some(v) => name(v)?,
        };
        let status = match m.remove("status") {
            None | Some(Value::Null) => Status::default(),
            Some(v) => status(v)?,
        };
        let metadata = match m.remove("metadata") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => metadata(v, false)?.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect(),
        };
        let rule = match m.remove("rule") {
            None => None,
            Some(v) => rule(v, today)?,
        };
        let schedule = match m.remove("refresh") {
            None | Some(Value::Null) => None,
            Some(v) => Some(schedule(v)?),
        };
        if schedule.is_some() && rule.is_none() {
            return Err(FieldError::new("refresh", "needs a rule: only a dynamic segment is refreshed").into());
        }
        let callback_url = match m.remove("callbackURL") {
            None | Some(Value::Null) => None,
            Some(v) => Some(callback_url(v)?),
        };
        refuse_unknown(&m, "")?;
        Ok(CreateSegment { name, status, metadata, rule, schedule, callback_url })
    }
}

impl PatchSegment {
    pub fn parse(body: &[u8], today: NaiveDate) -> Result<Self, BodyError> {
        let mut m = object(body)?;
        let name = match m.remove("name") {
            None => None,
            Some(Value::Null) => return Err(FieldError::new("name", "cannot be removed").into()),
            Some(v) => Some(name(v)?),
        };
        let status = match m.remove("status") {
            None => None,
            Some(Value::Null) => return Err(FieldError::new("status", "cannot be removed").into()),
            Some(v) => Some(status(v)?),
        };
        let metadata = match m.remove("metadata") {
            None | Some(Value::Null) => None,
            Some(v) => Some(metadata(v, true)?),
        };
        let rule = match m.remove("rule") {
            None => None,
            Some(v) => Some(rule(v, today)?),
        };
        let schedule = match m.remove("refresh") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(v) => Some(Some(schedule(v)?)),
        };
        let callback_url = match m.remove("callbackURL") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(v) => Some(Some(callback_url(v)?)),
        };
        refuse_unknown(&m, "")?;
        Ok(PatchSegment { name, status, metadata, rule, schedule, callback_url })
    }
}

fn account_list(v: Option<Value>, field: &str) -> Result<Vec<AccountId>, FieldError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(FieldError::new(field, "must be an array of accountIds (strings)")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Value::String(id) = item else { return Err(FieldError::new(at, "must be an accountId (a string)")) };
        out.push(AccountId::parse(&id).map_err(|e| FieldError::new(at, e.to_string()))?);
    }
    Ok(out)
}

impl MembershipChange {
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        let mut m = object(body)?;
        let mut add = account_list(m.remove("add"), "add")?;
        let mut remove = account_list(m.remove("remove"), "remove")?;
        refuse_unknown(&m, "")?;
        if add.len() + remove.len() > MAX_MEMBERSHIP_CHANGE {
            return Err(FieldError::new(
                "add",
                format!("add and remove may name at most {MAX_MEMBERSHIP_CHANGE} accounts together"),
            )
            .into());
        }
        add.sort();
        add.dedup();
        remove.sort();
        remove.dedup();
        if let Some(both) = add.iter().find(|a| remove.binary_search(a).is_ok()) {
            return Err(FieldError::new("remove", format!("names account {both} that add names too")).into());
        }
        Ok(MembershipChange { add, remove })
    }
}

/// Ascending or descending creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

/// Filters and paging of `GET …/segments` (and the `X-Total-Count` of `HEAD …/metrics/count`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: u32,
    pub page: u32,
    pub sort_order: SortOrder,
    /// `createdAt` within `[from, to)`.
    pub created: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Only segments whose `status.code` is this one.
    pub status: Option<StatusCode>,
    pub metadata: Vec<(String, String)>,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            limit: crate::domain::segment::DEFAULT_LIMIT,
            page: 1,
            sort_order: SortOrder::Asc,
            created: None,
            status: None,
            metadata: Vec::new(),
        }
    }
}

impl ListQuery {
    /// From the query parameters (each at most once). Unknown parameters are refused.
    pub fn parse<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, FieldError> {
        let mut q = ListQuery::default();
        let mut seen = std::collections::BTreeSet::new();
        let (mut start, mut end) = (None, None);
        for (key, value) in params {
            if !seen.insert(key.to_owned()) {
                return Err(FieldError::new(key, "must be given at most once"));
            }
            let int = |min: u32, max: u32| {
                value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| FieldError::new(key, format!("must be an integer from {min} to {max}")))
            };
            let bound = || {
                Bound::parse(value.trim()).ok_or_else(|| {
                    FieldError::new(key, "must be a date YYYY-MM-DD or a time YYYY-MM-DD hh:mm:ss (UTC)")
                })
            };
            match key {
                "limit" => q.limit = int(1, crate::domain::segment::MAX_LIMIT)?,
                "page" => q.page = int(1, u32::MAX)?,
                "sort_order" => {
                    q.sort_order = match value.to_ascii_lowercase().as_str() {
                        "asc" => SortOrder::Asc,
                        "desc" => SortOrder::Desc,
                        _ => return Err(FieldError::new(key, "must be asc or desc")),
                    }
                }
                "start_date" => start = Some(bound()?),
                "end_date" => end = Some(bound()?),
                "status" => {
                    q.status = Some(StatusCode::parse(value).ok_or_else(|| {
                        FieldError::new(key, format!("must be 1 to {} characters", StatusCode::MAX_CHARS))
                    })?)
                }
                _ => match metadata_filter_key(key) {
                    Some(Ok(k)) => {
                        // The two spellings name the same filter: a key given in both is given twice.
                        if q.metadata.iter().any(|(seen, _)| seen == k) {
                            return Err(FieldError::new(key, "must be given at most once"));
                        }
                        q.metadata.push((k.to_owned(), value.to_owned()))
                    }
                    Some(Err(message)) => return Err(FieldError::new(key, message)),
                    None => return Err(FieldError::new(key, "is not a known parameter")),
                },
            }
        }
        q.created = match (start, end) {
            (None, None) => None,
            (Some(s), Some(e)) => match (s.first(), e.after_last()) {
                (Some(from), Some(to)) if from < to => Some((from, to)),
                (Some(_), Some(_)) => return Err(FieldError::new("end_date", "must not be before start_date")),
                _ => return Err(FieldError::new("end_date", "is out of range")),
            },
            (Some(_), None) => return Err(FieldError::new("end_date", "is required with start_date")),
            (None, Some(_)) => return Err(FieldError::new("start_date", "is required with end_date")),
        };
        Ok(q)
    }
}

/// The metadata key of a filter parameter: `metadata.tier` (as Midaz writes it) or `metadata[tier]`
/// (OpenAPI's `deepObject` form, what clients generated from the document send). `None` for a
/// parameter that is no metadata filter; an error for one whose key is empty or too long.
fn metadata_filter_key(parameter: &str) -> Option<Result<&str, String>> {
    let key = match parameter.strip_prefix("metadata.") {
        Some(key) => key,
        None => parameter.strip_prefix("metadata[")?.strip_suffix(']').filter(|key| !key.contains(['[', ']']))?,
    };
    if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_CHARS {
        return Some(Err(format!("must name a metadata key of 1 to {MAX_METADATA_KEY_CHARS} characters")));
    }
    Some(Ok(key))
}

/// A `start_date` or `end_date`: a whole day (UTC), or a time to the second (`2025-01-31 13:45:00`,
/// as Midaz takes it; `T` also separates). Both ends are inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Day(NaiveDate),
    Time(NaiveDateTime),
}

impl Bound {
    fn parse(text: &str) -> Option<Bound> {
        if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            return Some(Bound::Day(day));
        }
        ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]
            .iter()
            .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
            .map(Bound::Time)
    }

    /// The first instant the bound admits.
    fn first(self) -> Option<DateTime<Utc>> {
        match self {
            Bound::Day(day) => day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()),
            Bound::Time(time) => Some(time.and_utc()),
        }
    }

    /// The first instant after the bound: the next day, or the next second.
    fn after_last(self) -> Option<DateTime<Utc>> {
        match self {
            Bound::Day(day) => day.succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc()),
            Bound::Time(time) => time.checked_add_signed(chrono::TimeDelta::seconds(1)).map(|t| t.and_utc()),
        }
    }
}

/// Paging of the member list: `limit` and `page` only.
pub fn paging<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(u32, u32), FieldError> {
    let q = ListQuery::parse(
        params
            .into_iter()
            .map(|(k, v)| match k {
                "limit" | "page" => Ok((k, v)),
                _ => Err(FieldError::new(k, "is not a known parameter")),
            })
            .collect::<Result<Vec<_>, _>>()?,
    )?;
    Ok((q.limit, q.page))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Money;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 6, 1).unwrap()
    }

    fn field(e: BodyError) -> String {
        match e {
            BodyError::Field(f) => f.field,
            BodyError::Malformed(m) => panic!("malformed: {}", m.0),
        }
    }

    #[test]
    fn given_a_minimal_body_then_status_is_active_and_there_is_no_rule() {
        let c = CreateSegment::parse(br#"{"name":"VIP"}"#, today()).unwrap();
        assert_eq!((c.name.as_str(), c.status.code, c.rule), ("VIP", StatusCode::active(), None));
    }

    #[test]
    fn bad_create_bodies_name_the_field() {
        let long = "x".repeat(257);
        let cases = [
            (r#"{}"#.to_owned(), "name"),
            (format!(r#"{{"name":"{long}"}}"#), "name"),
            (r#"{"name":"a","status":{"code":""}}"#.to_owned(), "status.code"),
            (format!(r#"{{"name":"a","status":{{"code":"{}"}}}}"#, "X".repeat(101)), "status.code"),
            (r#"{"name":"a","status":{"code":"A\u0007"}}"#.to_owned(), "status.code"),
            (r#"{"name":"a","metadata":{"k":{"x":1}}}"#.to_owned(), "metadata.k"),
            (r#"{"name":"a","metadata":{"k":null}}"#.to_owned(), "metadata.k"),
            (r#"{"name":"a","rule":{"segmentType":"highBalance","parameters":{"accountType":"checking","threshold":"x"}}}"#.to_owned(), "rule.parameters.threshold"),
            (r#"{"name":"a","rule":{"segmentType":"financialBreakdown","parameters":{}}}"#.to_owned(), "rule.parameters.labelGroups"),
            (r#"{"name":"a","rule":{"segmentType":"insuranceSpending","parameters":{"durationInMonth":0}}}"#.to_owned(), "rule.parameters.durationInMonth"),
            (r#"{"name":"a","color":"red"}"#.to_owned(), "color"),
        ];
        for (body, f) in cases {
            assert_eq!(field(CreateSegment::parse(body.as_bytes(), today()).unwrap_err()), f, "{body}");
        }
    }

    #[test]
    fn a_rule_is_validated_like_a_job_and_kept_verbatim() {
        let c = CreateSegment::parse(
            br#"{"name":"rich","rule":{"segmentType":"highBalance","parameters":{"accountType":"checking","threshold":5000}}}"#,
            today(),
        )
        .unwrap();
        let rule = c.rule.unwrap();
        assert_eq!(rule.segment_type, SegmentType::HighBalance);
        assert_eq!(rule.parameters, r#"{"accountType":"checking","threshold":5000}"#);
    }

    #[test]
    fn patch_distinguishes_absent_null_and_set() {
        let p = PatchSegment::parse(br#"{"metadata":{"a":null,"b":1},"rule":null}"#, today()).unwrap();
        assert_eq!(p.name, None);
        assert_eq!(p.rule, Some(None));
        let m = p.metadata.unwrap();
        assert_eq!(m[0], ("a".to_owned(), None));
        assert!(PatchSegment::parse(br#"{}"#, today()).unwrap().metadata.is_none());
    }

    #[test]
    fn membership_changes_take_bare_account_ids_bounded_and_consistent() {
        let ok = MembershipChange::parse(br#"{"add":["a2","a1","a1"],"remove":["a3"]}"#).unwrap();
        let ids = |v: &[&str]| v.iter().map(|s| AccountId::parse(s).unwrap()).collect::<Vec<_>>();
        assert_eq!((ok.add, ok.remove), (ids(&["a1", "a2"]), ids(&["a3"])));
        assert_eq!(field(MembershipChange::parse(br#"{"add":["a1"],"remove":["a1"]}"#).unwrap_err()), "remove");
        let many: Vec<String> = (0..1001).map(|i| format!(r#""a{i}""#)).collect();
        let body = format!(r#"{{"add":[{}]}}"#, many.join(","));
        assert_eq!(field(MembershipChange::parse(body.as_bytes()).unwrap_err()), "add");
        let split = format!(r#"{{"add":[{}],"remove":[{}]}}"#, many[..500].join(","), many[500..].join(","));
        assert_eq!(field(MembershipChange::parse(split.as_bytes()).unwrap_err()), "add");
        let limit = format!(r#"{{"add":[{}]}}"#, many[..1000].join(","));
        assert_eq!(MembershipChange::parse(limit.as_bytes()).unwrap().add.len(), 1000);
        assert_eq!(field(MembershipChange::parse(br#"{"add":["a#1"]}"#).unwrap_err()), "add[0]");
        assert_eq!(
            field(MembershipChange::parse(br#"{"remove":[{"userId":"u1","accountId":"a1"}]}"#).unwrap_err()),
            "remove[0]"
        );
        assert_eq!(field(MembershipChange::parse(br#"{"add":"a1"}"#).unwrap_err()), "add");
        assert_eq!(field(MembershipChange::parse(br#"{"add":[],"users":[]}"#).unwrap_err()), "users");
    }

    #[test]
    fn rules_of_every_type_without_a_condition_are_accepted_except_financial_breakdown() {
        let bodies = [
            (SegmentType::HighBalance, r#"{"accountType":"checking","threshold":5000}"#),
            (SegmentType::LowBalance, r#"{"threshold":100,"durationInMonth":3}"#),
            (SegmentType::IncomeSpendingSummary, r#"{"dateFrom":"2025-01-01","dateTo":"2025-03-31"}"#),
            (SegmentType::InsuranceSpending, r#"{"durationInMonth":12}"#),
        ];
        for (t, parameters) in bodies {
            let body = format!(r#"{{"name":"n","rule":{{"segmentType":"{t}","parameters":{parameters}}}}}"#);
            let rule = CreateSegment::parse(body.as_bytes(), today()).unwrap().rule.unwrap();
            let stored: Value = serde_json::from_str(&rule.parameters).unwrap();
            assert_eq!((rule.segment_type, stored), (t, serde_json::from_str::<Value>(parameters).unwrap()));
            assert_eq!((rule.condition, rule.account_type), (None, None), "{t}");
        }
        // financialBreakdown lists no accounts: without a condition nothing says who is selected.
        let refused = rule_error(
            r#"{"segmentType":"financialBreakdown","parameters":{"labelGroups":["RENT"],"durationInMonth":3}}"#,
        );
        assert_eq!(refused.field, "rule.condition");
        assert!(refused.message.starts_with("is required for financialBreakdown"), "{}", refused.message);
        let null = rule_error(
            r#"{"segmentType":"financialBreakdown","parameters":{"labelGroups":["RENT"],"durationInMonth":3},"condition":null}"#,
        );
        assert_eq!(null.field, "rule.condition");
    }

    /// The rule of `{"name":"n","rule":<rule>}`, which must be accepted.
    fn parsed_rule(rule: &str) -> Rule {
        let body = format!(r#"{{"name":"n","rule":{rule}}}"#);
        CreateSegment::parse(body.as_bytes(), today()).unwrap_or_else(|e| panic!("{rule}: {e:?}")).rule.unwrap()
    }

    /// Why `{"name":"n","rule":<rule>}` is refused; the same rule in a PATCH is refused alike.
    fn rule_error(rule: &str) -> crate::rules::body::FieldError {
        let create = format!(r#"{{"name":"n","rule":{rule}}}"#);
        let patch = format!(r#"{{"rule":{rule}}}"#);
        let from_create = match CreateSegment::parse(create.as_bytes(), today()) {
            Err(BodyError::Field(f)) => f,
            other => panic!("{rule}: expected a field error, got {other:?}"),
        };
        match PatchSegment::parse(patch.as_bytes(), today()) {
            Err(BodyError::Field(f)) => assert_eq!(f, from_create, "{rule}"),
            other => panic!("{rule}: PATCH: expected a field error, got {other:?}"),
        }
        from_create
    }

    #[test]
    fn a_condition_is_read_exactly_for_every_type() {
        let m = |s: &str| s.parse::<Money>().unwrap();
        let cases = [
            (
                r#"{"segmentType":"highBalance","parameters":{"accountType":"checking","threshold":5000},
                   "condition":{"figure":"amount","operator":"gte","threshold":10000.5}}"#,
                Condition {
                    figure: Figure::Amount,
                    label_group: None,
                    operator: Comparison::Gte,
                    threshold: m("10000.50"),
                },
            ),
            (
                r#"{"segmentType":"lowBalance","parameters":{"threshold":100,"durationInMonth":3},
                   "condition":{"figure":"amount","operator":"lt","threshold":-0.3}}"#,
                Condition {
                    figure: Figure::Amount,
                    label_group: None,
                    operator: Comparison::Lt,
                    threshold: m("-0.30"),
                },
            ),
            (
                r#"{"segmentType":"incomeSpendingSummary","parameters":{"dateFrom":"2025-01-01","dateTo":"2025-03-31"},
                   "condition":{"figure":"incomingCount","operator":"eq","threshold":3.0}}"#,
                Condition {
                    figure: Figure::IncomingCount,
                    label_group: None,
                    operator: Comparison::Eq,
                    threshold: m("3"),
                },
            ),
            (
                r#"{"segmentType":"incomeSpendingSummary","parameters":{"dateFrom":"2025-01-01","dateTo":"2025-03-31"},
                   "condition":{"figure":"outgoingAmount","operator":"lte","threshold":1e3,"labelGroup":null}}"#,
                Condition {
                    figure: Figure::OutgoingAmount,
                    label_group: None,
                    operator: Comparison::Lte,
                    threshold: m("1000"),
                },
            ),
            (
                r#"{"segmentType":"insuranceSpending","parameters":{},
                   "condition":{"figure":"amount","operator":"gt","threshold":1200}}"#,
                Condition { figure: Figure::Amount, label_group: None, operator: Comparison::Gt, threshold: m("1200") },
            ),
            (
                r#"{"segmentType":"financialBreakdown",
                   "parameters":{"labelGroups":["RENT",{"alias":"Income","includeLabels":["SALARY"]}],"durationInMonth":3},
                   "condition":{"figure":"median","labelGroup":"RENT","operator":"gt","threshold":0.1}}"#,
                Condition {
                    figure: Figure::Median,
                    label_group: Some("RENT".into()),
                    operator: Comparison::Gt,
                    threshold: m("0.10"),
                },
            ),
        ];
        for (rule, condition) in cases {
            let parsed = parsed_rule(rule);
            assert_eq!(parsed.condition, Some(condition), "{rule}");
            assert_eq!(parsed.account_type, None, "{rule}");
        }
    }

    #[test]
    fn a_financial_breakdown_rule_names_a_label_group_by_alias_and_may_narrow_the_accounts() {
        let rule = parsed_rule(
            r#"{"segmentType":"financialBreakdown",
                "parameters":{"labelGroups":[{"alias":"Income","includeLabels":["SALARY"]}],"durationInMonth":3},
                "condition":{"figure":"average","labelGroup":"Income","operator":"gte","threshold":2500.00},
                "accountType":"checking"}"#,
        );
        assert_eq!(rule.segment_type, SegmentType::FinancialBreakdown);
        assert_eq!(rule.account_type, Some(AccountType::Checking));
        let condition = rule.condition.unwrap();
        assert_eq!(condition.label_group.as_deref(), Some("Income"));
        assert_eq!((condition.figure, condition.threshold), (Figure::Average, Money::from_cents(250_000)));
        // The label the alias stands for is not an alias.
        let by_label = rule_error(
            r#"{"segmentType":"financialBreakdown",
                "parameters":{"labelGroups":[{"alias":"Income","includeLabels":["SALARY"]}],"durationInMonth":3},
                "condition":{"figure":"average","labelGroup":"SALARY","operator":"gte","threshold":2500}}"#,
        );
        assert_eq!(by_label.field, "rule.condition.labelGroup");
        assert_eq!(by_label.message, "must be the alias of one of rule.parameters.labelGroups (Income)");
    }

    #[test]
    fn every_refused_rule_names_its_field_and_what_is_allowed() {
        const HB: &str = r#""segmentType":"highBalance","parameters":{"accountType":"checking","threshold":1}"#;
        const ISS: &str =
            r#""segmentType":"incomeSpendingSummary","parameters":{"dateFrom":"2025-01-01","dateTo":"2025-01-31"}"#;
        const FB: &str =
            r#""segmentType":"financialBreakdown","parameters":{"labelGroups":["SALARY","RENT"],"durationInMonth":3}"#;
        let fb_ok = r#""figure":"average","labelGroup":"SALARY","operator":"gte","threshold":1"#;
        let cases: Vec<(String, &str, &str)> = vec![
            (format!(r#"{{{HB},"condition":"amount > 5"}}"#), "rule.condition", "must be an object"),
            (format!(r#"{{{HB},"condition":{{"operator":"gt","threshold":1}}}}"#), "rule.condition.figure", "amount"),
            (
                format!(r#"{{{HB},"condition":{{"figure":"total","operator":"gt","threshold":1}}}}"#),
                "rule.condition.figure",
                "must be one of amount for highBalance",
            ),
            (
                format!(r#"{{{HB},"condition":{{"figure":7,"operator":"gt","threshold":1}}}}"#),
                "rule.condition.figure",
                "must be one of amount",
            ),
            (
                format!(r#"{{{ISS},"condition":{{"figure":"amount","operator":"gt","threshold":1}}}}"#),
                "rule.condition.figure",
                "incomingCount, outgoingCount, incomingAmount, outgoingAmount",
            ),
            (
                format!(
                    r#"{{{FB},"condition":{{"figure":"amount","labelGroup":"SALARY","operator":"gt","threshold":1}}}}"#
                ),
                "rule.condition.figure",
                "total, average, minimum, maximum, median",
            ),
            (
                format!(
                    r#"{{{HB},"condition":{{"figure":"amount","labelGroup":"SALARY","operator":"gt","threshold":1}}}}"#
                ),
                "rule.condition.labelGroup",
                "only allowed for financialBreakdown",
            ),
            (
                format!(r#"{{{FB},"condition":{{"figure":"average","operator":"gte","threshold":1}}}}"#),
                "rule.condition.labelGroup",
                "is required: the alias of one of rule.parameters.labelGroups (SALARY, RENT)",
            ),
            (
                format!(
                    r#"{{{FB},"condition":{{"figure":"average","labelGroup":"BONUS","operator":"gte","threshold":1}}}}"#
                ),
                "rule.condition.labelGroup",
                "(SALARY, RENT)",
            ),
            (
                format!(
                    r#"{{{FB},"condition":{{"figure":"average","labelGroup":["SALARY"],"operator":"gte","threshold":1}}}}"#
                ),
                "rule.condition.labelGroup",
                "(SALARY, RENT)",
            ),
            (
                format!(r#"{{{HB},"condition":{{"figure":"amount","threshold":1}}}}"#),
                "rule.condition.operator",
                "is required: one of gt, gte, lt, lte, eq",
            ),
            (
                format!(r#"{{{HB},"condition":{{"figure":"amount","operator":">=","threshold":1}}}}"#),
                "rule.condition.operator",
                "must be one of gt, gte, lt, lte, eq",
            ),
            (
                format!(r#"{{{HB},"condition":{{"figure":"amount","operator":"GTE","threshold":1}}}}"#),
                "rule.condition.operator",
                "must be one of gt, gte, lt, lte, eq",
            ),
            (
                format!(r#"{{{HB},"condition":{{"figure":"amount","operator":"gt"}}}}"#),
                "rule.condition.threshold",
                "is required",
            ),
            (
                format!(r#"{{{HB},"condition":{{"figure":"amount","operator":"gt","threshold":"5000"}}}}"#),
                "rule.condition.threshold",
                "must be a decimal number, not a string",
            ),
            (
                format!(r#"{{{HB},"condition":{{"figure":"amount","operator":"gt","threshold":0.001}}}}"#),
                "rule.condition.threshold",
                "must have at most 2 decimals",
            ),
            (
                format!(r#"{{{HB},"condition":{{"figure":"amount","operator":"gt","threshold":1e20}}}}"#),
                "rule.condition.threshold",
                "is out of range",
            ),
            (
                format!(r#"{{{ISS},"condition":{{"figure":"incomingCount","operator":"gt","threshold":2.5}}}}"#),
                "rule.condition.threshold",
                "must be a whole number: incomingCount is a count",
            ),
            (
                format!(r#"{{{HB},"condition":{{"figure":"amount","operator":"gt","treshold":1}}}}"#),
                "rule.condition.treshold",
                "is not a known field (allowed: figure, labelGroup, operator, threshold)",
            ),
            (
                format!(r#"{{{FB},"condition":{{{fb_ok},"months":3}}}}"#),
                "rule.condition.months",
                "is not a known field",
            ),
            (
                format!(r#"{{{HB},"accountType":"checking"}}"#),
                "rule.accountType",
                "is only allowed for financialBreakdown",
            ),
            (
                format!(r#"{{{FB},"condition":{{{fb_ok}}},"accountType":"girokonto"}}"#),
                "rule.accountType",
                "must be one of checking, savings",
            ),
            (
                format!(r#"{{{FB},"condition":{{{fb_ok}}},"accountType":1}}"#),
                "rule.accountType",
                "must be one of checking, savings",
            ),
            (format!(r#"{{{FB},"condition":{{{fb_ok}}},"accounts":"all"}}"#), "rule.accounts", "is not a known field"),
        ];
        for (rule, field, message) in cases {
            let err = rule_error(&rule);
            assert_eq!(err.field, field, "{rule}: {}", err.message);
            assert!(err.message.contains(message), "{rule}: {:?} lacks {message:?}", err.message);
        }
        // The whole well-formed rule passes: each case above fails for the one thing it changes.
        parsed_rule(&format!(r#"{{{FB},"condition":{{{fb_ok}}},"accountType":"savings"}}"#));
        parsed_rule(&format!(r#"{{{HB},"condition":{{"figure":"amount","operator":"gt","threshold":1}}}}"#));
    }

    #[test]
    fn list_queries_are_checked() {
        let q = ListQuery::parse([("limit", "5"), ("sort_order", "desc"), ("metadata.tier", "gold")]).unwrap();
        assert_eq!((q.limit, q.sort_order, q.metadata.len()), (5, SortOrder::Desc, 1));
        for bad in [
            vec![("limit", "0")],
            vec![("limit", "101")],
            vec![("page", "0")],
            vec![("start_date", "2025-01-01")],
            vec![("start_date", "2025-02-01"), ("end_date", "2025-01-01")],
            vec![("sort", "asc")],
        ] {
            assert!(ListQuery::parse(bad.clone()).is_err(), "{bad:?}");
        }
        let q = ListQuery::parse([("start_date", "2025-01-01 08:30:00"), ("end_date", "2025-01-01T09:00:00")]).unwrap();
        let (from, to) = q.created.unwrap();
        assert_eq!(
            (from.to_rfc3339(), to.to_rfc3339()),
            ("2025-01-01T08:30:00+00:00".into(), "2025-01-01T09:00:01+00:00".into())
        );
        let q = ListQuery::parse([("start_date", "2025-01-01 08:30:00"), ("end_date", "2025-01-01")]).unwrap();
        assert_eq!(q.created.unwrap().1.to_rfc3339(), "2025-01-02T00:00:00+00:00");
        for bad in [("2025-01-01 25:00:00", "2025-01-02"), ("2025-01-01 08:30", "2025-01-02")] {
            assert_eq!(ListQuery::parse([("start_date", bad.0), ("end_date", bad.1)]).unwrap_err().field, "start_date");
        }
        assert_eq!(
            ListQuery::parse([("start_date", "2025-01-01 09:00:00"), ("end_date", "2025-01-01 08:59:59")])
                .unwrap_err()
                .field,
            "end_date"
        );
        let q = ListQuery::parse([("status", "SUSPENDED")]).unwrap();
        assert_eq!(q.status.as_ref().map(StatusCode::as_str), Some("SUSPENDED"));
        assert_eq!(ListQuery::parse([("status", "ON HOLD")]).unwrap().status.unwrap().as_str(), "ON HOLD");
        assert_eq!(ListQuery::parse([("status", "")]).unwrap_err().field, "status");
        let q = ListQuery::parse([("start_date", "2025-01-01"), ("end_date", "2025-01-01")]).unwrap();
        let (from, to) = q.created.unwrap();
        assert_eq!((to - from).num_hours(), 24);
    }

    #[test]
    fn metadata_filters_are_read_in_the_midaz_form_and_in_the_deep_object_form() {
        // Given the Midaz spelling and the OpenAPI deepObject spelling of two filters
        let q = ListQuery::parse([("metadata.tier", "gold"), ("metadata[region]", "EU")]).unwrap();
        // Then both are filters on their key
        assert_eq!(q.metadata, vec![("tier".to_owned(), "gold".to_owned()), ("region".to_owned(), "EU".to_owned())]);
        // A key may hold dots; the Midaz form takes everything after the first one
        assert_eq!(ListQuery::parse([("metadata[a.b]", "1")]).unwrap().metadata, vec![("a.b".into(), "1".into())]);
        assert_eq!(ListQuery::parse([("metadata.a.b", "1")]).unwrap().metadata, vec![("a.b".into(), "1".into())]);
        // The same key in both spellings is the same filter given twice
        let twice = ListQuery::parse([("metadata.tier", "gold"), ("metadata[tier]", "gold")]).unwrap_err();
        assert_eq!((twice.field.as_str(), twice.message.as_str()), ("metadata[tier]", "must be given at most once"));
        // An empty or too long key is refused naming the parameter, not taken as no filter
        let long = format!("metadata[{}]", "k".repeat(MAX_METADATA_KEY_CHARS + 1));
        for bad in ["metadata.", "metadata[]", long.as_str()] {
            let err = ListQuery::parse([(bad, "x")]).unwrap_err();
            assert_eq!(err.field, bad);
            assert!(err.message.starts_with("must name a metadata key"), "{bad}: {}", err.message);
        }
        // Brackets that are not one deepObject key are no filter at all
        for bad in ["metadata[a][b]", "metadata[a", "metadata", "metadataX"] {
            assert_eq!(ListQuery::parse([(bad, "x")]).unwrap_err().message, "is not a known parameter", "{bad}");
        }
    }
}
