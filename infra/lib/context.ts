import { Aws } from 'aws-cdk-lib';
import type { Node } from 'constructs';

/** A Fargate endpoint from context: an endpoint registered with `POST /v1/endpoints`, served by ECS tasks. */
export interface FargateEndpointSpec {
  /** Short name for construct ids and log streams (lowercase letters, digits, dashes). */
  name: string;
  endpointId: string;
  /** Secrets Manager secret holding the endpoint secret (`fes_...`) as plain text, or as `secretJsonField` of a JSON secret. */
  secretArn: string;
  secretJsonField?: string;
  /** Fargate task size: 1024 CPU units = 1 vCPU; memory in MiB. */
  cpu: number;
  memory: number;
  maxTasks: number;
  /** Queued plus running tasks one container is expected to hold before another starts. */
  backlogPerTask: number;
  architecture: 'arm64' | 'x86_64';
  /** FERRY_POOL_SIZE for the agent: runtime processes per language; default one per vCPU. */
  poolSize?: number;
  /**
   * A prebuilt agent image (e.g. `<account>.dkr.ecr.<region>.amazonaws.com/ferry-worker:1.2.0`),
   * from the entry or the global `workerImage` context; none: built from workers/Dockerfile at deploy.
   */
  workerImage?: string;
}

/** Everything the app reads from `cdk.json` context or `-c key=value`. */
export interface FerryContext {
  stage: string;
  /** Keep tables and bucket on `cdk destroy` (and protect tables from deletion). */
  retainData: boolean;
  logRetentionDays: number;
  apiThrottle: { rateLimit: number; burstLimit: number };
  /** Browser origins allowed by CORS; empty (the default) turns CORS off. */
  corsAllowOrigins: string[];
  resultTtlDays: number;
  inlineLimit: number;
  maxAttempts: number;
  credentialsTtlSeconds: number;
  fargateEndpoints: FargateEndpointSpec[];
  /** An existing SNS topic that the alarms notify; none by default. */
  alarmTopicArn?: string;
}

// SQS: queue names are at most 80 characters; `ferry-<stage>-ep-<uuid>-dlq` leaves 30 for the stage.
const STAGE = /^[a-z][a-z0-9-]{0,19}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const SECRET_ARN = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$/;
// An image reference with an explicit tag or digest: [registry[:port]/]repository(:tag|@sha256:digest).
const IMAGE =
  /^(?:[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::\d{1,5})?\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$/;
/** A private ECR image: its execution role gets pull rights on that repository only. */
export const ECR_IMAGE = /^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?\/([^:@]+)(?::([^@]+)|@(sha256:[0-9a-f]{64}))$/;

/** A workerImage value, or why not. */
export function checkWorkerImage(value: unknown, where: string): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string' || value.length > 512 || !IMAGE.test(value)) {
    throw new Error(
      `${where} must be an image URI with a tag or digest, like 123456789012.dkr.ecr.us-east-1.amazonaws.com/ferry-worker:1.0.0 ` +
        `or ...@sha256:<64 hex>; got ${JSON.stringify(value).slice(0, 200)}`,
    );
  }
  return value;
}

/** `-c key=value` arrives as a string; cdk.json values arrive typed. Accept both. */
function parsed(raw: unknown): unknown {
  if (typeof raw !== 'string') return raw;
  const s = raw.trim();
  if (s === 'true' || s === 'false' || /^-?\d+(\.\d+)?$/.test(s) || s.startsWith('[') || s.startsWith('{')) {
    try {
      return JSON.parse(s);
    } catch {
      throw new Error(`context value is not valid JSON: ${s.slice(0, 200)}`);
    }
  }
  return s;
}

function bool(node: Node, key: string, dflt: boolean): boolean {
  const v = parsed(node.tryGetContext(key));
  if (v === undefined || v === '') return dflt;
  if (typeof v !== 'boolean') throw new Error(`context ${key} must be true or false`);
  return v;
}

function int(node: Node, key: string, dflt: number, min: number, max: number): number {
  const v = parsed(node.tryGetContext(key));
  if (v === undefined || v === '') return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw new Error(`context ${key} must be an integer from ${min} to ${max}`);
  return v;
}

// CloudWatch Logs accepts only these retention periods.
const RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];
function retention(days: number): number {
  if (!RETENTION_DAYS.includes(days)) throw new Error(`context logRetentionDays must be one of ${RETENTION_DAYS.join(', ')}`);
  return days;
}

function fargateEndpoint(raw: unknown, i: number, globalImage: string | undefined): FargateEndpointSpec {
  const e = (raw ?? {}) as Record<string, unknown>;
  const where = `fargateEndpoints[${i}]`;
  const need = (ok: boolean, what: string) => {
    if (!ok) throw new Error(`${where}: ${what}`);
  };
  need(typeof e.name === 'string' && /^[a-z0-9][a-z0-9-]{0,30}$/.test(e.name), 'name must be 1-31 lowercase letters, digits or dashes');
  need(typeof e.endpointId === 'string' && UUID.test(e.endpointId), 'endpointId must be the endpoint id returned by POST /v1/endpoints');
  need(typeof e.secretArn === 'string' && SECRET_ARN.test(e.secretArn), 'secretArn must be a Secrets Manager secret ARN');
  const num = (k: string, d: number) => (e[k] === undefined ? d : Number(e[k]));
  const spec: FargateEndpointSpec = {
    name: e.name as string,
    endpointId: e.endpointId as string,
    secretArn: e.secretArn as string,
    secretJsonField: typeof e.secretJsonField === 'string' ? e.secretJsonField : undefined,
    cpu: num('cpu', 1024),
    memory: num('memory', 2048),
    maxTasks: num('maxTasks', 4),
    backlogPerTask: num('backlogPerTask', 8),
    architecture: (e.architecture as FargateEndpointSpec['architecture']) ?? 'arm64',
    poolSize: e.poolSize === undefined ? undefined : Number(e.poolSize),
    workerImage: checkWorkerImage(e.workerImage, `${where}: workerImage`) ?? globalImage,
  };
  need([256, 512, 1024, 2048, 4096, 8192, 16384].includes(spec.cpu), 'cpu must be a Fargate size (256 ... 16384)');
  need(Number.isInteger(spec.memory) && spec.memory >= 512, 'memory must be an integer of MiB');
  // Application Auto Scaling: step adjustments are bounded; 100 tasks per endpoint is plenty here.
  need(Number.isInteger(spec.maxTasks) && spec.maxTasks >= 1 && spec.maxTasks <= 100, 'maxTasks must be 1-100');
  need(Number.isInteger(spec.backlogPerTask) && spec.backlogPerTask >= 1, 'backlogPerTask must be a positive integer');
  need(spec.architecture === 'arm64' || spec.architecture === 'x86_64', 'architecture must be arm64 or x86_64');
  need(spec.poolSize === undefined || (Number.isInteger(spec.poolSize) && spec.poolSize >= 1), 'poolSize must be a positive integer');
  return spec;
}

export function readContext(node: Node): FerryContext {
  const stage = String(parsed(node.tryGetContext('stage')) ?? 'dev');
  if (!STAGE.test(stage))
    throw new Error(`context stage "${stage}" must be 1-20 lowercase letters, digits or dashes, starting with a letter`);
  // Stage "a" owns every queue named ferry-a-ep-*; a stage "a-ep-b" would put its queues inside that prefix.
  if (/-ep(-|$)/.test(stage))
    throw new Error(`context stage "${stage}" may not contain an "-ep" segment: it would overlap another stage's endpoint queue names`);

  const throttle = (parsed(node.tryGetContext('apiThrottle')) ?? {}) as { rateLimit?: unknown; burstLimit?: unknown };
  const apiThrottle = { rateLimit: Number(throttle.rateLimit ?? 100), burstLimit: Number(throttle.burstLimit ?? 200) };
  if (!(apiThrottle.rateLimit > 0) || !Number.isInteger(apiThrottle.burstLimit) || apiThrottle.burstLimit < 1) {
    throw new Error('context apiThrottle must be {"rateLimit": >0, "burstLimit": integer >= 1}');
  }

  const cors = parsed(node.tryGetContext('corsAllowOrigins')) ?? [];
  if (!Array.isArray(cors) || cors.some((o) => typeof o !== 'string'))
    throw new Error('context corsAllowOrigins must be a list of origins');

  const eps = parsed(node.tryGetContext('fargateEndpoints')) ?? [];
  if (!Array.isArray(eps)) throw new Error('context fargateEndpoints must be a JSON list');
  const workerImage = checkWorkerImage(parsed(node.tryGetContext('workerImage')), 'context workerImage');
  const fargateEndpoints = eps.map((e, i) => fargateEndpoint(e, i, workerImage));
  for (const key of ['name', 'endpointId'] as const) {
    const seen = new Set<string>();
    for (const e of fargateEndpoints) {
      if (seen.has(e[key])) throw new Error(`fargateEndpoints: ${key} ${e[key]} appears twice`);
      seen.add(e[key]);
    }
  }

  const topic = parsed(node.tryGetContext('alarmTopicArn'));
  if (topic !== undefined && topic !== '' && (typeof topic !== 'string' || !/^arn:aws[a-z-]*:sns:/.test(topic)))
    throw new Error('context alarmTopicArn must be an SNS topic ARN');

  return {
    stage,
    retainData: bool(node, 'retainData', true),
    logRetentionDays: retention(int(node, 'logRetentionDays', 30, 1, 3653)),
    apiThrottle,
    corsAllowOrigins: cors as string[],
    resultTtlDays: int(node, 'resultTtlDays', 14, 1, 365),
    // 64 KiB: one SQS billing chunk; DynamoDB items stop at 400 KB, SQS messages at 256 KiB.
    inlineLimit: int(node, 'inlineLimit', 64 * 1024, 0, 64 * 1024),
    maxAttempts: int(node, 'maxAttempts', 3, 1, 1000),
    // STS: role chaining (a Lambda role assuming the worker role) caps sessions at one hour.
    credentialsTtlSeconds: int(node, 'credentialsTtlSeconds', 3600, 900, 3600),
    fargateEndpoints,
    alarmTopicArn: typeof topic === 'string' && topic !== '' ? topic : undefined,
  };
}

/** Runtime-created endpoint queue names; must match core/config.ts endpointQueueName (a test checks it). */
export const endpointQueueName = (stage: string, endpointId: string): string => `ferry-${stage}-ep-${endpointId}`;
export const endpointQueuePrefix = (stage: string): string => `ferry-${stage}-ep-`;
export type TableKey = 'functions' | 'endpoints' | 'tasks' | 'tokens';
/** Table names; core/config.ts derives the same defaults from FERRY_STAGE, so admin scripts need only the stage. */
export const tableName = (stage: string, table: TableKey): string => `ferry-${stage}-${table}`;
/**
 * The payload bucket's name: fixed per stage, account and region (S3 names are global), so the
 * service stack can name it without a cross-stack reference. At most 6+20+10+12+1+14 = 63 characters.
 */
export const payloadBucketName = (stage: string): string => `ferry-${stage}-payloads-${Aws.ACCOUNT_ID}-${Aws.REGION}`;
