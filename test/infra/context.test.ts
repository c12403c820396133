import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, Token } from 'aws-cdk-lib';
import { endpointDlqName as coreDlqName, endpointQueueName as coreQueueName, loadConfig } from '../../core/config';
import { endpointQueueName, endpointQueuePrefix, readContext, tableName } from '../../infra/lib/context';
import { backlogSteps } from '../../infra/lib/fargate-endpoints';
import cdkJson from '../../cdk.json';

// An App without outdir makes a temporary directory of its own; these share one, removed at the end.
const outdir = mkdtempSync(join(tmpdir(), 'ferry-context-'));
afterAll(() => rmSync(outdir, { recursive: true, force: true }));
const ctx = (context: Record<string, unknown>) => readContext(new App({ outdir, context: { ...cdkJson.context, ...context } }).node);
const endpoint = {
  name: 'gpu-less',
  endpointId: '0b6c7a2e-9f1d-4c3b-8a5e-2d4f6a8b0c1e',
  secretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:ferry/ep-Ab12Cd',
};
const UUID2 = '1b6c7a2e-9f1d-4c3b-8a5e-2d4f6a8b0c1e';

describe('context', () => {
  test('cdk.json runs the app with tsx and holds the defaults', () => {
    expect(cdkJson.app).toBe('npx tsx infra/bin/ferry.ts');
    expect(ctx({})).toEqual({
      stage: 'dev',
      retainData: true,
      logRetentionDays: 30,
      apiThrottle: { rateLimit: 100, burstLimit: 200 },
      corsAllowOrigins: [],
      resultTtlDays: 14,
      inlineLimit: 65536,
      maxAttempts: 3,
      credentialsTtlSeconds: 3600,
      fargateEndpoints: [],
      alarmTopicArn: undefined,
    });
  });

  test('-c values arrive as strings and are parsed like cdk.json values', () => {
    const c = ctx({
      stage: 'prod',
      retainData: 'false',
      logRetentionDays: '90',
      fargateEndpoints: JSON.stringify([{ ...endpoint, cpu: 2048, memory: 4096, maxTasks: 8 }]),
    });
    expect(c).toMatchObject({ stage: 'prod', retainData: false, logRetentionDays: 90 });
    expect(c.fargateEndpoints).toEqual([
      {
        ...endpoint,
        cpu: 2048,
        memory: 4096,
        maxTasks: 8,
        backlogPerTask: 8,
        architecture: 'arm64',
        poolSize: undefined,
        secretJsonField: undefined,
      },
    ]);
  });

  test.each([
    [{ stage: 'Prod' }, /stage/],
    [{ stage: 'a-very-long-stage-name-indeed' }, /stage/],
    [{ stage: 'dev-ep' }, /-ep/],
    [{ stage: 'dev-ep-2' }, /-ep/],
    [{ retainData: 'yes' }, /retainData/],
    [{ credentialsTtlSeconds: 7200 }, /credentialsTtlSeconds/],
    [{ logRetentionDays: 10 }, /logRetentionDays must be one of/],
    [{ fargateEndpoints: '[{"name":"x"}]' }, /endpointId/],
    [{ fargateEndpoints: [{ ...endpoint, secretArn: 'my-secret' }] }, /secretArn/],
    [{ fargateEndpoints: [{ ...endpoint, cpu: 1000 }] }, /cpu/],
    [{ fargateEndpoints: [endpoint, { ...endpoint, name: 'other' }] }, /appears twice/],
    [{ fargateEndpoints: '[{' }, /not valid JSON/],
    [{ alarmTopicArn: 'topic' }, /alarmTopicArn/],
    [{ workerImage: 'ferry-worker' }, /context workerImage must be an image URI with a tag or digest/],
    [{ workerImage: 'Ferry/Worker:1' }, /context workerImage/],
    [{ workerImage: 'repo@sha256:abc' }, /context workerImage/],
    [{ workerImage: 42 }, /context workerImage/],
    [
      { fargateEndpoints: [{ ...endpoint, workerImage: 'https://example.com/img:1' }] },
      /fargateEndpoints\[0\]: workerImage must be an image URI/,
    ],
    [{ fargateEndpoints: [{ ...endpoint, workerImage: 'img: latest' }] }, /fargateEndpoints\[0\]: workerImage/],
  ])('rejects %j', (bad, message) => {
    expect(() => ctx(bad)).toThrow(message);
  });

  test("workerImage: an entry's own image wins over the global one; none means built at deploy", () => {
    const ecrUri = '123456789012.dkr.ecr.eu-west-1.amazonaws.com/ferry-worker:1.0.0';
    const digest = `ghcr.io/example/ferry/worker@sha256:${'0'.repeat(64)}`;
    expect(ctx({ fargateEndpoints: [endpoint] }).fargateEndpoints[0]!.workerImage).toBeUndefined();
    const c = ctx({
      workerImage: ecrUri,
      fargateEndpoints: JSON.stringify([endpoint, { ...endpoint, name: 'own', endpointId: UUID2, workerImage: digest }]),
    });
    expect(c.fargateEndpoints.map((e) => e.workerImage)).toEqual([ecrUri, digest]);
    expect(ctx({ workerImage: 'localhost:5000/ferry-worker:dev', fargateEndpoints: [endpoint] }).fargateEndpoints[0]!.workerImage).toBe(
      'localhost:5000/ferry-worker:dev',
    );
  });
});

describe('names shared with the runtime', () => {
  test('endpoint queue names are those core/config.ts gives the register handler', () => {
    const id = endpoint.endpointId;
    expect(endpointQueueName('dev', id)).toBe(coreQueueName('dev', id));
    expect(coreQueueName('dev', id).startsWith(endpointQueuePrefix('dev'))).toBe(true);
    expect(coreDlqName('dev', id).startsWith(endpointQueuePrefix('dev'))).toBe(true);
    // SQS: queue names are at most 80 characters, even for the longest stage name allowed.
    expect(coreDlqName('abcdefghijklmnopqrst', id).length).toBeLessThanOrEqual(80);
  });

  test('table names are the defaults core/config.ts derives from FERRY_STAGE', () => {
    const cfg = loadConfig({ FERRY_STAGE: 'prod' });
    expect(cfg.tables).toEqual({
      functions: tableName('prod', 'functions'),
      endpoints: tableName('prod', 'endpoints'),
      tasks: tableName('prod', 'tasks'),
      tokens: tableName('prod', 'tokens'),
    });
    expect(Token.isUnresolved(tableName('prod', 'tasks'))).toBe(false);
  });
});

describe('Fargate scaling steps', () => {
  // The first step is the scale-to-zero alarm (backlog <= 0); the others the scale-out alarm (lower <= backlog < upper).
  const desired = (steps: ReturnType<typeof backlogSteps>, backlog: number) =>
    backlog <= 0 ? steps[0]!.change : steps.slice(1).find((s) => s.lower! <= backlog && backlog < (s.upper ?? Infinity))?.change;

  test('zero when idle, ceil(backlog / backlogPerTask) up to maxTasks', () => {
    const steps = backlogSteps(8, 4);
    expect(desired(steps, 0)).toBe(0);
    expect(desired(steps, 1)).toBe(1);
    expect(desired(steps, 8)).toBe(1);
    expect(desired(steps, 9)).toBe(2);
    expect(desired(steps, 32)).toBe(4);
    expect(desired(steps, 10_000)).toBe(4);
  });

  test('many tasks fit in at most 20 levels and still reach maxTasks', () => {
    const steps = backlogSteps(5, 100);
    expect(steps.length).toBeLessThanOrEqual(21);
    expect(desired(steps, 1)).toBe(5);
    expect(desired(steps, 1_000_000)).toBe(100);
    const changes = steps.map((s) => s.change);
    expect([...changes].sort((a, b) => a - b)).toEqual(changes);
  });
});
