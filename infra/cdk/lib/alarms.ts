import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { keepLogicalId } from './logical-ids';

/** Every alarm looks at five minutes at a time (docs/operations.md). */
const PERIOD = Duration.minutes(5);

/**
 * An alarm that notifies the alarm topic as soon as `metric` is above `threshold` in one period;
 * no data (nothing happened) is fine. Its logical id is `id`, as in the SAM template.
 */
export function alarmAbove(
  scope: Construct,
  id: string,
  metric: cloudwatch.IMetric,
  threshold: number,
  description: string,
  topic: sns.ITopic,
): cloudwatch.Alarm {
  const alarm = new cloudwatch.Alarm(scope, id, {
    alarmDescription: description,
    metric,
    threshold,
    evaluationPeriods: 1,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });
  alarm.addAlarmAction(new SnsAction(topic));
  keepLogicalId(alarm, id);
  return alarm;
}

/** A Lambda metric of one function, summed per period (`Errors`, `Throttles`). */
export function functionMetric(fn: lambda.IFunction, metricName: string): cloudwatch.IMetric {
  return fn.metric(metricName, { period: PERIOD, statistic: cloudwatch.Stats.SUM });
}

/** An SQS metric of one queue per period. */
export function queueMetric(queue: sqs.IQueue, metricName: string, statistic: string): cloudwatch.IMetric {
  return queue.metric(metricName, { period: PERIOD, statistic });
}

/**
 * Throttled reads and writes of a table: on-demand tables throttle too (beyond twice their
 * previous peak, on a hot partition, at a limit), and the two metrics count every cause.
 */
export function tableThrottles(table: dynamodb.ITable): cloudwatch.IMetric {
  const events = (metricName: string) =>
    new cloudwatch.Metric({
      namespace: 'AWS/DynamoDB',
      metricName,
      dimensionsMap: { TableName: table.tableName },
      period: PERIOD,
      statistic: cloudwatch.Stats.SUM,
    });
  return new cloudwatch.MathExpression({
    expression: 'reads + writes',
    usingMetrics: { reads: events('ReadThrottleEvents'), writes: events('WriteThrottleEvents') },
    label: 'Throttled read and write events',
    period: PERIOD,
  });
}
