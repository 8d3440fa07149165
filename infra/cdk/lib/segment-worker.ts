import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { alarmAbove, queueMetric } from './alarms';
import { keepLogicalId } from './logical-ids';
import { allow, FunctionDefaults, ServiceFunction } from './service-function';
import { SegmentType } from './service';
import { RESULTS_PREFIX, SQS_EVENT_SOURCE_VISIBILITY_FACTOR } from './storage';

/**
 * Receives of a job message before it moves to the dead-letter queue. The worker reads the same
 * number (MAX_RECEIVE_COUNT) and marks the job FAILED on the last receive.
 */
export const WORK_MAX_RECEIVE_COUNT = 5;
/** The Lambda maximum, so a large shard or a large merge is never cut short. */
const WORKER_TIMEOUT = Duration.minutes(15);
/** The worker's timeout and a minute: see the queue below. */
const WORK_QUEUE_VISIBILITY = Duration.seconds(WORKER_TIMEOUT.toSeconds() + 60);

export interface SegmentWorkerProps {
  readonly segmentType: SegmentType;
  readonly defaults: FunctionDefaults;
  readonly accountData: dynamodb.ITable;
  readonly jobs: dynamodb.ITable;
  readonly results: s3.IBucket;
  /** The most invocations at once: the shard count the account data is imported with. */
  readonly maxConcurrency: number;
  /** The timeout of the dead-letter handler, which consumes the dead-letter queue. */
  readonly deadLetterHandlerTimeout: Duration;
  /** Age in seconds of the oldest work message that alarms (the WorkQueueAgeThresholdSeconds parameter). */
  readonly workQueueAgeThreshold: number;
  /** Age in seconds of the oldest dead letter that alarms (the DeadLetterAgeThresholdSeconds parameter). */
  readonly deadLetterAgeThreshold: number;
}

/**
 * One segment type's computation: its work queue with a dead-letter queue, the worker that
 * consumes the queue one shard message at a time, and the alarms on dead letters and on messages
 * that wait too long (the worker's own alarms come with its function).
 */
export class SegmentWorker extends Construct {
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  readonly function: lambda.Function;

  constructor(scope: Construct, id: string, props: SegmentWorkerProps) {
    super(scope, id);
    const { segmentType: type } = props;
    const prefix = type.pascalName;

    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      // The longest SQS allows (14 days), like the results.
      retentionPeriod: Duration.days(14),
      // The dead-letter handler is this queue's consumer.
      visibilityTimeout: Duration.seconds(
        SQS_EVENT_SOURCE_VISIBILITY_FACTOR * props.deadLetterHandlerTimeout.toSeconds(),
      ),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
    });
    keepLogicalId(this.deadLetterQueue, `${prefix}DeadLetterQueue`);

    this.queue = new sqs.Queue(this, 'Queue', {
      // The worker holds its messages (heartbeat, backoff): this only bounds how long a message
      // stays away after an invocation that died. Lambda requires at least the function timeout;
      // the extra minute covers the invocation's start before the first heartbeat.
      visibilityTimeout: WORK_QUEUE_VISIBILITY,
      retentionPeriod: Duration.days(4),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: WORK_MAX_RECEIVE_COUNT },
    });
    keepLogicalId(this.queue, `${prefix}Queue`);

    const worker = new ServiceFunction(this, `${prefix}WorkerFunction`, {
      defaults: props.defaults,
      binary: type.workerBinary,
      description: `Computes ${type.name} segments from the SQS queue of the type`,
      // One message is one shard, streamed page by page; 1 GB is for the CPU share that comes
      // with it.
      memorySize: 1024,
      timeout: WORKER_TIMEOUT,
      // WORK_QUEUE_URL: its own queue, whose messages' visibility it changes.
      environment: { MAX_RECEIVE_COUNT: String(WORK_MAX_RECEIVE_COUNT), WORK_QUEUE_URL: this.queue.queueUrl },
      statements: [
        allow(['dynamodb:Query', 'dynamodb:GetItem'], [props.accountData.tableArn]),
        // Progress; the completion updates the job, puts its usage record and deletes its live
        // marker in one transaction (failing deletes the marker too).
        allow(
          ['dynamodb:GetItem', 'dynamodb:UpdateItem', 'dynamodb:PutItem', 'dynamodb:DeleteItem'],
          [props.jobs.tableArn],
        ),
        // Parts, chunks, manifest; the export is a multipart upload (covered by PutObject),
        // aborted when it fails.
        allow(
          ['s3:PutObject', 's3:GetObject', 's3:AbortMultipartUpload'],
          [props.results.arnForObjects(`${RESULTS_PREFIX}*`)],
        ),
        // Without ListBucket a missing object answers 403 instead of 404.
        allow(['s3:ListBucket'], [props.results.bucketArn]),
        // The event source mapping polls with the function's role: only this queue.
        // ChangeMessageVisibility is the worker's own: a failed shard's backoff and a long run's
        // heartbeat.
        allow(
          ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:ChangeMessageVisibility'],
          [this.queue.queueArn],
        ),
      ],
    });
    this.function = worker.function;

    // A mapping of its own rather than SqsEventSource, which would grant more SQS actions than
    // polling needs.
    const source = new lambda.EventSourceMapping(this, 'EventSource', {
      target: this.function,
      eventSourceArn: this.queue.queueArn,
      // One job message per invocation: the whole timeout is its budget, and a slow message
      // never delays another one in the same batch.
      batchSize: 1,
      reportBatchItemFailures: true,
      maxConcurrency: props.maxConcurrency,
    });
    keepLogicalId(source, `${prefix}WorkerEventSource`);

    const topic = props.defaults.alarms.topic;
    // The dead-letter handler consumes what arrives (after failing its job), so count what it
    // received rather than what waits.
    alarmAbove(
      this,
      `${prefix}DeadLetterAlarm`,
      queueMetric(this.deadLetterQueue, 'NumberOfMessagesReceived', cloudwatch.Stats.SUM),
      0,
      `A ${type.name} job message reached the dead-letter queue (its job is FAILED).`,
      topic,
    );
    // A job's shards are all queued at once and run maxConcurrency at a time: a message older
    // than the threshold waits behind more than one job's worth of shards, or nothing consumes
    // the queue.
    alarmAbove(
      this,
      `${prefix}QueueAgeAlarm`,
      queueMetric(this.queue, 'ApproximateAgeOfOldestMessage', cloudwatch.Stats.MAXIMUM),
      props.workQueueAgeThreshold,
      `The oldest ${type.name} job message has waited longer than expected; jobs of the type are late.`,
      topic,
    );
    // The dead-letter handler takes a dead letter within seconds: one that waits is not being
    // handled, and its job may still look RUNNING.
    alarmAbove(
      this,
      `${prefix}DeadLetterQueueAgeAlarm`,
      queueMetric(this.deadLetterQueue, 'ApproximateAgeOfOldestMessage', cloudwatch.Stats.MAXIMUM),
      props.deadLetterAgeThreshold,
      `A ${type.name} dead letter waits unhandled; the dead-letter handler is not draining its queue.`,
      topic,
    );
  }
}
