import { jsonEnvelope } from '../helpers/envelope';
import { sep } from 'node:path';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { Context, SQSEvent } from 'aws-lambda';
import type { LocalStack } from '../../local/stack';
import { caller, eventually, vendedCredentials } from '../helpers/api';

/**
 * What an operator reads in CloudWatch: the real handlers, through the middy stack every Ferry
 * Lambda shares, write structured JSON log lines with the Lambda request id and the caller's
 * correlation id, and EMF metric blobs (namespace Ferry, dimensions service and stage, and
 * endpoint for task counts). Both go to the process's stdout/stderr, which Lambda ships to
 * CloudWatch Logs; here they are captured from the same streams.
 *
 * Metrics are on here as in Lambda (the local stack turns them off unless asked); tracing stays
 * off (no X-Ray daemon here), which is what the local stack and `npm start` run with.
 */
process.env.POWERTOOLS_METRICS_DISABLED = 'false';
process.env.POWERTOOLS_LOGGER_SAMPLE_RATE = '1';
process.env.POWERTOOLS_SERVICE_NAME = 'ferry';
process.env.FERRY_STAGE = 'obs';

jest.setTimeout(60_000);

/** A JSON log line; one with metrics carries them in CloudWatch's embedded metric format under _aws. */
type Line = Record<string, unknown> & { _aws?: { CloudWatchMetrics: { Namespace: string; Metrics: { Name: string }[] }[] } };
let lines: Line[] = [];
const spies: jest.SpyInstance[] = [];

/** Every JSON line written to stdout or stderr while `fn` runs (other text passes through). */
function capture(): void {
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write.bind(stream);
    spies.push(
      jest.spyOn(stream, 'write').mockImplementation(((chunk: unknown, ...rest: unknown[]) => {
        const text = String(chunk);
        for (const l of text.split('\n')) {
          if (!l.startsWith('{')) continue;
          try {
            lines.push(JSON.parse(l));
            continue;
          } catch {
            /* not JSON: written as is */
          }
        }
        if (!text.trim().startsWith('{')) return write(chunk as string, ...(rest as []));
        return true;
      }) as typeof stream.write),
    );
  }
}

const emf = (metric: string): Line[] => lines.filter((l) => l._aws?.CloudWatchMetrics?.[0]?.Metrics?.some((m) => m.Name === metric));
const lambdaContext = (requestId: string, functionName: string) =>
  ({
    awsRequestId: requestId,
    functionName,
    functionVersion: '$LATEST',
    memoryLimitInMB: '512',
    invokedFunctionArn: `arn:aws:lambda:us-east-1:000000000000:function:${functionName}`,
  }) as Context;

let stack: LocalStack;

beforeAll(async () => {
  // Loaded after the environment above is set: Powertools reads it when the handler modules load.
  const { startLocalStack } = await import('../../local/stack');
  stack = await startLocalStack({ sweepIntervalMs: 60_000 });
  capture();
});
afterAll(async () => {
  for (const s of spies) s.mockRestore();
  await stack?.close();
});
beforeEach(() => {
  lines = [];
});

describe('every handler goes through the same middy stack', () => {
  test('an API handler logs its answer with the request id and the API Gateway requestId as correlation id', async () => {
    const { handler } = await import('../../lambdas/api/tasks');
    const event = {
      version: '2.0',
      routeKey: 'GET /v1/tasks/{id}',
      rawPath: '/v1/tasks/x',
      headers: {},
      pathParameters: { id: 'x' },
      requestContext: {
        requestId: 'apigw-req-1',
        routeKey: 'GET /v1/tasks/{id}',
        authorizer: { lambda: { principal: 'none', reason: 'a bearer token is required' } },
      },
      isBase64Encoded: false,
    };
    const out = await handler(event as never, lambdaContext('lambda-req-1', 'ferry-obs-tasks'));
    expect(out.statusCode).toBe(401);
    const answered = lines.find((l) => l.message === 'answered');
    expect(answered).toMatchObject({
      level: 'DEBUG',
      service: 'ferry',
      correlation_id: 'apigw-req-1',
      function_request_id: 'lambda-req-1',
      function_name: 'ferry-obs-tasks',
      route: 'GET /v1/tasks/{id}',
      status: 401,
      error_code: 'Unauthorized',
      sampling_rate: 1,
    });
  });

  test('the authorizer logs the kind of caller, never the token', async () => {
    const { handler } = await import('../../lambdas/authorizer');
    const out = await handler(
      {
        type: 'REQUEST',
        routeKey: 'GET /v1/tasks/{id}',
        headers: { authorization: 'Bearer not-a-real-token' },
        requestContext: { requestId: 'apigw-req-2' },
      } as never,
      lambdaContext('lambda-req-2', 'ferry-obs-authorizer'),
    );
    expect(out.context.principal).toBe('none');
    const line = lines.find((l) => l.message === 'authorized');
    expect(line).toMatchObject({ correlation_id: 'apigw-req-2', function_request_id: 'lambda-req-2', principal: 'none' });
    expect(JSON.stringify(lines)).not.toContain('not-a-real-token');
  });

  test('the results consumer logs a refused report with its SQS messageId as correlation id', async () => {
    const { handler } = await import('../../lambdas/results');
    const event: SQSEvent = {
      Records: [
        {
          messageId: 'msg-forged-1',
          receiptHandle: 'r',
          body: '{}',
          attributes: { SenderId: 'AIDAEXAMPLE', ApproximateReceiveCount: '1', SentTimestamp: '0', ApproximateFirstReceiveTimestamp: '0' },
          messageAttributes: {},
          md5OfBody: '',
          eventSource: 'aws:sqs',
          eventSourceARN: 'arn:aws:sqs:us-east-1:000000000000:ferry-obs-results',
          awsRegion: 'us-east-1',
        },
      ],
    };
    const out = await handler(event, lambdaContext('lambda-req-3', 'ferry-obs-results'));
    expect(out.batchItemFailures).toEqual([]);
    const refused = lines.find((l) => l.message === 'refused forged result report');
    expect(refused).toMatchObject({
      level: 'WARN',
      correlation_id: 'msg-forged-1',
      function_request_id: 'lambda-req-3',
      sender: 'AIDAEXAMPLE',
    });
  });

  test('the lost-task sweep runs through the stack with the EventBridge event id as correlation id', async () => {
    const { handler } = await import('../../lambdas/lost-tasks');
    const ctx = { ...lambdaContext('lambda-req-4', 'ferry-obs-sweep'), getRemainingTimeInMillis: () => 55_000 } as Context;
    const out = await handler({ id: 'eb-event-1', 'detail-type': 'Scheduled Event' }, ctx);
    expect(out).toEqual({ failed: 0, expired: 0, queue_gone: 0, endpoint_deleted: 0 });
    expect(lines.find((l) => l.message === 'swept lost tasks')).toMatchObject({
      correlation_id: 'eb-event-1',
      function_request_id: 'lambda-req-4',
    });
  });
});

describe('task metrics (EMF) as a user drives tasks through the local stack', () => {
  test('submitted, started, succeeded, failed and cancelled are counted per stage and per endpoint, with submit-to-final latency', async () => {
    const alice = caller(stack.apiUrl, await stack.createUser('alice'));
    const fn = await alice('POST', '/v1/functions', { name: 'add', runtime: 'node', source: '(a, b) => a + b' });
    const ep = await alice('POST', '/v1/endpoints', { name: 'obs' });
    const endpointId: string = ep.body.endpoint_id;
    const sub = await alice('POST', `/v1/endpoints/${endpointId}/submit`, {
      tasks: [1, 2, 3].map((i) => ({ function_id: fn.body.function_id, args: [i, i] })),
    });
    expect(sub.status).toBe(202);
    const [ok, bad, cancel] = sub.body.task_ids as string[];

    const submitted = emf('TasksSubmitted');
    expect(submitted).toHaveLength(1);
    expect(submitted[0]).toMatchObject({ TasksSubmitted: 3, service: 'ferry', stage: 'obs', endpoint: endpointId });
    expect(submitted[0]!._aws!.CloudWatchMetrics[0]).toMatchObject({
      Namespace: 'Ferry',
      Dimensions: [
        ['service', 'stage'],
        ['service', 'stage', 'endpoint'],
      ],
      Metrics: [{ Name: 'TasksSubmitted', Unit: 'Count' }],
    });

    expect((await alice('POST', `/v1/tasks/${cancel}/cancel`)).status).toBe(200);
    expect(emf('TasksCancelled')[0]).toMatchObject({ TasksCancelled: 1, endpoint: endpointId });

    // The endpoint's worker reports through the results queue with its vended credentials; the
    // local stack's event source runs the results handler, as Lambda's event source mapping does.
    const { grant, credentials } = await vendedCredentials(stack.apiUrl, endpointId, ep.body.endpoint_secret);
    const sqs = new SQSClient({ region: grant.region, credentials });
    const report = (body: object) =>
      sqs.send(new SendMessageCommand({ QueueUrl: grant.results_queue_url, MessageBody: JSON.stringify(body) }));
    const base = { v: 1, endpoint_id: endpointId, worker_id: 'w1' };
    await report({ ...base, kind: 'started', task_id: ok, at: new Date().toISOString() });
    await eventually(async () => emf('TasksStarted').length > 0, 15_000, 'TasksStarted');
    await report({ ...base, kind: 'success', task_id: ok, at: new Date().toISOString(), result: jsonEnvelope(2) });
    await report({
      ...base,
      kind: 'failed',
      task_id: bad,
      at: new Date().toISOString(),
      exception: { type: 'ValueError', message: 'no', traceback: '' },
    });
    await eventually(
      async () => emf('TasksSucceeded').length > 0 && emf('TasksFailed').length > 0,
      15_000,
      'TasksSucceeded and TasksFailed',
    );
    sqs.destroy();

    const total = (metric: string) => emf(metric).reduce((n, l) => n + (l[metric] as number), 0);
    expect(total('TasksStarted')).toBe(1);
    expect(total('TasksSucceeded')).toBe(1);
    expect(total('TasksFailed')).toBe(1);
    expect(emf('TasksSucceeded')[0]).toMatchObject({ endpoint: endpointId, stage: 'obs' });

    const latency = emf('TaskLatency');
    expect(latency.length).toBeGreaterThan(0);
    expect(latency[0]!._aws!.CloudWatchMetrics[0]).toMatchObject({
      Namespace: 'Ferry',
      Dimensions: [['service', 'stage']],
      Metrics: [{ Name: 'TaskLatency', Unit: 'Milliseconds' }],
    });
    // Per stage only: an endpoint dimension on a latency would be one more custom metric per endpoint.
    expect(latency[0]).not.toHaveProperty('endpoint');
  });
});

describe('in a Lambda environment', () => {
  const LAMBDA_ENV = {
    AWS_LAMBDA_FUNCTION_NAME: 'ferry-obs-tasks',
    AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs24.x',
    // What infra/lib/ferry-function.ts sets: Lambda passes DEBUG, Powertools filters at INFO.
    AWS_LAMBDA_LOG_LEVEL: 'DEBUG',
    POWERTOOLS_LOG_LEVEL: 'INFO',
    POWERTOOLS_LOGGER_SAMPLE_RATE: '0',
    POWERTOOLS_TRACE_ENABLED: 'false',
    // The X-Ray SDK wants a daemon address in Lambda; nothing is sent in these tests (no segment is opened).
    AWS_XRAY_DAEMON_ADDRESS: '127.0.0.1:2000',
    AWS_XRAY_CONTEXT_MISSING: 'IGNORE_ERROR',
  };
  const saved: Record<string, string | undefined> = {};
  beforeEach(() => {
    for (const [k, v] of Object.entries(LAMBDA_ENV)) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
  });
  afterEach(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  test('with tracing off the X-Ray SDK is not loaded at all (it would track every promise of the process)', async () => {
    process.env.POWERTOOLS_TRACE_ENABLED = 'false';
    const xray = (k: string) => k.includes(`${sep}aws-xray-sdk-core${sep}`);
    await jest.isolateModulesAsync(async () => {
      const before = Object.keys(require.cache).filter(xray).length;
      const obs = await import('../../lambdas/observability');
      expect(obs.tracer).toBeUndefined();
      // jest's module registry is per isolateModules: count what this load added to it.
      expect(Object.keys(require.cache).filter(xray).length).toBe(before);
    });
  });

  test('every AWS SDK client core/clients.ts builds is captured by the X-Ray tracer', async () => {
    process.env.POWERTOOLS_TRACE_ENABLED = 'true';
    await jest.isolateModulesAsync(async () => {
      await import('../../lambdas/observability');
      const clients = await import('../../core/clients');
      const sqs = clients.makeSqsClient({ region: 'us-east-1' });
      const s3 = clients.makeS3Client({ region: 'us-east-1' });
      expect(sqs.middlewareStack.identify().join(' ')).toContain('XRaySDKInstrumentation');
      expect(s3.middlewareStack.identify().join(' ')).toContain('XRaySDKInstrumentation');
      sqs.destroy();
      s3.destroy();
    });
  });

  test.each([
    ['0', 0],
    ['1', 1],
  ])("Lambda's log level does not pin the Logger: at sample rate %s, %i DEBUG line", async (rate, debugLines) => {
    process.env.POWERTOOLS_LOGGER_SAMPLE_RATE = rate;
    let handler!: typeof import('../../lambdas/authorizer').handler;
    await jest.isolateModulesAsync(async () => {
      ({ handler } = await import('../../lambdas/authorizer'));
    });
    await handler(
      { type: 'REQUEST', routeKey: 'GET /v1/functions', headers: {}, requestContext: { requestId: 'apigw-req-5' } } as never,
      lambdaContext('lambda-req-5', 'ferry-obs-authorizer'),
    );
    expect(lines.filter((l) => l.message === 'authorized')).toHaveLength(debugLines);
  });
});
