import type { CfnResource as Resource } from '../helpers/json';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Match } from 'aws-cdk-lib/assertions';
import { STOP_TIMEOUT } from '../../infra/lib/fargate-endpoints';
import { FARGATE_ENDPOINT, synthesize, type Synthesized } from './synth';

type Statement = { Effect: string; Action: string | string[]; Resource: unknown };

// A prebuilt image in ECR for every endpoint (global workerImage), and one endpoint that names
// its own image in another registry: the deploy then needs no Docker at all.
const ECR_URI = '123456789012.dkr.ecr.us-east-1.amazonaws.com/ferry-worker:1.4.2';
const PUBLIC_URI = 'public.ecr.aws/example/ferry-worker@sha256:' + 'a'.repeat(64);
const X86_ENDPOINT = {
  ...FARGATE_ENDPOINT,
  name: 'x86',
  endpointId: '1b6c7a2e-9f1d-4c3b-8a5e-2d4f6a8b0c1e',
  architecture: 'x86_64',
  workerImage: PUBLIC_URI,
};

let s: Synthesized;
let resources: Record<string, Resource>;
beforeAll(() => {
  s = synthesize({ workerImage: ECR_URI, fargateEndpoints: [FARGATE_ENDPOINT, X86_ENDPOINT] });
  resources = s.serviceTemplate.toJSON().Resources;
}, 180_000);
afterAll(() => s?.cleanup());

const ofType = (type: string) => Object.entries(resources).filter(([, r]) => r.Type === type);
const str = (v: unknown): string => JSON.stringify(v) ?? '';
const statementsOf = (roleId: string): Statement[] =>
  ofType('AWS::IAM::Policy')
    .filter(([, p]) => str(p.Properties.Roles).includes(`"${roleId}"`))
    .flatMap(([, p]) => p.Properties.PolicyDocument.Statement as Statement[]);
const taskDefinitions = () => ofType('AWS::ECS::TaskDefinition').map(([, t]) => t.Properties);
const container = (endpointId: string) => {
  const found = taskDefinitions().filter((t) => str(t.ContainerDefinitions).includes(endpointId));
  expect(found).toHaveLength(1);
  return { taskDefinition: found[0]!, container: found[0]!.ContainerDefinitions[0] };
};
const roleId = (ref: unknown) => (ref as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];

describe('Fargate endpoints: scaling owns the task count', () => {
  test('no DesiredCount on any service, so a deploy never resets running endpoints', () => {
    const services = ofType('AWS::ECS::Service');
    expect(services).toHaveLength(2);
    for (const [, svc] of services) expect(svc.Properties.DesiredCount).toBeUndefined();
    s.serviceTemplate.allResourcesProperties('AWS::ECS::Service', { DesiredCount: Match.absent(), LaunchType: 'FARGATE' });
    // The count is Application Auto Scaling's, between zero and maxTasks.
    s.serviceTemplate.resourcePropertiesCountIs(
      'AWS::ApplicationAutoScaling::ScalableTarget',
      { MinCapacity: 0, MaxCapacity: FARGATE_ENDPOINT.maxTasks, ScalableDimension: 'ecs:service:DesiredCount' },
      2,
    );
  });

  test('stop timeout is the Fargate maximum (120 s) and the agent drains for less than that', () => {
    expect(STOP_TIMEOUT.toSeconds()).toBe(120);
    for (const id of [FARGATE_ENDPOINT.endpointId, X86_ENDPOINT.endpointId]) {
      const { container: c } = container(id);
      expect(c.StopTimeout).toBe(120);
      const grace = Number(c.Environment.find((e: { Name: string }) => e.Name === 'FERRY_GRACE_MS')?.Value);
      expect(grace).toBeGreaterThan(60_000);
      expect(grace).toBeLessThan(120_000);
    }
  });

  test('the task role may turn on scale-in protection for tasks of this cluster, and nothing else', () => {
    const { taskDefinition } = container(FARGATE_ENDPOINT.endpointId);
    const statements = statementsOf(roleId(taskDefinition.TaskRoleArn));
    expect(statements).toHaveLength(1);
    expect(statements[0]).toMatchObject({ Effect: 'Allow', Action: 'ecs:UpdateTaskProtection' });
    const [clusterId] = ofType('AWS::ECS::Cluster').map(([id]) => id);
    expect(str(statements[0]!.Resource)).toContain(`:task/`);
    expect(str(statements[0]!.Resource)).toContain(`{"Ref":"${clusterId}"}`);
    expect(str(statements[0]!.Resource)).toMatch(/\/\*"\]\]\}$/);
  });

  test('cdk-nag AwsSolutions reports no unacknowledged finding', () => {
    const findings = s.nagViolations.map(
      (v) => `${v.ruleName} at ${v.violatingResources.map((r) => r.constructPath ?? r.resourceLogicalId).join(', ')}`,
    );
    expect(findings).toEqual([]);
  });
});

describe('Fargate endpoints: workerImage', () => {
  test('the task definitions name the given images and the deploy builds no Docker image', () => {
    expect(container(FARGATE_ENDPOINT.endpointId).container.Image).toBe(ECR_URI);
    expect(container(X86_ENDPOINT.endpointId).container.Image).toBe(PUBLIC_URI);
    expect(container(X86_ENDPOINT.endpointId).taskDefinition.RuntimePlatform).toEqual({
      CpuArchitecture: 'X86_64',
      OperatingSystemFamily: 'LINUX',
    });
    const manifestFile = join(s.app.outdir, `${s.service.artifactId}.assets.json`);
    const manifest = existsSync(manifestFile) ? JSON.parse(readFileSync(manifestFile, 'utf8')) : {};
    expect(Object.keys(manifest.dockerImages ?? {})).toEqual([]);
  });

  test('the ECR image is pulled with rights on its repository only; the public one needs none', () => {
    const { taskDefinition } = container(FARGATE_ENDPOINT.endpointId);
    const pulls = statementsOf(roleId(taskDefinition.ExecutionRoleArn)).filter((st) => [st.Action].flat().includes('ecr:BatchGetImage'));
    expect(pulls).toHaveLength(1);
    expect(str(pulls[0]!.Resource)).toContain(':ecr:us-east-1:123456789012:repository/ferry-worker');
    const x86 = container(X86_ENDPOINT.endpointId).taskDefinition;
    expect(statementsOf(roleId(x86.ExecutionRoleArn)).filter((st) => [st.Action].flat().some((a) => a.startsWith('ecr:')))).toEqual([]);
  });
});
