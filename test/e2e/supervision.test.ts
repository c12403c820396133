import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnAgentProcess } from '../../local/agent-process';
import { AgentSupervisor } from '../../local/supervisor';
import { caller, eventually } from '../helpers/api';

/**
 * `npm start` as an operator meets it: local/start.ts as a real process with its real agent,
 * killed and signalled the way a terminal, kill -9 or systemd would. A Ctrl-C at a terminal
 * goes to the whole foreground process group: the start process leads its own group here, and
 * the tests send SIGINT to that group.
 */
jest.setTimeout(120_000);

const ROOT = join(__dirname, '..', '..');
const homes: string[] = [];
const started: LocalStart[] = [];

beforeAll(() => {
  // What `npm start` runs first: local/start.ts runs the agent bundle.
  execFileSync('npm', ['run', '-s', 'build:worker'], { cwd: ROOT, stdio: 'ignore' });
});

afterEach(() => {
  for (const s of started.splice(0)) s.killAll();
});

afterAll(() => {
  for (const h of homes) rmSync(h, { recursive: true, force: true });
});

/** Five free ports in a row: the API, then DynamoDB, SQS, S3 and STS (local/start.ts takes FERRY_PORT and the four after it). */
async function freePortBase(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    const servers = [];
    try {
      for (let p = base; p < base + 5; p++) {
        const server = createServer();
        await new Promise<void>((resolve, reject) => server.once('error', reject).listen(p, '127.0.0.1', resolve));
        servers.push(server);
      }
      return base;
    } catch {
      // taken: try another base
    } finally {
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    }
  }
  throw new Error('no five free ports in a row');
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // Reparented to an init that does not reap: a zombie has stopped running.
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

class LocalStart {
  readonly child: ChildProcess;
  out = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  private readonly agentPids = new Set<number>();

  constructor(
    readonly home: string,
    readonly port: number,
    env: Record<string, string> = {},
  ) {
    this.child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'local', 'start.ts')], {
      cwd: ROOT,
      // Its own process group, like a foreground job: a group SIGINT is what Ctrl-C sends.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        FERRY_HOME: home,
        FERRY_PORT: String(port),
        FERRY_RUNTIMES: 'node',
        FERRY_POOL_SIZE: '1',
        ...env,
      },
    });
    const collect = (chunk: Buffer) => {
      this.out += chunk.toString();
      for (const m of this.out.matchAll(/worker agent started \(pid (\d+)\)/g)) this.agentPids.add(Number(m[1]));
    };
    this.child.stdout!.on('data', collect);
    this.child.stderr!.on('data', collect);
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })));
    started.push(this);
  }

  static async launch(env: Record<string, string> = {}): Promise<LocalStart> {
    const home = mkdtempSync(join(tmpdir(), 'ferry-start-'));
    homes.push(home);
    return new LocalStart(home, await freePortBase(), env);
  }

  /** Waits for the n-th line (1-based) matching `re`. */
  async waitFor(re: RegExp, n = 1, timeoutMs = 60_000): Promise<void> {
    const g = new RegExp(re.source, 'g');
    await eventually(
      async () => {
        if (this.child.exitCode !== null || this.child.signalCode !== null)
          throw new Error(`the start process exited; it said:\n${this.out}`);
        return (this.out.match(g)?.length ?? 0) >= n;
      },
      timeoutMs,
      `${re} (#${n}) in the output of npm start`,
    ).catch((err) => {
      throw new Error(`${err.message}\n--- output ---\n${this.lines()}`);
    });
  }

  count(re: RegExp): number {
    return this.out.match(new RegExp(re.source, 'g'))?.length ?? 0;
  }

  /** The output less the agent's JSON log lines. */
  lines(): string {
    return this.out
      .split('\n')
      .filter((l) => !l.startsWith('{'))
      .join('\n');
  }

  get agentPid(): number {
    const m = [...this.out.matchAll(/worker agent started \(pid (\d+)\)/g)].pop();
    if (!m) throw new Error('no agent started yet');
    return Number(m[1]);
  }

  /** Serving: the stack answers and the newest agent has said it serves the endpoint. */
  async serving(n = 1): Promise<void> {
    await this.waitFor(/ferry worker: serving endpoint/, n);
  }

  api() {
    const creds = JSON.parse(readFileSync(join(this.home, 'credentials.json'), 'utf8'));
    return caller(creds.api_url, creds.token);
  }

  endpoint(): { endpoint_id: string; endpoint_secret: string; api_url: string } {
    return JSON.parse(readFileSync(join(this.home, 'endpoint.json'), 'utf8'));
  }

  async status() {
    const r = await this.api()('GET', `/v1/endpoints/${this.endpoint().endpoint_id}/status`);
    expect(r.status).toBe(200);
    return r.body as { status: 'online' | 'offline'; agents: number; workers: number };
  }

  /** A terminal's Ctrl-C: SIGINT to the whole foreground process group. */
  ctrlC(): void {
    process.kill(-this.child.pid!, 'SIGINT');
  }

  killAll(): void {
    for (const pid of [this.child.pid!, ...this.agentPids]) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

async function submit(start: LocalStart, source: string, args: unknown[] = []): Promise<string> {
  const api = start.api();
  const fn = await api('POST', '/v1/functions', { name: 'f', runtime: 'node', source });
  expect(fn.status).toBeLessThan(300);
  const sub = await api('POST', `/v1/endpoints/${start.endpoint().endpoint_id}/submit`, {
    tasks: [{ function_id: fn.body.function_id, args }],
  });
  expect(sub.status).toBe(202);
  return sub.body.task_ids[0];
}

const taskIn = (start: LocalStart, id: string, states: string[], timeoutMs = 30_000) =>
  eventually(
    async () => {
      const r = await start.api()('GET', `/v1/tasks/${id}`);
      return states.includes(r.body.status) && r.body;
    },
    timeoutMs,
    `task ${id} to be ${states.join(' or ')}`,
    100,
  );

describe('npm start supervises its agent', () => {
  test('a dead agent is restarted with backoff; a stopping agent reads gone at once; a task submitted afterwards succeeds', async () => {
    const start = await LocalStart.launch();
    await start.serving(1);
    await eventually(async () => (await start.status()).status === 'online', 10_000, 'online');

    // The API's rule: a stopping agent's last heartbeat removes it at once.
    const ep = start.endpoint();
    const beat = (stopped: boolean) =>
      caller(ep.api_url, ep.endpoint_secret)('POST', `/v1/endpoints/${ep.endpoint_id}/heartbeat`, {
        worker_id: 'probe',
        workers: 1,
        idle_workers: 1,
        running: 0,
        runtimes: ['node'],
        agent_version: 'test',
        heartbeat_ms: 30_000,
        stopped,
      });
    expect((await beat(false)).status).toBe(200);
    expect((await start.status()).agents).toBe(2);
    expect((await beat(true)).status).toBe(200);
    expect((await start.status()).agents).toBe(1);

    // The real agent stopped from outside: it says goodbye, so the endpoint reads offline now,
    // not a heartbeat interval (30 s here) later; then it is started again.
    process.kill(start.agentPid, 'SIGTERM');
    await start.waitFor(/worker agent \(pid \d+\) exited with code 0 after [\d.]+ s; restarting it in 1 s \(restart 1\)/);
    expect(await start.status()).toMatchObject({ status: 'offline', agents: 0 });
    await start.serving(2);

    // kill -9, soon after the last restart: the delay doubles.
    process.kill(start.agentPid, 'SIGKILL');
    await start.waitFor(/worker agent \(pid \d+\) was killed by SIGKILL after [\d.]+ s; restarting it in 2 s \(restart 2\)/);
    await start.serving(3);

    const id = await submit(start, '(a, b) => a + b', [2, 3]);
    const done = await taskIn(start, id, ['success', 'failed']);
    expect(done).toMatchObject({ status: 'success', result: { value: 5 } });

    // SIGTERM (systemd, docker stop) behaves like a first Ctrl-C.
    start.child.kill('SIGTERM');
    expect(await start.exited).toMatchObject({ code: 0 });
    expect(start.count(/draining/)).toBe(1);
    expect(start.lines()).toMatch(/SIGTERM: draining/);
    expect(start.lines()).toMatch(/Ferry stopped\./);
  });

  test('an agent that is not restarted reads offline within two heartbeat intervals; Ctrl-C after it died exits promptly', async () => {
    const start = await LocalStart.launch({ FERRY_AGENT_RESTART: 'off', FERRY_HEARTBEAT_MS: '1000' });
    await start.serving(1);
    await eventually(async () => (await start.status()).status === 'online', 10_000, 'online');
    const agent = start.agentPid;
    const killedAt = Date.now();
    process.kill(agent, 'SIGKILL');
    await start.waitFor(/was killed by SIGKILL after [\d.]+ s; restarts are off, so it stays down/);
    await eventually(async () => (await start.status()).status === 'offline', 10_000, 'offline', 100);
    // Stale after 2 × 1 s + 0.5 s since its last beat, which was at most 1 s before the kill.
    expect(Date.now() - killedAt).toBeLessThan(2 * 1000 + 500 + 1000);

    const asked = Date.now();
    start.ctrlC();
    const exit = await start.exited;
    expect(exit.code).toBe(0);
    expect(exit.at - asked).toBeLessThan(12_000);
    expect(start.lines()).toMatch(/SIGINT: no worker agent is running; stopping the local stack/);
  });
});

describe('AgentSupervisor', () => {
  test('does not restart an agent that exits 2 (configuration or secret refused), and says why', async () => {
    const lines: string[] = [];
    let spawned = 0;
    const supervisor = new AgentSupervisor({
      // No endpoint configured at all: the agent exits 2 at once.
      spawn: () => (spawned++, spawnAgentProcess({ FERRY_API_URL: '', FERRY_WORKER_CONFIG: '' }, { bundle: true, detached: true })),
      stopTimeoutMs: 5000,
      initialDelayMs: 10,
      log: (line) => lines.push(line),
    });
    supervisor.start();
    await eventually(async () => supervisor.state === 'given-up', 20_000, 'the supervisor to give up');
    await new Promise((r) => setTimeout(r, 200));
    expect(spawned).toBe(1);
    expect(lines.join('\n')).toMatch(
      /exited with code 2 after [\d.]+ s: its endpoint secret was refused or its configuration cannot work here .*not restarting it/,
    );
    // Stopping with no agent alive returns at once.
    await supervisor.stop();
    expect(supervisor.state).toBe('stopped');
  });
});

describe('Ctrl-C and SIGTERM', () => {
  test('the first Ctrl-C drains: the running task finishes, an unstarted one goes back to the queue, exit 0', async () => {
    const start = await LocalStart.launch({ FERRY_GRACE_MS: '20000' });
    await start.serving(1);
    const running = await submit(start, '() => new Promise((r) => setTimeout(() => r("slept"), 2000))');
    await taskIn(start, running, ['running']);
    // One slot: this one waits (prefetched or still queued) while the first runs.
    const waiting = await submit(start, '(x) => x * 2', [21]);

    start.ctrlC();
    const exit = await start.exited;
    expect(exit.code).toBe(0);
    expect(start.count(/draining/)).toBe(1);
    // The agent got exactly one signal: SIGTERM from npm start, not the terminal's SIGINT too.
    expect(start.count(/ferry worker: SIG[A-Z]+: finishing running tasks/)).toBe(1);
    expect(start.count(/ferry worker: SIGTERM: finishing running tasks/)).toBe(1);
    expect(start.out).not.toMatch(/grace period over/);

    // Started again on the same data: the drained task's result was kept, the unstarted one runs now.
    const again = new LocalStart(start.home, start.port);
    await again.serving(1);
    expect(await taskIn(again, running, ['success', 'failed'])).toMatchObject({ status: 'success', result: { value: 'slept' } });
    expect(await taskIn(again, waiting, ['success', 'failed'])).toMatchObject({ status: 'success', result: { value: 42 } });
    again.ctrlC();
    expect(await again.exited).toMatchObject({ code: 0 });
  });

  test('a second Ctrl-C during the drain stops at once', async () => {
    const start = await LocalStart.launch();
    await start.serving(1);
    const id = await submit(start, '() => new Promise((r) => setTimeout(() => r("late"), 60_000))');
    await taskIn(start, id, ['running']);
    const agent = start.agentPid;

    start.ctrlC();
    await start.waitFor(/SIGINT: draining/);
    await new Promise((r) => setTimeout(r, 300));
    const asked = Date.now();
    start.ctrlC();
    const exit = await start.exited;
    expect(exit.code).toBe(130);
    expect(exit.at - asked).toBeLessThan(5_000);
    expect(start.lines()).toMatch(/SIGINT again: stopping at once/);
    expect(alive(agent)).toBe(false);
  });

  test('kill -9 of npm start leaves no agent behind: it notices and stops', async () => {
    const start = await LocalStart.launch();
    await start.serving(1);
    const agent = start.agentPid;
    process.kill(start.child.pid!, 'SIGKILL');
    await start.exited;
    await eventually(async () => !alive(agent), 30_000, `agent ${agent} to stop after its parent died`, 200);
  });
});
