import { Aws, CfnCondition, Duration, Fn, RemovalPolicy } from 'aws-cdk-lib';
import * as cognito from 'aws-cdk-lib/aws-cognito';
import { Construct } from 'constructs';
import { keepLogicalId } from './logical-ids';
import { RESOURCE_SERVER, SEGMENT_TYPES, SERVICE_SCOPES } from './service';

export interface IdentityProps {
  /** The deployment's name (the Stage parameter): part of the hosted UI's domain. */
  readonly stage: string;
  /** The custom domain of the API and the console (the ApiDomainName parameter). */
  readonly apiDomainName: string;
  /** True when the custom domain is configured: only then does the console's client exist. */
  readonly hasCustomDomain: CfnCondition;
}

/**
 * One user pool, the `segments` resource server with every scope of the service, an example
 * machine client (client-credentials flow) and, with a custom domain, the web console's client.
 * The mandator is the token's `client_id` claim, so every bank gets its own app client; add each
 * client id to the authorizer's audience.
 */
export class Identity extends Construct {
  readonly userPool: cognito.UserPool;
  readonly domain: cognito.UserPoolDomain;
  readonly exampleClient: cognito.UserPoolClient;
  /** Exists only under the hasCustomDomain condition: refer to it through `Fn.conditionIf`. */
  readonly consoleClient: cognito.UserPoolClient;

  constructor(scope: Construct, id: string, props: IdentityProps) {
    super(scope, id);

    this.userPool = new cognito.UserPool(this, 'UserPool', {
      userPoolName: `${Aws.STACK_NAME}-mandators`,
      selfSignUpEnabled: false,
      // Every mandator's app client and every console user live here: a deleted or replaced
      // stack must not take them along, and the pool refuses deletion until protection is off.
      deletionProtection: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    keepLogicalId(this.userPool, 'UserPool');

    this.domain = this.userPool.addDomain('UserPoolDomain', {
      // Domain prefixes are global per region: the account id keeps this one unique.
      cognitoDomain: { domainPrefix: Fn.join('-', ['segments', props.stage, Aws.ACCOUNT_ID]) },
    });
    keepLogicalId(this.domain, 'UserPoolDomain');

    const serverScopes = [
      ...SEGMENT_TYPES.map((t) => ({ name: t.name, description: `Start and read ${t.name} jobs` })),
      ...SERVICE_SCOPES,
    ].map(({ name, description }) => new cognito.ResourceServerScope({ scopeName: name, scopeDescription: description }));
    const server = this.userPool.addResourceServer('SegmentsResourceServer', {
      identifier: RESOURCE_SERVER,
      userPoolResourceServerName: 'Financial Segments',
      scopes: serverScopes,
    });
    keepLogicalId(server, 'SegmentsResourceServer');
    // The scopes as clients ask for them (`segments/<name>`); naming the server makes each client
    // depend on it, so the scopes exist before a client asks for them.
    const scopes = serverScopes.map((scope) => cognito.OAuthScope.resourceServer(server, scope));

    this.exampleClient = this.userPool.addClient('ExampleClient', {
      userPoolClientName: `${Aws.STACK_NAME}-example-bank`,
      generateSecret: true,
      oAuth: { flows: { clientCredentials: true }, scopes },
      supportedIdentityProviders: [cognito.UserPoolClientIdentityProvider.COGNITO],
      accessTokenValidity: Duration.minutes(60),
      preventUserExistenceErrors: true,
      enableTokenRevocation: true,
    });
    keepLogicalId(this.exampleClient, 'ExampleClient');

    // The web console's app client (docs/security.md): people sign in through the hosted UI with
    // the authorization code flow and PKCE. Only with a custom domain, which its callback URL
    // names: the execute-api URL cannot be named here without a cycle (API -> client -> API).
    const consoleUrl = `https://${props.apiDomainName}/console/`;
    this.consoleClient = this.userPool.addClient('ConsoleClient', {
      userPoolClientName: `${Aws.STACK_NAME}-console`,
      // A page in a browser cannot keep a secret: a public client, PKCE binds the code to the
      // browser that asked for it.
      generateSecret: false,
      oAuth: {
        flows: { authorizationCodeGrant: true },
        scopes: [cognito.OAuthScope.OPENID, ...scopes],
        // The code is only ever delivered to the console's own URL.
        callbackUrls: [consoleUrl],
        logoutUrls: [consoleUrl],
      },
      supportedIdentityProviders: [cognito.UserPoolClientIdentityProvider.COGNITO],
      // Tokens live in a browser: short-lived access and ID tokens, a refresh token for a
      // working day at most, and revocation enabled.
      accessTokenValidity: Duration.minutes(60),
      idTokenValidity: Duration.minutes(60),
      refreshTokenValidity: Duration.hours(12),
      preventUserExistenceErrors: true,
      enableTokenRevocation: true,
    });
    const consoleClient = this.consoleClient.node.defaultChild as cognito.CfnUserPoolClient;
    consoleClient.cfnOptions.condition = props.hasCustomDomain;
    // Passwords are entered in the hosted UI only, never handed to this client through the
    // Cognito API: it may only refresh its tokens. (The construct leaves the list out when no
    // flow is chosen, which would allow Cognito's defaults.)
    consoleClient.explicitAuthFlows = ['ALLOW_REFRESH_TOKEN_AUTH'];
    keepLogicalId(this.consoleClient, 'ConsoleClient');
  }
}
