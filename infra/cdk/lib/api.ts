import { Aws, CfnCondition, RemovalPolicy } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpJwtAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { keepLogicalId } from './logical-ids';
import { ApiFunction, ROUTES } from './service';

export interface ApiProps {
  /** The issuer of the tokens: the user pool's URL. */
  readonly issuer: string;
  /** The app clients whose tokens the API accepts (an entry may resolve to nothing). */
  readonly audience: string[];
  /** The function behind each group of routes. */
  readonly functions: Readonly<Record<ApiFunction, lambda.IFunction>>;
  /** The custom domain and its ACM certificate, used under `hasCustomDomain` only. */
  readonly domainName: string;
  readonly certificateArn: string;
  readonly hasCustomDomain: CfnCondition;
}

/**
 * The HTTP API: a Cognito JWT authorizer by default, one route per method and path with the one
 * scope it requires (the functions check the scope again), throttling, JSON access logs, and the
 * optional custom domain at the root of which the API and the console are served.
 */
export class Api extends Construct {
  readonly httpApi: apigw.HttpApi;
  readonly stage: apigw.HttpStage;
  /** Exists only under the hasCustomDomain condition. */
  readonly domain: apigw.CfnDomainName;

  constructor(scope: Construct, id: string, props: ApiProps) {
    super(scope, id);

    const authorizer = new HttpJwtAuthorizer('CognitoJwt', props.issuer, {
      authorizerName: 'CognitoJwt',
      identitySource: ['$request.header.Authorization'],
      // Client-credentials access tokens carry no `aud`: API Gateway then matches `client_id`
      // against this list. One entry per mandator's app client.
      jwtAudience: props.audience,
    });
    this.httpApi = new apigw.HttpApi(this, 'Api', {
      description: 'Financial Segments API',
      defaultAuthorizer: authorizer,
      // The stage below carries throttling and access logs, which the default stage cannot.
      createDefaultStage: false,
    });
    (this.httpApi.node.defaultChild as apigw.CfnApi).failOnWarnings = true;
    keepLogicalId(this.httpApi, 'Api');

    const accessLogs = new logs.LogGroup(this, 'ApiAccessLogs', {
      retention: logs.RetentionDays.THREE_MONTHS,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    keepLogicalId(accessLogs, 'ApiAccessLogs');
    this.stage = new apigw.HttpStage(this, 'DefaultStage', {
      httpApi: this.httpApi,
      stageName: '$default',
      autoDeploy: true,
      throttle: { burstLimit: 200, rateLimit: 100 },
      accessLogSettings: {
        destination: new apigw.LogGroupLogDestination(accessLogs),
        format: AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            ip: '$context.identity.sourceIp',
            requestTime: '$context.requestTime',
            routeKey: '$context.routeKey',
            status: '$context.status',
            responseLength: '$context.responseLength',
            integrationLatency: '$context.integrationLatency',
            authorizerError: '$context.authorizer.error',
          }),
        ),
      },
    });

    const none = new apigw.HttpNoneAuthorizer();
    for (const [name, routes] of Object.entries(ROUTES) as Array<[ApiFunction, (typeof ROUTES)[ApiFunction]]>) {
      // One integration per function; each route gets an invoke permission for its own path.
      const integration = new HttpLambdaIntegration(`${name}Integration`, props.functions[name]);
      for (const route of routes) {
        this.httpApi.addRoutes({
          path: route.path,
          methods: [apigw.HttpMethod[route.method]],
          integration,
          authorizer: route.public ? none : undefined,
          authorizationScopes: route.scope ? [route.scope] : undefined,
        });
      }
    }

    // Declared with L1 resources because the domain is conditional, which the L2 cannot be.
    this.domain = new apigw.CfnDomainName(this, 'ApiDomain', {
      domainName: props.domainName,
      domainNameConfigurations: [
        { certificateArn: props.certificateArn, endpointType: 'REGIONAL', securityPolicy: 'TLS_1_2' },
      ],
    });
    this.domain.cfnOptions.condition = props.hasCustomDomain;
    this.domain.overrideLogicalId('ApiDomain');
    // The whole API (and the console) at the root of the domain.
    const mapping = new apigw.CfnApiMapping(this, 'ApiDomainMapping', {
      domainName: this.domain.ref,
      apiId: this.httpApi.apiId,
      stage: this.stage.stageName,
    });
    mapping.cfnOptions.condition = props.hasCustomDomain;
    // The stage is named by a literal: without this the mapping could be created before it.
    mapping.node.addDependency(this.stage);
    mapping.overrideLogicalId('ApiDomainMapping');
  }

  /** The execute-api URL of the stage. */
  get url(): string {
    return `https://${this.httpApi.apiId}.execute-api.${Aws.REGION}.${Aws.URL_SUFFIX}`;
  }
}
