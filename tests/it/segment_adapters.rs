//! The AWS adapters of dynamic segments on moto, over HTTP with the real SDK: segment events on an
//! EventBridge bus (delivered through a rule to a queue, as a subscriber gets them), the refresh
//! queue, and the Segments table's `DueIndex` as the table stores it. What a refresh store must
//! do is the contract of `refresh_store`, run against every adapter there.

use std::collections::HashMap;
use std::time::{Duration as StdDuration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::{DateTime, Duration, TimeZone, Utc};
use segments_aws::provision::create_segments_table;
use segments_aws::{
    AwsClients, DUE_AT, DUE_INDEX, DUE_PARTITION, DynamoSegments, EventBridgeEvents, PARTITION_KEY, SORT_KEY,
    SqsRefreshQueue,
};
use segments_core::domain::events::{EVENT_SOURCE, EventKind, SegmentEvent};
use segments_core::domain::refresh::{RefreshMessage, RefreshRecord, RefreshTrigger, Schedule};
use segments_core::domain::segment::{Metadata, Rule, Segment, SegmentId, Status};
use segments_core::domain::{JobId, MandatorId, SegmentType};
use segments_core::ports::{EventPublisher, RefreshQueue, RefreshStore, SegmentStore};

use crate::support::moto::MotoServer;

const BUS: &str = "segment-events";
const TABLE: &str = "segments";
/// How long a test waits for messages to arrive on a queue.
const DELIVERY_TIMEOUT: StdDuration = StdDuration::from_secs(20);

fn mandator() -> MandatorId {
    MandatorId::parse("bank-7").unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 6, 0, 0).unwrap()
}

/// A live segment with a rule, scheduled daily and next refreshed at `next_refresh_at` if given.
fn segment(name: &str, next_refresh_at: Option<DateTime<Utc>>) -> Segment {
    let schedule: Schedule = serde_json::from_str(r#"{"every":"day","at":"06:00"}"#).unwrap();
    Segment {
        id: SegmentId::new(),
        mandator: mandator(),
        ledger_id: None,
        name: name.to_owned(),
        status: Status::default(),
        metadata: Metadata::new(),
        rule: Some(rule()),
        last_refresh: None,
        schedule: next_refresh_at.map(|_| schedule),
        next_refresh_at,
        callback_url: None,
        created_at: t0(),
        updated_at: t0(),
        deleted_at: None,
        version: 1,
    }
}

fn rule() -> Rule {
    Rule {
        segment_type: SegmentType::HighBalance,
        parameters: r#"{"accountType":"checking","threshold":100}"#.to_owned(),
        condition: None,
        account_type: None,
    }
}

/// A queue `name` and its ARN.
async fn queue(clients: &AwsClients, name: &str) -> (String, String) {
    let url = clients.sqs.create_queue().queue_name(name).send().await.unwrap().queue_url.unwrap();
    let arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&QueueAttributeName::QueueArn)
        .unwrap();
    (url, arn)
}

/// The bodies of the first `count` messages to arrive on the queue, deleting them; fewer when
/// [`DELIVERY_TIMEOUT`] passes first.
async fn receive(clients: &AwsClients, url: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let mut bodies = Vec::new();
    while bodies.len() < count && Instant::now() < deadline {
        let out =
            clients.sqs.receive_message().queue_url(url).max_number_of_messages(10).wait_time_seconds(1).send().await;
        for message in out.unwrap().messages.unwrap_or_default() {
            clients
                .sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(message.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
            bodies.push(message.body.unwrap());
        }
    }
    bodies
}

#[tokio::test]
async fn events_reach_a_queue_subscribed_to_the_bus_by_a_rule_on_their_source() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    clients.eventbridge.create_event_bus().name(BUS).send().await.unwrap();
    let (url, arn) = queue(&clients, "subscriber").await;
    clients
        .eventbridge
        .put_rule()
        .name("segments-to-subscriber")
        .event_bus_name(BUS)
        .event_pattern(serde_json::json!({"source": [EVENT_SOURCE]}).to_string())
        .send()
        .await
        .unwrap();
    clients
        .eventbridge
        .put_targets()
        .rule("segments-to-subscriber")
        .event_bus_name(BUS)
        .targets(Target::builder().id("subscriber").arn(arn).build().unwrap())
        .send()
        .await
        .unwrap();

    // More than one PutEvents takes (10): the publisher sends them in batches, every one arrives.
    let kinds = [EventKind::Created, EventKind::Updated, EventKind::Deleted];
    let events: Vec<SegmentEvent> = (0..12)
        .map(|i| {
            let mut seg = segment(&format!("segment {i}"), None);
            seg.version = i + 1;
            SegmentEvent::segment(kinds[i as usize % 3], &seg, t0() + Duration::seconds(i as i64))
        })
        .collect();
    let publisher = EventBridgeEvents::new(clients.eventbridge.clone(), BUS);
    publisher.publish(&events).await.expect("the bus takes the events");

    let bodies = receive(&clients, &url, events.len()).await;
    assert_eq!(bodies.len(), events.len(), "every event is delivered: {bodies:?}");
    let mut delivered: HashMap<String, serde_json::Value> = HashMap::new();
    for body in &bodies {
        let delivered_event: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(delivered_event["source"], EVENT_SOURCE);
        let segment_id = delivered_event["detail"]["segmentId"].as_str().expect("the detail names the segment");
        delivered.insert(segment_id.to_owned(), delivered_event);
    }
    for event in &events {
        let delivered_event = &delivered[&event.segment_id().to_string()];
        assert_eq!(delivered_event["detail-type"], event.kind().detail_type());
        assert_eq!(delivered_event["detail"], event.detail_json(), "the detail, with the stable event id");
        let time = DateTime::parse_from_rfc3339(delivered_event["time"].as_str().unwrap()).unwrap();
        assert_eq!(time, event.time, "the event's own time, not the time of sending");
    }
}

#[tokio::test]
async fn a_refresh_message_goes_through_the_queue_as_it_was_sent() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    let (url, _) = queue(&clients, "refreshes").await;
    let record = RefreshRecord::start(
        mandator(),
        SegmentId::new(),
        JobId::new(),
        RefreshTrigger::Schedule,
        rule(),
        t0(),
        Duration::minutes(1),
    );
    let message = RefreshMessage::of(&record);
    SqsRefreshQueue::new(clients.sqs.clone(), &url).enqueue_refresh(&message).await.expect("queued");

    let bodies = receive(&clients, &url, 1).await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let body: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    // The applier reads exactly these camelCase fields.
    assert_eq!(
        body,
        serde_json::json!({
            "mandatorId": "bank-7",
            "segmentId": record.segment_id.to_string(),
            "refreshId": record.id.to_string(),
        })
    );
    assert_eq!(serde_json::from_value::<RefreshMessage>(body).unwrap(), message);
}

/// The attributes `DueIndex` keys on, as the item of `pk`/`sk` holds them.
async fn due_attributes(clients: &AwsClients, pk: &str, sk: &str) -> (Option<String>, Option<i64>) {
    let item = clients
        .dynamodb
        .get_item()
        .table_name(TABLE)
        .key(PARTITION_KEY, AttributeValue::S(pk.to_owned()))
        .key(SORT_KEY, AttributeValue::S(sk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the item exists");
    let partition = item.get(DUE_PARTITION).map(|v| v.as_s().unwrap().clone());
    let at = item.get(DUE_AT).map(|v| v.as_n().unwrap().parse().unwrap());
    (partition, at)
}

#[tokio::test]
async fn due_items_carry_the_index_keys_only_while_due() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    create_segments_table(&clients.dynamodb, TABLE).await.unwrap();
    let store = DynamoSegments::new(clients.dynamodb.clone(), TABLE);

    let next_run = t0() + Duration::days(1);
    let scheduled = segment("scheduled", Some(next_run));
    store.create_segment(&scheduled).await.unwrap();
    let segment_pk = format!("M#{}#SEGMENTS", mandator());
    let segment_sk = format!("SEG#{}", scheduled.id);
    let (partition, at) = due_attributes(&clients, &segment_pk, &segment_sk).await;
    assert!(partition.as_deref().is_some_and(|p| p.starts_with("SCHEDULE#")), "{partition:?}");
    assert_eq!(at, Some(next_run.timestamp()));

    let mut unscheduled = Segment { version: 2, schedule: None, next_refresh_at: None, ..scheduled.clone() };
    store.replace_segment(&scheduled, &unscheduled).await.unwrap();
    assert_eq!(due_attributes(&clients, &segment_pk, &segment_sk).await, (None, None));

    // A deleted segment keeps its time in its document, and leaves the index.
    let deleted = Segment {
        version: 3,
        schedule: scheduled.schedule,
        next_refresh_at: Some(next_run),
        deleted_at: Some(t0()),
        ..unscheduled.clone()
    };
    unscheduled.version = 2;
    store.replace_segment(&unscheduled, &deleted).await.unwrap();
    assert!(store.get_segment(&mandator(), scheduled.id).await.unwrap().unwrap().is_deleted());
    assert_eq!(due_attributes(&clients, &segment_pk, &segment_sk).await, (None, None));

    let record = RefreshRecord::start(
        mandator(),
        scheduled.id,
        JobId::new(),
        RefreshTrigger::Manual,
        rule(),
        t0(),
        Duration::minutes(1),
    );
    store.create_refresh(&record).await.unwrap();
    let refresh_pk = format!("M#{}#SEG#{}#REFRESHES", mandator(), scheduled.id);
    let refresh_sk = format!("R#{}", record.id);
    let (partition, at) = due_attributes(&clients, &refresh_pk, &refresh_sk).await;
    assert!(partition.as_deref().is_some_and(|p| p.starts_with("REFRESH#")), "{partition:?}");
    assert_eq!(at, record.check_at.map(|c| c.timestamp()));

    let mut finished = record.next();
    finished.check_at = None;
    assert!(store.replace_refresh(&record, &finished).await.unwrap());
    assert_eq!(due_attributes(&clients, &refresh_pk, &refresh_sk).await, (None, None));
}

#[tokio::test]
async fn provisioning_adds_the_due_index_to_a_segments_table_made_without_it() {
    let server = MotoServer::start();
    let clients = server.clients().await;
    // The Segments table as earlier versions made it: keys only, no secondary index.
    segments_aws::provision::create_account_table(&clients.dynamodb, TABLE).await.unwrap();
    let store = DynamoSegments::new(clients.dynamodb.clone(), TABLE);
    let due = segment("due", Some(t0()));
    store.create_segment(&due).await.unwrap();

    create_segments_table(&clients.dynamodb, TABLE).await.unwrap();
    let described = clients.dynamodb.describe_table().table_name(TABLE).send().await.unwrap();
    let index = described
        .table()
        .unwrap()
        .global_secondary_indexes()
        .iter()
        .find(|i| i.index_name() == Some(DUE_INDEX))
        .expect("the index is added");
    let keys: Vec<(&str, &str)> =
        index.key_schema().iter().map(|k| (k.attribute_name(), k.key_type().as_str())).collect();
    assert_eq!(keys, [(DUE_PARTITION, "HASH"), (DUE_AT, "RANGE")]);
    assert_eq!(index.projection().and_then(|p| p.projection_type()).map(|t| t.as_str()), Some("KEYS_ONLY"));

    // The item written before the index is found through it.
    let found = store.due_schedules(t0(), 10).await.unwrap();
    assert_eq!(found.iter().map(|s| s.id).collect::<Vec<_>>(), [due.id]);
    // A second run changes nothing.
    create_segments_table(&clients.dynamodb, TABLE).await.unwrap();
}
