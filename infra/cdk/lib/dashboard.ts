import { Aws, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

/** The namespace of the service's own metrics (embedded metric format in the functions' logs). */
const NAMESPACE = 'FinancialSegments';
/** Every graph shows five-minute points, as the alarms look at five minutes at a time. */
const PERIOD = 300;

export interface OperationsDashboardProps {
  /** The HTTP API's id (the `ApiId` dimension). */
  readonly apiId: string;
  /** Every function with its label on the graphs (`CreateJob` for `CreateJobFunction`). */
  readonly functions: ReadonlyArray<readonly [label: string, fn: lambda.IFunction]>;
  /** The work queues and the import queue, labelled `<label> queue`. */
  readonly queues: ReadonlyArray<readonly [label: string, queue: sqs.IQueue]>;
  /** The dead-letter queues, labelled `<label> dead letters`. */
  readonly deadLetterQueues: ReadonlyArray<readonly [label: string, queue: sqs.IQueue]>;
  /**
   * The dead-letter queues nothing consumes (imports, refreshes): what waits there is what
   * arrived, so their visible messages are drawn, labelled `<label> dead letters`.
   */
  readonly unconsumedDeadLetterQueues: ReadonlyArray<readonly [label: string, queue: sqs.IQueue]>;
  /** The tables, labelled `<label> <metric>`. */
  readonly tables: ReadonlyArray<readonly [label: string, table: dynamodb.ITable]>;
}

/** A row of a metric widget: namespace, metric name, dimension name/value pairs, then options. */
type MetricRow = Array<string | Record<string, string>>;

/**
 * The stack's operations dashboard (docs/operations.md), logical id `Dashboard` as in
 * infra/template.yaml: the service's own metrics per segment type, then the API, the functions,
 * the queues and the tables of this stack.
 *
 * Written as a `CfnDashboard` whose body is the widget JSON itself rather than
 * `cloudwatch.Dashboard` widgets: the SAM template's body is that JSON, and the L2 widgets add
 * their own properties (yAxis, legend, stacked, one metric id per row) and cannot express the
 * SEARCH expressions without inventing metrics for `usingMetrics`. Kept as data, the body reads
 * like the template's and tests/it/cdk.rs can compare the two widget for widget. The names come
 * from the stack's own resources; `Stack.toJsonString` turns them into `Fn::Join` references.
 */
export function operationsDashboard(scope: Construct, props: OperationsDashboardProps): cloudwatch.CfnDashboard {
  const heading = (markdown: string) => ({ type: 'text', width: 24, height: 1, properties: { markdown } });
  const graph = (width: number, title: string, stat: string, metrics: MetricRow[]) => ({
    type: 'metric',
    width,
    height: 6,
    properties: { title, region: Aws.REGION, stat, period: PERIOD, view: 'timeSeries', metrics },
  });

  // The job metrics carry the SegmentType dimension: one SEARCH draws a line per segment type,
  // including one added later, without listing the types here.
  const jobMetrics: Array<[title: string, metricName: string, stat: string]> = [
    ['Jobs created', 'JobsCreated', 'Sum'],
    ['Jobs completed', 'JobsCompleted', 'Sum'],
    ['Jobs failed', 'JobsFailed', 'Sum'],
    ['Job duration p50 (ms)', 'JobDuration', 'p50'],
    ['Job duration p99 (ms)', 'JobDuration', 'p99'],
    ['Shard duration p99 (ms)', 'ShardDuration', 'p99'],
    ['Items read', 'ItemsRead', 'Sum'],
    ['Bytes read', 'BytesRead', 'Sum'],
  ];
  const jobGraphs = jobMetrics.map(([title, metricName, stat], i) =>
    graph(8, title, stat, [
      [
        {
          expression: `SEARCH('{${NAMESPACE},SegmentType} MetricName="${metricName}"', '${stat}', ${PERIOD})`,
          id: `e${i + 1}`,
        },
      ],
    ]),
  );
  // Callbacks, imports, refreshes and events have no dimension.
  const serviceMetrics = (...names: string[]): MetricRow[] => names.map((name) => [NAMESPACE, name]);

  const api = (metricName: string, stat?: string): MetricRow => [
    'AWS/ApiGateway',
    metricName,
    'ApiId',
    props.apiId,
    ...(stat ? [{ stat }] : []),
  ];
  const perFunction = (metricName: string): MetricRow[] =>
    props.functions.map(([label, fn]) => ['AWS/Lambda', metricName, 'FunctionName', fn.functionName, { label }]);
  const perQueue = (
    queues: OperationsDashboardProps['queues'],
    suffix: string,
    metricName: string,
  ): MetricRow[] =>
    queues.map(([label, queue]) => ['AWS/SQS', metricName, 'QueueName', queue.queueName, { label: `${label} ${suffix}` }]);
  // Reads and writes of each table side by side.
  const perTable = (...metricNames: string[]): MetricRow[] =>
    props.tables.flatMap(([label, table]) =>
      metricNames.map((metricName): MetricRow => [
        'AWS/DynamoDB',
        metricName,
        'TableName',
        table.tableName,
        { label: `${label} ${metricName}` },
      ]),
    );

  const widgets = [
    heading(`## Jobs per segment type (${NAMESPACE})`),
    ...jobGraphs,
    heading('## Callbacks and imports'),
    graph(8, 'Callbacks', 'Sum', serviceMetrics('CallbacksDelivered', 'CallbacksFailed')),
    graph(8, 'Imports', 'Sum', serviceMetrics('ImportsCompleted', 'ImportsFailed')),
    graph(8, 'Imported users', 'Sum', serviceMetrics('ImportedUsers')),
    heading('## Refreshes and segment events'),
    graph(8, 'Refreshes', 'Sum', serviceMetrics('RefreshesApplied', 'RefreshesFailed')),
    graph(8, 'Membership changes', 'Sum', serviceMetrics('AccountsEntered', 'AccountsLeft')),
    graph(8, 'Segment events', 'Sum', serviceMetrics('EventsPublished', 'EventsFailed')),
    heading('## HTTP API'),
    graph(12, 'Requests, 4xx, 5xx', 'Sum', [api('Count'), api('4xx'), api('5xx')]),
    graph(12, 'Latency (ms)', 'p99', [api('Latency', 'p50'), api('Latency', 'p99'), api('IntegrationLatency', 'p99')]),
    heading('## Functions'),
    graph(8, 'Function errors', 'Sum', perFunction('Errors')),
    graph(8, 'Function throttles', 'Sum', perFunction('Throttles')),
    graph(8, 'Function duration p99 (ms)', 'p99', perFunction('Duration')),
    heading('## Queues'),
    graph(8, 'Queue depth (visible messages)', 'Maximum', perQueue(props.queues, 'queue', 'ApproximateNumberOfMessagesVisible')),
    graph(8, 'Age of oldest message (s)', 'Maximum', perQueue(props.queues, 'queue', 'ApproximateAgeOfOldestMessage')),
    graph(8, 'Dead letters received', 'Sum', perQueue(props.deadLetterQueues, 'dead letters', 'NumberOfMessagesReceived')),
    graph(
      8,
      'Dead letters waiting (no consumer)',
      'Maximum',
      perQueue(props.unconsumedDeadLetterQueues, 'dead letters', 'ApproximateNumberOfMessagesVisible'),
    ),
    heading('## DynamoDB'),
    graph(12, 'Consumed capacity units', 'Sum', perTable('ConsumedReadCapacityUnits', 'ConsumedWriteCapacityUnits')),
    graph(12, 'Throttle events', 'Sum', perTable('ReadThrottleEvents', 'WriteThrottleEvents')),
  ];

  const dashboard = new cloudwatch.CfnDashboard(scope, 'Dashboard', {
    dashboardName: `${Aws.STACK_NAME}-operations`,
    dashboardBody: Stack.of(scope).toJsonString({ widgets }),
  });
  dashboard.overrideLogicalId('Dashboard');
  return dashboard;
}
