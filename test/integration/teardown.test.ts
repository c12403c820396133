import { DeleteQueueCommand, GetQueueAttributesCommand, SetQueueAttributesCommand, SQSClient } from '@aws-sdk/client-sqs';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { spawnAgent, stopAgents, type AgentProcess } from '../helpers/agents';
import { caller, eventually } from '../helpers/api';

/**
 * Endpoint queues belong to their endpoints, not to the service stack: tearing the service side
 * down and bringing it back (the local equivalent of `cdk destroy` + `cdk deploy` of
 * Ferry-<stage>-Service) keeps endpoints, their queues and the tasks waiting in them, and those
 * tasks run once an agent comes. Every endpoint queue is made TLS-only and encrypted, as the
 * stack's own queues are, and an agent asking for credentials gets back a queue deleted under it.
 */
jest.setTimeout(120_000);

let stack: LocalStack;
let alice: ReturnType<typeof caller>;
let admin: SQSClient;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  stack = await startLocalStack({ sweepIntervalMs: 500 });
  alice = caller(stack.apiUrl, await stack.createUser('alice'));
  admin = new SQSClient({});
});

afterAll(async () => {
  await stopAgents(agents);
  admin?.destroy();
  await stack?.close();
});

async function register(name: string): Promise<{ id: string; secret: string }> {
  const ep = await alice('POST', '/v1/endpoints', { name });
  expect(ep.status).toBe(201);
  return { id: ep.body.endpoint_id, secret: ep.body.endpoint_secret };
}

const queueUrls = (id: string) => {
  const base = `${stack.awsEnv.AWS_ENDPOINT_URL_SQS}/000000000000/ferry-local-ep-${id}`;
  return { queue: base, dlq: `${base}-dlq` };
};
const attributes = async (url: string) =>
  (await admin.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['All'] }))).Attributes ?? {};

/** What an operator reads off a queue: encrypted, and denying anything but TLS to anyone. */
function expectTlsOnlyAndEncrypted(attrs: Record<string, string>): void {
  expect(attrs.SqsManagedSseEnabled).toBe('true');
  expect(JSON.parse(attrs.Policy ?? '{}')).toEqual({
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'DenyInsecureTransport',
        Effect: 'Deny',
        Principal: { AWS: '*' },
        Action: 'sqs:*',
        Resource: attrs.QueueArn,
        Condition: { Bool: { 'aws:SecureTransport': 'false' } },
      },
    ],
  });
}

test('a queue made by registration, and its dead-letter queue, carry the TLS-only policy and SSE-SQS', async () => {
  const ep = await register('secured');
  const { queue, dlq } = queueUrls(ep.id);
  const q = await attributes(queue);
  expectTlsOnlyAndEncrypted(q);
  expectTlsOnlyAndEncrypted(await attributes(dlq));
  expect(JSON.parse(q.RedrivePolicy!).deadLetterTargetArn).toBe((await attributes(dlq)).QueueArn);
});

test('endpoints and their queued tasks survive a teardown and redeploy of the service side, and then run', async () => {
  const ep = await register('survivor');
  const fn = await alice('POST', '/v1/functions', { name: 'add', runtime: 'node', source: 'module.exports = (a, b) => a + b;' });
  expect(fn.status).toBe(201);
  // No agent yet: the tasks wait in the endpoint queue.
  const sub = await alice('POST', `/v1/endpoints/${ep.id}/submit`, {
    tasks: Array.from({ length: 5 }, (_, i) => ({ function_id: fn.body.function_id, args: [i, 10] })),
  });
  expect(sub.status).toBe(202);
  const taskIds: string[] = sub.body.task_ids;

  await stack.redeployService();

  // The endpoint, its queue with the five messages, and the task records are all still there.
  expect((await alice('GET', `/v1/endpoints/${ep.id}`)).status).toBe(200);
  expect((await attributes(queueUrls(ep.id).queue)).ApproximateNumberOfMessages).toBe('5');
  for (const id of taskIds) expect((await alice('GET', `/v1/tasks/${id}`)).body.status).toBe('waiting-for-endpoint');

  const agent = spawnAgent(stack, ep.id, ep.secret);
  agents.push(agent);
  const results = await eventually(
    async () => {
      const views = await Promise.all(taskIds.map(async (id) => (await alice('GET', `/v1/tasks/${id}`)).body));
      return views.every((v) => v.status === 'success') && views.map((v) => v.result.value);
    },
    60_000,
    'the queued tasks to run after the redeploy',
    250,
  );
  expect(results).toEqual([10, 11, 12, 13, 14]);
  await stopAgents([agent]);
});

test('an agent asking for credentials gets back a queue deleted under its endpoint, with the same attributes', async () => {
  const ep = await register('remade');
  const { queue, dlq } = queueUrls(ep.id);
  const before = { queue: await attributes(queue), dlq: await attributes(dlq) };
  for (const url of [queue, dlq]) await admin.send(new DeleteQueueCommand({ QueueUrl: url }));

  const creds = await caller(stack.apiUrl, ep.secret)('POST', `/v1/endpoints/${ep.id}/credentials`);
  expect(creds.status).toBe(200);
  expect(creds.body.queue_url).toBe(queue);
  const settable = [
    'VisibilityTimeout',
    'MessageRetentionPeriod',
    'MaximumMessageSize',
    'SqsManagedSseEnabled',
    'RedrivePolicy',
    'Policy',
    'QueueArn',
  ];
  const pick = (a: Record<string, string>) => Object.fromEntries(settable.filter((k) => k in a).map((k) => [k, a[k]]));
  expect(pick(await attributes(queue))).toEqual(pick(before.queue));
  expect(pick(await attributes(dlq))).toEqual(pick(before.dlq));

  // And the endpoint works again: a task submitted now runs.
  const fn = await alice('POST', '/v1/functions', { name: 'one', runtime: 'node', source: 'module.exports = () => 1;' });
  const sub = await alice('POST', `/v1/endpoints/${ep.id}/submit`, { tasks: [{ function_id: fn.body.function_id }] });
  expect(sub.status).toBe(202);
  const agent = spawnAgent(stack, ep.id, ep.secret);
  agents.push(agent);
  await eventually(
    async () => (await alice('GET', `/v1/tasks/${sub.body.task_ids[0]}`)).body.status === 'success',
    60_000,
    'the task on the remade queue',
    250,
  );
  await stopAgents([agent]);
});

test('a queue made before queues carried a policy gets it when its agent next asks for credentials', async () => {
  const ep = await register('older');
  const { queue, dlq } = queueUrls(ep.id);
  for (const url of [queue, dlq]) await admin.send(new SetQueueAttributesCommand({ QueueUrl: url, Attributes: { Policy: '' } }));
  expect((await attributes(queue)).Policy).toBeUndefined();
  const creds = await caller(stack.apiUrl, ep.secret)('POST', `/v1/endpoints/${ep.id}/credentials`);
  expect(creds.status).toBe(200);
  expectTlsOnlyAndEncrypted(await attributes(queue));
  expectTlsOnlyAndEncrypted(await attributes(dlq));
});

test('a dead-letter queue deleted alone is made again, and its task queue, messages kept, redrives to it', async () => {
  const ep = await register('dlq-lost');
  const { queue, dlq } = queueUrls(ep.id);
  const fn = await alice('POST', '/v1/functions', { name: 'two', runtime: 'node', source: 'module.exports = () => 2;' });
  const sub = await alice('POST', `/v1/endpoints/${ep.id}/submit`, { tasks: [{ function_id: fn.body.function_id }] });
  expect(sub.status).toBe(202);
  // A queue that differs from what registration would make now: another policy as SQS might store it.
  await admin.send(
    new SetQueueAttributesCommand({
      QueueUrl: queue,
      Attributes: { Policy: JSON.stringify(JSON.parse((await attributes(queue)).Policy!), null, 1) },
    }),
  );
  await admin.send(new DeleteQueueCommand({ QueueUrl: dlq }));

  expect((await caller(stack.apiUrl, ep.secret)('POST', `/v1/endpoints/${ep.id}/credentials`)).status).toBe(200);
  const q = await attributes(queue);
  expectTlsOnlyAndEncrypted(q);
  expectTlsOnlyAndEncrypted(await attributes(dlq));
  expect(JSON.parse(q.RedrivePolicy!).deadLetterTargetArn).toBe((await attributes(dlq)).QueueArn);
  expect(q.ApproximateNumberOfMessages).toBe('1');
});

test('a running agent whose queue is deleted under it has the API make it again, and goes on serving', async () => {
  const ep = await register('deleted-under-agent');
  const agent = spawnAgent(stack, ep.id, ep.secret);
  agents.push(agent);
  await agent.ready;
  const { queue, dlq } = queueUrls(ep.id);
  for (const url of [queue, dlq]) await admin.send(new DeleteQueueCommand({ QueueUrl: url }));

  // The agent's next receive finds no queue; its credentials call makes it again with its attributes.
  await eventually(async () => (await attributes(queue)).QueueArn !== undefined, 60_000, 'the queue made again', 250);
  expectTlsOnlyAndEncrypted(await attributes(queue));
  const fn = await alice('POST', '/v1/functions', { name: 'seven', runtime: 'node', source: 'module.exports = () => 7;' });
  const sub = await alice('POST', `/v1/endpoints/${ep.id}/submit`, { tasks: [{ function_id: fn.body.function_id }] });
  expect(sub.status).toBe(202);
  const done = await eventually(
    async () => {
      const t = (await alice('GET', `/v1/tasks/${sub.body.task_ids[0]}`)).body;
      return t.status === 'success' ? t : undefined;
    },
    60_000,
    'the task on the remade queue',
    250,
  );
  expect(done.result.value).toBe(7);
  // The same agent process served it: it never stopped.
  expect(agent.child.exitCode).toBeNull();
  expect(agent.output()).toContain('the API made it again');
  await stopAgents([agent]);
});
