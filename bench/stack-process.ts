/**
 * The local stack as `npm start` runs it, in its own process, for the bench: it starts
 * startLocalStack (in memory, no sweep to muddy the counts), tells its parent over IPC where
 * the API is, and answers the parent's requests:
 *   { type: 'user', name }       → { type: 'user', token }
 *   { type: 'counts', reset? }   → { type: 'counts', calls, writeUnits, requests } (this process's
 *                                  AWS SDK calls, DynamoDB write units and HTTP requests by server
 *                                  since the last reset), then resets them when asked
 *   { type: 'close' }            → closes the stack and exits 0 (so a --cpu-prof profile is written)
 * DynamoDB write capacity is counted (FERRY_COUNT_CAPACITY=1, set by the parent), and dynalite is
 * taught what a GSI write costs (bench/dynalite-gsi-capacity.js, preloaded with --require).
 */
import http from 'node:http';
import { resetSdkCallCounts, sdkCallCounts, sdkWriteUnits } from '../core/clients';
import { startLocalStack } from '../local/stack';

export type StackRequest = { type: 'user'; name: string } | { type: 'counts'; reset?: boolean } | { type: 'close' };
export type StackReply =
  | { type: 'ready'; apiUrl: string; workerEnv: Record<string, string> }
  | { type: 'user'; token: string }
  | { type: 'counts'; calls: Record<string, number>; writeUnits: Record<string, number>; requests: Record<string, number> };

// HTTP requests served by this process, by server port (the API, DynamoDB, SQS, S3, STS).
const requestsByPort = new Map<number, number>();
// A server's port, looked up once (address() is a system call).
const ports = new WeakMap<http.Server, number>();
const emit = http.Server.prototype.emit;
http.Server.prototype.emit = function (this: http.Server, event: string, ...args: unknown[]) {
  if (event === 'request') {
    let port = ports.get(this);
    if (port === undefined) ports.set(this, (port = (this.address() as { port?: number } | null)?.port ?? 0));
    requestsByPort.set(port, (requestsByPort.get(port) ?? 0) + 1);
  }
  return emit.apply(this, [event, ...args] as Parameters<typeof emit>);
} as typeof emit;

async function main(): Promise<void> {
  const send = (m: StackReply) => process.send!(m);
  const stack = await startLocalStack({ sweepIntervalMs: 3_600_000 });

  const portOf = (url: string) => Number(new URL(url).port);
  const names = new Map<number, string>([
    [portOf(stack.apiUrl), 'API'],
    [portOf(stack.workerEnv.AWS_ENDPOINT_URL_DYNAMODB!), 'DynamoDB'],
    [portOf(stack.workerEnv.AWS_ENDPOINT_URL_SQS!), 'SQS'],
    [portOf(stack.workerEnv.AWS_ENDPOINT_URL_S3!), 'S3'],
    [portOf(stack.workerEnv.AWS_ENDPOINT_URL_STS!), 'STS'],
  ]);
  const reset = () => (resetSdkCallCounts(), requestsByPort.clear());
  reset();

  process.on('message', (m: StackRequest) => {
    void (async () => {
      if (m.type === 'user') send({ type: 'user', token: await stack.createUser(m.name) });
      else if (m.type === 'counts') {
        const requests = Object.fromEntries([...requestsByPort].map(([port, n]) => [names.get(port) ?? String(port), n]));
        send({ type: 'counts', calls: Object.fromEntries(sdkCallCounts), writeUnits: Object.fromEntries(sdkWriteUnits), requests });
        if (m.reset) reset();
      } else if (m.type === 'close') {
        await stack.close();
        process.exit(0);
      }
    })().catch((err) => {
      console.error('bench stack process:', err);
      process.exit(1);
    });
  });
  // The bench is gone (killed): go too.
  process.on('disconnect', () => void stack.close().finally(() => process.exit(0)));
  send({ type: 'ready', apiUrl: stack.apiUrl, workerEnv: stack.workerEnv });
}

main().catch((err) => {
  console.error('bench stack process could not start:', err);
  process.exit(1);
});
