import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ManagerStatus } from '../../workers/manager/manager';

const ROOT = join(__dirname, '..', '..');

/** `ferry endpoint start` in its own process, as an operator runs it, and what it left behind. */
export interface ManagerProcess {
  child: ChildProcess;
  /** Its folder: ep.json, endpoint.yaml, status.json and the state directory `state/`. */
  dir: string;
  statusFile: string;
  output(): string;
  exited: Promise<number | null>;
  status(): ManagerStatus | undefined;
}

/**
 * Writes the endpoint's credentials file and `endpoint.yaml` (`credentials: ep.json`, then
 * `config`, the rest of the file) and starts the manager. `env` is the manager's own environment
 * on top of this process's; the local stack's admin key never reaches it.
 */
export function startManager(opts: {
  apiUrl: string;
  endpoint: { id: string; secret: string };
  config: string;
  env: Record<string, string | undefined>;
  pollSeconds: number;
}): ManagerProcess {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-ep-'));
  writeFileSync(
    join(dir, 'ep.json'),
    JSON.stringify({ api_url: opts.apiUrl, endpoint_id: opts.endpoint.id, endpoint_secret: opts.endpoint.secret }),
    { mode: 0o600 },
  );
  writeFileSync(join(dir, 'endpoint.yaml'), `credentials: ep.json\n${opts.config}\n`);
  const statusFile = join(dir, 'status.json');
  const env: Record<string, string | undefined> = { ...process.env, ...opts.env };
  for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'FERRY_WORKER_ROLE_ARN', 'FERRY_WORKER_ROLE_ID'])
    delete env[k];
  const args = [
    'endpoint',
    'start',
    '--config',
    join(dir, 'endpoint.yaml'),
    '--state-dir',
    join(dir, 'state'),
    '--status-file',
    statusFile,
    '--poll-seconds',
    String(opts.pollSeconds),
  ];
  const child = spawn(process.execPath, [join(ROOT, 'cli', 'bin.js'), ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    child,
    dir,
    statusFile,
    output: () => out,
    exited,
    status: () => (existsSync(statusFile) ? (JSON.parse(readFileSync(statusFile, 'utf8')) as ManagerStatus) : undefined),
  };
}
