// What the service is made of, independent of how it is deployed: the segment types, the OAuth
// scopes of the `segments` resource server and the routes of the HTTP API. The stack turns these
// into resources; the Rust code (segments-core) and infra/template.yaml name the same things.

/** The identifier of the Cognito resource server: every scope is `segments/<name>`. */
export const RESOURCE_SERVER = 'segments';

/** A segment type as the API names it (`highBalance`), and the names derived from it. */
export class SegmentType {
  /** `HighBalance`: the prefix of the type's logical ids (`HighBalanceQueue`, …). */
  readonly pascalName: string;
  /** `worker-high-balance`: the function crate, binary and build directory of its worker. */
  readonly workerBinary: string;
  /** `HIGH_BALANCE_QUEUE_URL`: the variable create-job reads the type's queue from. */
  readonly queueUrlVariable: string;
  /** `segments/highBalance`: the scope that starts and reads jobs of the type. */
  readonly scope: string;

  constructor(readonly name: string) {
    const words = name.split(/(?=[A-Z])/);
    this.pascalName = name.charAt(0).toUpperCase() + name.slice(1);
    this.workerBinary = `worker-${words.map((w) => w.toLowerCase()).join('-')}`;
    this.queueUrlVariable = `${words.map((w) => w.toUpperCase()).join('_')}_QUEUE_URL`;
    this.scope = `${RESOURCE_SERVER}/${name}`;
  }
}

export const SEGMENT_TYPES: readonly SegmentType[] = [
  'highBalance',
  'lowBalance',
  'incomeSpendingSummary',
  'insuranceSpending',
  'financialBreakdown',
].map((name) => new SegmentType(name));

/** The scopes besides one per segment type, with the description the resource server shows. */
export const SERVICE_SCOPES: ReadonlyArray<{ name: string; description: string }> = [
  { name: 'definitions.read', description: 'List and view segment definitions' },
  { name: 'definitions.write', description: 'Create, edit and delete segment definitions' },
  { name: 'usage.read', description: 'Read metered usage per segment type' },
  { name: 'data.read', description: "Read a user's account data" },
  { name: 'data.write', description: "Replace, patch and erase a user's account data" },
];

const DEFINITIONS_READ = `${RESOURCE_SERVER}/definitions.read`;
const DEFINITIONS_WRITE = `${RESOURCE_SERVER}/definitions.write`;
const USAGE_READ = `${RESOURCE_SERVER}/usage.read`;
const DATA_READ = `${RESOURCE_SERVER}/data.read`;
const DATA_WRITE = `${RESOURCE_SERVER}/data.write`;

/** Every scope of the service, as an app client asks for it (`segments/highBalance`, …). */
export const ALL_SCOPES: readonly string[] = [
  ...SEGMENT_TYPES.map((t) => t.scope),
  ...SERVICE_SCOPES.map((s) => `${RESOURCE_SERVER}/${s.name}`),
];

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/**
 * A route of the HTTP API. `scope` is the one scope API Gateway requires besides a valid token;
 * without one any valid token passes (the function answers 400 for an unknown segment type).
 * `public` routes have no authorizer at all (the console's static files).
 */
export interface Route {
  readonly method: Method;
  readonly path: string;
  readonly scope?: string;
  readonly public?: true;
}

/** The API functions, by the logical id they keep in both templates, with their routes. */
export type ApiFunction = 'CreateJobFunction' | 'GetResultFunction' | 'JobsApiFunction' | 'SegmentsApiFunction' | 'DataApiFunction' | 'ConsoleFunction';

/**
 * Scopes in API Gateway are static per route, so each segment type has its own routes carrying
 * its scope; a request for any other type reaches the catch-all `{segmentType}` route, which
 * still requires a valid token.
 */
function perSegmentType(method: Method, suffix: string): Route[] {
  return [
    ...SEGMENT_TYPES.map((t) => ({ method, path: `/segments/${t.name}${suffix}`, scope: t.scope })),
    { method, path: `/segments/{segmentType}${suffix}` },
  ];
}

/** The segments management routes under an organization, or a ledger of one. */
function definitionRoutes(prefix: string): Route[] {
  const segment = `${prefix}/segments/{segmentId}`;
  const routes: Array<[Method, string]> = [
    ['POST', `${prefix}/segments`],
    ['GET', `${prefix}/segments`],
    ['HEAD', `${prefix}/segments/metrics/count`],
    ['GET', segment],
    ['PATCH', segment],
    ['DELETE', segment],
    ['GET', `${segment}/accounts`],
    ['PUT', `${segment}/accounts`],
    ['POST', `${segment}/refresh`],
    // The refreshes of a dynamic segment, newest first, and the accounts each one moved.
    ['GET', `${segment}/refreshes`],
    ['GET', `${segment}/refreshes/{refreshId}`],
    ['GET', `${segment}/refreshes/{refreshId}/changes`],
  ];
  // Reading needs definitions.read, every change definitions.write.
  return routes.map(([method, path]) => ({
    method,
    path,
    scope: method === 'GET' || method === 'HEAD' ? DEFINITIONS_READ : DEFINITIONS_WRITE,
  }));
}

const ORGANIZATION = '/v1/organizations/{organizationId}';

export const ROUTES: Readonly<Record<ApiFunction, readonly Route[]>> = {
  CreateJobFunction: perSegmentType('POST', ''),
  GetResultFunction: perSegmentType('GET', '/{jobId}'),
  JobsApiFunction: [
    ...perSegmentType('GET', ''),
    ...perSegmentType('GET', '/{jobId}/export'),
    { method: 'GET', path: '/usage', scope: USAGE_READ },
  ],
  SegmentsApiFunction: [
    ...definitionRoutes(ORGANIZATION),
    ...definitionRoutes(`${ORGANIZATION}/ledgers/{ledgerId}`),
    { method: 'GET', path: `${ORGANIZATION}/accounts/{accountId}/segments`, scope: DEFINITIONS_READ },
  ],
  DataApiFunction: [
    { method: 'PUT', path: '/data/users/{userId}', scope: DATA_WRITE },
    { method: 'PATCH', path: '/data/users/{userId}', scope: DATA_WRITE },
    { method: 'GET', path: '/data/users/{userId}', scope: DATA_READ },
    { method: 'DELETE', path: '/data/users/{userId}', scope: DATA_WRITE },
    { method: 'POST', path: '/data/imports', scope: DATA_WRITE },
    { method: 'POST', path: '/data/imports/{importId}/start', scope: DATA_WRITE },
    { method: 'GET', path: '/data/imports/{importId}', scope: DATA_READ },
  ],
  // The console's files carry no data and need no token: everything it shows comes from the API
  // with the signed-in user's token.
  ConsoleFunction: [
    { method: 'GET', path: '/console', public: true },
    { method: 'GET', path: '/console/{proxy+}', public: true },
  ],
};
