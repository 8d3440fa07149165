import { Aws, CfnCondition, CfnOutput, CfnParameter, Duration, Fn, Size, Stack, StackProps, Tags } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { alarmAbove, queueMetric, tableThrottles } from './alarms';
import { Api } from './api';
import { operationsDashboard } from './dashboard';
import { Identity } from './identity';
import { keepLogicalId } from './logical-ids';
import { ALL_SCOPES, SEGMENT_TYPES } from './service';
import { allow, FunctionDefaults, ServiceFunction } from './service-function';
import { SegmentWorker, WORK_MAX_RECEIVE_COUNT } from './segment-worker';
import {
  DUE_INDEX,
  IMPORTS_PREFIX,
  PROGRESS_INDEX,
  RESULTS_PREFIX,
  SQS_EVENT_SOURCE_VISIBILITY_FACTOR,
  Storage,
} from './storage';

export interface FinancialSegmentsStackProps extends StackProps {
  /** The directory infra/build.sh fills: `<codeDirectory>/<function>/bootstrap`. */
  readonly codeDirectory: string;
}

/** Receives of an import message before it moves to its dead-letter queue (a receive may take 15 minutes). */
const IMPORT_MAX_RECEIVE_COUNT = 3;
const IMPORT_WORKER_TIMEOUT = Duration.minutes(15);
/** One dead letter per invocation; reporting its job to a callback URL may take five attempts of up to 10 s each with 15 s of backoff. */
const DEAD_LETTER_HANDLER_TIMEOUT = Duration.minutes(2);
/**
 * How often the sweeper runs: SWEEP_INTERVAL of shared/core/src/usecases/sweep.rs, which the local
 * runner's timer uses and the docs promise (a stalled job waits at most this long past its deadline).
 */
const SWEEP_INTERVAL = Duration.minutes(5);
/**
 * Up to a thousand stalled jobs a sweep, and a failed job's callback may take five attempts of up to
 * 10 s each with 15 s of backoff: the schedule's interval. Overlapping sweeps are harmless: each step
 * on a job is a conditional write on its watch.
 */
const SWEEPER_TIMEOUT = Duration.minutes(5);
/**
 * How often the refresh scheduler looks at what is due: RefreshSettings::poll_interval of
 * shared/core/src/usecases/segments/refresh.rs, the deployed look interval of an unfinished refresh.
 */
const REFRESH_POLL_INTERVAL = Duration.minutes(1);
/**
 * A tick takes at most a few hundred schedules and refreshes: it ends within the interval.
 * Overlapping ticks are harmless: each step is a conditional write on a segment or a refresh.
 */
const REFRESH_SCHEDULER_TIMEOUT = Duration.minutes(1);
/**
 * The Lambda maximum. A run saves its cursor and sends itself a message well before (its time
 * budget), so the timeout only ends a run that hangs.
 */
const REFRESH_APPLIER_TIMEOUT = Duration.minutes(15);
/**
 * Above the applier's timeout and so above the 15-minute lease a run holds on its refresh: a
 * message of a run that died comes back once the lease is over; the extra minute covers the
 * invocation's start. Not 6 x the timeout: a redelivery during a run finds the lease held.
 */
const REFRESH_QUEUE_VISIBILITY = Duration.seconds(REFRESH_APPLIER_TIMEOUT.toSeconds() + 60);
/** Refreshes of different segments applied at once, at most. */
const REFRESH_APPLIER_CONCURRENCY = 10;
/** The mandator is the token's `client_id` claim. */
const MANDATOR_CLAIM = 'client_id';
/** Live (QUEUED/RUNNING) jobs a mandator may have; beyond it a create answers 429. */
const MAX_LIVE_JOBS_PER_MANDATOR = '20';

/**
 * Financial Segments: segments all users of a mandator by their account data, asynchronously.
 * The same service as infra/template.yaml (tests/it/cdk.rs compares the two): HTTP API with a
 * Cognito JWT authorizer and one scope per segment type, the API functions, one queue,
 * dead-letter queue and worker per segment type, bulk imports, DynamoDB tables, the results
 * bucket, the web console, alarms to an SNS topic and an operations dashboard.
 */
export class FinancialSegmentsStack extends Stack {
  constructor(scope: Construct, id: string, props: FinancialSegmentsStackProps) {
    super(scope, id, props);

    // The parameters of the SAM template, with the same names, defaults and constraints.
    const stage = new CfnParameter(this, 'Stage', {
      type: 'String',
      default: 'dev',
      allowedPattern: '^[a-z][a-z0-9-]{0,15}$',
      constraintDescription: 'lower-case letters, digits and hyphens, at most 16 characters',
      description: 'Name of the deployment (dev, test, prod); part of the Cognito domain and of the tags.',
    });
    const shardCount = new CfnParameter(this, 'ShardCount', {
      type: 'Number',
      default: 16,
      minValue: 2,
      maxValue: 1000,
      description:
        'Shards the account data is imported with (segments import --aws --shards N). Each worker type runs at ' +
        'most this many invocations at once, which bounds the read rate on AccountData (2-1000: the limits of ' +
        "an SQS event source's maximum concurrency).",
    });
    const logLevel = new CfnParameter(this, 'LogLevel', {
      type: 'String',
      default: 'INFO',
      allowedValues: ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR'],
      description: 'Application log level of every function (JSON logs).',
    });
    const logRetentionDays = new CfnParameter(this, 'LogRetentionDays', {
      type: 'Number',
      // A string, as allowed values are.
      default: '30',
      // The values CloudWatch Logs accepts.
      allowedValues: [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653].map(String),
      description:
        "Days the functions' logs are kept (docs/operations.md). Logs name mandators and request ids: keep " +
        'them as long as support needs to find a request, not longer.',
    });
    const apiDomainName = new CfnParameter(this, 'ApiDomainName', {
      type: 'String',
      default: '',
      allowedPattern: '^$|^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$',
      constraintDescription: 'empty, or a lower-case DNS name such as segments.example.com',
      description:
        'Custom domain of the API (empty: none). With ApiCertificateArn it serves the API and the web console ' +
        "under https://<this name>/ and enables the console's Cognito sign-in. Point the name at the " +
        'ApiDomainTarget output (CNAME or alias) after deploying.',
    });
    const apiCertificateArn = new CfnParameter(this, 'ApiCertificateArn', {
      type: 'String',
      default: '',
      allowedPattern: '^$|^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[a-zA-Z0-9-]+$',
      constraintDescription: 'empty, or the ARN of an ACM certificate',
      description: "ACM certificate of ApiDomainName, in the stack's region (empty: no custom domain).",
    });
    // What the alarms tolerate (docs/operations.md).
    const threshold = (id: string, defaultValue: number, minValue: number, description: string) =>
      new CfnParameter(this, id, { type: 'Number', default: defaultValue, minValue, description }).valueAsNumber;
    const functionErrorsThreshold = threshold(
      'FunctionErrorsThreshold',
      0,
      0,
      'Failed invocations of one function within 5 minutes that are tolerated before its errors alarm fires ' +
        '(0: every failed invocation alarms).',
    );
    const functionThrottlesThreshold = threshold(
      'FunctionThrottlesThreshold',
      0,
      0,
      'Throttled invocations of one function within 5 minutes tolerated before its alarm fires.',
    );
    const api5xxThreshold = threshold(
      'Api5xxThreshold',
      0,
      0,
      '5xx responses of the HTTP API within 5 minutes tolerated before its alarm fires.',
    );
    const workQueueAgeThreshold = threshold(
      'WorkQueueAgeThresholdSeconds',
      1800,
      60,
      'Age in seconds of the oldest message of a worker queue that alarms (default: two worker timeouts, one ' +
        "job's shards ahead of the message).",
    );
    const deadLetterAgeThreshold = threshold(
      'DeadLetterAgeThresholdSeconds',
      900,
      60,
      'Age in seconds of the oldest unhandled message of a job dead-letter queue that alarms.',
    );
    const importQueueAgeThreshold = threshold(
      'ImportQueueAgeThresholdSeconds',
      3600,
      60,
      'Age in seconds of the oldest started import waiting in the import queue that alarms.',
    );
    const refreshQueueAgeThreshold = threshold(
      'RefreshQueueAgeThresholdSeconds',
      1800,
      60,
      'Age in seconds of the oldest message of the refresh queue that alarms (default: two runs of the ' +
        "refresh applier, a full round of the applier's concurrency ahead of the message).",
    );
    const tableThrottlesThreshold = threshold(
      'TableThrottlesThreshold',
      0,
      0,
      'Throttled read and write events of one table within 5 minutes tolerated before its alarm fires.',
    );
    // When the sweeper acts on a job without progress (docs/jobs.md, "No job hangs").
    const progressDeadlineMinutes = new CfnParameter(this, 'ProgressDeadlineMinutes', {
      type: 'Number',
      default: 20,
      // A shard runs for at most the worker's 15 minutes: a shorter deadline would send the shards
      // of a job that is merely busy again.
      minValue: 16,
      description:
        'Minutes a live job may go without one more shard done before the sweeper sends its unfinished ' +
        'shards again (PROGRESS_DEADLINE_MINUTES). Above the worker\'s 15-minute timeout, so shards still ' +
        "running are not sent twice; raise it when a job's shards routinely wait longer than this in their " +
        'queue behind other jobs (WorkQueueAgeThresholdSeconds alarms).',
    });
    const maxResends = new CfnParameter(this, 'MaxResends', {
      type: 'Number',
      default: 3,
      minValue: 0,
      description:
        "Times in a row the sweeper sends a stalled job's unfinished shards again before it marks the job " +
        'FAILED (MAX_RESENDS). A job that cannot progress is FAILED after about (MaxResends + 1) x ' +
        'ProgressDeadlineMinutes; 0 fails it at the first deadline missed.',
    });
    // The console signs in through the Cognito hosted UI only with a custom domain: its app
    // client must name the console's URL as callback, which the execute-api URL cannot be
    // without a cycle. Without it the console offers token sign-in.
    const hasCustomDomain = new CfnCondition(this, 'HasCustomDomain', {
      expression: Fn.conditionAnd(
        Fn.conditionNot(Fn.conditionEquals(apiDomainName.valueAsString, '')),
        Fn.conditionNot(Fn.conditionEquals(apiCertificateArn.valueAsString, '')),
      ),
    });
    const ifCustomDomain = (value: string): string =>
      Fn.conditionIf(hasCustomDomain.logicalId, value, Aws.NO_VALUE).toString();

    Tags.of(this).add('application', 'financial-segments');
    Tags.of(this).add('stage', stage.valueAsString);

    const identity = new Identity(this, 'Identity', {
      stage: stage.valueAsString,
      apiDomainName: apiDomainName.valueAsString,
      hasCustomDomain,
    });
    const consoleClientId = ifCustomDomain(identity.consoleClient.userPoolClientId);
    const storage = new Storage(this, 'Storage');
    const { accountData, jobs, segments, results } = storage;

    // Subscribe on-call to this topic (e-mail, chat, pager) after the first deployment.
    const alarmTopic = new sns.Topic(this, 'AlarmTopic', { displayName: 'Financial Segments alarms' });
    keepLogicalId(alarmTopic, 'AlarmTopic');

    const defaults: FunctionDefaults = {
      codeDirectory: props.codeDirectory,
      logLevel: logLevel.valueAsString,
      logRetentionDays: logRetentionDays.valueAsNumber,
      // Every function but the console reads all three names at start-up
      // (AwsResources::from_env); the console ignores them.
      environment: {
        ACCOUNT_DATA_TABLE: accountData.tableName,
        JOBS_TABLE: jobs.tableName,
        RESULTS_BUCKET: results.bucketName,
      },
      alarms: {
        topic: alarmTopic,
        errorsThreshold: functionErrorsThreshold,
        throttlesThreshold: functionThrottlesThreshold,
      },
    };
    // What every API function reads to find the mandator of a request (docs/security.md).
    const mandatorEnvironment = { MANDATOR_CLAIM, CONSOLE_CLIENT_ID: consoleClientId };
    const resultObjects = results.arnForObjects(`${RESULTS_PREFIX}*`);
    const importObjects = results.arnForObjects(`${IMPORTS_PREFIX}*`);

    // ---------------------------------------------------------------------------------------
    // Work queues and workers: one of each per segment type.
    // ---------------------------------------------------------------------------------------
    const workers = SEGMENT_TYPES.map(
      (segmentType) =>
        new SegmentWorker(this, segmentType.pascalName, {
          segmentType,
          defaults,
          accountData,
          jobs,
          results,
          maxConcurrency: shardCount.valueAsNumber,
          deadLetterHandlerTimeout: DEAD_LETTER_HANDLER_TIMEOUT,
          workQueueAgeThreshold,
          deadLetterAgeThreshold,
        }),
    );

    // ---------------------------------------------------------------------------------------
    // Dynamic segments (docs/segments.md, docs/events.md): the bus segment events are published
    // to, and the queue of refreshes the applier runs (the functions follow the sweeper's).
    // ---------------------------------------------------------------------------------------
    // One bus per stack: consumers subscribe to the segment events of this deployment alone.
    const segmentEventBus = new events.EventBus(this, 'SegmentEventBus', {
      eventBusName: `${Aws.STACK_NAME}-segment-events`,
      description: 'Segment events of Financial Segments (source financial-segments)',
    });
    keepLogicalId(segmentEventBus, 'SegmentEventBus');
    const refreshDeadLetterQueue = new sqs.Queue(this, 'RefreshDeadLetterQueue', {
      // The longest SQS allows. Nothing consumes it: the alarm below calls an operator.
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
    });
    keepLogicalId(refreshDeadLetterQueue, 'RefreshDeadLetterQueue');
    const refreshQueue = new sqs.Queue(this, 'RefreshQueue', {
      visibilityTimeout: REFRESH_QUEUE_VISIBILITY,
      retentionPeriod: Duration.days(4),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      // As the work queues. A refresh whose message is dead-lettered is still unfinished: the
      // scheduler sends it again once its lease has run out.
      deadLetterQueue: { queue: refreshDeadLetterQueue, maxReceiveCount: WORK_MAX_RECEIVE_COUNT },
    });
    keepLogicalId(refreshQueue, 'RefreshQueue');
    const workQueueUrls = Object.fromEntries(
      workers.map((w, i) => [SEGMENT_TYPES[i].queueUrlVariable, w.queue.queueUrl]),
    );

    // ---------------------------------------------------------------------------------------
    // API functions
    // ---------------------------------------------------------------------------------------
    const createJob = new ServiceFunction(this, 'CreateJobFunction', {
      defaults,
      binary: 'create-job',
      description: 'POST /segments/{segmentType} - validates, stores the job QUEUED, enqueues it',
      // Validation, one GetItem, one PutItem and a few SendMessage calls, well below the HTTP
      // API's 30 s integration limit.
      memorySize: 256,
      timeout: Duration.seconds(10),
      environment: {
        ...mandatorEnvironment,
        MAX_LIVE_JOBS_PER_MANDATOR,
        ...Object.fromEntries(workers.map((w, i) => [SEGMENT_TYPES[i].queueUrlVariable, w.queue.queueUrl])),
      },
      statements: [
        // The mandator's shard count item.
        allow(['dynamodb:GetItem'], [accountData.tableArn]),
        // The job, its live marker and its idempotency key; the live markers counted (a Query)
        // for the limit; marked FAILED, its marker deleted, when it cannot be enqueued.
        allow(
          ['dynamodb:PutItem', 'dynamodb:GetItem', 'dynamodb:UpdateItem', 'dynamodb:Query', 'dynamodb:DeleteItem'],
          [jobs.tableArn],
        ),
        // One message per shard, sent with SendMessageBatch (authorized as SendMessage).
        allow(['sqs:SendMessage'], workers.map((w) => w.queue.queueArn)),
      ],
    });

    const getResult = new ServiceFunction(this, 'GetResultFunction', {
      defaults,
      binary: 'get-result',
      description: 'GET /segments/{segmentType}/{jobId} - job state or one page of the result',
      // At most two result chunks parsed in memory: more memory, and more CPU with it.
      memorySize: 512,
      timeout: Duration.seconds(10),
      environment: mandatorEnvironment,
      statements: [
        allow(['dynamodb:GetItem'], [jobs.tableArn]),
        allow(['s3:GetObject'], [resultObjects]),
        // Without ListBucket a missing object answers 403 instead of 404.
        allow(['s3:ListBucket'], [results.bucketArn]),
      ],
    });

    const jobsApi = new ServiceFunction(this, 'JobsApiFunction', {
      defaults,
      binary: 'jobs-api',
      description:
        'GET /segments/{segmentType} (job list), GET .../{jobId}/export (302 to a presigned NDJSON URL), GET /usage',
      memorySize: 256,
      timeout: Duration.seconds(10),
      environment: mandatorEnvironment,
      statements: [
        // The job of an export and the usage counters; the list is one partition.
        allow(['dynamodb:GetItem'], [jobs.tableArn]),
        allow(['dynamodb:Query'], [jobs.tableArn]),
        // A presigned URL carries the signer's permissions for the minutes it lives.
        allow(['s3:GetObject'], [resultObjects]),
        allow(['s3:ListBucket'], [results.bucketArn]),
      ],
    });

    const segmentsApi = new ServiceFunction(this, 'SegmentsApiFunction', {
      defaults,
      binary: 'segments-api',
      description: 'Segments management API - CRUD, account tagging, starting refreshes, change feeds',
      // Tagging writes up to 1000 accounts in batches; refreshes are applied by the applier.
      memorySize: 512,
      timeout: Duration.seconds(29),
      environment: {
        ...mandatorEnvironment,
        SEGMENTS_TABLE: segments.tableName,
        // Created, changed and deleted segments are published to the stack's bus.
        EVENT_BUS_NAME: segmentEventBus.eventBusName,
        // The services of the segments are built whole; this function sends nothing to the
        // refresh queue.
        REFRESH_QUEUE_URL: refreshQueue.queueUrl,
        // A refresh creates a job of the segment's type as create-job does: its work queues,
        // and the same live-job limit.
        MAX_LIVE_JOBS_PER_MANDATOR,
        ...workQueueUrls,
      },
      statements: [
        // Segments, their names and members; refresh records and the change feed.
        allow(
          ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:DeleteItem', 'dynamodb:BatchWriteItem'],
          [segments.tableArn],
        ),
        // Checks that tagged accounts exist.
        allow(['dynamodb:BatchGetItem'], [accountData.tableArn]),
        // A refresh creates a job as create-job does: the mandator's shard count item.
        allow(['dynamodb:GetItem'], [accountData.tableArn]),
        // A refresh creates its job as create-job does: live jobs counted (a Query), the job and
        // its live marker put, marked FAILED (its marker deleted) when it cannot be enqueued; a
        // segment's callbackURL makes sure the mandator's signing secret exists.
        allow(
          ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
          [jobs.tableArn],
        ),
        // The refresh job's messages, one per shard (SendMessageBatch is authorized as SendMessage).
        allow(['sqs:SendMessage'], workers.map((w) => w.queue.queueArn)),
        // Segment Created, Updated and Deleted, on the stack's bus only.
        allow(['events:PutEvents'], [segmentEventBus.eventBusArn]),
      ],
    });

    // Bulk imports (docs/data.md): the data API signs upload links and queues a started import.
    const importDeadLetterQueue = new sqs.Queue(this, 'ImportDeadLetterQueue', {
      // The longest SQS allows. Nothing consumes it: the worker has marked the import FAILED on
      // the last receive; the alarm below calls an operator.
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
    });
    keepLogicalId(importDeadLetterQueue, 'ImportDeadLetterQueue');
    const importQueue = new sqs.Queue(this, 'ImportQueue', {
      visibilityTimeout: Duration.seconds(SQS_EVENT_SOURCE_VISIBILITY_FACTOR * IMPORT_WORKER_TIMEOUT.toSeconds()),
      retentionPeriod: Duration.days(4),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      deadLetterQueue: { queue: importDeadLetterQueue, maxReceiveCount: IMPORT_MAX_RECEIVE_COUNT },
    });
    keepLogicalId(importQueue, 'ImportQueue');

    const dataApi = new ServiceFunction(this, 'DataApiFunction', {
      defaults,
      binary: 'data-api',
      description: '/data/users/{userId} (a user\'s account data as a unit) and /data/imports (bulk imports)',
      // A body of up to 4 MiB is parsed whole and the user's record compressed.
      memorySize: 512,
      timeout: Duration.seconds(29),
      environment: { ...mandatorEnvironment, SEGMENTS_TABLE: segments.tableName, IMPORT_QUEUE_URL: importQueue.queueUrl },
      statements: [
        // Reads, and the transaction that writes a user (TransactWriteItems needs each action).
        allow(
          [
            'dynamodb:GetItem',
            'dynamodb:Query',
            'dynamodb:PutItem',
            'dynamodb:DeleteItem',
            'dynamodb:ConditionCheckItem',
            'dynamodb:BatchGetItem',
          ],
          [accountData.tableArn],
        ),
        // Accounts a write removes leave every segment.
        allow(['dynamodb:Query', 'dynamodb:BatchWriteItem'], [segments.tableArn]),
        // Imports and the mandator's import lock.
        allow(['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:DeleteItem'], [jobs.tableArn]),
        // Upload links are presigned PUTs signed with this permission; a start looks them up.
        allow(['s3:PutObject', 's3:GetObject'], [importObjects]),
        allow(['s3:ListBucket'], [results.bucketArn]),
        // A start hands the import to the import worker.
        allow(['sqs:SendMessage'], [importQueue.queueArn]),
      ],
    });

    // The web console: static pages under /console on the API's own origin.
    const consoleFunction = new ServiceFunction(this, 'ConsoleFunction', {
      defaults,
      binary: 'web-console',
      description: "GET /console and /console/{proxy+} - the web console's files, compiled into the binary",
      // Answers from memory.
      memorySize: 128,
      timeout: Duration.seconds(3),
      environment: {
        // The hosted UI, the app client and the scopes it asks for; without them the console
        // offers token sign-in.
        CONSOLE_COGNITO_DOMAIN: ifCustomDomain(identity.domain.baseUrl()),
        CONSOLE_CLIENT_ID: consoleClientId,
        CONSOLE_SCOPES: ifCustomDomain(['openid', ...ALL_SCOPES].join(' ')),
      },
      // It calls no AWS service.
      statements: [],
    });

    // ---------------------------------------------------------------------------------------
    // Import worker
    // ---------------------------------------------------------------------------------------
    const importWorker = new ServiceFunction(this, 'ImportWorkerFunction', {
      defaults,
      binary: 'import-worker',
      description: 'Runs bulk imports of account data from the import queue',
      // One import per invocation, validation holding a key per account: 2 GB and its CPU.
      memorySize: 2048,
      timeout: IMPORT_WORKER_TIMEOUT,
      // The two files and what the import spills while grouping them: the maximum.
      ephemeralStorage: Size.mebibytes(10240),
      environment: { MAX_RECEIVE_COUNT: String(IMPORT_MAX_RECEIVE_COUNT), SEGMENTS_TABLE: segments.tableName },
      statements: [
        allow(['s3:GetObject'], [importObjects]),
        allow(
          [
            'dynamodb:GetItem',
            'dynamodb:Query',
            'dynamodb:PutItem',
            'dynamodb:DeleteItem',
            'dynamodb:ConditionCheckItem',
            'dynamodb:BatchGetItem',
          ],
          [accountData.tableArn],
        ),
        allow(['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:DeleteItem'], [jobs.tableArn]),
        allow(['dynamodb:Query', 'dynamodb:BatchWriteItem'], [segments.tableArn]),
        // The event source mapping polls with the function's role: only the import queue.
        allow(['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes'], [importQueue.queueArn]),
      ],
    });
    const importSource = new lambda.EventSourceMapping(this, 'ImportWorkerEventSource', {
      target: importWorker.function,
      eventSourceArn: importQueue.queueArn,
      batchSize: 1,
      reportBatchItemFailures: true,
      // A mandator runs one import at a time; imports of different mandators run side by side,
      // this many at most.
      maxConcurrency: 5,
    });
    keepLogicalId(importSource, 'ImportWorkerEventSource');
    // Nothing consumes the import dead-letter queue: what waits there is what arrived.
    alarmAbove(
      this,
      'ImportDeadLetterAlarm',
      queueMetric(importDeadLetterQueue, 'ApproximateNumberOfMessagesVisible', cloudwatch.Stats.MAXIMUM),
      0,
      'An import message reached the dead-letter queue (its import is FAILED, or could not be read).',
      alarmTopic,
    );
    // Imports run one per mandator and five at once, each for up to 15 minutes: a started import
    // that waits longer means imports back up or nothing consumes the queue.
    alarmAbove(
      this,
      'ImportQueueAgeAlarm',
      queueMetric(importQueue, 'ApproximateAgeOfOldestMessage', cloudwatch.Stats.MAXIMUM),
      importQueueAgeThreshold,
      'A started import has waited longer than expected in the import queue.',
      alarmTopic,
    );

    // ---------------------------------------------------------------------------------------
    // Dead letters: a message that failed maxReceiveCount times marks its job FAILED (the
    // worker does so on the last receive already; this is the safety net).
    // ---------------------------------------------------------------------------------------
    const deadLetterHandler = new ServiceFunction(this, 'DeadLetterFunction', {
      defaults,
      binary: 'dlq-handler',
      description: 'Marks the job of every dead-lettered work message FAILED',
      memorySize: 128,
      timeout: DEAD_LETTER_HANDLER_TIMEOUT,
      statements: [
        // Fails the job and deletes its live marker; reads it to report it; keeps a callback
        // whose delivery gave up in the outbox.
        allow(['dynamodb:UpdateItem', 'dynamodb:GetItem', 'dynamodb:DeleteItem', 'dynamodb:PutItem'], [jobs.tableArn]),
        // The event source mappings poll with the function's role: only the dead-letter queues.
        allow(
          ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes'],
          workers.map((w) => w.deadLetterQueue.queueArn),
        ),
      ],
    });
    workers.forEach((worker, i) => {
      const id = `${SEGMENT_TYPES[i].pascalName}DeadLetterEventSource`;
      const source = new lambda.EventSourceMapping(this, id, {
        target: deadLetterHandler.function,
        eventSourceArn: worker.deadLetterQueue.queueArn,
        batchSize: 1,
        reportBatchItemFailures: true,
      });
      keepLogicalId(source, id);
    });
    // ---------------------------------------------------------------------------------------
    // The sweeper (docs/jobs.md, "No job hangs"): reads the live jobs without progress for the
    // deadline from the progress index, sends their unfinished shards again, and fails (and
    // calls back) those still without progress after MaxResends tries.
    // ---------------------------------------------------------------------------------------
    const sweeper = new ServiceFunction(this, 'SweeperFunction', {
      defaults,
      binary: 'sweeper',
      description: 'Every 5 minutes - sends the unfinished shards of jobs without progress again, or fails them',
      // Key-only calls, a page of the index and a batch of messages per stalled job.
      memorySize: 256,
      timeout: SWEEPER_TIMEOUT,
      environment: {
        // Unfinished shards of a job of any type go back to that type's work queue.
        ...Object.fromEntries(workers.map((w, i) => [SEGMENT_TYPES[i].queueUrlVariable, w.queue.queueUrl])),
        PROGRESS_DEADLINE_MINUTES: progressDeadlineMinutes.valueAsString,
        MAX_RESENDS: maxResends.valueAsString,
      },
      statements: [
        // The live jobs without progress and the due callbacks of the outbox: Queries of the
        // index, authorized on the index's ARN.
        allow(['dynamodb:Query'], [`${jobs.tableArn}/index/${PROGRESS_INDEX}`]),
        // A stalled job; the failed job again, to count it and call back, and the mandator's
        // callback secret (made by create-job before such a job exists, so only read here); a
        // due callback of the outbox.
        allow(['dynamodb:GetItem'], [jobs.tableArn]),
        // The job's watch on its live marker (a conditional update), and the update that fails
        // the job in one transaction with the delete of its marker; a pending callback moved to
        // its next retry.
        allow(['dynamodb:UpdateItem'], [jobs.tableArn]),
        // The live marker of a job made FAILED, deleted in that transaction; a pending callback
        // delivered or given up.
        allow(['dynamodb:DeleteItem'], [jobs.tableArn]),
        // The callback of a job it fails, kept in the outbox when its delivery gives up.
        allow(['dynamodb:PutItem'], [jobs.tableArn]),
        // The unfinished shards, sent with SendMessageBatch (authorized as SendMessage).
        allow(['sqs:SendMessage'], workers.map((w) => w.queue.queueArn)),
      ],
    });
    // The SAM template's Schedule event, under the logical id SAM gives its rule.
    const sweepSchedule = new events.Rule(this, 'SweeperFunctionEvery5Minutes', {
      description: 'Runs the sweeper of stalled jobs',
      schedule: events.Schedule.rate(SWEEP_INTERVAL),
      targets: [new targets.LambdaFunction(sweeper.function)],
    });
    keepLogicalId(sweepSchedule, 'SweeperFunctionEvery5Minutes');
    // The rule's permission to invoke the function, under the logical id SAM gives it too.
    const invokePermission = sweepSchedule.node.children.find((child) => child instanceof lambda.CfnPermission);
    if (!(invokePermission instanceof lambda.CfnPermission)) {
      throw new Error('the Lambda target gives the sweeper schedule a permission to invoke the function');
    }
    invokePermission.overrideLogicalId('SweeperFunctionEvery5MinutesPermission');

    // ---------------------------------------------------------------------------------------
    // Dynamic segments: every minute the refresh scheduler starts the refreshes whose schedule
    // is due and looks at the unfinished ones through the due index, handing a refresh whose job
    // completed to the applier; the applier records the change feed, applies it page by page and
    // publishes "Segment Membership Changed". A run that dies leaves its lease to run out, after
    // which the scheduler sends the refresh again.
    // ---------------------------------------------------------------------------------------
    const refreshScheduler = new ServiceFunction(this, 'RefreshSchedulerFunction', {
      defaults,
      binary: 'refresh-scheduler',
      description: 'Every minute - starts due scheduled refreshes, hands refreshes whose job ended to the applier',
      // Key-only calls: a few index Queries, and per due item a GetItem, a job or a message.
      memorySize: 256,
      timeout: REFRESH_SCHEDULER_TIMEOUT,
      environment: {
        SEGMENTS_TABLE: segments.tableName,
        // The services of the segments are built whole; the scheduler publishes nothing.
        EVENT_BUS_NAME: segmentEventBus.eventBusName,
        REFRESH_QUEUE_URL: refreshQueue.queueUrl,
        // A scheduled refresh creates its job as create-job does.
        MAX_LIVE_JOBS_PER_MANDATOR,
        ...workQueueUrls,
      },
      statements: [
        // The due schedules and refreshes: Queries of the index, authorized on the index's ARN.
        allow(['dynamodb:Query'], [`${segments.tableArn}/index/${DUE_INDEX}`]),
        // The due items read again in batches (the index projects keys only, and may lag), a
        // segment read before it is changed, and conditional puts.
        allow(['dynamodb:BatchGetItem', 'dynamodb:GetItem', 'dynamodb:PutItem'], [segments.tableArn]),
        // A refresh creates its job as create-job does: the mandator's shard count item ...
        allow(['dynamodb:GetItem'], [accountData.tableArn]),
        // ... the job and its live marker (and the job read to see whether it ended) ...
        allow(
          ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
          [jobs.tableArn],
        ),
        // ... and its messages, to the work queue of the rule's type.
        allow(['sqs:SendMessage'], workers.map((w) => w.queue.queueArn)),
        // A refresh whose job completed, or whose applier run stopped short, handed on.
        allow(['sqs:SendMessage'], [refreshQueue.queueArn]),
      ],
    });
    // The SAM template's Schedule event, under the logical ids SAM gives its rule and permission.
    const refreshSchedule = new events.Rule(this, 'RefreshSchedulerFunctionEveryMinute', {
      description: 'Runs the refresh scheduler of dynamic segments',
      schedule: events.Schedule.rate(REFRESH_POLL_INTERVAL),
      targets: [new targets.LambdaFunction(refreshScheduler.function)],
    });
    keepLogicalId(refreshSchedule, 'RefreshSchedulerFunctionEveryMinute');
    const refreshInvokePermission = refreshSchedule.node.children.find(
      (child) => child instanceof lambda.CfnPermission,
    );
    if (!(refreshInvokePermission instanceof lambda.CfnPermission)) {
      throw new Error('the Lambda target gives the refresh schedule a permission to invoke the function');
    }
    refreshInvokePermission.overrideLogicalId('RefreshSchedulerFunctionEveryMinutePermission');

    const refreshApplier = new ServiceFunction(this, 'RefreshApplierFunction', {
      defaults,
      binary: 'refresh-applier',
      description: 'Applies a refresh of a dynamic segment from the refresh queue - change feed, members, event',
      // The segment's members are held in memory while the result is compared with them.
      memorySize: 1024,
      timeout: REFRESH_APPLIER_TIMEOUT,
      environment: {
        SEGMENTS_TABLE: segments.tableName,
        EVENT_BUS_NAME: segmentEventBus.eventBusName,
        // Its own queue: a run that reaches its time budget sends the message that goes on.
        REFRESH_QUEUE_URL: refreshQueue.queueUrl,
      },
      statements: [
        // The refresh (conditional puts), the segment and its members, the change feed.
        allow(
          ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:BatchWriteItem'],
          [segments.tableArn],
        ),
        // The refresh's job, and the mandator's callback secret to sign a segment's callback.
        allow(['dynamodb:GetItem'], [jobs.tableArn]),
        // The job's result, page by page; without ListBucket a missing object answers 403.
        allow(['s3:GetObject'], [resultObjects]),
        allow(['s3:ListBucket'], [results.bucketArn]),
        // The shard count and the users of selected accounts.
        allow(['dynamodb:GetItem', 'dynamodb:Query'], [accountData.tableArn]),
        // Segment Membership Changed, on the stack's bus only.
        allow(['events:PutEvents'], [segmentEventBus.eventBusArn]),
        // The event source mapping polls with the function's role; SendMessage is the run's own
        // message to go on after its time budget.
        allow(
          ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:SendMessage'],
          [refreshQueue.queueArn],
        ),
      ],
    });
    const refreshSource = new lambda.EventSourceMapping(this, 'RefreshApplierEventSource', {
      target: refreshApplier.function,
      eventSourceArn: refreshQueue.queueArn,
      // One refresh per invocation: the whole time budget is its own.
      batchSize: 1,
      reportBatchItemFailures: true,
      // Schedules that fall on the same minute do not all write to the Segments table at once.
      maxConcurrency: REFRESH_APPLIER_CONCURRENCY,
    });
    keepLogicalId(refreshSource, 'RefreshApplierEventSource');
    // Nothing consumes the refresh dead-letter queue: what waits there is what arrived.
    alarmAbove(
      this,
      'RefreshDeadLetterAlarm',
      queueMetric(refreshDeadLetterQueue, 'ApproximateNumberOfMessagesVisible', cloudwatch.Stats.MAXIMUM),
      0,
      'A refresh message reached the dead-letter queue (its refresh failed every run; the scheduler sends it again).',
      alarmTopic,
    );
    // A message older than the threshold waits behind more refreshes than expected, or nothing
    // consumes the queue.
    alarmAbove(
      this,
      'RefreshQueueAgeAlarm',
      queueMetric(refreshQueue, 'ApproximateAgeOfOldestMessage', cloudwatch.Stats.MAXIMUM),
      refreshQueueAgeThreshold,
      'The oldest refresh message has waited longer than expected; refreshes of dynamic segments are late.',
      alarmTopic,
    );

    // ---------------------------------------------------------------------------------------
    // HTTP API
    // ---------------------------------------------------------------------------------------
    const api = new Api(this, 'Http', {
      issuer: `https://cognito-idp.${Aws.REGION}.amazonaws.com/${identity.userPool.userPoolId}`,
      // One entry per mandator's app client, and the console's client when there is one.
      audience: [identity.exampleClient.userPoolClientId, consoleClientId],
      functions: {
        CreateJobFunction: createJob.function,
        GetResultFunction: getResult.function,
        JobsApiFunction: jobsApi.function,
        SegmentsApiFunction: segmentsApi.function,
        DataApiFunction: dataApi.function,
        ConsoleFunction: consoleFunction.function,
      },
      domainName: apiDomainName.valueAsString,
      certificateArn: apiCertificateArn.valueAsString,
      hasCustomDomain,
    });
    // The service answers bad input with 4xx; a 5xx is a function error, a timeout or an
    // integration failure, none of which a bank can fix by retrying differently.
    alarmAbove(
      this,
      'ApiServerErrorsAlarm',
      new cloudwatch.Metric({
        namespace: 'AWS/ApiGateway',
        metricName: '5xx',
        dimensionsMap: { ApiId: api.httpApi.apiId },
        period: Duration.minutes(5),
        statistic: cloudwatch.Stats.SUM,
      }),
      api5xxThreshold,
      'The HTTP API answered 5xx responses.',
      alarmTopic,
    );
    for (const [name, table] of [['AccountData', accountData], ['Jobs', jobs], ['Segments', segments]] as const) {
      alarmAbove(
        this,
        `${name}TableThrottlesAlarm`,
        tableThrottles(table),
        tableThrottlesThreshold,
        `DynamoDB throttled reads or writes on the ${name} table.`,
        alarmTopic,
      );
    }

    // ---------------------------------------------------------------------------------------
    // One page of the stack's health (docs/operations.md).
    // ---------------------------------------------------------------------------------------
    const labelled = (...functions: ServiceFunction[]) =>
      functions.map((f) => [f.node.id.replace(/Function$/, ''), f.function] as const);
    const dashboard = operationsDashboard(this, {
      apiId: api.httpApi.apiId,
      functions: [
        ...labelled(
          createJob,
          getResult,
          jobsApi,
          segmentsApi,
          dataApi,
          consoleFunction,
          importWorker,
          deadLetterHandler,
          sweeper,
          refreshScheduler,
          refreshApplier,
        ),
        ...workers.map((w, i) => [`${SEGMENT_TYPES[i].pascalName}Worker`, w.function] as const),
      ],
      queues: [
        ...workers.map((w, i) => [SEGMENT_TYPES[i].pascalName, w.queue] as const),
        ['Import', importQueue],
        ['Refresh', refreshQueue],
      ],
      deadLetterQueues: [
        ...workers.map((w, i) => [SEGMENT_TYPES[i].pascalName, w.deadLetterQueue] as const),
        ['Import', importDeadLetterQueue],
      ],
      unconsumedDeadLetterQueues: [
        ['Import', importDeadLetterQueue],
        ['Refresh', refreshDeadLetterQueue],
      ],
      tables: [
        ['AccountData', accountData],
        ['Jobs', jobs],
        ['Segments', segments],
      ],
    });

    // ---------------------------------------------------------------------------------------
    // Outputs: the names and descriptions of the SAM template's.
    // ---------------------------------------------------------------------------------------
    const output = (id: string, description: string, value: string, condition?: CfnCondition) => {
      const created = new CfnOutput(this, id, { description, value });
      created.condition = condition;
    };
    output('ApiUrl', 'Base URL of the API', api.url);
    output(
      'ConsoleUrl',
      'The web console (Cognito sign-in on the custom domain; without one, token sign-in)',
      Fn.conditionIf(
        hasCustomDomain.logicalId,
        `https://${apiDomainName.valueAsString}/console/`,
        `${api.url}/console/`,
      ).toString(),
    );
    output(
      'ApiDomainTarget',
      'The name ApiDomainName must point to (CNAME, or a Route 53 alias)',
      api.domain.attrRegionalDomainName,
      hasCustomDomain,
    );
    output(
      'ConsoleClientId',
      "App client of the console's hosted-UI sign-in",
      identity.consoleClient.userPoolClientId,
      hasCustomDomain,
    );
    output(
      'TokenUrl',
      'Cognito token endpoint (client-credentials flow)',
      `${identity.domain.baseUrl()}/oauth2/token`,
    );
    output(
      'ExampleClientId',
      'Client id of the example app client; also the mandator id of its tokens',
      identity.exampleClient.userPoolClientId,
    );
    output(
      'UserPoolId',
      "User pool of the mandators' app clients (its client secrets are read there)",
      identity.userPool.userPoolId,
    );
    output('AccountDataTableName', 'AccountData table (ACCOUNT_DATA_TABLE for segments import --aws)', accountData.tableName);
    output('JobsTableName', 'Jobs table (JOBS_TABLE)', jobs.tableName);
    output('SegmentsTableName', 'Segments table of the management API (SEGMENTS_TABLE)', segments.tableName);
    output('ResultsBucketName', 'Results bucket (RESULTS_BUCKET)', results.bucketName);
    output('ImportShards', 'The --shards value to import account data with', shardCount.valueAsString);
    output(
      'ImportQueueUrl',
      'Queue of started imports (IMPORT_QUEUE_URL for segments serve --aws)',
      importQueue.queueUrl,
    );
    output(
      'SegmentEventBusName',
      'EventBridge bus of the segment events (EVENT_BUS_NAME); subscribe with rules on it',
      segmentEventBus.eventBusName,
    );
    output(
      'SegmentEventBusArn',
      "ARN of the segment events' bus (for rules and cross-account targets)",
      segmentEventBus.eventBusArn,
    );
    output('RefreshQueueUrl', 'Queue of the refreshes the refresh applier runs (REFRESH_QUEUE_URL)', refreshQueue.queueUrl);
    output('AlarmTopicArn', 'SNS topic of every alarm of the stack (docs/operations.md)', alarmTopic.topicArn);
    output(
      'DashboardUrl',
      "The stack's CloudWatch dashboard",
      `https://${Aws.REGION}.console.${Aws.URL_SUFFIX}/cloudwatch/home?region=${Aws.REGION}#dashboards:name=${dashboard.ref}`,
    );
  }
}
