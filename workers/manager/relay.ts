import type { IncomingMessage, ServerResponse } from 'node:http';
import { ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { S3Client } from '@aws-sdk/client-s3';
import { endpointPrefix, exceptionKey, readPayload, resultKey, storePayload } from '../../core/bucket';
import { parseBody } from '../../core/messages';
import { envelopeSchema } from '../../core/payload';
import { CODECS, type Codec } from '../../core/runtimes';
import { sendBatches } from '../../core/queues/batch-send';
import { changeVisibility, deleteMessages } from '../../core/queues/endpoint-queue';
import { sleep } from '../../core/retry';
import type { GrantKeeper } from '../grant';

/**
 * Relay mode: agents on compute nodes without outbound access get their tasks from the endpoint
 * manager and hand their results back to it; only the manager talks to AWS. Every call carries the
 * manager's per-run bearer token (the 0600 contact file FERRY_MANAGER_FILE) and names its agent in
 * `x-ferry-worker` and its block in `x-ferry-block`; anything else is 401.
 *
 *   GET  /v1/relay/hello                     → {endpoint_id, owner_id, inline_limit}
 *   GET  /v1/relay/tasks?max=N&wait=S        → {messages: [{id, receipt, body}]}  long poll (S ≤ 20 s, N ≤ 10);
 *                                              the manager receives from SQS for this agent, so it holds
 *                                              nothing the agents did not ask for (their slots plus one
 *                                              prefetched task per slot)
 *   POST /v1/relay/extend  {receipts}        → {lost: [receipt]}   the agent still runs these (a lease)
 *   POST /v1/relay/release {receipts}        → {}                  visibility 0: run them elsewhere
 *   POST /v1/relay/finish  {receipts}        → {failed: [index]}   delete from SQS (every result was sent)
 *   POST /v1/relay/results {reports: [json]} → {failed: [index]}   ≤ 10 reports; 200 only once SQS has them
 *   POST /v1/relay/args    {envelope}        → bytes               an argument payload from S3, verified
 *   POST /v1/relay/payload?task=T&kind=result|exception&codec=C, body: bytes → {envelope}
 *                                              stored in S3 under the task's key (inline if small)
 *
 * Payloads stream through the relay: agents have no AWS access, so the manager reads argument
 * payloads from S3 when an agent asks for them and stores large results and exceptions under the
 * task's own key (the agent never names an S3 key). Tasks are read one at a time, when a slot
 * runs them, so a bundle of large arguments is never held in memory at once.
 *
 * At-least-once, as in direct mode: the agent asks for `finish` only after every result of a
 * message was acknowledged, and `results` is acknowledged only after SQS took the reports. The
 * manager keeps every message it handed out invisible while its agent holds it (the agent's
 * `extend` renews a lease), and hands it back (visibility 0) when the agent's block ends, the agent
 * stops, or its lease lapses, so a killed agent's tasks run again at once.
 */

const MAX_JSON = 4 * 1024 * 1024;
/** Results and exceptions: the runtimes' results are capped far below this. */
export const MAX_RELAY_PAYLOAD = 512 * 1024 * 1024;
const TASK_ID = /^[A-Za-z0-9_-]{1,128}$/;

interface Held {
  receipt: string;
  worker: string;
  block: string;
  touched: number;
}

export interface RelayOptions {
  endpointId: string;
  sqs: SQSClient;
  s3: S3Client;
  keeper: GrantKeeper;
  visibilitySeconds: number;
  log: (msg: string, extra?: Record<string, unknown>) => void;
}

export class Relay {
  private readonly held = new Map<string, Held>();
  private timer?: NodeJS.Timeout;
  private stopping = false;
  private readonly polls = new Set<AbortController>();

  constructor(private readonly o: RelayOptions) {}

  start(): void {
    // Extend what agents hold at half the visibility, and take back what a silent agent held.
    this.timer = setInterval(() => void this.keepAlive(), (this.o.visibilitySeconds * 1000) / 2);
    this.timer.unref();
  }

  /** Messages handed out and not finished. */
  get holding(): number {
    return this.held.size;
  }

  private get grant() {
    return this.o.keeper.current;
  }

  /** An agent silent this long has lost what it held. */
  private get leaseMs(): number {
    return 2 * this.o.visibilitySeconds * 1000 + 5_000;
  }

  private async keepAlive(): Promise<void> {
    const now = Date.now();
    const lapsed = [...this.held.values()].filter((h) => now - h.touched > this.leaseMs);
    if (lapsed.length) {
      this.o.log('an agent went silent; handing back what it held', {
        messages: lapsed.length,
        workers: [...new Set(lapsed.map((h) => h.worker))],
      });
      await this.giveBack(lapsed.map((h) => h.receipt));
    }
    const receipts = [...this.held.keys()];
    if (receipts.length)
      await changeVisibility(this.o.sqs, this.grant.queue_url, receipts, this.o.visibilitySeconds, (err) =>
        this.o.log('could not extend visibility', { error: String(err) }),
      );
  }

  private async giveBack(receipts: string[]): Promise<void> {
    for (const r of receipts) this.held.delete(r);
    if (receipts.length)
      await changeVisibility(this.o.sqs, this.grant.queue_url, receipts, 0, (err) =>
        this.o.log('could not hand messages back', { error: String(err) }),
      );
  }

  /** A block ended (drained, cancelled, killed): what its agents held runs again now. */
  async blockEnded(blockId: string): Promise<void> {
    const lost = [...this.held.values()].filter((h) => h.block === blockId).map((h) => h.receipt);
    if (!lost.length) return;
    this.o.log(`block ${blockId} ended holding ${lost.length} task message(s); handing them back`);
    await this.giveBack(lost);
  }

  /** An agent said it stopped: anything still on its name is handed back. */
  async agentStopped(worker: string): Promise<void> {
    await this.giveBack([...this.held.values()].filter((h) => h.worker === worker).map((h) => h.receipt));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.timer);
    for (const c of this.polls) c.abort();
    await this.giveBack([...this.held.keys()]);
  }

  /** Handles /v1/relay/* (the caller has checked the token). */
  async handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const worker = String(req.headers['x-ferry-worker'] ?? '').slice(0, 256);
    const block = String(req.headers['x-ferry-block'] ?? '').slice(0, 64);
    const json = (status: number, body: unknown) =>
      void res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    if (!worker) return json(400, { error: 'x-ferry-worker is required' });
    const route = `${req.method} ${url.pathname}`;
    try {
      switch (route) {
        case 'GET /v1/relay/hello':
          return json(200, { endpoint_id: this.o.endpointId, owner_id: this.grant.owner_id, inline_limit: this.grant.inline_limit });
        case 'GET /v1/relay/tasks':
          return json(200, { messages: await this.receive(req, res, worker, block, url) });
        case 'POST /v1/relay/extend': {
          const { receipts } = await readReceipts(req);
          const now = Date.now();
          const lost: string[] = [];
          for (const r of receipts) {
            const h = this.held.get(r);
            if (h) h.touched = now;
            else lost.push(r);
          }
          return json(200, { lost });
        }
        case 'POST /v1/relay/release': {
          const { receipts } = await readReceipts(req);
          await this.giveBack(receipts.filter((r) => this.held.has(r)));
          return json(200, {});
        }
        case 'POST /v1/relay/finish': {
          const { receipts } = await readReceipts(req);
          return json(200, { failed: await this.finish(receipts) });
        }
        case 'POST /v1/relay/results': {
          const body = parseBody((await readBody(req, MAX_JSON)).toString('utf8')) as { reports?: unknown };
          const reports = body?.reports;
          if (
            !Array.isArray(reports) ||
            reports.length > 10 ||
            reports.some((r) => typeof r !== 'string' || (parseBody(r) as { endpoint_id?: string })?.endpoint_id !== this.o.endpointId)
          ) {
            return json(400, { error: 'reports: up to 10 result messages of this endpoint' });
          }
          const failed = await sendBatches(
            this.o.sqs,
            this.grant.results_queue_url,
            (reports as string[]).map((body, i) => ({ id: String(i), body })),
          );
          return json(200, { failed: failed.map(Number) });
        }
        case 'POST /v1/relay/args': {
          const env = envelopeSchema.safeParse(
            (parseBody((await readBody(req, 64 * 1024)).toString('utf8')) as { envelope?: unknown })?.envelope,
          );
          if (!env.success || (env.data.ref !== undefined && !env.data.ref.startsWith(endpointPrefix(this.o.endpointId))))
            return json(400, { error: 'envelope: a payload of this endpoint' });
          const bytes = await readPayload(env.data, this.o.s3, this.grant.bucket);
          return void res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.byteLength }).end(bytes);
        }
        case 'POST /v1/relay/payload': {
          const task = url.searchParams.get('task') ?? '';
          const kind = url.searchParams.get('kind');
          const codec = url.searchParams.get('codec') as Codec;
          if (!TASK_ID.test(task) || (kind !== 'result' && kind !== 'exception') || !CODECS.includes(codec))
            return json(400, { error: 'task, kind and codec' });
          const bytes = await readBody(req, MAX_RELAY_PAYLOAD);
          const key = kind === 'result' ? resultKey(this.o.endpointId, task) : exceptionKey(this.o.endpointId, task);
          const envelope = await storePayload(bytes, codec, key, {
            s3: this.o.s3,
            bucket: this.grant.bucket,
            inlineLimit: this.grant.inline_limit,
          });
          return json(200, { envelope });
        }
        default:
          return json(404, { error: `no ${route}` });
      }
    } catch (err) {
      if (err instanceof TooLarge) return json(413, { error: err.message });
      if (err instanceof BadRequest) return json(400, { error: err.message });
      this.o.log('relay call failed', { route, worker, error: String(err) });
      if (!res.headersSent) json(502, { error: String((err as Error).message ?? err) });
    }
  }

  private async receive(req: IncomingMessage, res: ServerResponse, worker: string, block: string, url: URL) {
    const max = Math.min(10, Math.max(1, Number(url.searchParams.get('max')) || 1));
    const wait = Math.min(20, Math.max(0, Number(url.searchParams.get('wait')) || 0));
    if (this.stopping) {
      await sleep(Math.min(wait, 1) * 1000);
      return [];
    }
    const abort = new AbortController();
    const gone = () => !res.writableFinished && abort.abort();
    res.once('close', gone);
    this.polls.add(abort);
    let messages;
    try {
      const out = await this.o.sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: this.grant.queue_url,
          MaxNumberOfMessages: max,
          VisibilityTimeout: this.o.visibilitySeconds,
          WaitTimeSeconds: wait,
        }),
        { abortSignal: abort.signal },
      );
      messages = out.Messages ?? [];
    } catch (err) {
      if (abort.signal.aborted) return [];
      throw err;
    } finally {
      this.polls.delete(abort);
      res.off('close', gone);
    }
    // The agent left while SQS answered, or the manager is stopping: the messages go back at once.
    if (abort.signal.aborted || res.destroyed || this.stopping) {
      await changeVisibility(
        this.o.sqs,
        this.grant.queue_url,
        messages.map((m) => m.ReceiptHandle!),
        0,
        () => undefined,
      );
      return [];
    }
    const now = Date.now();
    for (const m of messages) this.held.set(m.ReceiptHandle!, { receipt: m.ReceiptHandle!, worker, block, touched: now });
    return messages.map((m) => ({ id: m.MessageId, receipt: m.ReceiptHandle, body: m.Body }));
  }

  private async finish(receipts: string[]): Promise<number[]> {
    const failed = await deleteMessages(this.o.sqs, this.grant.queue_url, receipts, (err) =>
      this.o.log('could not delete finished messages', { error: String(err) }),
    );
    const notDeleted: number[] = [];
    receipts.forEach((r, i) => (failed.has(i) ? notDeleted.push(i) : this.held.delete(r)));
    return notDeleted;
  }
}

class TooLarge extends Error {}
class BadRequest extends Error {}

/** A request body, refused (413) past `limit` bytes. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.reject(new TooLarge(`a body of at most ${limit} bytes`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.byteLength;
      if (size > limit) {
        req.destroy();
        reject(new TooLarge(`a body of at most ${limit} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

async function readReceipts(req: IncomingMessage): Promise<{ receipts: string[] }> {
  const body = parseBody((await readBody(req, MAX_JSON)).toString('utf8')) as { receipts?: unknown };
  const receipts = body?.receipts;
  if (!Array.isArray(receipts) || receipts.length > 1000 || receipts.some((r) => typeof r !== 'string' || r.length > 8192))
    throw new BadRequest('receipts: up to 1000 receipt handles');
  return { receipts: receipts as string[] };
}
