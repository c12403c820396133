/**
 * The local stack in a process of its own, for test/e2e/crash-durability.test.ts to kill -9.
 * Usage: crash-durability-stack.ts <dataDir> <ports as JSON>. On its first start on a data dir
 * it makes a user, a function and an endpoint through the API and writes their ids to
 * `<dataDir>/crash-ids.json`; then it prints READY.
 */
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startLocalStack } from '../../local/stack';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

async function main(): Promise<void> {
  const [dataDir, portsJson] = process.argv.slice(2) as [string, string];
  const ports = JSON.parse(portsJson) as { api: number; dynamodb: number; sqs: number; s3: number; sts: number };
  // No sweep: it would only add calls; nothing here reaches a dead-letter queue (max_attempts below).
  const stack = await startLocalStack({ dataDir, apiPort: ports.api, ports, sweepIntervalMs: 3_600_000 });
  const idsFile = join(dataDir, 'crash-ids.json');
  if (!existsSync(idsFile)) {
    const token = await stack.createUser('crash-tester');
    const post = async (path: string, body: unknown) => {
      const res = await fetch(stack.apiUrl + path, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
      return (await res.json()) as Record<string, string>;
    };
    const { function_id } = await post('/v1/functions', { name: 'noop', runtime: 'node', source: '() => null' });
    // Deliveries to spare: the test's own count receives every message once, and each of the three
    // agents killed -9 may hold a message when it dies. At the default 3 a message could reach the
    // dead-letter queue, where (with no sweep here) its tasks would never end.
    const { endpoint_id, endpoint_secret } = await post('/v1/endpoints', { name: 'crash', max_attempts: 10 });
    writeFileSync(`${idsFile}.tmp`, JSON.stringify({ token, function_id, endpoint_id, endpoint_secret, apiUrl: stack.apiUrl }), {
      mode: 0o600,
    });
    renameSync(`${idsFile}.tmp`, idsFile);
  }
  // What an agent needs to reach this stack (no credentials: it trades the endpoint secret).
  writeFileSync(join(dataDir, 'worker-env.json'), JSON.stringify(stack.workerEnv));
  process.stdout.write('READY\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
