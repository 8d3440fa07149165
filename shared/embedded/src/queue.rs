//! The in-process job and import queues of the local runner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;

use segments_core::imports::ImportMessage;
use segments_core::jobs::JobMessage;
use segments_core::ports::{ImportQueue, JobQueue, MessageVisibility, StoreError};

/// A [`JobQueue`] that hands messages to a receiver in the same process. Messages live only in
/// memory: after a restart the runner requeues [`EmbeddedStore::unfinished_jobs`](super::EmbeddedStore::unfinished_jobs).
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    sender: mpsc::UnboundedSender<JobMessage>,
}

impl EmbeddedQueue {
    /// The queue and the receiving end the local workers read from.
    pub fn new() -> (EmbeddedQueue, mpsc::UnboundedReceiver<JobMessage>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (EmbeddedQueue { sender }, receiver)
    }
}

#[async_trait]
impl JobQueue for EmbeddedQueue {
    async fn enqueue(&self, message: &JobMessage) -> Result<(), StoreError> {
        self.sender
            .send(message.clone())
            .map_err(|_| StoreError::unavailable("enqueueing a job", "the local job queue is closed"))
    }
}

/// How long a message handed back without a changed visibility stays away: SQS's default
/// visibility timeout.
const UNCHANGED_VISIBILITY: Duration = Duration::from_secs(30);

/// A message of the in-process queue as a worker holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedDelivery {
    pub message: JobMessage,
    /// How often the message has been delivered, this time included.
    pub receive_count: u32,
    /// Names the delivery to [`EmbeddedDeliveries`].
    pub receipt_handle: String,
}

/// The receiving end of an [`EmbeddedQueue`] with SQS's delivery rules: a delivered message is
/// held by its worker until acknowledged or handed back, and a message handed back becomes
/// receivable again only when its visibility timeout (changed through [`EmbeddedDeliveries`])
/// has passed, counted one more receive. Unlike SQS it never delivers a held message a second
/// time: the workers live in this process and hand back every message they do not acknowledge.
#[derive(Debug)]
pub struct EmbeddedReceiver {
    fresh: mpsc::UnboundedReceiver<JobMessage>,
    returned: mpsc::UnboundedReceiver<(JobMessage, u32)>,
    deliveries: EmbeddedDeliveries,
}

/// The messages the workers hold, by receipt handle: their visibility, and their end
/// (acknowledged or handed back). Cloned into every worker.
#[derive(Debug, Clone)]
pub struct EmbeddedDeliveries {
    held: Arc<Mutex<Held>>,
    returner: mpsc::UnboundedSender<(JobMessage, u32)>,
}

#[derive(Debug, Default)]
struct Held {
    next_receipt: u64,
    by_receipt: HashMap<String, HeldMessage>,
}

#[derive(Debug)]
struct HeldMessage {
    message: JobMessage,
    receive_count: u32,
    visible_at: Instant,
}

impl EmbeddedReceiver {
    /// Receives what `fresh` (an [`EmbeddedQueue`]'s receiver) and the handed-back messages bring.
    pub fn new(fresh: mpsc::UnboundedReceiver<JobMessage>) -> EmbeddedReceiver {
        let (returner, returned) = mpsc::unbounded_channel();
        EmbeddedReceiver { fresh, returned, deliveries: EmbeddedDeliveries { held: Arc::default(), returner } }
    }

    /// Where the workers change visibility, acknowledge and hand back.
    pub fn deliveries(&self) -> EmbeddedDeliveries {
        self.deliveries.clone()
    }

    /// The next receivable message, held from now on; `None` once the queue is closed.
    pub async fn receive(&mut self) -> Option<EmbeddedDelivery> {
        let (message, receive_count) = tokio::select! {
            biased;
            Some(returned) = self.returned.recv() => returned,
            fresh = self.fresh.recv() => (fresh?, 1),
        };
        Some(self.deliveries.hold(message, receive_count))
    }
}

impl EmbeddedDeliveries {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        // The map stays consistent whatever panicked while holding the lock: every change is
        // one insert or remove.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hold(&self, message: JobMessage, receive_count: u32) -> EmbeddedDelivery {
        let mut held = self.held();
        held.next_receipt += 1;
        let receipt_handle = format!("local-{}", held.next_receipt);
        let visible_at = Instant::now() + UNCHANGED_VISIBILITY;
        held.by_receipt
            .insert(receipt_handle.clone(), HeldMessage { message: message.clone(), receive_count, visible_at });
        EmbeddedDelivery { message, receive_count, receipt_handle }
    }

    /// The work of the delivery is done (or can never be): it is not delivered again.
    pub fn acknowledge(&self, receipt_handle: &str) {
        self.held().by_receipt.remove(receipt_handle);
    }

    /// Hands the delivery back: it is delivered again once its visibility timeout has passed.
    pub fn hand_back(&self, receipt_handle: &str) {
        let Some(held) = self.held().by_receipt.remove(receipt_handle) else { return };
        let returner = self.returner.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(held.visible_at).await;
            // A closed receiver: the runner is shutting down, and the message goes with it.
            let _ = returner.send((held.message, held.receive_count + 1));
        });
    }
}

#[async_trait]
impl MessageVisibility for EmbeddedDeliveries {
    async fn change_visibility(&self, receipt_handle: &str, timeout: Duration) -> Result<(), StoreError> {
        match self.held().by_receipt.get_mut(receipt_handle) {
            Some(held) => {
                held.visible_at = Instant::now() + timeout;
                Ok(())
            }
            // SQS answers a receipt handle of a deleted message with an error as well.
            None => Err(StoreError::Conflict(format!("no message is held under the receipt handle {receipt_handle}"))),
        }
    }
}

/// An [`ImportQueue`] that hands started imports to a task in the same process.
#[derive(Debug, Clone)]
pub struct EmbeddedImportQueue {
    sender: mpsc::UnboundedSender<ImportMessage>,
}

impl EmbeddedImportQueue {
    /// The queue and the receiving end the local import task reads from.
    pub fn new() -> (EmbeddedImportQueue, mpsc::UnboundedReceiver<ImportMessage>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (EmbeddedImportQueue { sender }, receiver)
    }
}

#[async_trait]
impl ImportQueue for EmbeddedImportQueue {
    async fn enqueue_import(&self, message: &ImportMessage) -> Result<(), StoreError> {
        self.sender
            .send(message.clone())
            .map_err(|_| StoreError::unavailable("enqueueing an import", "the local import queue is closed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segments_core::domain::{JobId, MandatorId, SegmentType};

    #[tokio::test]
    async fn messages_arrive_in_order_and_a_closed_queue_is_an_error() {
        let (queue, mut receiver) = EmbeddedQueue::new();
        let message = |t| JobMessage {
            mandator_id: MandatorId::parse("m").unwrap(),
            job_id: JobId::new(),
            segment_type: t,
            shard: 0,
        };
        let (a, b) = (message(SegmentType::HighBalance), message(SegmentType::LowBalance));
        queue.enqueue(&a).await.unwrap();
        queue.enqueue(&b).await.unwrap();
        assert_eq!(receiver.recv().await, Some(a.clone()));
        assert_eq!(receiver.recv().await, Some(b));
        drop(receiver);
        assert!(queue.enqueue(&a).await.unwrap_err().is_transient());
    }
}
