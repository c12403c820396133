import { DeleteMessageCommand, ReceiveMessageCommand, type Message, type SQSClient } from '@aws-sdk/client-sqs';
import type { S3Client } from '@aws-sdk/client-s3';
import { exceptionKey, readPayload, resultKey, storePayload } from '../../core/bucket';
import { makeS3Client, makeSqsClient } from '../../core/clients';
import type { WorkerGrant } from '../../core/credentials';
import type { Envelope } from '../../core/payload';
import { sendBatches } from '../../core/queues/batch-send';
import { changeVisibility, deleteMessages } from '../../core/queues/endpoint-queue';
import type { Codec } from '../../core/runtimes';
import { GrantKeeper } from '../grant';
import { Batcher } from './batcher';

/** A received task message: its body (JSON of a TaskMessage) and the handle that deletes it. */
export interface ReceivedMessage {
  id?: string;
  receipt: string;
  body: string | undefined;
}

/** What a source knows once it has started. */
export interface SourceInfo {
  endpointId: string;
  /** The endpoint's owner: their runtimes start at once. */
  ownerId: string;
}

/**
 * The agent's queue and result transport. The agent owns its task slots, the backlog and the rule
 * of at-least-once (a message is finished only after every result of it was sent); a source moves
 * messages, reports and payloads.
 * - direct: SQS, S3 and the Ferry API with vended credentials (`DirectTaskSource`);
 * - relay: the endpoint manager over the cluster network (workers/manager/relay-client.ts).
 */
export interface TaskSource {
  start(onFatal: (err: Error) => void): Promise<SourceInfo>;
  /** Up to `max` (≤ 10) messages, invisible to others for `visibilitySeconds`; waits up to `waitSeconds` for one. */
  receive(max: number, visibilitySeconds: number, waitSeconds: number, signal: AbortSignal): Promise<ReceivedMessage[]>;
  /** Keep these messages invisible another `seconds`. */
  extend(receipts: string[], seconds: number): Promise<void>;
  /** Hand these messages back at once (visibility 0). */
  release(receipts: string[]): Promise<void>;
  /** Delete a message whose every result was sent; rejects if it could not. */
  finish(receipt: string): Promise<void>;
  /** Delete a message nothing can run (malformed), best effort. */
  drop(receipt: string): Promise<void>;
  /** Send one report to the results queue; resolves only once it is there. */
  send(report: string): Promise<void>;
  /** A task's argument bytes, verified against their envelope. */
  readArgs(env: Envelope): Promise<Buffer>;
  /** An envelope for a result's or exception's bytes: inline when small, else stored first. */
  storePayload(bytes: Uint8Array, codec: Codec, kind: 'result' | 'exception', taskId: string): Promise<Envelope>;
  /** Tell the API this agent is alive; 'revoked' when the secret was refused. */
  heartbeat(body: Record<string, unknown>): Promise<'ok' | 'revoked'>;
  /**
   * The endpoint queue is gone: ask the API for a fresh grant, which makes the queue again while the
   * endpoint exists (rejects when the endpoint or its secret is gone). Absent: the agent stops.
   */
  recoverQueue?(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * How long a finished message waits for others to be deleted with (up to 10 a call). Nothing waits
 * on a delete, and the message stays invisible meanwhile (its visibility timeout is far longer):
 * the workload bench's agent made 0.56 SQS calls per task with it, against 0.68 without.
 */
const DELETE_LINGER_MS = 50;
/**
 * While one report call is under way, how long the next waits for company before it goes too.
 * A lone report (a quiet agent) leaves at once; a busy agent's leave in fuller calls.
 */
const REPORT_BUSY_LINGER_MS = 5;

/** The direct source: the agent itself long-polls SQS, reads and writes S3 and beats to the API. */
export class DirectTaskSource implements TaskSource {
  private keeper?: GrantKeeper;
  private sqs!: SQSClient;
  /**
   * The long polls' own client: a call with an abort signal drops a client's cached middleware
   * (cacheMiddleware), which the reports and deletes on `sqs` keep this way.
   */
  private receiver!: SQSClient;
  private s3!: S3Client;
  private grant!: WorkerGrant;
  /** Reports to the results queue (SendMessageBatch). */
  private outbox!: Batcher<string>;
  /** Deletes task messages whose every result was sent (DeleteMessageBatch). */
  private deleter!: Batcher<string>;

  constructor(
    private readonly apiUrl: string,
    private readonly endpointId: string,
    private readonly secret: string,
    private readonly log: (msg: string, extra?: Record<string, unknown>) => void,
  ) {}

  async recoverQueue(): Promise<void> {
    await this.keeper!.renew();
  }

  async start(onFatal: (err: Error) => void): Promise<SourceInfo> {
    this.keeper = new GrantKeeper(this.apiUrl, this.endpointId, this.secret, onFatal, this.log);
    this.grant = await this.keeper.start();
    const client = { region: this.grant.region, credentials: this.keeper.provider };
    this.sqs = makeSqsClient(client);
    this.receiver = makeSqsClient(client);
    this.s3 = makeS3Client(client);
    this.outbox = new Batcher(
      async (bodies) => {
        const failed = await sendBatches(
          this.sqs,
          this.grant.results_queue_url,
          bodies.map((body, i) => ({ id: String(i), body })),
        );
        return new Set(failed.map(Number));
      },
      { busyLingerMs: REPORT_BUSY_LINGER_MS },
    );
    this.deleter = new Batcher((receipts) => deleteMessages(this.sqs, this.grant.queue_url, receipts), { lingerMs: DELETE_LINGER_MS });
    return { endpointId: this.endpointId, ownerId: this.grant.owner_id };
  }

  async receive(max: number, visibilitySeconds: number, waitSeconds: number, signal: AbortSignal): Promise<ReceivedMessage[]> {
    const out = await this.receiver.send(
      new ReceiveMessageCommand({
        QueueUrl: this.grant.queue_url,
        MaxNumberOfMessages: max,
        VisibilityTimeout: visibilitySeconds,
        WaitTimeSeconds: waitSeconds,
      }),
      { abortSignal: signal },
    );
    return (out.Messages ?? []).map((m: Message) => ({ id: m.MessageId, receipt: m.ReceiptHandle!, body: m.Body }));
  }

  async extend(receipts: string[], seconds: number): Promise<void> {
    await changeVisibility(this.sqs, this.grant.queue_url, receipts, seconds, (err) =>
      this.log('could not extend visibility', { error: String(err) }),
    );
  }

  async release(receipts: string[]): Promise<void> {
    await changeVisibility(this.sqs, this.grant.queue_url, receipts, 0, (err) =>
      this.log('could not hand messages back', { error: String(err) }),
    );
  }

  finish(receipt: string): Promise<void> {
    return this.deleter.add(receipt);
  }

  async drop(receipt: string): Promise<void> {
    await this.sqs.send(new DeleteMessageCommand({ QueueUrl: this.grant.queue_url, ReceiptHandle: receipt })).catch(() => undefined);
  }

  send(report: string): Promise<void> {
    return this.outbox.add(report);
  }

  readArgs(env: Envelope): Promise<Buffer> {
    return readPayload(env, this.s3, this.grant.bucket);
  }

  storePayload(bytes: Uint8Array, codec: Codec, kind: 'result' | 'exception', taskId: string): Promise<Envelope> {
    const key = kind === 'result' ? resultKey(this.endpointId, taskId) : exceptionKey(this.endpointId, taskId);
    return storePayload(bytes, codec, key, { s3: this.s3, bucket: this.grant.bucket, inlineLimit: this.grant.inline_limit });
  }

  async heartbeat(body: Record<string, unknown>): Promise<'ok' | 'revoked'> {
    try {
      const res = await fetch(`${this.apiUrl}/v1/endpoints/${this.endpointId}/heartbeat`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.secret}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(10_000),
      });
      if (res.status === 401) return 'revoked';
      if (!res.ok) this.log('heartbeat refused', { status: res.status });
    } catch (err) {
      this.log('heartbeat failed', { error: String(err) });
    }
    return 'ok';
  }

  async stop(): Promise<void> {
    this.keeper?.stop();
    this.sqs?.destroy();
    this.receiver?.destroy();
    this.s3?.destroy();
  }
}
