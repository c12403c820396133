/**
 * Durable before acknowledged: the whole local stack runs in a child process that is killed -9
 * at random moments while submits stream in, then restarted on the same data dir. Every task
 * whose submit was answered 2xx must exist, still queued, with its message on the endpoint queue.
 * Then agents run them all while being killed -9 mid-task: every task ends, and none twice.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DynamoDBClient, GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { ChangeMessageVisibilityBatchCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { spawnAgentProcess, type AgentProcess } from '../../local/agent-process';

const CHILD = resolve(__dirname, 'crash-durability-stack.ts');
const ROUNDS = 10;

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => ok(port));
    });
  });
}

interface Stack {
  child: ChildProcess;
  exited: Promise<unknown>;
}

async function startStack(dataDir: string, ports: Record<string, number>): Promise<Stack> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dataDir, JSON.stringify(ports)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((r) => child.once('exit', r));
  let errors = '';
  child.stderr!.on('data', (chunk: Buffer) => (errors += chunk.toString()));
  await new Promise<void>((ok, fail) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('READY')) ok();
    });
    child.once('exit', (code) => fail(new Error(`stack process exited with ${code}: ${errors}`)));
  });
  return { child, exited };
}

async function kill(stack: Stack): Promise<void> {
  stack.child.kill('SIGKILL');
  await stack.exited;
}

it(`loses no acknowledged task over ${ROUNDS} kill -9s of the whole stack during a stream of submits`, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'ferry-crash-'));
  const ports = { api: await freePort(), dynamodb: await freePort(), sqs: await freePort(), s3: await freePort(), sts: await freePort() };
  const accepted = new Set<string>();
  let refusedOrCut = 0;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const stack = await startStack(dataDir, ports);
      const ids = JSON.parse(readFileSync(join(dataDir, 'crash-ids.json'), 'utf8')) as {
        token: string;
        function_id: string;
        endpoint_id: string;
        apiUrl: string;
      };
      let stop = false;
      const submitter = async () => {
        while (!stop) {
          const size = 1 + Math.floor(Math.random() * 5);
          try {
            const res = await fetch(`${ids.apiUrl}/v1/endpoints/${ids.endpoint_id}/submit`, {
              method: 'POST',
              headers: { authorization: `Bearer ${ids.token}`, 'content-type': 'application/json' },
              body: JSON.stringify({ tasks: Array.from({ length: size }, (_, i) => ({ function_id: ids.function_id, args: [round, i] })) }),
            });
            const text = await res.text();
            if (res.status >= 200 && res.status < 300)
              for (const id of (JSON.parse(text) as { task_ids: string[] }).task_ids) accepted.add(id);
            else refusedOrCut += 1;
          } catch {
            refusedOrCut += 1; // the connection died with the stack: not acknowledged
          }
        }
      };
      const loops = [submitter(), submitter(), submitter()];
      await new Promise((r) => setTimeout(r, 150 + Math.random() * 900));
      await kill(stack);
      stop = true;
      await Promise.all(loops);
    }

    // Restart once more and count.
    const stack = await startStack(dataDir, ports);
    try {
      const ids = JSON.parse(readFileSync(join(dataDir, 'crash-ids.json'), 'utf8')) as {
        token: string;
        endpoint_id: string;
        apiUrl: string;
      };
      const all = [...accepted];
      const states = new Map<string, string>();
      for (let i = 0; i < all.length; i += 1000) {
        const res = await fetch(`${ids.apiUrl}/v1/tasks/batch`, {
          method: 'POST',
          headers: { authorization: `Bearer ${ids.token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ task_ids: all.slice(i, i + 1000) }),
        });
        expect(res.status).toBe(200);
        for (const t of ((await res.json()) as { tasks: { task_id: string; status: string }[] }).tasks) states.set(t.task_id, t.status);
      }
      const admin = JSON.parse(readFileSync(join(dataDir, 'aws.json'), 'utf8')) as {
        access_key_id: string;
        secret_access_key: string;
        endpoints: { sqs: string };
      };
      const sqs = new SQSClient({
        region: 'us-east-1',
        endpoint: admin.endpoints.sqs,
        credentials: { accessKeyId: admin.access_key_id, secretAccessKey: admin.secret_access_key },
      });
      const queued = new Set<string>();
      const QueueUrl = `${admin.endpoints.sqs}/000000000000/ferry-local-ep-${ids.endpoint_id}`;
      const receipts: string[] = [];
      try {
        for (;;) {
          const { Messages } = await sqs.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 10, VisibilityTimeout: 600 }));
          if (!Messages) break;
          for (const m of Messages) {
            receipts.push(m.ReceiptHandle!);
            for (const t of (JSON.parse(m.Body!) as { tasks: { task_id: string }[] }).tasks) queued.add(t.task_id);
          }
        }
        // Hand every message back, for the agents of the next part.
        for (let i = 0; i < receipts.length; i += 10) {
          const Entries = receipts.slice(i, i + 10).map((ReceiptHandle, j) => ({ Id: String(j), ReceiptHandle, VisibilityTimeout: 0 }));
          await sqs.send(new ChangeMessageVisibilityBatchCommand({ QueueUrl, Entries }));
        }
      } finally {
        sqs.destroy();
      }
      const missingRecord = all.filter((id) => !states.has(id));
      const notQueuedState = all.filter((id) => states.has(id) && states.get(id) !== 'waiting-for-endpoint');
      const missingMessage = all.filter((id) => !queued.has(id));
      const lost = new Set([...missingRecord, ...missingMessage]).size;
      console.log(
        `crash durability: rounds ${ROUNDS}, accepted ${accepted.size}, lost ${lost} (no record ${missingRecord.length}, no message ${missingMessage.length}), ` +
          `not queued ${notQueuedState.length}, submits cut or refused ${refusedOrCut}, messages' tasks on the queue ${queued.size}`,
      );
      expect(accepted.size).toBeGreaterThan(ROUNDS);
      expect({
        lost,
        missingRecord: missingRecord.length,
        missingMessage: missingMessage.length,
        notQueued: notQueuedState.length,
      }).toEqual({ lost: 0, missingRecord: 0, missingMessage: 0, notQueued: 0 });

      // Every task ends, and ends once, while its agents die: three agents are killed -9 mid-run
      // (their tasks come back after a 3 s visibility), then one is left to finish.
      const agentEnv = {
        ...(JSON.parse(readFileSync(join(dataDir, 'worker-env.json'), 'utf8')) as Record<string, string>),
        FERRY_API_URL: ids.apiUrl,
        FERRY_ENDPOINT_ID: ids.endpoint_id,
        FERRY_ENDPOINT_SECRET: (JSON.parse(readFileSync(join(dataDir, 'crash-ids.json'), 'utf8')) as { endpoint_secret: string })
          .endpoint_secret,
        FERRY_POOL_SIZE: '2',
        FERRY_RUNTIMES: 'node',
        FERRY_VISIBILITY_SECONDS: '3',
      };
      let agent: AgentProcess | undefined;
      let agentKills = 0;
      try {
        for (let i = 0; i < 3; i++) {
          agent = spawnAgentProcess(agentEnv);
          await agent.ready;
          await new Promise((r) => setTimeout(r, 500 + Math.random() * 1000));
          agent.child.kill('SIGKILL');
          await agent.exited;
          agentKills++;
        }
        agent = spawnAgentProcess(agentEnv);
        await agent.ready;
        const views = new Map<string, { status: string; transitions: { state: string }[] }>();
        const deadline = Date.now() + 90_000;
        while (Date.now() < deadline) {
          for (let i = 0; i < all.length; i += 1000) {
            const res = await fetch(`${ids.apiUrl}/v1/tasks/batch`, {
              method: 'POST',
              headers: { authorization: `Bearer ${ids.token}`, 'content-type': 'application/json' },
              body: JSON.stringify({ task_ids: all.slice(i, i + 1000) }),
            });
            for (const t of ((await res.json()) as { tasks: { task_id: string; status: string; transitions: { state: string }[] }[] })
              .tasks)
              views.set(t.task_id, t);
          }
          if (all.every((id) => ['success', 'failed', 'cancelled'].includes(views.get(id)?.status ?? ''))) break;
          await new Promise((r) => setTimeout(r, 500));
        }
        const FINAL = ['success', 'failed', 'cancelled'];
        const neverEnded = all.filter((id) => !FINAL.includes(views.get(id)?.status ?? ''));
        const twoFinals = all.filter((id) => (views.get(id)?.transitions ?? []).filter((t) => FINAL.includes(t.state)).length > 1);
        const failed = all.filter((id) => views.get(id)?.status !== 'success' && !neverEnded.includes(id));
        if (neverEnded.length > 0)
          console.log(
            'crash durability, tasks that never ended:',
            neverEnded.slice(0, 10).map((id) => `${id} ${views.get(id)?.status ?? 'unread'}`),
          );
        console.log(
          `crash durability, run: ${all.length} tasks through ${agentKills} agents killed -9 mid-run: never ended ${neverEnded.length}, two final states ${twoFinals.length}, failed ${failed.length}`,
        );
        expect({ neverEnded: neverEnded.length, twoFinals: twoFinals.length, failed: failed.length }).toEqual({
          neverEnded: 0,
          twoFinals: 0,
          failed: 0,
        });
      } finally {
        if (agent && agent.child.exitCode === null && agent.child.signalCode === null) {
          agent.child.kill('SIGKILL');
          await agent.exited;
        }
      }
    } finally {
      await kill(stack);
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}, 240_000);

it('keeps a SendMessage, a PutItem and a PutObject answered just before kill -9 of the stack', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'ferry-crash-ack-'));
  const ports = { api: await freePort(), dynamodb: await freePort(), sqs: await freePort(), s3: await freePort(), sts: await freePort() };
  try {
    let stack = await startStack(dataDir, ports);
    const admin = JSON.parse(readFileSync(join(dataDir, 'aws.json'), 'utf8')) as {
      access_key_id: string;
      secret_access_key: string;
      endpoints: { sqs: string; dynamodb: string; s3: string };
    };
    const ids = JSON.parse(readFileSync(join(dataDir, 'crash-ids.json'), 'utf8')) as { endpoint_id: string };
    const credentials = { accessKeyId: admin.access_key_id, secretAccessKey: admin.secret_access_key };
    const opts = { region: 'us-east-1', credentials, maxAttempts: 1 };
    const sqs = new SQSClient({ ...opts, endpoint: admin.endpoints.sqs });
    const ddb = new DynamoDBClient({ ...opts, endpoint: admin.endpoints.dynamodb });
    const s3 = new S3Client({ ...opts, endpoint: admin.endpoints.s3, forcePathStyle: true });
    const QueueUrl = `${admin.endpoints.sqs}/000000000000/ferry-local-ep-${ids.endpoint_id}`;
    const marker = `kill-${Date.now()}`;
    try {
      // Each write, then kill -9 as soon as its answer is in: nothing may be waiting in memory.
      const { MessageId } = await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: JSON.stringify({ tasks: [], marker }) }));
      await kill(stack);
      stack = await startStack(dataDir, ports);
      await ddb.send(new PutItemCommand({ TableName: 'ferry-local-tasks', Item: { task_id: { S: marker }, note: { S: 'acknowledged' } } }));
      await kill(stack);
      stack = await startStack(dataDir, ports);
      await s3.send(new PutObjectCommand({ Bucket: 'ferry-local-payloads', Key: `crash/${marker}`, Body: Buffer.alloc(300_000, 7) }));
      await kill(stack);
      stack = await startStack(dataDir, ports);

      const { Messages } = await sqs.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 10 }));
      expect(Messages?.map((m) => m.MessageId)).toContain(MessageId);
      expect(
        (await ddb.send(new GetItemCommand({ TableName: 'ferry-local-tasks', Key: { task_id: { S: marker } }, ConsistentRead: true }))).Item
          ?.note?.S,
      ).toBe('acknowledged');
      const object = await s3.send(new GetObjectCommand({ Bucket: 'ferry-local-payloads', Key: `crash/${marker}` }));
      const bytes = Buffer.from(await object.Body!.transformToByteArray());
      expect(bytes.equals(Buffer.alloc(300_000, 7))).toBe(true);
    } finally {
      sqs.destroy();
      ddb.destroy();
      s3.destroy();
      await kill(stack);
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}, 60_000);
