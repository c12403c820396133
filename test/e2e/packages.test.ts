import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { version } from '../../package.json';
import { eventually } from '../helpers/api';
import { consecutiveFreePorts } from '../helpers/ports';
import { runCommand, type CommandRun } from '../helpers/proc';

/**
 * `npm run pack`'s artifacts, installed as a user installs them: each into a fresh folder outside
 * the repository, run with plain node or python (no tsx, no PYTHONPATH). The stack they talk to is
 * itself the installed CLI's `ferry local up`.
 */
jest.setTimeout(240_000);

const ROOT = join(__dirname, '..', '..');
const PACK = join(ROOT, 'dist', 'pack');
const work = mkdtempSync(join(tmpdir(), 'ferry-packages-'));
const sdkTarball = join(PACK, `ferry-compute-sdk-${version}.tgz`);
const cliTarball = join(PACK, `ferry-compute-cli-${version}.tgz`);
const wheel = join(PACK, `ferry_compute-${version}-py3-none-any.whl`);
const prefix = join(work, 'prefix');
const ferryBin = join(prefix, 'bin', 'ferry');
// The user's home for the installed CLI: its credentials file and the local stack's data.
const home = join(work, 'home');

const ok = (run: CommandRun, what: string): CommandRun => {
  if (run.code !== 0) throw new Error(`${what} exited ${run.code}\n${run.stdout}\n${run.stderr}`);
  return run;
};
const npm = (args: string[], cwd: string) =>
  runCommand('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, timeoutMs: 120_000 });
/** The installed `ferry`, as a user in `home` with no Ferry variables of the test's own. */
const ferry = (args: string[], env: Record<string, string | undefined> = {}) =>
  runCommand(ferryBin, args, {
    cwd: work,
    timeoutMs: 90_000,
    env: { HOME: home, FERRY_HOME: undefined, FERRY_API_URL: undefined, FERRY_TOKEN: undefined, ...env },
  });

/** The installed `ferry` left running (a stack, a worker, a manager), its output collected. */
function ferryRunning(
  args: string[],
  env: Record<string, string>,
): { child: ChildProcess; output(): string; exited: Promise<number | null> } {
  let out = '';
  const child = spawn(ferryBin, args, { cwd: work, env: { ...process.env, HOME: home, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  return { child, output: () => out, exited: new Promise((r) => child.once('exit', r)) };
}

let up: ReturnType<typeof ferryRunning> | undefined;
let apiUrl: string;
let token: string;
let endpointId: string;
/** What an agent on this machine needs to reach the local stack's AWS servers (`ferry local env`). */
let localAwsEnv: Record<string, string>;

beforeAll(async () => {
  ok(await runCommand('npm', ['run', '-s', 'pack'], { timeoutMs: 180_000 }), 'npm run pack');
  mkdirSync(home);
  ok(await npm(['install', '--global', '--prefix', prefix, cliTarball], work), 'npm install -g the CLI');
  // `ferry local up` from the installed package: the whole stack and a supervised agent, data under ~/.ferry/local.
  const port = await consecutiveFreePorts(5);
  const stack = (up = ferryRunning(['local', 'up'], { FERRY_HOME: '', FERRY_PORT: String(port), FERRY_GRACE_MS: '1000' }));
  await eventually(async () => /agent started/.test(stack.output()), 60_000, 'ferry local up to serve its endpoint', 200);
  const data = join(home, '.ferry', 'local');
  const creds = JSON.parse(readFileSync(join(data, 'credentials.json'), 'utf8')) as { api_url: string; token: string };
  const ep = JSON.parse(readFileSync(join(data, 'endpoint.json'), 'utf8')) as { endpoint_id: string };
  ({ api_url: apiUrl, token } = creds);
  endpointId = ep.endpoint_id;
  // What the README tells a user to do for a second worker on the machine: `eval "$(ferry local env)"`.
  localAwsEnv = JSON.parse(ok(await ferry(['--json', 'local', 'env']), 'ferry local env').stdout);
}, 300_000);

afterAll(async () => {
  if (up && up.child.exitCode === null) {
    up.child.kill('SIGTERM');
    await up.exited;
  }
  rmSync(work, { recursive: true, force: true });
});

describe('the SDK package', () => {
  const project = join(work, 'analysis');
  const submitScript = (imports: string) => `${imports}
const ex = new Executor({ endpointId: process.env.EP, apiUrl: process.env.API, token: process.env.TOKEN });
const sum = await ex.submit((a, b) => a + b, 40, 2).result();
let remote;
try {
  await ex.submit(() => { throw new RangeError('no such value'); }).result();
} catch (err) {
  remote = err instanceof RemoteError ? err.remoteType + ': ' + err.message : 'not a RemoteError: ' + err;
}
await ex.shutdown();
console.log(JSON.stringify({ sum, remote }));
`;

  beforeAll(async () => {
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'analysis', private: true }));
    ok(await npm(['install', sdkTarball], project), 'npm install the SDK');
    // What a TypeScript project on Node has anyway; the SDK's declarations refer to Node's types.
    ok(await npm(['install', '--save-dev', '--prefer-offline', '@types/node@20'], project), 'npm install @types/node');
  });

  it('carries only its client: ESM and CommonJS builds and their declarations, no dependencies, no server code', () => {
    const tarballBytes = readFileSync(sdkTarball).byteLength;
    const pkgDir = join(project, 'node_modules', '@ferry-compute', 'sdk');
    const manifest = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
    console.log(`packed SDK: ${(tarballBytes / 1024).toFixed(1)} KiB (${sdkTarball.split('/').pop()})`);
    expect(manifest.version).toBe(version);
    expect(manifest.dependencies).toBeUndefined();
    const bundle = readFileSync(join(pkgDir, 'dist', 'index.cjs'), 'utf8') + readFileSync(join(pkgDir, 'dist', 'index.mjs'), 'utf8');
    // Server code would bring the AWS SDK, zod schemas, DynamoDB tables or the handlers.
    for (const serverOnly of ['@aws-sdk', 'zod', 'DynamoDB', 'TableName', 'lambdas/', 'core/tables'])
      expect(bundle).not.toContain(serverOnly);
    const declarations = readFileSync(join(pkgDir, 'dist', 'index.d.mts'), 'utf8');
    expect(declarations).not.toMatch(/^import /m);
    expect(declarations).toContain('declare class Executor');
    expect(tarballBytes).toBeLessThan(200 * 1024);
  });

  it.each([
    ['an ES module', 'submit.mjs', "import { Executor, RemoteError } from '@ferry-compute/sdk';"],
    ['CommonJS', 'submit.cjs', "const { Executor, RemoteError } = require('@ferry-compute/sdk');\n(async () => {"],
  ])('runs with plain node from %s: a result and a remote exception', async (_kind, file, imports) => {
    const body = submitScript(imports);
    writeFileSync(
      join(project, file),
      file.endsWith('.cjs') ? `${body}})().catch((e) => { console.error(e); process.exit(1); });\n` : body,
    );
    const run = ok(
      await runCommand(process.execPath, [file], {
        cwd: project,
        timeoutMs: 60_000,
        env: { EP: endpointId, API: apiUrl, TOKEN: token, NODE_OPTIONS: '' },
      }),
      file,
    );
    expect(JSON.parse(run.stdout.trim())).toEqual({ sum: 42, remote: expect.stringContaining('RangeError: no such value') });
  });

  it('types a TypeScript project: the API checks, and a wrong call does not', async () => {
    writeFileSync(
      join(project, 'check.ts'),
      `import { Client, Executor, type TaskView } from '@ferry-compute/sdk';
const ex = new Executor({ endpointId: 'e', apiUrl: 'http://127.0.0.1:9', token: 't', batchSize: 10 });
const f = ex.submit((a: number, b: number) => a + b, 1, 2);
const id: string | undefined = f.taskId;
const views: Promise<{ tasks: TaskView[]; unknown: string[] }> = new Client({ apiUrl: 'http://127.0.0.1:9', token: 't' }).getTasks([id ?? '']);
// @ts-expect-error batchSize is a number
new Executor({ endpointId: 'e', batchSize: 'ten' });
// @ts-expect-error a task's status is one of the task states
const status: TaskView['status'] = 'exploded';
export { views, status };
`,
    );
    for (const module of ['nodenext', 'commonjs']) {
      writeFileSync(
        join(project, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            strict: true,
            noEmit: true,
            module,
            moduleResolution: module === 'nodenext' ? 'nodenext' : 'node10',
            target: 'es2022',
            types: [],
            skipLibCheck: false,
          },
          files: ['check.ts'],
        }),
      );
      const tsc = await runCommand(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], {
        cwd: project,
        timeoutMs: 60_000,
      });
      expect({ module, out: tsc.stdout.trim() }).toEqual({ module, out: '' });
    }
  });
});

describe('the CLI package', () => {
  it('puts ferry on the PATH at the packed version, with every command', async () => {
    const v = ok(await ferry(['--version']), 'ferry --version');
    expect(v.stdout.trim()).toBe(version);
    const help = ok(await ferry(['--help']), 'ferry --help').stdout;
    for (const command of ['local', 'token', 'login', 'endpoint', 'worker', 'function', 'task', 'run'])
      expect(help).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    expect(existsSync(join(home, '.ferry', 'local', 'aws.json'))).toBe(true);
    // The local stack's servers for a second worker, as shell exports; never its admin key.
    const env = ok(await ferry(['local', 'env']), 'ferry local env').stdout;
    expect(env).toMatch(/^export AWS_ENDPOINT_URL_SQS=http:\/\/127\.0\.0\.1:\d+$/m);
    expect(env).not.toMatch(/SECRET|ACCESS_KEY|TOKEN/);
  });

  it('runs a function on the endpoint of its own `ferry local up`', async () => {
    writeFileSync(join(work, 'add.js'), '(a, b) => a + b\n');
    const run = ok(
      await ferry(['run', 'add.js', '--endpoint', endpointId, '--args', '[40, 2]', '--timeout', '60'], {
        FERRY_API_URL: apiUrl,
        FERRY_TOKEN: token,
      }),
      'ferry run',
    );
    expect(run.stdout.trim()).toBe('42');
  });

  it('serves a new endpoint with `ferry worker start`, and runs a python function there', async () => {
    const auth = { FERRY_API_URL: apiUrl, FERRY_TOKEN: token };
    ok(await ferry(['login', '--url', apiUrl, '--with-token', token]), 'ferry login');
    const reg = ok(
      await ferry(['--json', 'endpoint', 'register', '--name', 'installed-worker', '--write-config', join(work, 'ep.json')]),
      'ferry endpoint register',
    );
    const ep = JSON.parse(reg.stdout) as { endpoint_id: string };
    const worker = ferryRunning(
      ['worker', 'start', '--config', join(work, 'ep.json'), '--pool-size', '1', '--runtimes', 'python'],
      localAwsEnv,
    );
    try {
      await eventually(async () => /agent started/.test(worker.output()), 60_000, 'the installed worker to start', 200);
      writeFileSync(join(work, 'power.py'), 'def power(x, n):\n    return x ** n\n');
      // The saved login stands in for the variables: no FERRY_API_URL or FERRY_TOKEN here.
      const run = ok(
        await ferry(['run', 'power.py', '--entrypoint', 'power', '--endpoint', ep.endpoint_id, '--args', '[2, 10]', '--timeout', '60']),
        'ferry run',
      );
      expect(run.stdout.trim()).toBe('1024');
      const status = ok(await ferry(['--json', 'endpoint', 'status', ep.endpoint_id], auth), 'ferry endpoint status');
      const { status: state, runtimes } = JSON.parse(status.stdout) as { status: string; runtimes: string[] };
      expect({ state, python: runtimes.includes('python'), node: runtimes.includes('node') }).toEqual({
        state: 'online',
        python: true,
        node: false,
      });
    } finally {
      worker.child.kill('SIGTERM');
    }
    expect(await worker.exited).toBe(0);
  });

  it('runs an endpoint manager with `ferry endpoint start`, whose blocks run the bundled block agent', async () => {
    const reg = ok(
      await ferry(['--json', 'endpoint', 'register', '--name', 'installed-manager', '--write-config', join(work, 'manager-ep.json')]),
      'ferry endpoint register',
    );
    const ep = JSON.parse(reg.stdout) as { endpoint_id: string };
    writeFileSync(
      join(work, 'endpoint.yaml'),
      [
        'credentials: manager-ep.json',
        'engine:',
        '  max_workers_per_node: 1',
        '  max_idletime: 30',
        '  provider:',
        '    type: LocalProvider',
        '    max_blocks: 1',
        '',
      ].join('\n'),
    );
    const manager = ferryRunning(
      ['endpoint', 'start', '--config', join(work, 'endpoint.yaml'), '--state-dir', join(work, 'manager-state'), '--poll-seconds', '0.5'],
      localAwsEnv,
    );
    try {
      writeFileSync(join(work, 'host.js'), "() => require('node:os').hostname().length > 0\n");
      const run = await ferry(['run', 'host.js', '--endpoint', ep.endpoint_id, '--timeout', '90']);
      expect({ code: run.code, stdout: run.stdout.trim(), manager: run.code ? manager.output() : '' }).toEqual({
        code: 0,
        stdout: 'true',
        manager: '',
      });
    } finally {
      manager.child.kill('SIGTERM');
    }
    expect(await manager.exited).toBe(0);
  });
});

describe('the Python wheel', () => {
  it('installs into a fresh virtualenv and runs the Globus Compute tutorial', async () => {
    const venv = join(work, 'venv');
    ok(await runCommand('python3', ['-m', 'venv', venv], { cwd: work, timeoutMs: 120_000 }), 'python3 -m venv');
    ok(
      await runCommand(join(venv, 'bin', 'pip'), ['install', '--quiet', '--no-index', '--disable-pip-version-check', wheel], {
        cwd: work,
        timeoutMs: 120_000,
      }),
      'pip install the wheel',
    );
    const show = ok(
      await runCommand(
        join(venv, 'bin', 'python'),
        ['-c', 'import ferry_compute, sys; print(ferry_compute.__version__, ferry_compute.__file__)'],
        { cwd: work },
      ),
      'import',
    );
    expect(show.stdout).toMatch(new RegExp(`^${version.replace(/\./g, '\\.')} ${venv}/lib/`));
    const script = join(work, 'tutorial.py');
    writeFileSync(script, readFileSync(join(ROOT, 'examples', 'tutorial.py')));
    const run = await runCommand(join(venv, 'bin', 'python'), [script], {
      cwd: work,
      timeoutMs: 120_000,
      env: {
        PYTHONPATH: undefined,
        HOME: home,
        FERRY_API_URL: apiUrl,
        FERRY_TOKEN: token,
        FERRY_ENDPOINT_ID: endpointId,
        PYTHONDONTWRITEBYTECODE: '1',
      },
    });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Future is done:  False\nResult:  Hello World!\nFuture is done:  True\n');
    expect(run.stdout).toContain('Globus Compute returned an exception:  division by zero\n');
    expect(run.stdout).toContain('40 + 2 = 42\n10 + 32 = 42\n');
  });
});
