//! Implementations of the [`crate::ports`]: AWS (DynamoDB, S3, SQS) and embedded (one redb file
//! in a data directory plus an in-process queue).

pub mod aws;
pub mod embedded;
