import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveToken } from '../core/tables/tokens';
import { getEndpoint } from '../core/tables/endpoints';
import { spawnAgentProcess } from './agent-process';
import { startLocalStack } from './stack';

/**
 * `npm start`: the whole of Ferry on this machine, data under .ferry/, the API on
 * http://127.0.0.1:8080 (FERRY_PORT to change; DynamoDB, SQS, S3 and STS take the four ports after it), a local user's token in .ferry/credentials.json
 * and a default endpoint served by one worker agent with two runtime processes.
 */
const ROOT = join(__dirname, '..');
const DATA = process.env.FERRY_HOME ?? join(ROOT, '.ferry');
const CREDENTIALS = join(DATA, 'credentials.json');
const ENDPOINT = join(DATA, 'endpoint.json');

const readJson = <T>(file: string): T | undefined => (existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as T) : undefined);
// Secrets on disk are readable by their owner only.
const writeSecret = (file: string, value: unknown) => writeFileSync(file, JSON.stringify(value, null, 2) + '\n', { mode: 0o600 });

export async function startLocal(): Promise<void> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const port = Number(process.env.FERRY_PORT ?? 8080);
  // The AWS servers sit on the next ports: stored queue URLs name theirs, so they must not move.
  const stack = await startLocalStack({ dataDir: DATA, apiPort: port, ports: { dynamodb: port + 1, sqs: port + 2, s3: port + 3, sts: port + 4 } });
  const apiUrl = stack.apiUrl;

  let creds = readJson<{ api_url: string; token: string; user_id: string }>(CREDENTIALS);
  if (!creds || !(await resolveToken(creds.token))) {
    creds = { api_url: apiUrl, user_id: 'local', token: await stack.createUser('local', 365 * 86400) };
  }
  creds.api_url = apiUrl;
  writeSecret(CREDENTIALS, creds);

  let ep = readJson<{ api_url: string; endpoint_id: string; endpoint_secret: string }>(ENDPOINT);
  if (!ep || !(await getEndpoint(ep.endpoint_id))) {
    const res = await fetch(`${apiUrl}/v1/endpoints`, {
      method: 'POST',
      headers: { authorization: `Bearer ${creds.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'local-default', public: false }),
    });
    if (!res.ok) throw new Error(`could not register the default endpoint: ${res.status} ${await res.text()}`);
    const body = (await res.json()) as { endpoint_id: string; endpoint_secret: string };
    ep = { api_url: apiUrl, endpoint_id: body.endpoint_id, endpoint_secret: body.endpoint_secret };
  }
  ep.api_url = apiUrl;
  writeSecret(ENDPOINT, ep);

  const { child: agent } = spawnAgentProcess(
    { ...stack.workerEnv, FERRY_WORKER_CONFIG: ENDPOINT, FERRY_POOL_SIZE: process.env.FERRY_POOL_SIZE ?? '2' },
    // The bundle `npm start` builds first: what the container runs, and quicker than running the source.
    { inherit: true, bundle: true },
  );

  console.log(`
Ferry is running locally.

  API URL      ${apiUrl}
  token        ${creds.token}
  endpoint id  ${ep.endpoint_id}   (one worker agent, two runtime processes)
  data         ${DATA}   (credentials.json holds the token, aws.json the local AWS admin key; mode 0600)

Try it:
  export FERRY_API_URL=${apiUrl} FERRY_TOKEN=${creds.token}
  curl -s -H "authorization: Bearer $FERRY_TOKEN" -d '{"name":"add","runtime":"node","source":"(a, b) => a + b"}' $FERRY_API_URL/v1/functions

Press Ctrl-C to stop.
`);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    console.log('\nstopping: draining the worker agent, then the local stack');
    if (agent.exitCode === null) {
      agent.kill('SIGTERM');
      await new Promise((r) => agent.once('exit', r));
    }
    await stack.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  agent.on('exit', (code) => {
    if (!stopping) console.error(`worker agent exited (${code}); the API keeps running`);
  });
}

if (require.main === module) {
  startLocal().catch((err) => {
    console.error(`ferry: could not start: ${err?.stack ?? err}`);
    process.exit(1);
  });
}
