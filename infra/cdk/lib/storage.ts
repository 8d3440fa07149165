import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { keepLogicalId } from './logical-ids';

/** Where results live in the bucket (segments_aws::provision::RESULTS_PREFIX). */
export const RESULTS_PREFIX = 'results/';
/** Where uploaded import files live (segments_core::imports::IMPORTS_PREFIX). */
export const IMPORTS_PREFIX = 'imports/';
/** Results and import files expire after this many days (docs/architecture.md, docs/storage.md). */
const RETENTION_DAYS = 14;
/** The attribute DynamoDB's TTL deletes expired jobs by (segments_aws::JOBS_TTL_ATTRIBUTE). */
const JOBS_TTL_ATTRIBUTE = 'expiresAt';
/**
 * The sweeper's index of live jobs by progress on the Jobs table (segments_aws::PROGRESS_INDEX and
 * provision's progress_index()): keyed by the live markers' `sweepPartition` and `progressAt`,
 * projecting the two counts of a job's progress watch.
 */
export const PROGRESS_INDEX = 'ProgressIndex';
/**
 * The refresh scheduler's index of what is due on the Segments table (segments_aws and
 * provision): unfinished refreshes by their next look and live scheduled segments by their next
 * run, keyed `duePartition`/`dueAt` (epoch seconds), keys only.
 */
export const DUE_INDEX = 'DueIndex';
/**
 * AWS guidance for SQS event sources: a queue's visibility timeout at least 6 x its consumer's
 * timeout, so a message is not delivered again while an invocation still works on it.
 */
export const SQS_EVENT_SOURCE_VISIBILITY_FACTOR = 6;

/** The tables and the results bucket (docs/storage.md). */
export class Storage extends Construct {
  /** Every mandator's account data: the source of truth. */
  readonly accountData: dynamodb.Table;
  /** Jobs (which expire), usage records and the mandators' callback signing secrets. */
  readonly jobs: dynamodb.Table;
  /** Segment definitions, their members, their refreshes and change feeds. */
  readonly segments: dynamodb.Table;
  readonly results: s3.Bucket;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    // All three hold customer data: kept when the stack is deleted or a table replaced.
    this.accountData = table(this, 'AccountDataTable');
    // TTL deletes expired jobs within days, not at once: the code checks expiresAt itself.
    this.jobs = table(this, 'JobsTable', JOBS_TTL_ATTRIBUTE);
    // Only live markers carry its keys, so the index is sparse: the sweeper's Query of stalled
    // jobs reads live jobs and nothing else (docs/jobs.md, "No job hangs").
    this.jobs.addGlobalSecondaryIndex({
      indexName: PROGRESS_INDEX,
      partitionKey: { name: 'sweepPartition', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'progressAt', type: dynamodb.AttributeType.NUMBER },
      projectionType: dynamodb.ProjectionType.INCLUDE,
      nonKeyAttributes: ['shardsSeen', 'idleSweeps'],
    });
    this.segments = table(this, 'SegmentsTable');
    // Only unfinished refreshes and live scheduled segments carry its keys: a due Query never
    // reads a finished refresh or a segment without a schedule. Keys only, as the scheduler reads
    // each item again.
    this.segments.addGlobalSecondaryIndex({
      indexName: DUE_INDEX,
      partitionKey: { name: 'duePartition', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'dueAt', type: dynamodb.AttributeType.NUMBER },
      projectionType: dynamodb.ProjectionType.KEYS_ONLY,
    });

    this.results = new s3.Bucket(this, 'ResultsBucket', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      // The bucket policy denies every request without TLS.
      enforceSSL: true,
      // Results are derived and expire anyway; a bucket that still holds objects is not deleted
      // with the stack (CloudFormation refuses), as with the SAM template.
      removalPolicy: RemovalPolicy.DESTROY,
      // The console downloads an export by following the API's 302 to a presigned URL with
      // fetch, a cross-origin request. The presigned URL is the credential, so any origin may
      // read with it; the bucket cannot name the API's origin without a cycle. Reading only.
      cors: [
        {
          id: 'console-downloads',
          allowedOrigins: ['*'],
          allowedMethods: [s3.HttpMethods.GET, s3.HttpMethods.HEAD],
          maxAge: 3600,
        },
      ],
      lifecycleRules: [
        // S3 expires at the next midnight UTC after the days, so the code checks the job's
        // expiresAt itself.
        expiring('expire-results', RESULTS_PREFIX),
        // Uploaded import files live as long as their import's record.
        expiring('expire-imports', IMPORTS_PREFIX),
      ],
    });
    keepLogicalId(this.results, 'ResultsBucket');
    // The policy enforceSSL wrote: the only statement denies every request without TLS.
    if (!this.results.policy) {
      throw new Error('enforceSSL gives the results bucket a policy');
    }
    keepLogicalId(this.results.policy, 'ResultsBucketPolicy');
  }
}

/** A pay-per-request table keyed `pk`/`sk`, encrypted, with point-in-time recovery, retained. */
function table(scope: Construct, id: string, timeToLiveAttribute?: string): dynamodb.Table {
  const created = new dynamodb.Table(scope, id, {
    partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
    sortKey: { name: 'sk', type: dynamodb.AttributeType.STRING },
    billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
    encryption: dynamodb.TableEncryption.AWS_MANAGED,
    pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
    timeToLiveAttribute,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  keepLogicalId(created, id);
  return created;
}

function expiring(id: string, prefix: string): s3.LifecycleRule {
  return {
    id,
    prefix,
    expiration: Duration.days(RETENTION_DAYS),
    abortIncompleteMultipartUploadAfter: Duration.days(1),
  };
}
