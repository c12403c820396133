import { Batcher } from '../agent/batcher';
import type { ReceivedMessage, SourceInfo, TaskSource } from '../agent/task-source';
import { SecretRefused } from '../grant';
import { inlineEnvelope, verifyPayload, type Envelope } from '../../core/payload';
import { backoffMs, chunk, sleep } from '../../core/retry';
import type { Codec } from '../../core/runtimes';

/**
 * The agent's side of relay mode (protocol: relay.ts): tasks, results and payloads go through the
 * endpoint manager over the cluster network; the agent needs no AWS access, no Ferry API and no
 * endpoint secret, only the manager's address and per-run token (its 0600 contact file).
 */
export class RelayTaskSource implements TaskSource {
  private inlineLimit = 0;
  private onFatal: (err: Error) => void = () => undefined;
  private readonly outbox = new Batcher<string>(async (reports) => {
    const failed = new Set<number>();
    // The manager takes ten reports a call (one SendMessageBatch).
    let first = 0;
    for (const part of chunk(reports, 10)) {
      try {
        const out = (await this.call('POST', '/v1/relay/results', { reports: part })) as { failed: number[] };
        for (const f of out.failed) failed.add(first + f);
      } catch (err) {
        this.log('could not hand results to the manager', { error: String(err) });
        part.forEach((_, j) => failed.add(first + j));
      }
      first += part.length;
    }
    return failed;
  });
  private readonly deleter = new Batcher<string>(async (receipts) => {
    const out = (await this.call('POST', '/v1/relay/finish', { receipts })) as { failed: number[] };
    return new Set(out.failed);
  });

  constructor(
    private readonly contact: { url: string; token: string },
    private readonly worker: () => string,
    private readonly blockId: string,
    private readonly log: (msg: string, extra?: Record<string, unknown>) => void,
  ) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { authorization: `Bearer ${this.contact.token}`, 'x-ferry-worker': this.worker(), 'x-ferry-block': this.blockId, ...extra };
  }

  private async request(
    method: string,
    path: string,
    body?: Buffer | string,
    opts: { type?: string; timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<Response> {
    const signals = [AbortSignal.timeout(opts.timeoutMs ?? 30_000), ...(opts.signal ? [opts.signal] : [])];
    const res = await fetch(`${this.contact.url}${path}`, {
      method,
      headers: this.headers(body === undefined ? {} : { 'content-type': opts.type ?? 'application/json' }),
      body,
      signal: AbortSignal.any(signals),
    });
    if (res.status === 401) {
      const err = new SecretRefused("the endpoint manager refused this agent's token (a new manager run?)");
      this.onFatal(err);
      throw err;
    }
    if (!res.ok) throw new Error(`the manager answered ${path} with HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
    return res;
  }

  private async call(
    method: string,
    path: string,
    body?: unknown,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<unknown> {
    const res = await this.request(method, path, body === undefined ? undefined : JSON.stringify(body), opts);
    return res.json();
  }

  async start(onFatal: (err: Error) => void): Promise<SourceInfo> {
    let hello: { endpoint_id: string; owner_id: string; inline_limit: number } | undefined;
    for (let attempt = 0; !hello; attempt++) {
      try {
        hello = (await this.call('GET', '/v1/relay/hello')) as typeof hello;
      } catch (err) {
        if (err instanceof SecretRefused || attempt >= 5) throw err;
        await sleep(backoffMs(attempt, { baseMs: 500, capMs: 8_000, jitter: 'none' }));
      }
    }
    this.onFatal = onFatal;
    this.inlineLimit = hello!.inline_limit;
    return { endpointId: hello!.endpoint_id, ownerId: hello!.owner_id };
  }

  async receive(max: number, _visibilitySeconds: number, waitSeconds: number, signal: AbortSignal): Promise<ReceivedMessage[]> {
    // The manager holds the visibility: it extends while this agent's lease (extend) holds.
    const out = (await this.call('GET', `/v1/relay/tasks?max=${max}&wait=${waitSeconds}`, undefined, {
      timeoutMs: (waitSeconds + 15) * 1000,
      signal,
    })) as {
      messages: ReceivedMessage[];
    };
    return out.messages;
  }

  async extend(receipts: string[]): Promise<void> {
    const out = (await this.call('POST', '/v1/relay/extend', { receipts })) as { lost: string[] };
    if (out.lost.length)
      this.log('the manager no longer holds some messages; their tasks may run again elsewhere', { messages: out.lost.length });
  }

  async release(receipts: string[]): Promise<void> {
    await this.call('POST', '/v1/relay/release', { receipts });
  }

  finish(receipt: string): Promise<void> {
    return this.deleter.add(receipt);
  }

  async drop(receipt: string): Promise<void> {
    await this.deleter.add(receipt).catch(() => undefined);
  }

  send(report: string): Promise<void> {
    return this.outbox.add(report);
  }

  async readArgs(env: Envelope): Promise<Buffer> {
    if (env.inline !== undefined) return verifyPayload(Buffer.from(env.inline, 'base64'), env, 'arguments');
    const res = await this.request('POST', '/v1/relay/args', JSON.stringify({ envelope: env }), { timeoutMs: 300_000 });
    return verifyPayload(Buffer.from(await res.arrayBuffer()), env, `payload ${env.ref}`);
  }

  async storePayload(bytes: Uint8Array, codec: Codec, kind: 'result' | 'exception', taskId: string): Promise<Envelope> {
    if (bytes.byteLength <= this.inlineLimit) return inlineEnvelope(bytes, codec);
    const q = new URLSearchParams({ task: taskId, kind, codec });
    const res = await this.request('POST', `/v1/relay/payload?${q}`, Buffer.from(bytes), {
      type: 'application/octet-stream',
      timeoutMs: 300_000,
    });
    return ((await res.json()) as { envelope: Envelope }).envelope;
  }

  /** The API hears of this agent through the manager's heartbeat (its block reports). */
  async heartbeat(): Promise<'ok'> {
    return 'ok';
  }

  async stop(): Promise<void> {}
}
