//! DynamoDB, S3 and SQS adapters.
