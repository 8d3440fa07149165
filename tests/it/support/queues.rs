//! SQS as the Lambda event source mapping sees it: messages received from a queue, turned into
//! the `SqsEvent` a worker's handler gets.

use lambda_http::aws_lambda_events::event::sqs::SqsEvent;
use segments_aws::SqsQueue;
use segments_core::domain::SegmentType;

/// One record of an SQS event: message id, receipt handle, body and `ApproximateReceiveCount`.
pub struct Record<'a> {
    pub message_id: &'a str,
    pub receipt_handle: &'a str,
    pub body: &'a str,
    pub receive_count: u32,
}

/// The event a worker Lambda gets for `records`, as SQS writes it.
pub fn sqs_event<'a>(records: impl IntoIterator<Item = Record<'a>>) -> SqsEvent {
    let records: Vec<serde_json::Value> = records
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "messageId": r.message_id, "receiptHandle": r.receipt_handle, "body": r.body,
                "attributes": {"ApproximateReceiveCount": r.receive_count.to_string()},
                "messageAttributes": {}, "eventSource": "aws:sqs", "awsRegion": "eu-central-1"
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("a valid SQS event")
}

/// Receives and deletes everything a type's queue holds; returns the bodies, oldest batch first.
pub async fn take_bodies(queue: &SqsQueue, segment_type: SegmentType) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let messages = queue.receive(segment_type, 10, 0).await.unwrap();
        if messages.is_empty() {
            return out;
        }
        for m in messages {
            queue.delete(segment_type, &m.receipt_handle).await.unwrap();
            out.push(m.body);
        }
    }
}
