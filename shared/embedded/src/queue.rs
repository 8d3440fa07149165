//! The in-process job and import queues of the local runner.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;

use segments_core::domain::MandatorId;
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
///
/// It delivers fairly between mandators, as the fair queues of SQS do for the message groups of
/// the deployed service: the waiting messages are kept by mandator and handed out round-robin, so
/// one mandator's backlog of many shards does not hold back another mandator's job.
#[derive(Debug)]
pub struct EmbeddedReceiver {
    fresh: mpsc::UnboundedReceiver<JobMessage>,
    /// Every sender of `fresh` is gone: the runner shuts down and no new message comes.
    fresh_closed: bool,
    returned: mpsc::UnboundedReceiver<(JobMessage, u32)>,
    waiting: WaitingByMandator,
    deliveries: EmbeddedDeliveries,
}

/// The messages taken off the channels and not yet delivered, by mandator, with a rotation of the
/// mandators that have any. A mandator without waiting messages has no entry, so what is kept
/// grows and shrinks with what is queued.
#[derive(Debug, Default)]
struct WaitingByMandator {
    by_mandator: HashMap<MandatorId, MandatorBacklog>,
    /// Each mandator of `by_mandator` exactly once; the front one is served next.
    rotation: VecDeque<MandatorId>,
}

/// One mandator's waiting messages with their receive counts, each list in arrival order.
#[derive(Debug, Default)]
struct MandatorBacklog {
    /// Handed-back messages whose visibility timeout has passed.
    returned: VecDeque<(JobMessage, u32)>,
    fresh: VecDeque<JobMessage>,
}

impl WaitingByMandator {
    /// Queues a fresh message behind its mandator's.
    fn push_fresh(&mut self, message: JobMessage) {
        self.backlog_of(&message.mandator_id).fresh.push_back(message);
    }

    /// Queues a handed-back message behind its mandator's handed-back ones.
    fn push_returned(&mut self, message: JobMessage, receive_count: u32) {
        self.backlog_of(&message.mandator_id).returned.push_back((message, receive_count));
    }

    /// The backlog of `mandator`; a mandator that had none joins the end of the rotation.
    fn backlog_of(&mut self, mandator: &MandatorId) -> &mut MandatorBacklog {
        if !self.by_mandator.contains_key(mandator) {
            self.rotation.push_back(mandator.clone());
        }
        self.by_mandator.entry(mandator.clone()).or_default()
    }

    /// The next message of the mandator whose turn it is; that mandator goes to the end of the
    /// rotation, or leaves it when this was its last message.
    ///
    /// A handed-back message goes before its mandator's fresh ones: it is older than them, and it
    /// is often the last shard its job waits for. It does not go before other mandators' messages,
    /// though: a mandator whose runs keep failing would otherwise take the workers from everyone
    /// else with its retries.
    fn pop(&mut self) -> Option<(JobMessage, u32)> {
        while let Some(mandator) = self.rotation.pop_front() {
            let Some(backlog) = self.by_mandator.get_mut(&mandator) else { continue };
            let next = match backlog.returned.pop_front() {
                Some(returned) => Some(returned),
                None => backlog.fresh.pop_front().map(|message| (message, 1)),
            };
            if backlog.returned.is_empty() && backlog.fresh.is_empty() {
                self.by_mandator.remove(&mandator);
                self.shrink_after_a_peak();
            } else {
                self.rotation.push_back(mandator);
            }
            if next.is_some() {
                return next;
            }
        }
        None
    }

    /// Gives back the room a past crowd of mandators took, so an idle runner keeps little.
    fn shrink_after_a_peak(&mut self) {
        const SLACK: usize = 64;
        if self.by_mandator.capacity() > 4 * self.by_mandator.len() + SLACK {
            self.by_mandator.shrink_to_fit();
            self.rotation.shrink_to_fit();
        }
    }
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
        EmbeddedReceiver {
            fresh,
            fresh_closed: false,
            returned,
            waiting: WaitingByMandator::default(),
            deliveries: EmbeddedDeliveries { held: Arc::default(), returner },
        }
    }

    /// Where the workers change visibility, acknowledge and hand back.
    pub fn deliveries(&self) -> EmbeddedDeliveries {
        self.deliveries.clone()
    }

    /// The next receivable message, held from now on: the next one of the next mandator in turn.
    /// `None` once the queue is closed and no message waits: the runner shuts down, and the
    /// handed-back messages still in their visibility timeout go with it.
    pub async fn receive(&mut self) -> Option<EmbeddedDelivery> {
        loop {
            self.take_arrived();
            if let Some((message, receive_count)) = self.waiting.pop() {
                return Some(self.deliveries.hold(message, receive_count));
            }
            if self.fresh_closed {
                return None;
            }
            // Nothing waits: sleep until either channel brings a message.
            tokio::select! {
                Some((message, receive_count)) = self.returned.recv() => self.waiting.push_returned(message, receive_count),
                fresh = self.fresh.recv() => match fresh {
                    Some(message) => self.waiting.push_fresh(message),
                    None => self.fresh_closed = true,
                },
            }
        }
    }

    /// Moves every message the channels hold now to the waiting messages, so a mandator whose
    /// message arrived behind another's backlog is already in the rotation.
    fn take_arrived(&mut self) {
        while let Ok((message, receive_count)) = self.returned.try_recv() {
            self.waiting.push_returned(message, receive_count);
        }
        while !self.fresh_closed {
            match self.fresh.try_recv() {
                Ok(message) => self.waiting.push_fresh(message),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.fresh_closed = true,
            }
        }
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

    fn shard_message(mandator: &str, shard: u32) -> JobMessage {
        JobMessage {
            mandator_id: MandatorId::parse(mandator).unwrap(),
            job_id: JobId::new(),
            segment_type: SegmentType::HighBalance,
            shard,
        }
    }

    /// The mandator and shard of every message `receiver` delivers now, acknowledged.
    async fn receive_now(receiver: &mut EmbeddedReceiver, count: usize) -> Vec<(String, u32)> {
        let mut received = Vec::with_capacity(count);
        for _ in 0..count {
            let delivery = tokio::time::timeout(Duration::from_secs(5), receiver.receive())
                .await
                .expect("a message is waiting")
                .expect("the queue is open or still has messages");
            receiver.deliveries().acknowledge(&delivery.receipt_handle);
            received.push((delivery.message.mandator_id.to_string(), delivery.message.shard));
        }
        received
    }

    fn named(expected: &[(&str, u32)]) -> Vec<(String, u32)> {
        expected.iter().map(|(m, s)| (m.to_string(), *s)).collect()
    }

    #[tokio::test]
    async fn a_later_mandator_is_served_before_an_earlier_mandators_backlog() {
        let (queue, fresh) = EmbeddedQueue::new();
        let mut receiver = EmbeddedReceiver::new(fresh);
        for message in [shard_message("a", 0), shard_message("a", 1), shard_message("a", 2), shard_message("b", 0)] {
            queue.enqueue(&message).await.unwrap();
        }
        let received = receive_now(&mut receiver, 4).await;
        assert_eq!(received, named(&[("a", 0), ("b", 0), ("a", 1), ("a", 2)]));
    }

    #[tokio::test]
    async fn a_new_mandator_joins_the_end_of_the_rotation() {
        let (queue, fresh) = EmbeddedQueue::new();
        let mut receiver = EmbeddedReceiver::new(fresh);
        for message in [shard_message("a", 0), shard_message("a", 1), shard_message("a", 2), shard_message("b", 0)] {
            queue.enqueue(&message).await.unwrap();
        }
        assert_eq!(receive_now(&mut receiver, 1).await, named(&[("a", 0)]));
        queue.enqueue(&shard_message("c", 0)).await.unwrap();
        let received = receive_now(&mut receiver, 4).await;
        assert_eq!(received, named(&[("b", 0), ("a", 1), ("c", 0), ("a", 2)]));
    }

    #[tokio::test]
    async fn each_mandators_messages_keep_their_order() {
        let (queue, fresh) = EmbeddedQueue::new();
        let mut receiver = EmbeddedReceiver::new(fresh);
        let order =
            [("a", 0), ("a", 1), ("b", 0), ("a", 2), ("c", 0), ("b", 1), ("a", 3), ("a", 4), ("c", 1), ("b", 2)];
        for (mandator, shard) in order {
            queue.enqueue(&shard_message(mandator, shard)).await.unwrap();
        }
        let received = receive_now(&mut receiver, order.len()).await;
        for mandator in ["a", "b", "c"] {
            let shards: Vec<u32> = received.iter().filter(|(m, _)| m == mandator).map(|(_, s)| *s).collect();
            let sent: Vec<u32> = order.iter().filter(|(m, _)| *m == mandator).map(|(_, s)| *s).collect();
            assert_eq!(shards, sent, "the order of {mandator}'s messages in {received:?}");
        }
        // Round-robin while all three have messages, then the two left, then the last.
        assert_eq!(
            received,
            named(&[
                ("a", 0),
                ("b", 0),
                ("c", 0),
                ("a", 1),
                ("b", 1),
                ("c", 1),
                ("a", 2),
                ("b", 2),
                ("a", 3),
                ("a", 4)
            ])
        );
    }

    #[tokio::test]
    async fn a_closed_queue_delivers_what_waits_and_then_ends() {
        let (queue, fresh) = EmbeddedQueue::new();
        let mut receiver = EmbeddedReceiver::new(fresh);
        for message in [shard_message("a", 0), shard_message("a", 1), shard_message("b", 0)] {
            queue.enqueue(&message).await.unwrap();
        }
        assert_eq!(receive_now(&mut receiver, 1).await, named(&[("a", 0)]));
        drop(queue);
        assert_eq!(receive_now(&mut receiver, 2).await, named(&[("b", 0), ("a", 1)]));
        let end = tokio::time::timeout(Duration::from_secs(5), receiver.receive()).await;
        assert_eq!(end.expect("a closed, drained queue answers at once"), None);
    }

    #[tokio::test]
    async fn a_handed_back_message_goes_before_its_mandators_fresh_ones_but_not_before_others() {
        let (queue, fresh) = EmbeddedQueue::new();
        let mut receiver = EmbeddedReceiver::new(fresh);
        let deliveries = receiver.deliveries();
        for message in [shard_message("a", 0), shard_message("a", 1), shard_message("b", 0), shard_message("b", 1)] {
            queue.enqueue(&message).await.unwrap();
        }
        let first = receiver.receive().await.unwrap();
        assert_eq!((first.message.mandator_id.as_str(), first.message.shard), ("a", 0));
        deliveries.change_visibility(&first.receipt_handle, Duration::ZERO).await.unwrap();
        deliveries.hand_back(&first.receipt_handle);
        // The hand-back reaches the receiver from a task of its own once its timeout has passed.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again = receive_now(&mut receiver, 4).await;
        assert_eq!(again, named(&[("b", 0), ("a", 0), ("b", 1), ("a", 1)]));
    }

    #[tokio::test]
    async fn a_receiver_waits_for_the_next_message_and_counts_a_handed_back_ones_receives() {
        let (queue, fresh) = EmbeddedQueue::new();
        let mut receiver = EmbeddedReceiver::new(fresh);
        let deliveries = receiver.deliveries();
        let sender = queue.clone();
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            sender.enqueue(&shard_message("a", 7)).await.unwrap();
        });
        let first = receiver.receive().await.unwrap();
        later.await.unwrap();
        assert_eq!((first.message.shard, first.receive_count), (7, 1));
        deliveries.change_visibility(&first.receipt_handle, Duration::ZERO).await.unwrap();
        deliveries.hand_back(&first.receipt_handle);
        let again = receiver.receive().await.unwrap();
        assert_eq!((again.message.shard, again.receive_count), (7, 2));
    }
}
