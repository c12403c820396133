import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  AddPermissionCommand,
  ChangeMessageVisibilityBatchCommand,
  ChangeMessageVisibilityCommand,
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  DeleteMessageCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  ListQueuesCommand,
  PurgeQueueCommand,
  type QueueAttributeName,
  ReceiveMessageCommand,
  type ReceiveMessageCommandInput,
  SendMessageBatchCommand,
  SendMessageCommand,
  SetQueueAttributesCommand,
  SQSClient,
  TagQueueCommand,
  UntagQueueCommand,
} from '@aws-sdk/client-sqs';
import { SignatureV4 } from '@smithy/signature-v4';
import type { SourceData } from '@smithy/types';
import { CredentialRegistry, newAccessKey } from '../../local/credential-registry';
import { InProcessHttpHandler } from '../../local/in-process-http';
import { verifySigV4 } from '../../local/sigv4';
import { startSqsServer, type SqsServer } from '../../local/sqs/server';
import { sleep } from '../../core/retry';

function clientFor(server: SqsServer): SQSClient {
  return new SQSClient({ region: 'us-east-1', endpoint: server.url, credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
}

async function errorOf(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the call to fail');
}

let server: SqsServer;
let sqs: SQSClient;

beforeAll(async () => {
  server = await startSqsServer();
  sqs = clientFor(server);
});

afterAll(async () => {
  sqs.destroy();
  await server.close();
});

async function createQueue(name: string, Attributes?: Record<string, string>, tagCount = 0): Promise<string> {
  const tags = tagCount ? Object.fromEntries(Array.from({ length: tagCount }, (_, i) => [`tag${i}`, 'v'])) : undefined;
  const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: name, Attributes, tags }));
  return QueueUrl!;
}

async function receive(input: ReceiveMessageCommandInput) {
  const { Messages } = await sqs.send(new ReceiveMessageCommand({ MessageSystemAttributeNames: ['All'], ...input }));
  return Messages ?? [];
}

async function counts(QueueUrl: string) {
  const { Attributes } = await sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl,
      AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
    }),
  );
  return {
    visible: Number(Attributes?.ApproximateNumberOfMessages),
    inFlight: Number(Attributes?.ApproximateNumberOfMessagesNotVisible),
  };
}

describe('queues', () => {
  it('creates a queue at <url>/<account>/<name>, idempotently, and refuses different attributes', async () => {
    const url = await createQueue('orders', { VisibilityTimeout: '45' });
    expect(url).toBe(`${server.url}/000000000000/orders`);
    await expect(createQueue('orders', { VisibilityTimeout: '45' })).resolves.toBe(url);
    await expect(createQueue('orders')).resolves.toBe(url);
    expect((await errorOf(createQueue('orders', { VisibilityTimeout: '46' }))).name).toBe('QueueNameExists');
    expect((await sqs.send(new GetQueueUrlCommand({ QueueName: 'orders' }))).QueueUrl).toBe(url);
  });

  it('rejects bad names and attributes', async () => {
    expect((await errorOf(createQueue('no spaces'))).name).toBe('InvalidParameterValue');
    expect((await errorOf(createQueue('bad-timeout', { VisibilityTimeout: '43201' }))).name).toBe('InvalidAttributeValue');
    expect((await errorOf(createQueue('bad-attribute', { Colour: 'blue' }))).name).toBe('InvalidAttributeName');
    const redrive = JSON.stringify({ deadLetterTargetArn: 'arn:aws:sqs:us-east-1:000000000000:missing', maxReceiveCount: 3 });
    expect((await errorOf(createQueue('bad-redrive', { RedrivePolicy: redrive }))).name).toBe('InvalidParameterValue');
  });

  it('reports an unknown queue as QueueDoesNotExist', async () => {
    expect((await errorOf(sqs.send(new GetQueueUrlCommand({ QueueName: 'nope' })))).name).toBe('QueueDoesNotExist');
    const QueueUrl = `${server.url}/000000000000/nope`;
    expect((await errorOf(sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'x' })))).name).toBe('QueueDoesNotExist');
    expect((await errorOf(sqs.send(new SendMessageCommand({ QueueUrl: `${server.url}/not-a-queue-url`, MessageBody: 'x' })))).name).toBe(
      'InvalidAddress',
    );
  });

  it('deletes a queue', async () => {
    const QueueUrl = await createQueue('short-lived');
    await sqs.send(new DeleteQueueCommand({ QueueUrl }));
    expect((await errorOf(sqs.send(new GetQueueUrlCommand({ QueueName: 'short-lived' })))).name).toBe('QueueDoesNotExist');
  });

  it('lists queues by prefix, a page at a time', async () => {
    for (const name of ['list-a-1', 'list-a-2', 'list-a-3', 'list-b-1']) await createQueue(name);
    const all = await sqs.send(new ListQueuesCommand({ QueueNamePrefix: 'list-a' }));
    expect(all.QueueUrls).toEqual(['list-a-1', 'list-a-2', 'list-a-3'].map((name) => `${server.url}/000000000000/${name}`));
    expect(all.NextToken).toBeUndefined();

    const first = await sqs.send(new ListQueuesCommand({ QueueNamePrefix: 'list-', MaxResults: 3 }));
    expect(first.QueueUrls).toHaveLength(3);
    const second = await sqs.send(new ListQueuesCommand({ QueueNamePrefix: 'list-', MaxResults: 3, NextToken: first.NextToken }));
    expect(second.QueueUrls).toEqual([`${server.url}/000000000000/list-b-1`]);
    expect(second.NextToken).toBeUndefined();
  });

  it('returns stored and computed attributes, and counts messages by state', async () => {
    const QueueUrl = await createQueue('counted', { MaximumMessageSize: '2048', SqsManagedSseEnabled: 'false' });
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'visible' }));
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'in flight' }));
    expect(await receive({ QueueUrl })).toHaveLength(1);
    expect(await counts(QueueUrl)).toEqual({ visible: 1, inFlight: 1 });

    const { Attributes } = await sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['All'] }));
    expect(Attributes).toEqual({
      QueueArn: 'arn:aws:sqs:us-east-1:000000000000:counted',
      VisibilityTimeout: '30',
      MaximumMessageSize: '2048',
      MessageRetentionPeriod: '345600',
      SqsManagedSseEnabled: 'false',
      ApproximateNumberOfMessages: '1',
      ApproximateNumberOfMessagesNotVisible: '1',
    });

    const only = await sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['QueueArn'] }));
    expect(only.Attributes).toEqual({ QueueArn: 'arn:aws:sqs:us-east-1:000000000000:counted' });
  });

  it('sets attributes; an empty redrive policy removes redrive', async () => {
    await createQueue('settings-dlq');
    const redrive = JSON.stringify({ deadLetterTargetArn: 'arn:aws:sqs:us-east-1:000000000000:settings-dlq', maxReceiveCount: 3 });
    const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: 'settings', tags: { team: 'ferry' } }));
    await sqs.send(new SetQueueAttributesCommand({ QueueUrl, Attributes: { VisibilityTimeout: '120', RedrivePolicy: redrive } }));
    const names: QueueAttributeName[] = ['VisibilityTimeout', 'RedrivePolicy'];
    expect((await sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: names }))).Attributes).toEqual({
      VisibilityTimeout: '120',
      RedrivePolicy: redrive,
    });
    await sqs.send(new SetQueueAttributesCommand({ QueueUrl, Attributes: { RedrivePolicy: '' } }));
    expect((await sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: names }))).Attributes).toEqual({
      VisibilityTimeout: '120',
    });
    // SQS: 50 tags per queue.
    await expect(createQueue('fifty-tags', undefined, 50)).resolves.toContain('fifty-tags');
    expect((await errorOf(createQueue('fifty-one-tags', undefined, 51))).name).toBe('InvalidParameterValue');
  });

  it('refuses, never ignores, what it leaves out of SQS: other actions, delays, message attributes, FIFO', async () => {
    const QueueUrl = await createQueue('left-out');
    const refusals = [
      sqs.send(new PurgeQueueCommand({ QueueUrl })),
      sqs.send(new TagQueueCommand({ QueueUrl, Tags: { a: 'b' } })),
      sqs.send(new UntagQueueCommand({ QueueUrl, TagKeys: ['a'] })),
      sqs.send(new SetQueueAttributesCommand({ QueueUrl, Attributes: { DelaySeconds: '5' } })),
      sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['ApproximateNumberOfMessagesDelayed'] })),
      createQueue('left-out-kms', { KmsMasterKeyId: 'alias/aws/sqs' }),
      createQueue('left-out.fifo', { FifoQueue: 'true' }),
      sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'later', DelaySeconds: 5 })),
      sqs.send(
        new SendMessageCommand({ QueueUrl, MessageBody: 'tagged', MessageAttributes: { kind: { DataType: 'String', StringValue: 'x' } } }),
      ),
    ];
    for (const refusal of refusals) expect((await errorOf(refusal)).name).toBe('UnsupportedOperation');
    const batch = await sqs.send(
      new SendMessageBatchCommand({
        QueueUrl,
        Entries: [
          { Id: 'plain', MessageBody: 'plain' },
          { Id: 'delayed', MessageBody: 'later', DelaySeconds: 5 },
        ],
      }),
    );
    expect(batch.Successful?.map((entry) => entry.Id)).toEqual(['plain']);
    expect(batch.Failed).toEqual([expect.objectContaining({ Id: 'delayed', Code: 'AWS.SimpleQueueService.UnsupportedOperation' })]);
    // DelaySeconds 0 is what a send without it does.
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'now', DelaySeconds: 0 }));
    expect(await counts(QueueUrl)).toEqual({ visible: 2, inFlight: 0 });
  });

  it('answers an unknown action with UnsupportedOperation', async () => {
    const res = await fetch(server.url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': 'AmazonSQS.MakeCoffee' },
      body: '{}',
    });
    expect(res.status).toBe(400);
    expect(res.headers.get('x-amzn-query-error')).toBe('AWS.SimpleQueueService.UnsupportedOperation;Sender');
    expect(await res.json()).toMatchObject({ __type: 'com.amazonaws.sqs#UnsupportedOperation' });

    const QueueUrl = await createQueue('permissions');
    const err = await errorOf(sqs.send(new AddPermissionCommand({ QueueUrl, Label: 'l', AWSAccountIds: ['1'], Actions: ['SendMessage'] })));
    expect(err.name).toBe('UnsupportedOperation');
  });
});

describe('messages', () => {
  it('sends, receives and deletes, with the system attributes asked for', async () => {
    const QueueUrl = await createQueue('round-trip');
    // The SDK checks MD5OfMessageBody and MD5OfBody against the body itself.
    const sent = await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'body ✓' }));
    const [message] = await receive({ QueueUrl });
    expect(message.MessageId).toBe(sent.MessageId);
    expect(message.Body).toBe('body ✓');
    expect(message.Attributes).toEqual({
      ApproximateReceiveCount: '1',
      SenderId: '000000000000',
      SentTimestamp: expect.stringMatching(/^\d+$/),
      ApproximateFirstReceiveTimestamp: expect.stringMatching(/^\d+$/),
    });
    expect(Number(message.Attributes?.SentTimestamp)).toBeLessThanOrEqual(Number(message.Attributes?.ApproximateFirstReceiveTimestamp));
    await sqs.send(new ChangeMessageVisibilityCommand({ QueueUrl, ReceiptHandle: message.ReceiptHandle, VisibilityTimeout: 0 }));
    const [again] = await receive({ QueueUrl, MessageSystemAttributeNames: ['ApproximateReceiveCount'] });
    expect(again.Attributes).toEqual({ ApproximateReceiveCount: '2' });
    await sqs.send(new ChangeMessageVisibilityCommand({ QueueUrl, ReceiptHandle: again.ReceiptHandle, VisibilityTimeout: 0 }));
    const [plain] = await receive({ QueueUrl, MessageSystemAttributeNames: undefined });
    expect(plain.Attributes).toBeUndefined();
    await sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: plain.ReceiptHandle }));
    expect(await counts(QueueUrl)).toEqual({ visible: 0, inFlight: 0 });
  });

  it('refuses a body with characters outside XML 1.0', async () => {
    const QueueUrl = await createQueue('characters');
    expect((await errorOf(sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'bell \u0007' })))).name).toBe('InvalidMessageContents');
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'tab\t, newline\n, return\r, 😀' }));
    expect((await receive({ QueueUrl })).map((m) => m.Body)).toEqual(['tab\t, newline\n, return\r, 😀']);
  });

  it('refuses a message over MaximumMessageSize', async () => {
    const QueueUrl = await createQueue('small-messages', { MaximumMessageSize: '1024' });
    const err = await errorOf(sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'x'.repeat(1025) })));
    expect(err.name).toBe('InvalidParameterValue');
  });

  it('sends a batch in which an oversize entry fails alone', async () => {
    const QueueUrl = await createQueue('batch', { MaximumMessageSize: '1024' });
    const result = await sqs.send(
      new SendMessageBatchCommand({
        QueueUrl,
        Entries: [
          { Id: 'a', MessageBody: 'first' },
          { Id: 'big', MessageBody: 'x'.repeat(2000) },
          { Id: 'c', MessageBody: 'third' },
        ],
      }),
    );
    expect(result.Successful?.map((entry) => entry.Id)).toEqual(['a', 'c']);
    expect(result.Failed).toEqual([expect.objectContaining({ Id: 'big', SenderFault: true, Code: 'InvalidParameterValue' })]);
    const bodies = (await receive({ QueueUrl, MaxNumberOfMessages: 10 })).map((m) => m.Body);
    expect(bodies.sort()).toEqual(['first', 'third']);
  });

  it('checks batch requests as a whole', async () => {
    const QueueUrl = await createQueue('batch-rules');
    const entries = (n: number) => Array.from({ length: n }, (_, i) => ({ Id: `m${i}`, MessageBody: `message ${i}` }));
    expect((await errorOf(sqs.send(new SendMessageBatchCommand({ QueueUrl, Entries: [] })))).name).toBe('EmptyBatchRequest');
    expect((await errorOf(sqs.send(new SendMessageBatchCommand({ QueueUrl, Entries: entries(11) })))).name).toBe(
      'TooManyEntriesInBatchRequest',
    );
    const twins = [...entries(2), { Id: 'm0', MessageBody: 'again' }];
    expect((await errorOf(sqs.send(new SendMessageBatchCommand({ QueueUrl, Entries: twins })))).name).toBe('BatchEntryIdsNotDistinct');
    expect(await counts(QueueUrl)).toEqual({ visible: 0, inFlight: 0 });
  });

  it('deletes in batches, failing only the bad handle', async () => {
    const QueueUrl = await createQueue('delete-batch');
    await sqs.send(
      new SendMessageBatchCommand({
        QueueUrl,
        Entries: [
          { Id: '1', MessageBody: 'one' },
          { Id: '2', MessageBody: 'two' },
        ],
      }),
    );
    const messages = await receive({ QueueUrl, MaxNumberOfMessages: 10 });
    const result = await sqs.send(
      new DeleteMessageBatchCommand({
        QueueUrl,
        Entries: [
          ...messages.map((m, i) => ({ Id: `ok${i}`, ReceiptHandle: m.ReceiptHandle })),
          { Id: 'bad', ReceiptHandle: 'not-a-handle' },
        ],
      }),
    );
    expect(result.Successful).toHaveLength(2);
    expect(result.Failed).toEqual([expect.objectContaining({ Id: 'bad', Code: 'ReceiptHandleIsInvalid' })]);
    expect(await counts(QueueUrl)).toEqual({ visible: 0, inFlight: 0 });
  });

  it('refuses a receipt handle it never issued', async () => {
    const QueueUrl = await createQueue('handles');
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'x' }));
    const [message] = await receive({ QueueUrl });
    const forged = `${message.ReceiptHandle!.split('.')[0]}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`;
    for (const ReceiptHandle of ['garbage', forged]) {
      expect((await errorOf(sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle })))).name).toBe('ReceiptHandleIsInvalid');
    }
    const other = await createQueue('handles-elsewhere');
    expect((await errorOf(sqs.send(new DeleteMessageCommand({ QueueUrl: other, ReceiptHandle: message.ReceiptHandle })))).name).toBe(
      'ReceiptHandleIsInvalid',
    );
  });
});

describe('delivery', () => {
  it('answers a long poll as soon as a message is sent', async () => {
    const QueueUrl = await createQueue('long-poll');
    const polling = receive({ QueueUrl, WaitTimeSeconds: 5 });
    await sleep(200);
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'arrived' }));
    // Generous margin: the answer comes within milliseconds of the send, the wait is 5 s.
    const first = await Promise.race([polling, sleep(4000).then(() => 'wait ran out' as const)]);
    expect(first).not.toBe('wait ran out');
    expect((first as Awaited<typeof polling>).map((m) => m.Body)).toEqual(['arrived']);
  });

  it('gives one message to exactly one of two racing consumers; the other gets nothing when its wait ends', async () => {
    const QueueUrl = await createQueue('race');
    const consumers = [receive({ QueueUrl, WaitTimeSeconds: 1 }), receive({ QueueUrl, WaitTimeSeconds: 1 })];
    await sleep(100);
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'only once' }));
    const [a, b] = await Promise.all(consumers);
    expect([a.length, b.length].sort()).toEqual([0, 1]);
    expect(await counts(QueueUrl)).toEqual({ visible: 0, inFlight: 1 });
  });

  it('splits many messages between concurrent consumers without duplicates', async () => {
    const QueueUrl = await createQueue('many');
    for (let i = 0; i < 20; i += 10) {
      const Entries = Array.from({ length: 10 }, (_, j) => ({ Id: `m${i + j}`, MessageBody: `message ${i + j}` }));
      await sqs.send(new SendMessageBatchCommand({ QueueUrl, Entries }));
    }
    const consume = async () => {
      const seen: string[] = [];
      for (;;) {
        const batch = await receive({ QueueUrl, MaxNumberOfMessages: 3 });
        if (batch.length === 0) return seen;
        seen.push(...batch.map((m) => m.Body!));
      }
    };
    const [a, b] = await Promise.all([consume(), consume()]);
    expect([...a, ...b].sort()).toEqual(Array.from({ length: 20 }, (_, i) => `message ${i}`).sort());
  });

  it('redelivers after the visibility timeout, and only the latest handle deletes', async () => {
    const QueueUrl = await createQueue('redeliver');
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'again' }));
    const [first] = await receive({ QueueUrl, VisibilityTimeout: 2 });
    expect(await receive({ QueueUrl })).toEqual([]);
    const [second] = await receive({ QueueUrl, WaitTimeSeconds: 5 });
    expect(second.MessageId).toBe(first.MessageId);
    expect(second.Attributes?.ApproximateReceiveCount).toBe('2');
    expect(second.Attributes?.ApproximateFirstReceiveTimestamp).toBe(first.Attributes?.ApproximateFirstReceiveTimestamp);
    expect(second.ReceiptHandle).not.toBe(first.ReceiptHandle);

    await sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: first.ReceiptHandle }));
    expect(await counts(QueueUrl)).toEqual({ visible: 0, inFlight: 1 });
    await sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: second.ReceiptHandle }));
    expect(await counts(QueueUrl)).toEqual({ visible: 0, inFlight: 0 });
  });

  it('makes a message visible at once with ChangeMessageVisibility 0, waking a waiting receiver', async () => {
    const QueueUrl = await createQueue('release');
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'released' }));
    const [held] = await receive({ QueueUrl, VisibilityTimeout: 300 });
    const waiting = receive({ QueueUrl, WaitTimeSeconds: 5 });
    await sleep(200);
    await sqs.send(new ChangeMessageVisibilityCommand({ QueueUrl, ReceiptHandle: held.ReceiptHandle, VisibilityTimeout: 0 }));
    const [again] = await waiting;
    expect(again.MessageId).toBe(held.MessageId);
    expect(again.Attributes?.ApproximateReceiveCount).toBe('2');

    // The earlier handle no longer owns the message; the batch fails that entry alone.
    const result = await sqs.send(
      new ChangeMessageVisibilityBatchCommand({
        QueueUrl,
        Entries: [
          { Id: 'current', ReceiptHandle: again.ReceiptHandle, VisibilityTimeout: 60 },
          { Id: 'stale', ReceiptHandle: held.ReceiptHandle, VisibilityTimeout: 60 },
        ],
      }),
    );
    expect(result.Successful?.map((entry) => entry.Id)).toEqual(['current']);
    expect(result.Failed?.map((entry) => entry.Id)).toEqual(['stale']);
  });

  it('does not hand a message to a receiver that hung up', async () => {
    const QueueUrl = await createQueue('hung-up');
    const abort = new AbortController();
    const abandoned = sqs.send(new ReceiveMessageCommand({ QueueUrl, WaitTimeSeconds: 5 }), { abortSignal: abort.signal });
    await sleep(100);
    abort.abort();
    await expect(abandoned).rejects.toThrow();
    await sleep(50);
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'for the next receiver' }));
    const [message] = await receive({ QueueUrl });
    expect(message.Attributes?.ApproximateReceiveCount).toBe('1');
  });

  it('moves a message to the dead-letter queue after maxReceiveCount receives', async () => {
    const dlqUrl = await createQueue('work-dlq');
    const { Attributes } = await sqs.send(new GetQueueAttributesCommand({ QueueUrl: dlqUrl, AttributeNames: ['QueueArn'] }));
    const redrive = { deadLetterTargetArn: Attributes!.QueueArn!, maxReceiveCount: 2 };
    const QueueUrl = await createQueue('work', { RedrivePolicy: JSON.stringify(redrive) });
    const stored = await sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['RedrivePolicy'] }));
    expect(JSON.parse(stored.Attributes!.RedrivePolicy!)).toEqual(redrive);

    const { MessageId } = await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'poison' }));
    for (const count of ['1', '2']) {
      const [message] = await receive({ QueueUrl, VisibilityTimeout: 0 });
      expect(message.Attributes?.ApproximateReceiveCount).toBe(count);
    }
    expect(await receive({ QueueUrl })).toEqual([]);
    expect(await counts(QueueUrl)).toEqual({ visible: 0, inFlight: 0 });

    const [dead] = await receive({ QueueUrl: dlqUrl });
    expect(dead).toMatchObject({ MessageId, Body: 'poison' });
  });
});

describe("in-process requests (the local stack's own handlers)", () => {
  // The handlers' SDK client as the local stack builds it (core/clients.ts useSqsTransport): no socket, no signature.
  const direct = () =>
    new SQSClient({
      region: 'us-east-1',
      endpoint: server.url,
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
      requestHandler: new InProcessHttpHandler(server.direct),
      signer: { sign: (request) => Promise.resolve(request) },
    });

  it('serves the same queues as the socket, unsigned', async () => {
    const inProcess = direct();
    try {
      const { QueueUrl } = await inProcess.send(new CreateQueueCommand({ QueueName: 'in-process' }));
      expect(QueueUrl).toBe(await createQueue('in-process'));
      const sent = await inProcess.send(
        new SendMessageBatchCommand({
          QueueUrl,
          Entries: [
            { Id: 'a', MessageBody: 'one' },
            { Id: 'b', MessageBody: 'two' },
          ],
        }),
      );
      expect(sent.Successful?.map((e) => e.Id).sort()).toEqual(['a', 'b']);
      const got = await receive({ QueueUrl, MaxNumberOfMessages: 10 });
      expect(got.map((m) => m.Body).sort()).toEqual(['one', 'two']);
      await inProcess.send(
        new DeleteMessageBatchCommand({ QueueUrl, Entries: got.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })) }),
      );
      expect(await counts(QueueUrl!)).toEqual({ visible: 0, inFlight: 0 });
    } finally {
      inProcess.destroy();
    }
  });

  it('answers errors as the socket does, so the SDK raises the same exceptions', async () => {
    const inProcess = direct();
    try {
      const missing = await errorOf(inProcess.send(new GetQueueUrlCommand({ QueueName: 'no-such-queue' })));
      expect(missing.name).toBe('QueueDoesNotExist');
      const url = await createQueue('in-process-errors');
      const refused = await errorOf(inProcess.send(new SendMessageCommand({ QueueUrl: url, MessageBody: '' })));
      expect(refused.name).toBe((await errorOf(sqs.send(new SendMessageCommand({ QueueUrl: url, MessageBody: '' })))).name);
      expect(await counts(url)).toEqual({ visible: 0, inFlight: 0 });
    } finally {
      inProcess.destroy();
    }
  });
});

describe('lifecycle', () => {
  it('keeps queues, messages and receipt handles across a restart with a data file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-sqs-'));
    try {
      const dataFile = join(dir, 'sqs.json');
      const before = await startSqsServer({ dataFile });
      const client = clientFor(before);
      const { QueueUrl } = await client.send(new CreateQueueCommand({ QueueName: 'durable', Attributes: { VisibilityTimeout: '90' } }));
      await client.send(new SendMessageCommand({ QueueUrl, MessageBody: 'held' }));
      const [held] = (await client.send(new ReceiveMessageCommand({ QueueUrl }))).Messages!;
      await client.send(new SendMessageCommand({ QueueUrl, MessageBody: 'waiting' }));
      client.destroy();
      await before.close();

      const after = await startSqsServer({ dataFile });
      const again = clientFor(after);
      try {
        const url = (await again.send(new GetQueueUrlCommand({ QueueName: 'durable' }))).QueueUrl!;
        expect(url).toBe(`${after.url}/000000000000/durable`);
        const { Attributes } = await again.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['All'] }));
        expect(Attributes).toMatchObject({
          VisibilityTimeout: '90',
          ApproximateNumberOfMessages: '1',
          ApproximateNumberOfMessagesNotVisible: '1',
        });

        await again.send(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: held.ReceiptHandle }));
        const messages = (await again.send(new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10 }))).Messages!;
        expect(messages.map((m) => m.Body)).toEqual(['waiting']);
      } finally {
        again.destroy();
        await after.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('answers pending long polls when it closes', async () => {
    const closing = await startSqsServer();
    const client = clientFor(closing);
    const { QueueUrl } = await client.send(new CreateQueueCommand({ QueueName: 'closing' }));
    const polling = client.send(new ReceiveMessageCommand({ QueueUrl, WaitTimeSeconds: 20 }));
    await sleep(100);
    await closing.close();
    expect((await polling).Messages).toBeUndefined();
    client.destroy();
  }, 5000);
});

describe('durability', () => {
  /** An SQS server with `dataFile` in a child process, so the test can kill -9 it. */
  async function serverProcess(dataFile: string, port = 0): Promise<{ child: ChildProcess; url: string; killed: Promise<unknown> }> {
    const code = `require(${JSON.stringify(resolve(__dirname, '../../local/sqs/server.ts'))})
      .startSqsServer({ dataFile: ${JSON.stringify(dataFile)}, port: ${port} })
      .then((s) => console.log('URL ' + s.url));`;
    const child = spawn(process.execPath, ['--import', 'tsx', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    const killed = new Promise((r) => child.once('exit', r));
    const url = await new Promise<string>((ok, fail) => {
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const m = /URL (\S+)/.exec(out);
        if (m) ok(m[1]!);
      });
      child.once('exit', (code) => fail(new Error(`sqs server process exited with ${code}`)));
    });
    return { child, url, killed };
  }

  const remote = (url: string) =>
    new SQSClient({ region: 'us-east-1', endpoint: url, credentials: { accessKeyId: 'local', secretAccessKey: 'local' }, maxAttempts: 1 });

  it('keeps every answered send, receive and delete when the process is killed -9 right after the answer', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-sqs-kill-'));
    try {
      const dataFile = join(dir, 'sqs.json');
      const first = await serverProcess(dataFile);
      const port = Number(new URL(first.url).port);
      let client = remote(first.url);
      const { QueueUrl } = await client.send(new CreateQueueCommand({ QueueName: 'kill', Attributes: { VisibilityTimeout: '600' } }));
      await client.send(
        new SendMessageBatchCommand({
          QueueUrl,
          Entries: Array.from({ length: 10 }, (_, i) => ({ Id: `e${i}`, MessageBody: `batch-${i}` })),
        }),
      );
      const [taken] = (await client.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 1 }))).Messages!;
      const [gone] = (await client.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 1 }))).Messages!;
      await client.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: gone!.ReceiptHandle }));
      const { MessageId } = await client.send(new SendMessageCommand({ QueueUrl, MessageBody: 'last' }));
      // No pause: the answer is in hand, the process dies now.
      first.child.kill('SIGKILL');
      await first.killed;
      client.destroy();

      const second = await serverProcess(dataFile, port);
      client = remote(second.url);
      try {
        expect(
          await client.send(
            new GetQueueAttributesCommand({
              QueueUrl,
              AttributeNames: ['VisibilityTimeout', 'ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
            }),
          ),
        ).toMatchObject({
          Attributes: { VisibilityTimeout: '600', ApproximateNumberOfMessages: '9', ApproximateNumberOfMessagesNotVisible: '1' },
        });
        const bodies: string[] = [];
        for (;;) {
          const { Messages } = await client.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 10 }));
          if (!Messages) break;
          bodies.push(...Messages.map((m) => m.Body!));
        }
        expect(bodies.sort()).toEqual(
          [...Array.from({ length: 10 }, (_, i) => `batch-${i}`).filter((b) => b !== taken!.Body && b !== gone!.Body), 'last'].sort(),
        );
        expect(bodies).not.toContain(gone!.Body);
        // The handle of the receive before the kill is still the latest: it deletes.
        await client.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: taken!.ReceiptHandle }));
        expect(MessageId).toBeDefined();
      } finally {
        client.destroy();
        second.child.kill('SIGKILL');
        await second.killed;
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it('cuts off a write torn by a crash, and migrates an old snapshot, dropping messages past retention', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-sqs-log-'));
    try {
      const dataFile = join(dir, 'sqs.json');
      const now = Date.now();
      const message = (id: string, sentAt: number) => ({
        id,
        body: id,
        md5OfBody: createHash('md5').update(id).digest('hex'),
        attributes: {},
        systemAttributes: {},
        sentAt,
        visibleAt: sentAt,
        receiveCount: 0,
      });
      writeFileSync(
        dataFile,
        JSON.stringify({
          version: 1,
          receiptHandleKey: '00'.repeat(32),
          queues: [
            {
              name: 'old',
              attributes: {
                DelaySeconds: '0',
                MaximumMessageSize: '262144',
                MessageRetentionPeriod: '86400',
                ReceiveMessageWaitTimeSeconds: '0',
                VisibilityTimeout: '30',
              },
              tags: {},
              createdAt: now,
              lastModifiedAt: now,
              messages: [message('fresh', now - 1000), message('expired', now - 2 * 86_400_000)],
            },
          ],
        }),
      );
      const first = await startSqsServer({ dataFile });
      let client = clientFor(first);
      const QueueUrl = (await client.send(new GetQueueUrlCommand({ QueueName: 'old' }))).QueueUrl!;
      expect(existsSync(`${dataFile}.migrated`) && !existsSync(dataFile)).toBe(true);
      // SQS: MessageRetentionPeriod deletes a message, received or not.
      expect((await counts_(client, QueueUrl)).visible).toBe(1);
      client.destroy();
      await first.close();

      // A crash in the middle of an append leaves half a line.
      appendFileSync(join(dir, 'sqs.log'), '{"t":"send","q":"old","m":{"id":"tor');
      const second = await startSqsServer({ dataFile });
      client = clientFor(second);
      try {
        const { Messages } = await client.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 10 }));
        expect(Messages?.map((m) => m.Body)).toEqual(['fresh']);
        await client.send(new SendMessageCommand({ QueueUrl, MessageBody: 'after the cut' }));
        expect(
          readFileSync(join(dir, 'sqs.log'), 'utf8')
            .split('\n')
            .filter(Boolean)
            .every((line) => JSON.parse(line)),
        ).toBe(true);
      } finally {
        client.destroy();
        await second.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('compacts its log: the file stays near the live state after many changes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-sqs-compact-'));
    try {
      const dataFile = join(dir, 'sqs.json');
      const first = await startSqsServer({ dataFile, fsync: false, compactAfterRecords: 300 });
      let client = clientFor(first);
      const { QueueUrl } = await client.send(new CreateQueueCommand({ QueueName: 'churn' }));
      await client.send(new SendMessageCommand({ QueueUrl, MessageBody: 'stays' }));
      // 3 records per message (send, receive, delete): well past the threshold, several times.
      for (let round = 0; round < 60; round++) {
        await client.send(
          new SendMessageBatchCommand({ QueueUrl, Entries: Array.from({ length: 10 }, (_, i) => ({ Id: `e${i}`, MessageBody: 'churn' })) }),
        );
        const { Messages } = await client.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 10, VisibilityTimeout: 60 }));
        const deletable = Messages!.filter((m) => m.Body === 'churn');
        if (deletable.length)
          await client.send(
            new DeleteMessageBatchCommand({
              QueueUrl,
              Entries: deletable.map((m, i) => ({ Id: `d${i}`, ReceiptHandle: m.ReceiptHandle })),
            }),
          );
      }
      client.destroy();
      await first.close();
      const lines = readFileSync(join(dir, 'sqs.log'), 'utf8').split('\n').filter(Boolean).length;
      expect(lines).toBeLessThan(100);

      const second = await startSqsServer({ dataFile });
      client = clientFor(second);
      try {
        const { Attributes } = await client.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['All'] }));
        expect(Number(Attributes!.ApproximateNumberOfMessages) + Number(Attributes!.ApproximateNumberOfMessagesNotVisible)).toBe(
          lines - 2, // the key and the queue, then one line per live message
        );
      } finally {
        client.destroy();
        await second.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

async function counts_(client: SQSClient, QueueUrl: string) {
  const { Attributes } = await client.send(
    new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'] }),
  );
  return { visible: Number(Attributes?.ApproximateNumberOfMessages), inFlight: Number(Attributes?.ApproximateNumberOfMessagesNotVisible) };
}

describe('SigV4 of a header-signed POST to "/" (checked without the SDK signer)', () => {
  class Sha256 {
    private readonly h;
    constructor(key?: SourceData) {
      this.h =
        key === undefined ? createHash('sha256') : createHmac('sha256', typeof key === 'string' ? key : Buffer.from(key as Uint8Array));
    }
    update(d: SourceData) {
      this.h.update(typeof d === 'string' ? d : Buffer.from(d as Uint8Array));
    }
    async digest() {
      return new Uint8Array(this.h.digest());
    }
  }
  const admin = newAccessKey();
  const registry = new CredentialRegistry(admin, {});
  const variants = ['plain', 'declared-sha', 'whitespace', 'wrong-secret', 'wrong-sha', 'changed-body', 'date-unsigned'] as const;

  it.each(['sqs', 'dynamodb', 'sts'].flatMap((service) => variants.map((variant) => [service, variant] as const)))(
    '%s, %s: the same answer as the SDK signer gives (the query path)',
    async (service, variant) => {
      const body = JSON.stringify({ a: 1, b: 'x y' });
      const credentials = variant === 'wrong-secret' ? { ...admin, secretAccessKey: 'not-the-secret' } : admin;
      const applyChecksum = variant === 'declared-sha' || variant === 'wrong-sha';
      const signer = new SignatureV4({ service, region: 'us-east-1', credentials, sha256: Sha256, applyChecksum });
      const headers = {
        host: '127.0.0.1:4567',
        'content-type': 'application/x-amz-json-1.0',
        'x-amz-target': 'X.Y',
        'x-odd': variant === 'whitespace' ? '  a   b \t c  ' : 'v',
      };
      const signed = await signer.sign({
        method: 'POST',
        protocol: 'http:',
        hostname: '127.0.0.1',
        port: 4567,
        path: '/',
        query: {},
        headers,
        body,
      });
      const h: Record<string, string> = {};
      for (const [k, v] of Object.entries(signed.headers)) h[k.toLowerCase()] = v;
      if (variant === 'wrong-sha') h['x-amz-content-sha256'] = 'f'.repeat(64);
      if (variant === 'date-unsigned') h.authorization = h.authorization!.replace('x-amz-date;', '');
      const bytes = Buffer.from(variant === 'changed-body' ? `${body} ` : body);
      const answer = (url: string) =>
        verifySigV4(registry, service, 'us-east-1', { method: 'POST', url, headers: h, body: bytes }).then(
          () => 'ok',
          (err: { reason: string; message: string }) => `${err.reason}: ${err.message}`,
        );
      // "/?" (an empty query) takes the SDK signer's path, "/" the direct one.
      const direct = await answer('/');
      expect(direct).toBe(await answer('/?'));
      expect(direct === 'ok').toBe(['plain', 'declared-sha', 'whitespace'].includes(variant));
    },
  );
});
