import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { caller, eventually } from '../helpers/api';
import { spawnAgent, stopAgents, type AgentProcess } from '../helpers/agents';

jest.setTimeout(120_000);

/**
 * A stand-in for the ECS container agent's task scale-in protection endpoint, which only runs
 * inside an ECS task (it is reached at $ECS_AGENT_URI and calls ecs:UpdateTaskProtection with
 * the task role), so it cannot run here. It speaks the same protocol as the real one
 * (amazon-ecs-agent, tmds/handlers/taskprotection/v1): PUT .../task-protection/v1/state with
 * {"ProtectionEnabled": bool, "ExpiresInMinutes"?: 1-2880} and no other field; 200
 * {"protection": {...}}, 200 {"failure": {...}} when ECS refuses, 4xx/5xx {"error": {...}}.
 */
class FakeEcsAgent {
  readonly calls: { ProtectionEnabled: boolean; ExpiresInMinutes?: number }[] = [];
  protectedNow = false;
  /** How the next answers fail, if they should. */
  failWith?: 'failure' | 'error';
  private server!: Server;
  readonly taskArn = 'arn:aws:ecs:us-east-1:123456789012:task/ferry-cluster/0123456789abcdef0123456789abcdef';

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const reply = (status: number, json: unknown) => {
          res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(json));
        };
        if (req.url !== '/api/container-1/task-protection/v1/state' || req.method !== 'PUT')
          return reply(404, { error: { Code: 'ResourceNotFoundException', Message: 'not found' } });
        let parsed: Record<string, unknown>;
        try {
          parsed = JSON.parse(body);
        } catch {
          return reply(400, {
            error: { Arn: '', Code: 'InvalidParameterException', Message: 'UpdateTaskProtection: failed to decode request' },
          });
        }
        const unknown = Object.keys(parsed).filter((k) => k !== 'ProtectionEnabled' && k !== 'ExpiresInMinutes');
        const minutes = parsed.ExpiresInMinutes;
        if (
          unknown.length ||
          typeof parsed.ProtectionEnabled !== 'boolean' ||
          (minutes !== undefined && (!Number.isInteger(minutes) || (minutes as number) < 1 || (minutes as number) > 2880))
        ) {
          return reply(400, { error: { Arn: this.taskArn, Code: 'InvalidParameterException', Message: 'Invalid request' } });
        }
        this.calls.push(parsed as FakeEcsAgent['calls'][number]);
        if (this.failWith === 'failure')
          return reply(200, { failure: { Arn: this.taskArn, Reason: 'TASK_NOT_VALID', Detail: 'The task is not part of a service' } });
        if (this.failWith === 'error')
          return reply(403, {
            error: { Arn: this.taskArn, Code: 'AccessDeniedException', Message: 'not authorized to perform ecs:UpdateTaskProtection' },
          });
        this.protectedNow = parsed.ProtectionEnabled as boolean;
        reply(200, {
          protection: {
            ExpirationDate: this.protectedNow ? new Date(Date.now() + ((minutes as number) ?? 120) * 60_000).toISOString() : null,
            ProtectionEnabled: this.protectedNow,
            TaskArn: this.taskArn,
          },
        });
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    // ECS_AGENT_URI looks like http://169.254.170.2/api/<container id>.
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/api/container-1`;
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

let stack: LocalStack;
let api: ReturnType<typeof caller>;
const agents: AgentProcess[] = [];
const fakes: FakeEcsAgent[] = [];

beforeAll(async () => {
  stack = await startLocalStack({ sweepIntervalMs: 250 });
  api = caller(stack.apiUrl, await stack.createUser('ecs'));
});
afterAll(async () => {
  await stopAgents(agents);
  await Promise.all(fakes.map((f) => f.close()));
  await stack?.close();
});

/** An endpoint served by a real agent process that believes it runs in an ECS task. */
async function ecsAgent(name: string) {
  const fake = new FakeEcsAgent();
  fakes.push(fake);
  const uri = await fake.start();
  const ep = await api('POST', '/v1/endpoints', { name });
  expect(ep.status).toBe(201);
  // Renewals every 300 ms here (a third of 15 minutes on ECS), so a task of a few seconds sees some.
  const agent = spawnAgent(stack, ep.body.endpoint_id, ep.body.endpoint_secret, {
    ECS_AGENT_URI: uri,
    FERRY_PROTECTION_RENEW_MS: '300',
    FERRY_POOL_SIZE: '1',
    FERRY_RUNTIMES: 'node',
  });
  agents.push(agent);
  await agent.ready;
  return { fake, agent, endpointId: ep.body.endpoint_id as string };
}

async function submitSleep(endpointId: string, ms: number): Promise<string> {
  const fn = await api('POST', '/v1/functions', {
    name: 'sleep',
    runtime: 'node',
    source: `async () => { await new Promise((r) => setTimeout(r, ${ms})); return 'slept'; }`,
  });
  expect(fn.status).toBeLessThan(300);
  const sub = await api('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: fn.body.function_id }] });
  expect(sub.status).toBe(202);
  return sub.body.task_ids[0];
}

const status = async (taskId: string) => (await api('GET', `/v1/tasks/${taskId}`)).body;

describe('ECS task scale-in protection (agent endpoint stand-in)', () => {
  it('is off while idle, on while a task runs (renewed), and off again once the agent is idle', async () => {
    const { fake, endpointId } = await ecsAgent('ecs-protected');
    // A started agent holding nothing asks for nothing: it may be scaled in.
    expect(fake.calls).toEqual([]);

    const taskId = await submitSleep(endpointId, 3000);
    await eventually(async () => (await status(taskId)).status === 'running', 30_000, 'the task to run');
    await eventually(async () => fake.protectedNow, 10_000, 'protection on while the task runs');
    expect(fake.calls[0]).toEqual({ ProtectionEnabled: true, ExpiresInMinutes: 15 });

    const done = await eventually(
      async () => {
        const t = await status(taskId);
        return t.status === 'success' && t;
      },
      30_000,
      'the task to succeed',
    );
    expect(done.result.value).toBe('slept');
    await eventually(async () => !fake.protectedNow, 10_000, 'protection off once idle');

    // On while busy, renewed before it lapses, then one "off" at the end.
    const enabled = fake.calls.map((c) => c.ProtectionEnabled);
    expect(enabled.at(-1)).toBe(false);
    expect(enabled.slice(0, -1).every(Boolean)).toBe(true);
    expect(enabled.filter(Boolean).length).toBeGreaterThanOrEqual(2);
  });

  it.each(['failure', 'error'] as const)('a refused protection (%s) is logged and the task still runs', async (how) => {
    const { fake, agent, endpointId } = await ecsAgent(`ecs-refused-${how}`);
    fake.failWith = how;
    const taskId = await submitSleep(endpointId, 500);
    const done = await eventually(
      async () => {
        const t = await status(taskId);
        return t.status === 'success' && t;
      },
      30_000,
      'the task to succeed',
    );
    expect(done.result.value).toBe('slept');
    expect(fake.calls.length).toBeGreaterThan(0);
    expect(agent.output()).toContain('could not turn task scale-in protection on');
    expect(agent.output()).toContain(how === 'failure' ? 'TASK_NOT_VALID' : 'AccessDeniedException');
    // The agent is still serving.
    expect(agent.child.exitCode).toBeNull();
  });
});
