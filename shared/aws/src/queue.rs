//! The work queues in SQS: one per segment type, each with its own worker function. Besides the
//! [`JobQueue`] port it offers the receive and delete calls of a runner that polls SQS itself, and
//! the [`MessageVisibility`] of a queue's delivered messages.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use tracing::instrument;

use segments_core::domain::{MandatorId, SegmentType};
use segments_core::jobs::JobMessage;
use segments_core::ports::{JobQueue, MessageVisibility, StoreError};

/// SQS returns at most 10 messages per receive.
const MAX_RECEIVE_BATCH: u32 = 10;
/// SQS long polls at most 20 seconds.
const MAX_WAIT_SECONDS: u32 = 20;
/// SendMessageBatch takes at most 10 messages.
const MAX_SEND_BATCH: usize = 10;
/// Attempts of a batch whose entries SQS failed on its side (not the sender's fault).
const SEND_ATTEMPTS: usize = 3;

/// A message taken from a queue; it comes back after its visibility timeout unless deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// How often the message has been received, this time included.
    pub receive_count: u32,
}

/// The work queues by segment type.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_urls: BTreeMap<SegmentType, String>,
}

impl SqsQueue {
    pub fn new(client: Client, queue_urls: BTreeMap<SegmentType, String>) -> Self {
        SqsQueue { client, queue_urls }
    }

    fn url(&self, segment_type: SegmentType) -> Result<&str, StoreError> {
        self.queue_urls.get(&segment_type).map(String::as_str).ok_or_else(|| {
            StoreError::unavailable(
                format!("queueing work of type {segment_type}"),
                format!("no queue URL is configured for {segment_type} (set {}_QUEUE_URL)", segment_type.env_stem()),
            )
        })
    }

    /// Receives up to `max` messages (at most 10) of a segment type's queue, waiting up to
    /// `wait_seconds` (at most 20) for the first one.
    #[instrument(skip_all, fields(segment_type = %segment_type, max = max, wait_seconds = wait_seconds))]
    pub async fn receive(
        &self,
        segment_type: SegmentType,
        max: u32,
        wait_seconds: u32,
    ) -> Result<Vec<ReceivedMessage>, StoreError> {
        let url = self.url(segment_type)?;
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, MAX_RECEIVE_BATCH) as i32)
            .wait_time_seconds(wait_seconds.min(MAX_WAIT_SECONDS) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| {
                StoreError::unavailable(format!("receiving from the {segment_type} queue"), e.into_service_error())
            })?;
        out.messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| received(m, &format!("the {segment_type} queue")))
            .collect()
    }

    /// Sends one batch (at most 10 messages of one type), each in its mandator's message group,
    /// retrying the entries SQS failed on its side; entries are named by their index in `outgoing`.
    async fn send_batch(&self, segment_type: SegmentType, outgoing: &[Outgoing]) -> Result<(), StoreError> {
        let url = self.url(segment_type)?;
        let mut pending: Vec<usize> = (0..outgoing.len()).collect();
        for attempt in 1..=SEND_ATTEMPTS {
            let entries = pending
                .iter()
                .map(|&i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&outgoing[i].body)
                        .message_group_id(outgoing[i].group.as_str())
                        .build()
                        .map_err(|e| {
                            StoreError::Corrupt(format!("a message of the {segment_type} queue cannot be built: {e}"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self.client.send_message_batch().queue_url(url).set_entries(Some(entries)).send().await.map_err(
                |e| StoreError::unavailable(format!("queueing on the {segment_type} queue"), e.into_service_error()),
            )?;
            if let Some(fault) = out.failed.iter().find(|f| f.sender_fault) {
                return Err(StoreError::Corrupt(format!(
                    "the {segment_type} queue refused a message: {} {}",
                    fault.code,
                    fault.message.as_deref().unwrap_or_default()
                )));
            }
            pending = out.failed.iter().filter_map(|f| f.id.parse().ok()).collect();
            if pending.is_empty() {
                return Ok(());
            }
            tracing::warn!(attempt, failed = pending.len(), %segment_type, "SQS failed part of a batch; resending it");
        }
        Err(StoreError::unavailable(
            format!("queueing on the {segment_type} queue"),
            format!("{} message(s) still failed after {SEND_ATTEMPTS} attempts", pending.len()),
        ))
    }

    /// Deletes a received message: its work is durable.
    #[instrument(skip_all, fields(segment_type = %segment_type))]
    pub async fn delete(&self, segment_type: SegmentType, receipt_handle: &str) -> Result<(), StoreError> {
        let url = self.url(segment_type)?;
        self.client.delete_message().queue_url(url).receipt_handle(receipt_handle).send().await.map_err(|e| {
            StoreError::unavailable(format!("deleting from the {segment_type} queue"), e.into_service_error())
        })?;
        Ok(())
    }
}

/// The variable naming a worker's own queue, whose messages it holds by receipt handle.
pub const WORK_QUEUE_URL_VAR: &str = "WORK_QUEUE_URL";
/// SQS keeps a message invisible for at most 12 hours.
const MAX_VISIBILITY_SECONDS: u64 = 12 * 60 * 60;

/// One work queue's hold on the messages it delivered (ChangeMessageVisibility, which needs the
/// `sqs:ChangeMessageVisibility` permission on the queue): what a worker needs of the queue it
/// consumes to set a failed message's backoff and to extend a long run's visibility.
#[derive(Debug, Clone)]
pub struct SqsMessageVisibility {
    client: Client,
    queue_url: String,
}

impl SqsMessageVisibility {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsMessageVisibility { client, queue_url: queue_url.into() }
    }

    /// The `segment_type` worker's own queue: `WORK_QUEUE_URL` as the stack sets it, else the
    /// type's `<TYPE>_QUEUE_URL`, which one environment for every function carries (the env file
    /// of `segments provision` for `cargo lambda watch`).
    pub fn from_env(client: Client, segment_type: SegmentType) -> Result<Self, segments_core::config::ConfigError> {
        let url = match segments_core::config::optional(WORK_QUEUE_URL_VAR) {
            Some(url) => url,
            None => segments_core::config::required(&crate::AwsResources::queue_url_var(segment_type))
                .map_err(|_| segments_core::config::ConfigError::Missing(WORK_QUEUE_URL_VAR.to_owned()))?,
        };
        Ok(SqsMessageVisibility::new(client, url))
    }
}

#[async_trait]
impl MessageVisibility for SqsMessageVisibility {
    #[instrument(skip_all, fields(timeout_seconds = timeout.as_secs()))]
    async fn change_visibility(&self, receipt_handle: &str, timeout: Duration) -> Result<(), StoreError> {
        let seconds = timeout.as_secs().min(MAX_VISIBILITY_SECONDS) as i32;
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| StoreError::unavailable("changing a work message's visibility", e.into_service_error()))?;
        Ok(())
    }
}

impl SqsQueue {
    /// The hold on the delivered messages of a segment type's queue.
    pub fn visibility(&self, segment_type: SegmentType) -> Result<SqsMessageVisibility, StoreError> {
        Ok(SqsMessageVisibility::new(self.client.clone(), self.url(segment_type)?))
    }
}

/// A received SQS message with what the service needs of it; `queue` names the queue in the error
/// of a message without id or receipt handle.
pub(crate) fn received(m: aws_sdk_sqs::types::Message, queue: &str) -> Result<ReceivedMessage, StoreError> {
    let receive_count = m
        .attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    match (m.message_id, m.receipt_handle) {
        (Some(message_id), Some(receipt_handle)) => {
            Ok(ReceivedMessage { message_id, receipt_handle, body: m.body.unwrap_or_default(), receive_count })
        }
        _ => Err(StoreError::Corrupt(format!("a message of {queue} has no id or receipt handle"))),
    }
}

/// A work message ready to send: its body and its message group.
struct Outgoing {
    body: String,
    group: MandatorId,
}

impl Outgoing {
    fn of(message: &JobMessage) -> Result<Outgoing, StoreError> {
        let body = serde_json::to_string(message)
            .map_err(|e| StoreError::Corrupt(format!("job message {} cannot be encoded: {e}", message.job_id)))?;
        Ok(Outgoing { body, group: message_group(message).clone() })
    }
}

/// The message group of a work message: its mandator.
///
/// The work queues are standard queues, and SQS treats the group of a message on a standard queue
/// as its tenant (SQS fair queues): when one group takes a disproportionate share of the messages
/// in flight or of the consumers' time, SQS delivers the other groups' waiting messages first. One
/// mandator's backlog (a job of many shards, or many jobs) therefore does not hold back another
/// mandator's jobs of the same type; the backlog is delayed, never dropped. On a standard queue
/// the group orders nothing and limits no concurrency: the shards of one job still run in
/// parallel, and delivery stays at-least-once.
///
/// Every mandator id is a valid group id as it is: `MandatorId::parse` accepts 1 to 128 ASCII
/// letters, digits and `. _ - : @ + =`, and SQS accepts 1 to 128 characters of letters, digits and
/// ASCII punctuation (`` !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~ ``) in a group id. Should the rules for
/// mandator ids ever widen beyond that, `message_group_ids_accept_every_mandator_id` fails.
fn message_group(message: &JobMessage) -> &MandatorId {
    &message.mandator_id
}

#[async_trait]
impl JobQueue for SqsQueue {
    /// SendMessage, in the mandator's message group (see [`message_group`]).
    #[instrument(skip_all, fields(mandator_id = %message.mandator_id, job_id = %message.job_id, segment_type = %message.segment_type))]
    async fn enqueue(&self, message: &JobMessage) -> Result<(), StoreError> {
        let url = self.url(message.segment_type)?;
        let outgoing = Outgoing::of(message)?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(outgoing.body)
            .message_group_id(outgoing.group.as_str())
            .send()
            .await
            .map_err(|e| {
                StoreError::unavailable(
                    format!("queueing job {} on the {} queue", message.job_id, message.segment_type),
                    e.into_service_error(),
                )
            })?;
        Ok(())
    }

    /// SendMessageBatch, 10 messages a call (it needs the `sqs:SendMessage` permission), each
    /// message in its mandator's group like [`enqueue`](JobQueue::enqueue)'s.
    #[instrument(skip_all, fields(messages = messages.len()))]
    async fn enqueue_all(&self, messages: &[JobMessage]) -> Result<(), StoreError> {
        let mut by_type: BTreeMap<SegmentType, Vec<Outgoing>> = BTreeMap::new();
        for message in messages {
            by_type.entry(message.segment_type).or_default().push(Outgoing::of(message)?);
        }
        for (segment_type, outgoing) in by_type {
            for batch in outgoing.chunks(MAX_SEND_BATCH) {
                self.send_batch(segment_type, batch).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segments_core::domain::JobId;

    const SQS_LONGEST_GROUP_ID: usize = 128;

    /// What SQS accepts in a `MessageGroupId`: 1 to 128 characters, each an ASCII letter, digit or
    /// punctuation mark.
    fn sqs_accepts_group_id(group: &str) -> bool {
        (1..=SQS_LONGEST_GROUP_ID).contains(&group.chars().count())
            && group.chars().all(|c| c.is_ascii_alphanumeric() || c.is_ascii_punctuation())
    }

    #[test]
    fn message_group_ids_accept_every_mandator_id() {
        for refused in ["", "a b", "é", "tab\t", &"m".repeat(SQS_LONGEST_GROUP_ID + 1)] {
            assert!(!sqs_accepts_group_id(refused), "{refused:?} is no group id");
        }
        let message = |mandator: MandatorId| JobMessage {
            mandator_id: mandator,
            job_id: JobId::new(),
            segment_type: SegmentType::HighBalance,
            shard: 0,
        };
        // Every character a mandator id may have, alone and at the longest length.
        let candidates = (0..=0x2FFu32).filter_map(char::from_u32).chain(['€', 'ß', '日', '\u{200B}']);
        let mut accepted = 0;
        for c in candidates {
            for id in [c.to_string(), c.to_string().repeat(SQS_LONGEST_GROUP_ID)] {
                let Ok(mandator) = MandatorId::parse(&id) else { continue };
                accepted += 1;
                let message = message(mandator);
                let group = message_group(&message);
                assert!(sqs_accepts_group_id(group.as_str()), "SQS refuses the group id {group:?}");
            }
        }
        assert!(accepted >= 2 * 62, "letters and digits are mandator ids ({accepted} accepted)");
        let too_long = "m".repeat(SQS_LONGEST_GROUP_ID + 1);
        assert!(MandatorId::parse(&too_long).is_err(), "a mandator id longer than a group id");
    }
}
