//! Handler tests over the embedded store, from a recorded SQS event of the refresh queue.

use std::sync::Arc;

use async_trait::async_trait;
use segments_core::config::ServiceConfig;
use segments_core::domain::refresh::{ChangeKind, RefreshId, RefreshRecord};
use segments_core::domain::segment::{AccountRef, Segment, SegmentId};
use segments_core::domain::{AccountId, MandatorId};
use segments_core::ports::{RefreshStore, StoreError};
use segments_core::usecases::segments::refresh::RefreshSettings;
use segments_embedded::wiring::services as embedded_services;
use segments_embedded::{EmbeddedStore, EventFile, LocalRefreshReceiver, refresh_channel};

use super::*;

const FIXTURE: &str = include_str!("../fixtures/sqs-refresh.json");

/// The receiving ends of the in-process queues, held so they stay open.
struct OpenQueues {
    _jobs: tokio::sync::mpsc::UnboundedReceiver<segments_core::jobs::JobMessage>,
    _refreshes: LocalRefreshReceiver,
}

fn services(dir: &std::path::Path) -> (SegmentsServices, OpenQueues) {
    let store = EmbeddedStore::open(dir).unwrap();
    let (core, jobs) = embedded_services(store.clone(), ServiceConfig::default());
    let events = Arc::new(EventFile::in_data_dir(dir).unwrap());
    let (queue, refreshes) = refresh_channel();
    let s = segments_embedded::wiring::segments_api(store, &core, events, Arc::new(queue), RefreshSettings::default());
    (s, OpenQueues { _jobs: jobs, _refreshes: refreshes })
}

fn event_with_body(body: &str) -> SqsEvent {
    let mut event: SqsEvent = serde_json::from_str(FIXTURE).unwrap();
    event.records[0].body = Some(body.to_owned());
    event
}

fn failed_ids(response: &SqsBatchResponse) -> Vec<&str> {
    response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect()
}

/// A refresh store whose every call fails with `error()`.
struct FailingRefreshes(fn() -> StoreError);

#[async_trait]
impl RefreshStore for FailingRefreshes {
    async fn create_refresh(&self, _: &RefreshRecord) -> Result<(), StoreError> {
        Err((self.0)())
    }
    async fn get_refresh(
        &self,
        _: &MandatorId,
        _: SegmentId,
        _: RefreshId,
    ) -> Result<Option<RefreshRecord>, StoreError> {
        Err((self.0)())
    }
    async fn replace_refresh(&self, _: &RefreshRecord, _: &RefreshRecord) -> Result<bool, StoreError> {
        Err((self.0)())
    }
    async fn list_refreshes(
        &self,
        _: &MandatorId,
        _: SegmentId,
        _: Option<RefreshId>,
        _: u32,
    ) -> Result<Vec<RefreshRecord>, StoreError> {
        Err((self.0)())
    }
    async fn put_changes(
        &self,
        _: &MandatorId,
        _: SegmentId,
        _: RefreshId,
        _: ChangeKind,
        _: &[AccountRef],
    ) -> Result<(), StoreError> {
        Err((self.0)())
    }
    async fn changes(
        &self,
        _: &MandatorId,
        _: SegmentId,
        _: RefreshId,
        _: ChangeKind,
        _: Option<&AccountId>,
        _: u32,
    ) -> Result<Vec<AccountRef>, StoreError> {
        Err((self.0)())
    }
    async fn clear_changes(&self, _: &MandatorId, _: SegmentId, _: RefreshId) -> Result<(), StoreError> {
        Err((self.0)())
    }
    async fn due_refreshes(&self, _: chrono::DateTime<Utc>, _: u32) -> Result<Vec<RefreshRecord>, StoreError> {
        Err((self.0)())
    }
    async fn due_schedules(&self, _: chrono::DateTime<Utc>, _: u32) -> Result<Vec<Segment>, StoreError> {
        Err((self.0)())
    }
}

#[tokio::test]
async fn a_message_for_a_refresh_that_does_not_exist_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _queues) = services(dir.path());
    let response = handle(&s, serde_json::from_str(FIXTURE).unwrap()).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", failed_ids(&response));
}

#[tokio::test]
async fn a_body_that_is_not_a_refresh_message_is_dropped_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _queues) = services(dir.path());
    // Were the body read as a message, this store would make it come back.
    s.refreshes = Arc::new(FailingRefreshes(|| StoreError::unavailable("reading a refresh", "throttled")));
    for body in
        ["", "not json", r#"{"mandatorId":"demo-bank"}"#, r#"{"mandatorId":"a b","segmentId":"x","refreshId":"y"}"#]
    {
        let response = handle(&s, event_with_body(body)).await;
        assert!(response.batch_item_failures.is_empty(), "{body:?} was reported for retry");
    }
}

#[tokio::test]
async fn a_store_that_is_unavailable_brings_the_message_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _queues) = services(dir.path());
    s.refreshes = Arc::new(FailingRefreshes(|| StoreError::unavailable("reading a refresh", "throttled")));
    let response = handle(&s, serde_json::from_str(FIXTURE).unwrap()).await;
    assert_eq!(failed_ids(&response), ["2f0c8a4e-6b1d-4e7a-9c3f-5d8e1a2b4c6d"]);
}

#[tokio::test]
async fn an_error_that_repeats_on_every_delivery_drops_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _queues) = services(dir.path());
    s.refreshes = Arc::new(FailingRefreshes(|| StoreError::Corrupt("refresh item: not JSON".into())));
    let response = handle(&s, serde_json::from_str(FIXTURE).unwrap()).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", failed_ids(&response));
}
