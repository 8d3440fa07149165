//! The events the service publishes about segments (docs/events.md): created, updated, deleted,
//! and membership changed. They carry ids, states and counts — never balances, names of people or
//! accounts' data — so any subscriber of the mandator's bus may read them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::refresh::{RefreshId, RefreshRecord, RefreshTrigger};
use super::segment::{Segment, SegmentId};
use super::{JobId, MandatorId};

/// The `source` of every event.
pub const EVENT_SOURCE: &str = "financial-segments";

/// One event. `id` is derived from what happened, so publishing one event twice (a step run
/// again after a crash) gives two deliveries with one id, which a subscriber can drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEvent {
    pub id: uuid::Uuid,
    pub time: DateTime<Utc>,
    pub mandator: MandatorId,
    pub detail: EventDetail,
}

/// What happened, by kind; the `detail` of the published event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventDetail {
    Segment(SegmentFacts),
    Membership(MembershipFacts),
}

/// The kinds of events, each its own `detail-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "Segment Created")]
    Created,
    #[serde(rename = "Segment Updated")]
    Updated,
    #[serde(rename = "Segment Deleted")]
    Deleted,
    #[serde(rename = "Segment Membership Changed")]
    MembershipChanged,
}

impl EventKind {
    pub const ALL: [EventKind; 4] =
        [EventKind::Created, EventKind::Updated, EventKind::Deleted, EventKind::MembershipChanged];

    /// The event's `detail-type`.
    pub fn detail_type(self) -> &'static str {
        match self {
            EventKind::Created => "Segment Created",
            EventKind::Updated => "Segment Updated",
            EventKind::Deleted => "Segment Deleted",
            EventKind::MembershipChanged => "Segment Membership Changed",
        }
    }
}

/// The detail of created, updated and deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentFacts {
    pub kind: EventKind,
    pub organization_id: MandatorId,
    pub ledger_id: Option<String>,
    pub segment_id: SegmentId,
    /// The segment's version after the change.
    pub version: u64,
    pub status: String,
    /// Whether the segment has a rule, and whether it is refreshed on a schedule.
    pub dynamic: bool,
    pub scheduled: bool,
}

/// The detail of membership changed: a refresh was applied. (A change through
/// `PUT …/accounts` is the caller's own and publishes nothing.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MembershipFacts {
    pub kind: EventKind,
    pub organization_id: MandatorId,
    pub ledger_id: Option<String>,
    pub segment_id: SegmentId,
    pub refresh_id: RefreshId,
    pub job_id: JobId,
    pub trigger: RefreshTrigger,
    pub entered: u64,
    pub left: u64,
    pub member_count: u64,
}

/// A name-based UUID of what happened, so the same happening always has the same id.
fn event_id(parts: &[&str]) -> uuid::Uuid {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, parts.join("/").as_bytes())
}

impl SegmentEvent {
    pub fn kind(&self) -> EventKind {
        match &self.detail {
            EventDetail::Segment(f) => f.kind,
            EventDetail::Membership(f) => f.kind,
        }
    }

    pub fn segment_id(&self) -> SegmentId {
        match &self.detail {
            EventDetail::Segment(f) => f.segment_id,
            EventDetail::Membership(f) => f.segment_id,
        }
    }

    /// Created, updated or deleted: `segment` as it is after the change.
    pub fn segment(kind: EventKind, segment: &Segment, now: DateTime<Utc>) -> Self {
        let id = event_id(&[
            "segment",
            segment.mandator.as_str(),
            &segment.id.to_string(),
            &segment.version.to_string(),
            kind.detail_type(),
        ]);
        SegmentEvent {
            id,
            time: now,
            mandator: segment.mandator.clone(),
            detail: EventDetail::Segment(SegmentFacts {
                kind,
                organization_id: segment.mandator.clone(),
                ledger_id: segment.ledger_id.as_ref().map(|l| l.as_str().to_owned()),
                segment_id: segment.id,
                version: segment.version,
                status: segment.status.code.as_str().to_owned(),
                dynamic: segment.rule.is_some(),
                scheduled: segment.schedule.is_some(),
            }),
        }
    }

    /// A refresh of `segment` was applied.
    pub fn refreshed(segment: &Segment, refresh: &RefreshRecord, member_count: u64, now: DateTime<Utc>) -> Self {
        SegmentEvent {
            id: event_id(&["refresh", segment.mandator.as_str(), &refresh.id.to_string()]),
            time: now,
            mandator: segment.mandator.clone(),
            detail: EventDetail::Membership(MembershipFacts {
                kind: EventKind::MembershipChanged,
                organization_id: segment.mandator.clone(),
                ledger_id: segment.ledger_id.as_ref().map(|l| l.as_str().to_owned()),
                segment_id: segment.id,
                refresh_id: refresh.id,
                job_id: refresh.job_id,
                trigger: refresh.trigger,
                entered: refresh.entered,
                left: refresh.left,
                member_count,
            }),
        }
    }

    /// The event as one published line: the envelope fields EventBridge gives every event
    /// (`id`, `source`, `detail-type`, `time`, `detail`), as the local event file stores it and
    /// a segment's callbackURL receives it.
    pub fn envelope(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "source": EVENT_SOURCE,
            "detail-type": self.kind().detail_type(),
            "time": self.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "detail": self.detail_json(),
        })
    }

    /// The `detail` as published: the facts plus `eventId`, the event's stable id. EventBridge
    /// gives every event an `id` of its own, so a subscriber of the bus finds this one here.
    pub fn detail_json(&self) -> serde_json::Value {
        let mut detail = serde_json::to_value(&self.detail).unwrap_or_default();
        if let Some(fields) = detail.as_object_mut() {
            fields.insert("eventId".to_owned(), serde_json::Value::String(self.id.to_string()));
        }
        detail
    }
}
