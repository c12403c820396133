/**
 * An in-process SQS server on loopback, speaking the AWS JSON 1.0 protocol that
 * @aws-sdk/client-sqs uses (protocol.ts), standard queues only, with the actions of actions.ts.
 * With `iam` (as the local stack runs it) every request must carry a valid SigV4 signature of a
 * known key and is authorised as IAM would (local/iam.ts); a message's SenderId is its sender's
 * identity. Without `iam` it takes any request, for its protocol tests.
 *
 * State lives in memory (store.ts). With `dataFile` every change a client is told about — a
 * sent, received, deleted or re-timed message, a queue made, changed or deleted — is appended
 * to a log before the answer; a restart replays it, so queues, messages and receipt handles
 * survive kill -9. Unless `fsync: false`, a sent message and a queue change are also
 * fdatasync'ed before the answer, so they survive a machine crash too. A receive, delete or
 * visibility change is not waited for (an fdatasync costs milliseconds on the path of every
 * task): a machine crash can undo only the last of those, which makes a message visible again,
 * i.e. delivers it once more, as at-least-once allows.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Caller } from '../credential-registry';
import type { LocalIam } from '../iam';
import { listenOnLoopback, type LoopbackServer } from '../listen';
import { AuthError } from '../sigv4';
import { SqsActions, type Action } from './actions';
import type { DirectCall } from '../in-process-http';
import { AUTH_ERRORS, Params, SqsError, actionOf, answer, errorAnswer, parseRequest, readBody, respond, type SqsAnswer } from './protocol';
import { SqsStore } from './store';

export interface SqsServerOptions {
  port?: number;
  host?: string;
  /** Keep state on disk: the log is this path with `.json` replaced by `.log`. */
  dataFile?: string;
  /**
   * With `dataFile`: wait for fdatasync (shared by concurrent requests) before answering a
   * change, so it survives a machine crash; default true. Off, a change survives kill -9 only.
   */
  fsync?: boolean;
  /** Compact the log once it holds this many records (and twice the live items); for tests. */
  compactAfterRecords?: number;
  region?: string;
  accountId?: string;
  /** Authenticate and authorise every request; the local stack always passes one. */
  iam?: LocalIam;
}

export interface SqsServer {
  url: string;
  port: number;
  /** This process's own requests, without a socket (see LocalSqsServer.direct). */
  direct: DirectCall;
  close(): Promise<void>;
}

export async function startSqsServer(opts: SqsServerOptions = {}): Promise<SqsServer> {
  const server = new LocalSqsServer(opts);
  await server.start(opts.port ?? 0, opts.host ?? '127.0.0.1');
  return server;
}

/** A received message as ReceiveMessage answers it (the AWS SDK's `Message`). */
export interface ReceivedSqsMessage {
  MessageId: string;
  ReceiptHandle: string;
  MD5OfBody: string;
  Body: string;
  Attributes?: Record<string, string>;
}

/**
 * A queue of a server running in this process, read without HTTP, SigV4 or the SDK: the local
 * results event source's way, as Lambda's pollers read SQS from inside AWS. Same semantics as
 * ReceiveMessage (all system attributes) and DeleteMessageBatch, journal included.
 */
export interface InProcessQueue {
  receive(max: number, waitSeconds: number, signal: AbortSignal): Promise<ReceivedSqsMessage[]>;
  /** Deletes by receipt handle; returns the indexes that failed. */
  delete(receiptHandles: string[]): Set<number>;
}

/** Servers of this process by URL origin (`http://127.0.0.1:<port>`). */
const inProcessServers = new Map<string, LocalSqsServer>();

/** The queue at `queueUrl` when a server in this process serves it; undefined otherwise. */
export function inProcessQueue(queueUrl: string): InProcessQueue | undefined {
  let origin: string;
  try {
    origin = new URL(queueUrl).origin;
  } catch {
    return undefined;
  }
  const server = inProcessServers.get(origin);
  return server && server.inProcessQueue(queueUrl);
}

// Compaction: once the log holds this many records and twice as many as there are live items.
const COMPACT_MIN_RECORDS = 20_000;
const CLOSE_GRACE_MS = 1000;
const NEVER_ABORTED = new AbortController().signal;

class LocalSqsServer implements SqsServer {
  url = '';
  port = 0;
  private readonly accountId: string;
  private readonly iam?: LocalIam;
  private readonly http: Server;
  private listener?: LoopbackServer;
  private readonly store: SqsStore;
  private readonly actions: SqsActions;
  private readonly inFlightRequests = new Set<Promise<void>>();
  private closed?: Promise<void>;

  constructor(opts: SqsServerOptions) {
    const region = opts.region ?? 'us-east-1';
    this.accountId = opts.accountId ?? '000000000000';
    this.iam = opts.iam;
    this.store = new SqsStore({
      region,
      accountId: this.accountId,
      dataFile: opts.dataFile,
      fsync: opts.fsync ?? true,
      compactAfterRecords: opts.compactAfterRecords ?? COMPACT_MIN_RECORDS,
    });
    this.actions = new SqsActions(this.store, this.accountId);
    this.http = createServer((req, res) => {
      const request = this.handle(req, res).finally(() => this.inFlightRequests.delete(request));
      this.inFlightRequests.add(request);
    });
    // Outlive the SDK's idle keep-alive sockets, so a reused socket is not closed under a request.
    this.http.keepAliveTimeout = 65_000;
  }

  async start(port: number, host: string): Promise<void> {
    await this.store.load();
    this.listener = await listenOnLoopback(this.http, port, host);
    this.url = this.actions.url = this.listener.url;
    this.port = this.listener.port;
    inProcessServers.set(new URL(this.url).origin, this);
  }

  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  private async shutdown(): Promise<void> {
    this.store.closing = true;
    if (inProcessServers.get(new URL(this.url).origin) === this) inProcessServers.delete(new URL(this.url).origin);
    // Long polls answer (empty) at once; then the sockets, idle keep-alive ones included, go.
    // The grace period only matters for a client stuck sending its request body.
    for (const queue of this.store.queues.values()) queue.wake();
    let grace: NodeJS.Timeout | undefined;
    const graceOver = new Promise((resolve) => (grace = setTimeout(resolve, CLOSE_GRACE_MS)));
    await Promise.race([Promise.allSettled([...this.inFlightRequests]), graceOver]);
    clearTimeout(grace);
    await this.listener?.close();
    await this.store.close();
  }

  /** See `inProcessQueue`: ReceiveMessage and DeleteMessageBatch without the HTTP request. */
  inProcessQueue(queueUrl: string): InProcessQueue {
    const { ReceiveMessage, DeleteMessageBatch } = this.actions.table;
    return {
      receive: async (max, waitSeconds, signal) => {
        const params = new Params({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: max,
          WaitTimeSeconds: waitSeconds,
          MessageSystemAttributeNames: ['All'],
        });
        const out = await ReceiveMessage!.run(params, signal);
        await this.store.commit(false);
        return (out.Messages ?? []) as ReceivedSqsMessage[];
      },
      delete: (receiptHandles) => {
        const entries = receiptHandles.map((handle, i) => ({ Id: String(i), ReceiptHandle: handle }));
        const out = DeleteMessageBatch!.run(new Params({ QueueUrl: queueUrl, Entries: entries }), NEVER_ABORTED);
        this.store.flush();
        return new Set(((out as { Failed: { Id: string }[] }).Failed ?? []).map((f) => Number(f.Id)));
      },
    };
  }

  // ------------------------------------------------------------ HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = req.headers['x-amz-target'];
    // Only a long poll waits on a queue: when its caller hangs up it stops, and takes nothing.
    let signal = NEVER_ABORTED;
    if (this.actionFor(target)?.waits) {
      const hungUp = new AbortController();
      res.on('close', () => {
        if (!res.writableFinished) hungUp.abort();
      });
      signal = hungUp.signal;
    }
    const out = await this.serve(target, req.method, signal, async () => {
      const body = await readBody(req);
      return { body, caller: await this.authenticate(req, body) };
    });
    await respond(res, out);
  }

  /**
   * A request of this process's own handlers, straight to the queues: no socket, and no signature
   * to make or check, since they hold the admin key anyway (core/clients.ts useSqsTransport). The
   * admin's policy still applies. Every other caller (a worker, a test's client) comes over the socket.
   */
  readonly direct: DirectCall = async (req) => {
    const caller = this.iam && this.iam.registry.lookup(this.iam.registry.admin.accessKeyId);
    const out = await this.serve(req.headers['x-amz-target'], req.method, NEVER_ABORTED, () =>
      Promise.resolve({ body: req.body, caller: caller?.found === 'admin' ? caller.caller : undefined }),
    );
    return { status: out.status, headers: out.headers, body: Buffer.from(out.body) };
  };

  private actionFor(target: string | string[] | undefined): Action | undefined {
    const name = actionOf(target);
    return Object.hasOwn(this.actions.table, name) ? this.actions.table[name] : undefined;
  }

  /** The answer to one request, however it came: `read` gives its body and who signed it. */
  private async serve(
    target: string | string[] | undefined,
    method: string | undefined,
    signal: AbortSignal,
    read: () => Promise<{ body: Buffer; caller: Caller | undefined }>,
  ): Promise<SqsAnswer> {
    const requestId = randomUUID();
    const name = actionOf(target);
    const action = this.actionFor(target);
    try {
      const { body, caller } = await read();
      if (method !== 'POST' || !action)
        throw new SqsError('UnsupportedOperation', `The operation ${String(target ?? method)} is not supported.`);
      const params = parseRequest(body);
      if (caller) this.authorize(caller, name, params);
      const output = await action.run(params, signal, caller);
      if (action.durability !== 'none') await this.store.commit(action.durability === 'synced');
      return answer(200, requestId, output);
    } catch (err) {
      const error =
        err instanceof SqsError
          ? err
          : err instanceof AuthError
            ? new SqsError(AUTH_ERRORS[err.reason], err.message)
            : new SqsError('InternalError', 'The request processing has failed because of an unknown error.');
      if (!(err instanceof SqsError) && !(err instanceof AuthError)) console.error('local sqs: %s failed', name, err);
      // A batch may have changed some entries before one failed: those, too, are on disk before the answer.
      else if (action && action.durability !== 'none') await this.store.commit(action.durability === 'synced').catch(() => undefined);
      return errorAnswer(requestId, error);
    }
  }

  // ------------------------------------------------------------ identity

  /** The caller a request is signed by; undefined when this server runs without IAM. */
  private async authenticate(req: IncomingMessage, body: Buffer): Promise<Caller | undefined> {
    if (!this.iam) return undefined;
    return this.iam.authenticate('sqs', { method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers, body });
  }

  /** Refuses an action the caller's policies do not allow on the queue it names (every queue for the account-wide ones). */
  private authorize(caller: Caller, action: string, params: Params): void {
    let name: string | undefined;
    try {
      const url = params.string('QueueUrl');
      name = url !== undefined ? this.actions.queueNameIn(url) : params.string('QueueName');
    } catch {
      name = undefined;
    }
    const resource = this.store.arnOf(action === 'ListQueues' || !name ? '*' : name);
    if (!this.iam!.allows(caller, `sqs:${action}`, resource)) {
      throw new SqsError(
        'AccessDenied',
        `User: ${caller.principalId} is not authorized to perform: sqs:${action} on resource: ${resource} because no identity-based policy allows the sqs:${action} action`,
      );
    }
  }
}
