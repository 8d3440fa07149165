import * as fs from 'node:fs';
import * as path from 'node:path';
import { Duration, RemovalPolicy, Size } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { alarmAbove, functionMetric } from './alarms';
import { keepLogicalId } from './logical-ids';

/** What every function of the stack shares (the `Globals.Function` of the SAM template). */
export interface FunctionDefaults {
  /** The directory infra/build.sh fills: `<codeDirectory>/<binary>/bootstrap`. */
  readonly codeDirectory: string;
  /** The application log level (the LogLevel parameter). */
  readonly logLevel: string;
  /** Days a function's log group keeps its events (the LogRetentionDays parameter). */
  readonly logRetentionDays: number;
  /** The variables every function gets (table and bucket names). */
  readonly environment: Record<string, string>;
  /** Where every function's alarms notify, and what they tolerate within five minutes. */
  readonly alarms: {
    readonly topic: sns.ITopic;
    readonly errorsThreshold: number;
    readonly throttlesThreshold: number;
  };
}

export interface ServiceFunctionProps {
  readonly defaults: FunctionDefaults;
  /** The cargo package: its binary is the function's `bootstrap`. */
  readonly binary: string;
  readonly description: string;
  readonly memorySize: number;
  readonly timeout: Duration;
  readonly ephemeralStorage?: Size;
  /** The function's own variables, beside the shared ones. */
  readonly environment?: Record<string, string>;
  /** Everything the function may do besides writing logs and traces: nothing more. */
  readonly statements: iam.PolicyStatement[];
}

/**
 * One Rust function of the workspace on `provided.al2023`/arm64, built by infra/build.sh (the
 * binary `bootstrap` of a cargo-lambda build), with JSON logs into a log group of its own that
 * expires, X-Ray tracing, exactly the grants it is given, and alarms on failed and on throttled
 * invocations. Its construct id (`CreateJobFunction`) is also its logical id, the one the SAM
 * template gives it, and names its log group and alarms as the template does
 * (`CreateJobFunctionLogGroup`, `CreateJobErrorsAlarm`, `CreateJobThrottlesAlarm`).
 */
export class ServiceFunction extends Construct {
  readonly function: lambda.Function;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: ServiceFunctionProps) {
    super(scope, id);
    const { defaults } = props;

    if (!id.endsWith('Function')) {
      throw new Error(`${id}: a function's id ends in Function, as its logical id in the SAM template does`);
    }
    const name = id.slice(0, -'Function'.length);

    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      // Logs carry mandator ids and request ids, not account data (docs/operations.md): they go
      // with the stack. The name is left to CloudFormation, the retention is the parameter's
      // (which the construct's enum cannot take).
      removalPolicy: RemovalPolicy.DESTROY,
    });
    (this.logGroup.node.defaultChild as logs.CfnLogGroup).retentionInDays = defaults.logRetentionDays;
    keepLogicalId(this.logGroup, `${id}LogGroup`);

    this.function = new lambda.Function(this, 'Function', {
      description: props.description,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.ARM_64,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(binaryDirectory(defaults.codeDirectory, props.binary)),
      memorySize: props.memorySize,
      timeout: props.timeout,
      ephemeralStorageSize: props.ephemeralStorage,
      tracing: lambda.Tracing.ACTIVE,
      loggingFormat: lambda.LoggingFormat.JSON,
      // INFO keeps the platform's START, END and REPORT lines (duration, memory used, init
      // duration); the application's own level is the parameter's.
      systemLogLevelV2: lambda.SystemLogLevel.INFO,
      logGroup: this.logGroup,
      environment: { ...defaults.environment, ...props.environment },
    });
    // The level is a parameter; the construct's enum cannot take one.
    (this.function.node.defaultChild as lambda.CfnFunction).addPropertyOverride(
      'LoggingConfig.ApplicationLogLevel',
      defaults.logLevel,
    );
    for (const statement of props.statements) {
      this.function.addToRolePolicy(statement);
    }
    keepLogicalId(this.function, id);

    // Handlers answer every request and message themselves: an error is an invocation that
    // crashed, timed out or could not start, a defect or an outage.
    const { alarms } = defaults;
    alarmAbove(
      this,
      `${name}ErrorsAlarm`,
      functionMetric(this.function, 'Errors'),
      alarms.errorsThreshold,
      `The ${name} function failed invocations (crash, timeout or configuration error).`,
      alarms.topic,
    );
    // A throttled API invocation is a 429/503 to a bank, a throttled worker delays a job.
    alarmAbove(
      this,
      `${name}ThrottlesAlarm`,
      functionMetric(this.function, 'Throttles'),
      alarms.throttlesThreshold,
      `The ${name} function was throttled (concurrency exhausted).`,
      alarms.topic,
    );
  }
}

/**
 * The directory holding the function's `bootstrap`. Checked here so that a missing build names
 * the step that makes it rather than failing deep inside the asset staging.
 */
function binaryDirectory(codeDirectory: string, binary: string): string {
  const directory = path.resolve(codeDirectory, binary);
  if (!fs.existsSync(path.join(directory, 'bootstrap'))) {
    throw new Error(
      `${directory}/bootstrap is missing: build the functions with infra/build.sh, ` +
        'or point the context value lambdaDir at the directory that holds <function>/bootstrap',
    );
  }
  return directory;
}

/** An Allow statement: the grants are written out action by action, as the SAM template does. */
export function allow(actions: string[], resources: string[]): iam.PolicyStatement {
  return new iam.PolicyStatement({ effect: iam.Effect.ALLOW, actions, resources });
}
