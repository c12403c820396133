import type { CfnResource as Resource } from '../helpers/json';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { synthesize, type Synthesized } from './synth';

/**
 * Powertools on every Ferry Lambda, and the dashboard and alarms on the metrics they publish
 * (lambdas/observability.ts), as the synthesized service template deploys them.
 */

let s: Synthesized;
let service: Record<string, Resource>;
let stage: string;

beforeAll(() => {
  s = synthesize();
  service = s.serviceTemplate.toJSON().Resources;
  stage = s.ferry.stage;
}, 180_000);
afterAll(() => s?.cleanup());

const ofType = (type: string) => Object.entries(service).filter(([, r]) => r.Type === type);
const ferryFunctions = () => ofType('AWS::Lambda::Function').filter(([, f]) => /^Ferry /.test(f.Properties.Description ?? ''));

test('every Ferry function runs Powertools: service, namespace, log level, debug sampling, active tracing', () => {
  const fns = ferryFunctions();
  // The authorizer, five API handlers, the results consumer, the sweep and the retired queue reaper at least.
  expect(fns.length).toBeGreaterThanOrEqual(8);
  for (const [id, f] of fns) {
    expect({ id, env: f.Properties.Environment.Variables }).toMatchObject({
      id,
      env: {
        POWERTOOLS_SERVICE_NAME: 'ferry',
        POWERTOOLS_METRICS_NAMESPACE: 'Ferry',
        POWERTOOLS_LOG_LEVEL: 'INFO',
        POWERTOOLS_LOGGER_SAMPLE_RATE: expect.stringMatching(/^0\.\d+$/),
        POWERTOOLS_TRACER_CAPTURE_RESPONSE: 'false',
        FERRY_STAGE: stage,
      },
    });
    expect(f.Properties.TracingConfig).toEqual({ Mode: 'Active' });
    // Lambda passes every level, so that Powertools' sampled DEBUG lines are not dropped.
    expect(f.Properties.LoggingConfig).toMatchObject({ LogFormat: 'JSON', ApplicationLogLevel: 'DEBUG' });
  }
  // No function outside Ferry's own is missed by the filter above, but CDK's own custom resource
  // providers (the Fargate VPC's default-security-group lock-down), which run no Ferry code.
  const others = ofType('AWS::Lambda::Function').filter(([, f]) => !/^Ferry /.test(f.Properties.Description ?? ''));
  expect(others.map(([id]) => id).filter((id) => !/^Custom.*CustomResourceProviderHandler[0-9A-F]{8}$/.test(id))).toEqual([]);
});

test('the bundles carry Powertools and the one middy stack (built by esbuild from the lockfile)', () => {
  const assets = s.app.outdir;
  for (const [id, f] of ferryFunctions()) {
    if (/EndpointQueueReaper/.test(id)) continue; // a CloudFormation custom resource answer, not a Ferry handler
    const key: string = f.Properties.Code.S3Key;
    const dir = join(assets, `asset.${key.replace(/\.zip$/, '')}`);
    expect(existsSync(join(dir, 'index.js'))).toBe(true);
    const bundle = readFileSync(join(dir, 'index.js'), 'utf8');
    expect({ id, powertools: /POWERTOOLS_LOGGER_SAMPLE_RATE/.test(bundle) && /captureAWSv3Client/.test(bundle) }).toEqual({
      id,
      powertools: true,
    });
  }
});

test('the dashboard name carries the region, so two regions of one account do not collide', () => {
  const dashboards = ofType('AWS::CloudWatch::Dashboard');
  expect(dashboards).toHaveLength(1);
  expect(dashboards[0]![1].Properties.DashboardName).toEqual({ 'Fn::Join': ['', [`Ferry-${stage}-`, { Ref: 'AWS::Region' }]] });
});

test('the dashboard charts the task metrics: counts, submit-to-final latency, lost and failed per endpoint', () => {
  const body = JSON.stringify(ofType('AWS::CloudWatch::Dashboard')[0]![1].Properties.DashboardBody);
  for (const name of ['TasksSubmitted', 'TasksStarted', 'TasksSucceeded', 'TasksFailed', 'TasksCancelled', 'TasksLost', 'TaskLatency'])
    expect(body).toContain(name);
  expect(body).toContain('{Ferry,service,stage,endpoint} MetricName=\\\\\\"TasksLost\\\\\\"');
});

test('an alarm pages on lost tasks, from the metric the Lambdas publish', () => {
  const lost = ofType('AWS::CloudWatch::Alarm').filter(([, a]) => a.Properties.MetricName === 'TasksLost');
  expect(lost).toHaveLength(1);
  expect(lost[0]![1].Properties).toMatchObject({
    Namespace: 'Ferry',
    Statistic: 'Sum',
    Period: 300,
    ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    TreatMissingData: 'notBreaching',
    Dimensions: expect.arrayContaining([
      { Name: 'service', Value: 'ferry' },
      { Name: 'stage', Value: stage },
    ]),
  });
});
