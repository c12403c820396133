/**
 * Configuration from the environment, read once. Endpoint URLs for local mode come through the
 * AWS SDK's own variables (AWS_ENDPOINT_URL_SQS, _DYNAMODB, _S3, _STS); nothing here knows the mode.
 */
export interface FerryConfig {
  stage: string;
  tables: { functions: string; endpoints: string; tasks: string; tokens: string };
  bucket: string;
  resultsQueueUrl: string;
  /** Bytes that travel inline; above it a payload goes to S3 (64 KiB: one SQS billing chunk). */
  inlineLimit: number;
  s3ForcePathStyle: boolean;
  /** Days a finished task stays readable. */
  resultTtlDays: number;
  defaultWalltimeMs: number;
  maxAttempts: number;
  workerRoleArn?: string;
  /** The worker role's unique id (AROA…): results are believed only from its sessions (SQS SenderId). */
  workerRoleId?: string;
  credentialsTtlSeconds: number;
  /** MessageRetentionPeriod of new endpoint queues (SQS: 60 s to 14 days); a message unread this long is gone. */
  queueRetentionSeconds: number;
  /**
   * How long past a queue's retention (or past a running task's walltime) the sweep waits before it
   * fails a task as undeliverable: covers the submit's own duration and a late worker report.
   */
  expiryMarginSeconds: number;
  /** How long an endpoint queue must stay missing before the sweep fails its tasks (SQS is eventually consistent after CreateQueue and DeleteQueue). */
  queueGoneGraceSeconds: number;
  /**
   * How often a waiting read (POST /v1/tasks/wait) re-reads its open tasks: first after
   * waitPollMs, then half as long again after each re-read that found none finished, up to
   * waitPollMaxMs. In AWS each Lambda is its own process and hears no announcement of a finished
   * task (core/task-events.ts), so this is how soon it sees one there (and what it spends on
   * reads while tasks run long); locally announcements wake it first.
   */
  waitPollMs: number;
  waitPollMaxMs: number;
  /**
   * Where finishes are announced (the local stack), how long a wait that has an answer but still
   * many open tasks lingers for the next ones to finish (core/tasks/wait.ts), so that a busy
   * client is answered in fewer, fuller responses; 0 answers at once.
   */
  waitLingerMs: number;
  /**
   * How long DELETE /v1/endpoints fails the endpoint's open tasks itself before it answers (API
   * Gateway gives a request 30 s); the sweep fails the rest, and then deletes the record.
   */
  deleteBudgetMs: number;
}

const num = (v: string | undefined, d: number): number => (v && Number.isFinite(Number(v)) ? Number(v) : d);

export function loadConfig(env: NodeJS.ProcessEnv = process.env): FerryConfig {
  const stage = env.FERRY_STAGE ?? 'local';
  const prefix = `ferry-${stage}`;
  return {
    stage,
    tables: {
      functions: env.FERRY_FUNCTIONS_TABLE ?? `${prefix}-functions`,
      endpoints: env.FERRY_ENDPOINTS_TABLE ?? `${prefix}-endpoints`,
      tasks: env.FERRY_TASKS_TABLE ?? `${prefix}-tasks`,
      tokens: env.FERRY_TOKENS_TABLE ?? `${prefix}-tokens`,
    },
    bucket: env.FERRY_BUCKET ?? `${prefix}-payloads`,
    resultsQueueUrl: env.FERRY_RESULTS_QUEUE_URL ?? '',
    inlineLimit: num(env.FERRY_INLINE_LIMIT, 64 * 1024),
    s3ForcePathStyle: env.FERRY_S3_FORCE_PATH_STYLE === 'true',
    resultTtlDays: num(env.FERRY_RESULT_TTL_DAYS, 14),
    defaultWalltimeMs: num(env.FERRY_DEFAULT_WALLTIME_MS, 15 * 60 * 1000),
    maxAttempts: num(env.FERRY_MAX_ATTEMPTS, 3),
    workerRoleArn: env.FERRY_WORKER_ROLE_ARN || undefined,
    workerRoleId: env.FERRY_WORKER_ROLE_ID || undefined,
    credentialsTtlSeconds: num(env.FERRY_CREDENTIALS_TTL_SECONDS, 3600),
    queueRetentionSeconds: num(env.FERRY_QUEUE_RETENTION_SECONDS, 14 * 86400),
    expiryMarginSeconds: num(env.FERRY_EXPIRY_MARGIN_SECONDS, 3600),
    queueGoneGraceSeconds: num(env.FERRY_QUEUE_GONE_GRACE_SECONDS, 60),
    waitPollMs: Math.max(10, num(env.FERRY_WAIT_POLL_MS, 250)),
    waitPollMaxMs: Math.max(10, num(env.FERRY_WAIT_POLL_MAX_MS, 1000)),
    waitLingerMs: Math.max(0, num(env.FERRY_WAIT_LINGER_MS, 10)),
    deleteBudgetMs: Math.max(0, num(env.FERRY_DELETE_BUDGET_MS, 10_000)),
  };
}

let cached: FerryConfig | undefined;
export const config = (): FerryConfig => (cached ??= loadConfig());
/** Forget the cached configuration; the local stack calls it after it sets the environment. */
export const resetConfig = (): void => {
  cached = undefined;
};

/** Endpoint queue names carry the stage so one account can hold several deployments. */
export const endpointQueueName = (stage: string, endpointId: string): string => `ferry-${stage}-ep-${endpointId}`;
export const endpointDlqName = (stage: string, endpointId: string): string => `ferry-${stage}-ep-${endpointId}-dlq`;
