//! The local runner's refresh queue: refresh messages handed to the applier task of the same
//! process, in order.
//!
//! The messages live only in memory. One lost with the process is not lost for good: the refresh
//! keeps its `check_at` in the store, and the scheduler's tick (which the local runner also runs
//! every few seconds) sends it again once the refresh is due and its lease has run out — the same
//! way a deployed scheduler recovers a message SQS dropped or a run that died.

use async_trait::async_trait;
use segments_core::domain::refresh::RefreshMessage;
use segments_core::ports::{RefreshQueue, StoreError};
use tokio::sync::mpsc;

/// A new refresh queue and the receiving end the local applier task reads from.
pub fn refresh_channel() -> (LocalRefreshQueue, LocalRefreshReceiver) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (LocalRefreshQueue { sender }, LocalRefreshReceiver { receiver })
}

/// A [`RefreshQueue`] whose messages go to a task of the same process. Clones send to the same
/// receiver.
#[derive(Debug, Clone)]
pub struct LocalRefreshQueue {
    sender: mpsc::UnboundedSender<RefreshMessage>,
}

#[async_trait]
impl RefreshQueue for LocalRefreshQueue {
    async fn enqueue_refresh(&self, message: &RefreshMessage) -> Result<(), StoreError> {
        self.sender
            .send(message.clone())
            .map_err(|_| StoreError::unavailable("enqueueing a refresh step", "the local refresh applier has stopped"))
    }
}

/// The applier's end of a [`refresh_channel`].
#[derive(Debug)]
pub struct LocalRefreshReceiver {
    receiver: mpsc::UnboundedReceiver<RefreshMessage>,
}

impl LocalRefreshReceiver {
    /// The next message, in the order they were sent; `None` once every queue of the channel is
    /// dropped and every message taken.
    pub async fn recv(&mut self) -> Option<RefreshMessage> {
        self.receiver.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segments_core::domain::MandatorId;
    use segments_core::domain::refresh::RefreshId;
    use segments_core::domain::segment::SegmentId;

    fn message() -> RefreshMessage {
        RefreshMessage {
            mandator_id: MandatorId::parse("bank").unwrap(),
            segment_id: SegmentId::new(),
            refresh_id: RefreshId::new(),
        }
    }

    #[tokio::test]
    async fn messages_arrive_in_order_from_every_clone_and_a_stopped_applier_is_an_error() {
        let (queue, mut receiver) = refresh_channel();
        let other = queue.clone();
        let (a, b) = (message(), message());
        queue.enqueue_refresh(&a).await.unwrap();
        other.enqueue_refresh(&b).await.unwrap();
        assert_eq!(receiver.recv().await, Some(a.clone()));
        assert_eq!(receiver.recv().await, Some(b));
        drop(receiver);
        assert!(queue.enqueue_refresh(&a).await.unwrap_err().is_transient());
    }

    #[tokio::test]
    async fn the_receiver_ends_once_every_queue_is_dropped() {
        let (queue, mut receiver) = refresh_channel();
        let m = message();
        queue.enqueue_refresh(&m).await.unwrap();
        drop(queue);
        assert_eq!(receiver.recv().await, Some(m));
        assert_eq!(receiver.recv().await, None);
    }
}
