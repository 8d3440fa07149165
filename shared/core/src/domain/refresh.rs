//! Refreshes of dynamic segments (docs/segments.md): a refresh runs the segment's rule as a
//! financial-segment job, and once the job completes the service records the difference between
//! the accounts the rule selects and the current members (the change feed: who entered, who left)
//! and applies it, page by page. A segment with a schedule is refreshed on its own.
//!
//! A refresh moves through
//! `PENDING` (its job runs) → `DIFFING` (the difference is being recorded) → `APPLYING` (the
//! recorded difference is being applied; `cursor` says how far) → `APPLIED`, or `FAILED` when its
//! job fails or expires. Every step is a conditional write on `version`, so two runs of one step
//! never both act, and a run that dies mid-step leaves a state another run resumes from.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveTime, Timelike, Utc, Weekday};
use serde::{Deserialize, Serialize};

use super::SegmentId;
use super::rule::Rule;
use super::{AccountId, JobId, MandatorId};

/// A refresh's id: a UUIDv7, so a segment's refreshes sort by start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RefreshId(uuid::Uuid);

impl RefreshId {
    pub fn new() -> Self {
        RefreshId(uuid::Uuid::now_v7())
    }

    /// Any UUID text; an unknown id is simply not found.
    pub fn parse(s: &str) -> Option<Self> {
        uuid::Uuid::parse_str(s).ok().map(RefreshId)
    }

    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl Default for RefreshId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RefreshId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Who started a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefreshTrigger {
    /// `POST …/segments/{segmentId}/refresh`.
    Manual,
    /// The segment's schedule.
    Schedule,
}

/// Where a refresh stands (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefreshState {
    Pending,
    Diffing,
    Applying,
    Applied,
    Failed,
}

impl RefreshState {
    pub fn is_final(self) -> bool {
        matches!(self, RefreshState::Applied | RefreshState::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefreshState::Pending => "PENDING",
            RefreshState::Diffing => "DIFFING",
            RefreshState::Applying => "APPLYING",
            RefreshState::Applied => "APPLIED",
            RefreshState::Failed => "FAILED",
        }
    }
}

/// The two halves of a refresh's change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Accounts the rule selects that were not members.
    Entered,
    /// Members the rule no longer selects.
    Left,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 2] = [ChangeKind::Entered, ChangeKind::Left];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Entered => "entered",
            ChangeKind::Left => "left",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ChangeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// How far a refresh's difference has been applied: every change of `kind` up to and including
/// account `after` (entered ones first, then left ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyCursor {
    pub kind: ChangeKind,
    pub after: Option<AccountId>,
}

/// A refresh as stored: one record per refresh, beside its segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRecord {
    pub mandator: MandatorId,
    pub segment_id: SegmentId,
    pub id: RefreshId,
    pub job_id: JobId,
    pub trigger: RefreshTrigger,
    /// The rule as it was when the refresh started: its job ran these parameters, so the
    /// selection reads the result with this rule's condition, whatever the segment's rule is now.
    pub rule: Rule,
    pub state: RefreshState,
    pub requested_at: DateTime<Utc>,
    /// When it reached `APPLIED` or `FAILED`.
    pub finished_at: Option<DateTime<Utc>>,
    /// Accounts that entered and left; known from `APPLYING` on.
    pub entered: u64,
    pub left: u64,
    /// In `APPLYING`: how far the difference has been applied (`None`: nothing yet).
    pub cursor: Option<ApplyCursor>,
    pub error: Option<String>,
    /// While the refresh is not final: when the scheduler looks at it next. The stores index
    /// refreshes by this time (only unfinished ones carry it), so finding the ones to look at
    /// never reads every refresh.
    pub check_at: Option<DateTime<Utc>>,
    /// While a run of the applier works on it: until when that run holds it. Another run does
    /// not start before then.
    pub lease_until: Option<DateTime<Utc>>,
    pub version: u64,
}

impl RefreshRecord {
    /// A refresh just started with `job_id`, first looked at `first_look` later.
    pub fn start(
        mandator: MandatorId,
        segment_id: SegmentId,
        job_id: JobId,
        trigger: RefreshTrigger,
        rule: Rule,
        now: DateTime<Utc>,
        first_look: Duration,
    ) -> Self {
        RefreshRecord {
            mandator,
            segment_id,
            id: RefreshId::new(),
            job_id,
            trigger,
            rule,
            state: RefreshState::Pending,
            requested_at: now,
            finished_at: None,
            entered: 0,
            left: 0,
            cursor: None,
            error: None,
            check_at: Some(whole_seconds(now + first_look)),
            lease_until: None,
            version: 1,
        }
    }

    /// What the segment shows of it.
    pub fn summary(&self) -> RefreshSummary {
        RefreshSummary {
            id: self.id,
            job_id: self.job_id,
            trigger: self.trigger,
            state: self.state,
            requested_at: self.requested_at,
            finished_at: self.finished_at,
            entered: self.entered,
            left: self.left,
            error: self.error.clone(),
        }
    }

    /// This record as the next version (the caller changes what the step changes).
    pub fn next(&self) -> Self {
        RefreshRecord { version: self.version + 1, ..self.clone() }
    }
}

/// The last refresh as its segment shows it: counts, never the accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshSummary {
    pub id: RefreshId,
    pub job_id: JobId,
    pub trigger: RefreshTrigger,
    pub state: RefreshState,
    pub requested_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub entered: u64,
    pub left: u64,
    pub error: Option<String>,
}

/// How often a scheduled segment is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    Day,
    /// Every week on this weekday.
    Week(Weekday),
    /// Every month on this day (1–28, so every month has it).
    Month(u32),
}

/// `{"every": "day"|"week"|"month", "on": …, "at": "HH:MM"}`, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub every: Every,
    /// Hour and minute (seconds are always 0).
    pub at: NaiveTime,
}

/// Latest day of the month a monthly schedule may name.
pub const LAST_SCHEDULE_DAY: u32 = 28;

impl Schedule {
    /// The first run time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        // Candidates from the day of `t` on; the first one after `t` wins. A month holds every
        // weekday and every day 1–28, so 32 days always contain one.
        let mut day = t.date_naive();
        for _ in 0..=62 {
            let fits = match self.every {
                Every::Day => true,
                Every::Week(w) => day.weekday() == w,
                Every::Month(d) => day.day() == d,
            };
            let at = day.and_time(self.at).and_utc();
            if fits && at > t {
                return at;
            }
            day = day.succ_opt().unwrap_or(day);
        }
        // Unreachable for the schedules `Schedule` admits; a day later keeps callers safe.
        t + Duration::days(1)
    }
}

/// The stored and shown form: `{"every": "week", "on": "monday", "at": "06:00"}`; `on` is a
/// weekday name for weekly schedules, a day number for monthly ones, absent for daily ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleForm {
    pub every: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<serde_json::Value>,
    pub at: String,
}

pub const WEEKDAYS: [(&str, Weekday); 7] = [
    ("monday", Weekday::Mon),
    ("tuesday", Weekday::Tue),
    ("wednesday", Weekday::Wed),
    ("thursday", Weekday::Thu),
    ("friday", Weekday::Fri),
    ("saturday", Weekday::Sat),
    ("sunday", Weekday::Sun),
];

impl From<&Schedule> for ScheduleForm {
    fn from(s: &Schedule) -> Self {
        let (every, on) = match s.every {
            Every::Day => ("day", None),
            Every::Week(w) => {
                let name = WEEKDAYS.iter().find(|(_, d)| *d == w).map_or("monday", |(n, _)| n);
                ("week", Some(serde_json::Value::from(name)))
            }
            Every::Month(d) => ("month", Some(serde_json::Value::from(d))),
        };
        ScheduleForm { every: every.to_owned(), on, at: format!("{:02}:{:02}", s.at.hour(), s.at.minute()) }
    }
}

impl TryFrom<ScheduleForm> for Schedule {
    /// The field of the form that is wrong, and why.
    type Error = (&'static str, String);

    fn try_from(f: ScheduleForm) -> Result<Self, Self::Error> {
        let at = NaiveTime::parse_from_str(&f.at, "%H:%M")
            .ok()
            .filter(|_| f.at.len() == 5)
            .ok_or(("at", "must be a UTC time HH:MM (00:00 to 23:59)".to_owned()))?;
        let every = match (f.every.as_str(), f.on) {
            ("day", None | Some(serde_json::Value::Null)) => Every::Day,
            ("day", Some(_)) => return Err(("on", "is not taken by a daily schedule".to_owned())),
            ("week", None | Some(serde_json::Value::Null)) => Every::Week(Weekday::Mon),
            ("week", Some(serde_json::Value::String(name))) => Every::Week(
                WEEKDAYS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, d)| *d)
                    .ok_or(("on", "must be a weekday in lower case, monday to sunday".to_owned()))?,
            ),
            ("week", Some(_)) => return Err(("on", "must be a weekday in lower case, monday to sunday".to_owned())),
            ("month", None | Some(serde_json::Value::Null)) => Every::Month(1),
            ("month", Some(v)) => Every::Month(
                // Any whole number, `15.0` too, as everywhere else in the API.
                v.as_u64()
                    .or_else(|| v.as_f64().filter(|d| d.fract() == 0.0 && *d >= 0.0).map(|d| d as u64))
                    .filter(|d| (1..=u64::from(LAST_SCHEDULE_DAY)).contains(d))
                    .map(|d| d as u32)
                    .ok_or(("on", format!("must be a day of the month from 1 to {LAST_SCHEDULE_DAY}")))?,
            ),
            _ => return Err(("every", "must be one of day, week, month".to_owned())),
        };
        Ok(Schedule { every, at })
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ScheduleForm::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Schedule::try_from(ScheduleForm::deserialize(d)?)
            .map_err(|(field, why)| serde::de::Error::custom(format!("schedule {field} {why}")))
    }
}

/// The message that asks the applier to take a refresh one step further (docs/segments.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshMessage {
    pub mandator_id: MandatorId,
    pub segment_id: SegmentId,
    pub refresh_id: RefreshId,
}

impl RefreshMessage {
    pub fn of(r: &RefreshRecord) -> Self {
        RefreshMessage { mandator_id: r.mandator.clone(), segment_id: r.segment_id, refresh_id: r.id }
    }
}

/// A time cut to whole seconds, as the stores index times.
pub fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(t, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn schedule(json: &str) -> Schedule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn daily_runs_next_at_the_time_strictly_after() {
        let s = schedule(r#"{"every":"day","at":"06:30"}"#);
        assert_eq!(s.next_after(at("2026-11-30T06:00:00Z")), at("2026-11-30T06:30:00Z"));
        assert_eq!(s.next_after(at("2026-11-30T06:30:00Z")), at("2026-12-01T06:30:00Z"));
        assert_eq!(s.next_after(at("2026-12-31T23:59:59Z")), at("2027-01-01T06:30:00Z"));
    }

    #[test]
    fn weekly_and_monthly_runs_fall_on_their_day() {
        // 2026-11-30 is a Monday.
        let weekly = schedule(r#"{"every":"week","on":"wednesday","at":"00:00"}"#);
        assert_eq!(weekly.next_after(at("2026-11-30T12:00:00Z")), at("2026-12-02T00:00:00Z"));
        assert_eq!(weekly.next_after(at("2026-12-02T00:00:00Z")), at("2026-12-09T00:00:00Z"));
        let monthly = schedule(r#"{"every":"month","on":28,"at":"23:59"}"#);
        assert_eq!(monthly.next_after(at("2027-01-29T00:00:00Z")), at("2027-02-28T23:59:00Z"));
        assert_eq!(schedule(r#"{"every":"week","at":"01:00"}"#).every, Every::Week(Weekday::Mon));
        assert_eq!(schedule(r#"{"every":"month","at":"01:00"}"#).every, Every::Month(1));
        assert_eq!(schedule(r#"{"every":"month","on":15.0,"at":"01:00"}"#).every, Every::Month(15));
    }

    #[test]
    fn the_form_round_trips_and_refuses_what_it_cannot_run() {
        for json in [
            r#"{"every":"day","at":"06:00"}"#,
            r#"{"every":"week","on":"sunday","at":"23:59"}"#,
            r#"{"every":"month","on":15,"at":"00:00"}"#,
        ] {
            assert_eq!(serde_json::to_string(&schedule(json)).unwrap(), json);
        }
        for bad in [
            r#"{"every":"hour","at":"06:00"}"#,
            r#"{"every":"day","at":"6:00"}"#,
            r#"{"every":"day","at":"24:00"}"#,
            r#"{"every":"day","on":1,"at":"06:00"}"#,
            r#"{"every":"month","on":29,"at":"06:00"}"#,
            r#"{"every":"week","on":"Monday","at":"06:00"}"#,
            r#"{"every":"month","on":1.5,"at":"06:00"}"#,
        ] {
            assert!(serde_json::from_str::<Schedule>(bad).is_err(), "{bad}");
        }
    }
}
