//! The segment events on the stack's EventBridge bus (docs/events.md): one `PutEvents` entry per
//! event, with source `financial-segments`, the event's detail-type, its detail as JSON and its
//! time. Subscribers route them with rules on the bus.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::primitives::DateTime as SmithyDateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use tracing::instrument;

use segments_core::config::{ConfigError, required};
use segments_core::domain::events::{EVENT_SOURCE, SegmentEvent};
use segments_core::ports::{EventPublisher, StoreError};

use crate::EVENT_BUS_NAME_VAR;

/// Most entries one `PutEvents` call takes.
pub const PUT_EVENTS_LIMIT: usize = 10;

/// Sends of the entries EventBridge refused for a reason that may pass (throttling, an internal
/// failure), before the refusal is an error.
const ENTRY_ATTEMPTS: u32 = 3;

/// The per-entry error codes worth sending again; any other (malformed detail, access denied) is
/// the same on every send.
const RETRYABLE_ENTRY_CODES: [&str; 2] = ["ThrottlingException", "InternalFailure"];

/// Publishes to one event bus.
#[derive(Debug, Clone)]
pub struct EventBridgeEvents {
    client: Client,
    bus: String,
}

impl EventBridgeEvents {
    /// `bus` is the bus's name or ARN.
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        EventBridgeEvents { client, bus: bus.into() }
    }

    /// The bus name from `EVENT_BUS_NAME`.
    pub fn bus_from_env() -> Result<String, ConfigError> {
        required(EVENT_BUS_NAME_VAR)
    }

    fn entry(&self, event: &SegmentEvent) -> Result<PutEventsRequestEntry, StoreError> {
        let detail = event.detail_json().to_string();
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(event.kind().detail_type())
            .detail(detail)
            .time(SmithyDateTime::from_millis(event.time.timestamp_millis()))
            .build())
    }

    /// Sends at most [`PUT_EVENTS_LIMIT`] entries, sending again the ones refused for a reason
    /// that may pass; `Err` names the codes of the entries still refused.
    async fn put(&self, mut entries: Vec<PutEventsRequestEntry>) -> Result<(), StoreError> {
        for attempt in 1..=ENTRY_ATTEMPTS {
            let out = self
                .client
                .put_events()
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(|e| StoreError::unavailable("publishing segment events", e.into_service_error()))?;
            if out.failed_entry_count() == 0 {
                return Ok(());
            }
            // The result entries answer the request entries in order; a refused one has a code.
            let refused: Vec<(PutEventsRequestEntry, String)> = entries
                .into_iter()
                .zip(out.entries())
                .filter_map(|(entry, result)| result.error_code().map(|code| (entry, code.to_owned())))
                .collect();
            let retryable = refused.iter().all(|(_, code)| RETRYABLE_ENTRY_CODES.contains(&code.as_str()));
            if refused.is_empty() || !retryable || attempt == ENTRY_ATTEMPTS {
                let mut codes: Vec<&str> = refused.iter().map(|(_, code)| code.as_str()).collect();
                codes.sort_unstable();
                codes.dedup();
                let count = usize::try_from(out.failed_entry_count()).unwrap_or_default();
                return Err(StoreError::unavailable(
                    "publishing segment events",
                    format!("EventBridge refused {count} event(s): {}", codes.join(", ")),
                ));
            }
            tracing::debug!(refused = refused.len(), attempt, "sending refused events again");
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            entries = refused.into_iter().map(|(entry, _)| entry).collect();
        }
        Ok(())
    }
}

#[async_trait]
impl EventPublisher for EventBridgeEvents {
    #[instrument(skip_all, fields(events = events.len()))]
    async fn publish(&self, events: &[SegmentEvent]) -> Result<(), StoreError> {
        // In order: a batch goes only once the batches before it are accepted.
        for batch in events.chunks(PUT_EVENTS_LIMIT) {
            let entries = batch.iter().map(|e| self.entry(e)).collect::<Result<Vec<_>, _>>()?;
            self.put(entries).await?;
        }
        Ok(())
    }
}
