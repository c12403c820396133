import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { localDataDir } from '../core/install';
import { resolveToken } from '../core/tables/tokens';
import { getEndpoint } from '../core/tables/endpoints';
import { spawnAgentProcess } from './agent-process';
import { startLocalStack } from './stack';
import { AgentSupervisor } from './supervisor';
import { sleep } from '../core/retry';

/**
 * `npm start`: the whole of Ferry on this machine, data under .ferry/ (~/.ferry/local for `ferry local up` from the CLI package; FERRY_HOME to change), the API on
 * http://127.0.0.1:8080 (FERRY_PORT to change; DynamoDB, SQS, S3 and STS take the four ports after it), a local user's token in .ferry/credentials.json
 * and a default endpoint served by one worker agent with two runtime processes, restarted
 * with backoff if it dies (FERRY_AGENT_RESTART=off to leave it down).
 * Ctrl-C or SIGTERM drains: running tasks get FERRY_GRACE_MS (default 30 s), unstarted ones go
 * back to the queue, then the stack closes and the process exits 0. A second Ctrl-C kills the
 * agent and exits at once (130).
 */
const DATA = localDataDir();
const CREDENTIALS = join(DATA, 'credentials.json');
const ENDPOINT = join(DATA, 'endpoint.json');

const readJson = <T>(file: string): T | undefined => (existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as T) : undefined);
// Secrets on disk are readable by their owner only.
const writeSecret = (file: string, value: unknown) => writeFileSync(file, JSON.stringify(value, null, 2) + '\n', { mode: 0o600 });

export async function startLocal(): Promise<void> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const port = Number(process.env.FERRY_PORT ?? 8080);
  // The AWS servers sit on the next ports: stored queue URLs name theirs, so they must not move.
  const stack = await startLocalStack({
    dataDir: DATA,
    apiPort: port,
    ports: { dynamodb: port + 1, sqs: port + 2, s3: port + 3, sts: port + 4 },
  });
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

  const graceMs = /^\d+$/.test(process.env.FERRY_GRACE_MS ?? '') ? Number(process.env.FERRY_GRACE_MS) : 30_000;
  const supervisor = new AgentSupervisor({
    spawn: () =>
      spawnAgentProcess(
        { ...stack.workerEnv, FERRY_WORKER_CONFIG: ENDPOINT, FERRY_POOL_SIZE: process.env.FERRY_POOL_SIZE ?? '2' },
        // The bundle `npm start` builds first: what the container runs, and quicker than running the source.
        // Detached: the terminal's Ctrl-C reaches only this process, which then signals the agent once.
        { inherit: true, bundle: true, detached: true },
      ),
    restart: !/^(0|false|off|no)$/i.test(process.env.FERRY_AGENT_RESTART ?? ''),
    // The agent's grace period for running tasks, then time to hand messages back and say goodbye.
    stopTimeoutMs: graceMs + STOP_MARGIN_MS,
  });
  supervisor.start();

  console.log(`
Ferry is running locally.

  API URL      ${apiUrl}
  token        ${creds.token}
  endpoint id  ${ep.endpoint_id}   (one worker agent, two runtime processes; restarted if it dies)
  data         ${DATA}   (credentials.json holds the token, aws.json the local AWS admin key; mode 0600)

Try it:
  export FERRY_API_URL=${apiUrl} FERRY_TOKEN=${creds.token}
  curl -s -H "authorization: Bearer $FERRY_TOKEN" -d '{"name":"add","runtime":"node","source":"(a, b) => a + b"}' $FERRY_API_URL/v1/functions

Press Ctrl-C to stop (running tasks get ${Math.round(graceMs / 1000)} s to finish; Ctrl-C again stops at once).
`);

  // First Ctrl-C or SIGTERM: drain. A Ctrl-C during the drain: stop at once.
  let draining = false;
  let stoppingNow = false;
  const closeStack = async () => {
    const closed = await Promise.race([stack.close().then(() => true), sleep(STACK_CLOSE_MS, undefined, { ref: false }).then(() => false)]);
    if (!closed) console.error(`the local stack did not close within ${STACK_CLOSE_MS / 1000} s; exiting anyway`);
  };
  const drain = async (signal: NodeJS.Signals) => {
    draining = true;
    const agent = supervisor.current;
    console.log(
      agent
        ? `\n${signal}: draining: the worker agent finishes its running tasks (up to ${Math.round(graceMs / 1000)} s) and hands back the rest; Ctrl-C again to stop at once`
        : `\n${signal}: no worker agent is running; stopping the local stack`,
    );
    await supervisor.stop();
    // A second Ctrl-C took over: it closes the stack and exits.
    if (stoppingNow) return;
    if (agent) console.log('worker agent stopped; closing the local stack');
    await closeStack();
    console.log('Ferry stopped.');
    process.exit(0);
  };
  const now = async (signal: NodeJS.Signals) => {
    if (stoppingNow) return;
    stoppingNow = true;
    console.log(`\n${signal} again: stopping at once (the worker agent is killed; its unfinished tasks will run again)`);
    await supervisor.kill();
    await closeStack();
    process.exit(128 + osConstants.signals[signal]);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (!draining) void drain(signal);
    // systemd and docker send SIGTERM, then SIGKILL after their own timeout: a repeated SIGTERM is not an operator's second Ctrl-C.
    else if (signal === 'SIGINT') void now(signal);
    else console.log(`${signal}: already draining (Ctrl-C to stop at once)`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/** Beyond the agent's grace period: handing messages back, the last heartbeat (10 s timeout), stopping runtimes. */
const STOP_MARGIN_MS = 15_000;
/** The stack's servers close in well under a second; this only guards against a hang. */
const STACK_CLOSE_MS = 10_000;

if (require.main === module) {
  startLocal().catch((err) => {
    console.error(`ferry: could not start: ${err?.stack ?? err}`);
    process.exit(1);
  });
}
