//! The in-process job and import queues of the local runner.

use async_trait::async_trait;
use tokio::sync::mpsc;

use segments_core::imports::ImportMessage;
use segments_core::jobs::JobMessage;
use segments_core::ports::{ImportQueue, JobQueue, StoreError};

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
