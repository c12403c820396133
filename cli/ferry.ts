import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, extname, join } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { version } from '../package.json';
import { Client, type FunctionSpec } from '../sdk/client';
import { decodePayload } from '../sdk/codec';
import { FerryApiError } from '../sdk/errors';
import { MPIFunction, ShellFunction } from '../sdk/shell';
import { FINAL, type TaskView } from '../sdk/types';
import { localDataDir } from '../core/install';
import { keyValues, table } from './output';
import { addTokenCommands } from './token';
import { sleep } from '../core/retry';
import { FUNCTION_RUNTIMES, PROCESS_RUNTIMES, parseProcessRuntimes, type FunctionRuntime, type ProcessRuntime } from '../core/runtimes';

/** Exit codes scripts can rely on. */
export const EXIT = { ok: 0, error: 1, usage: 2, taskFailed: 3, timeout: 4 } as const;

class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.error,
  ) {
    super(message);
  }
}

const writeSecretFile = (file: string, value: unknown) => {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, JSON.stringify(value, null, 2) + '\n', { mode: 0o600 });
};

export function buildProgram(): Command {
  const program = new Command('ferry')
    .description('Ferry: run functions on your own endpoints')
    .version(version, '-V, --version', 'print the version')
    .option('--json', 'print JSON for scripts instead of tables')
    .option('--api-url <url>', 'the Ferry API (default: FERRY_API_URL or the credentials file)')
    .option('--token <token>', 'a user token (default: FERRY_TOKEN or the credentials file)')
    .showHelpAfterError()
    .exitOverride();

  const globals = () => program.opts<{ json?: boolean; apiUrl?: string; token?: string }>();
  const client = () => new Client({ apiUrl: globals().apiUrl, token: globals().token });
  const print = (human: string, data: unknown) => console.log(globals().json ? JSON.stringify(data, null, 2) : human);

  const local = program.command('local').description('the single-machine stack');
  local
    .command('up')
    .description('run Ferry locally: API, AWS protocol servers, a default endpoint and its worker (same as npm start)')
    .action(async () => {
      // require, not import(): tsx's CommonJS hook resolves extensionless .ts paths only for require.
      const { startLocal } = require('../local/start') as typeof import('../local/start');
      await startLocal();
      await new Promise(() => undefined);
    });
  local
    .command('env')
    .description(
      'what a worker on this machine needs to reach the running local stack\'s AWS servers: `eval "$(ferry local env)"`, then `ferry worker start`',
    )
    .action(() => {
      const file = join(localDataDir(), 'aws.json');
      let aws: { region: string; endpoints: { sqs: string; s3: string; sts: string } };
      try {
        aws = JSON.parse(readFileSync(file, 'utf8'));
      } catch {
        throw new CliError(`no local stack at ${localDataDir()}: start one with \`ferry local up\` (or npm start)`, EXIT.error);
      }
      // Never the admin key: a worker trades its endpoint secret for credentials of its own.
      const env = {
        AWS_REGION: aws.region,
        AWS_ENDPOINT_URL_SQS: aws.endpoints.sqs,
        AWS_ENDPOINT_URL_S3: aws.endpoints.s3,
        AWS_ENDPOINT_URL_STS: aws.endpoints.sts,
        FERRY_S3_FORCE_PATH_STYLE: 'true',
      };
      print(
        Object.entries(env)
          .map(([k, v]) => `export ${k}=${v}`)
          .join('\n'),
        env,
      );
    });

  addTokenCommands(program, print, (message, usage) => {
    throw new CliError(message, usage ? EXIT.usage : EXIT.error);
  });

  program
    .command('login')
    .description('check a token against an API and save both to ~/.ferry/credentials.json (mode 0600)')
    .requiredOption('--url <url>', 'the API URL')
    .requiredOption('--with-token <token>', 'the user token')
    .action(async (o: { url: string; withToken: string }) => {
      const c = new Client({ apiUrl: o.url, token: o.withToken });
      await c.getEndpoints();
      const file = join(homedir(), '.ferry', 'credentials.json');
      writeSecretFile(file, { api_url: c.apiUrl, token: o.withToken });
      print(`logged in; credentials saved to ${file}`, { api_url: c.apiUrl, credentials_file: file });
    });

  const endpoint = program.command('endpoint').description('register and manage endpoints');
  endpoint
    .command('register')
    .description('register an endpoint; prints its id and secret (shown once)')
    .requiredOption('--name <name>', 'a name, e.g. hpc-login-1')
    .option('--public', 'let every user submit to it')
    .option('--write-config <file>', 'save api_url, endpoint_id and endpoint_secret for `ferry worker start --config` (mode 0600)')
    .action(async (o: { name: string; public?: boolean; writeConfig?: string }) => {
      const c = client();
      const ep = await c.registerEndpoint(o.name, { public: o.public });
      if (o.writeConfig)
        writeSecretFile(o.writeConfig, { api_url: c.apiUrl, endpoint_id: ep.endpoint_id, endpoint_secret: ep.endpoint_secret });
      print(
        keyValues({ endpoint_id: ep.endpoint_id, name: ep.name, endpoint_secret: ep.endpoint_secret, config: o.writeConfig }) +
          '\n\nThe secret is shown only once. Start a worker with:\n  ' +
          (o.writeConfig
            ? `ferry worker start --config ${o.writeConfig}`
            : `FERRY_API_URL=${c.apiUrl} FERRY_ENDPOINT_ID=${ep.endpoint_id} FERRY_ENDPOINT_SECRET=<secret> ferry worker start`),
        ep,
      );
    });
  endpoint
    .command('list')
    .description('your endpoints')
    .action(async () => {
      const eps = await client().getEndpoints();
      print(table(eps as never[], ['endpoint_id', 'name', 'public', 'created_at']), eps);
    });
  endpoint
    .command('status <endpointId>')
    .description('online or offline, workers, queued tasks')
    .action(async (id: string) => {
      const s = await client().getEndpointStatus(id);
      const { blocks, ...rest } = s;
      const blockTable = blocks.length
        ? `\n\nblocks:\n${table(blocks as never[], ['block_id', 'job_id', 'state', 'scheduler_state', 'agents', 'workers', 'running', 'idle_seconds', 'ends_at'])}`
        : '';
      print(keyValues(rest as never) + blockTable, s);
    });
  endpoint
    .command('start')
    .description('run an endpoint manager: blocks of agents from Slurm (or this machine), scaled on the queue (README, "HPC endpoint")')
    .requiredOption('--config <file>', 'endpoint.yaml: credentials and an engine with a SlurmProvider or LocalProvider')
    .option('--state-dir <dir>', 'job scripts and agent output (default: ~/.ferry/endpoints/<endpoint id>)')
    .option('--status-file <file>', 'keep the blocks and queue depth in this JSON file, rewritten every poll')
    .option('--poll-seconds <n>', 'how often the queue and the jobs are looked at (default: 5)')
    .action(async (o: { config: string; stateDir?: string; statusFile?: string; pollSeconds?: string }) => {
      // require, not import(): tsx's CommonJS hook resolves extensionless .ts paths only for require.
      const { startEndpointManager } = require('../workers/manager/start') as typeof import('../workers/manager/start');
      const poll = o.pollSeconds === undefined ? undefined : Number(o.pollSeconds);
      if (poll !== undefined && !(poll > 0)) throw new CliError('--poll-seconds must be a positive number', EXIT.usage);
      process.exit(await startEndpointManager(o.config, { stateDir: o.stateDir, statusFile: o.statusFile, pollSeconds: poll }));
    });
  endpoint
    .command('delete <endpointId>')
    .description('delete an endpoint; its queued tasks fail')
    .action(async (id: string) => {
      const out = await client().deleteEndpoint(id);
      print(
        `deleted ${id}; ${out.failed_tasks} open tasks failed${out.still_failing ? ', the rest fail within minutes (the sweep)' : ''}`,
        out,
      );
    });
  endpoint
    .command('share <endpointId>')
    .description('share an endpoint with users, or make it public or private')
    .option('--user <userIds...>', 'users who may submit to it (replaces the list)')
    .addOption(new Option('--public', 'anyone may submit').conflicts('private'))
    .option('--private', 'only the owner and listed users')
    .action(async (id: string, o: { user?: string[]; public?: boolean; private?: boolean }) => {
      const ep = await client().shareEndpoint(id, { shared_with: o.user, public: o.public ? true : o.private ? false : undefined });
      print(keyValues(ep as never), ep);
    });

  program
    .command('worker')
    .description('the worker agent')
    .command('start')
    .description('serve an endpoint from this machine (config from --config or FERRY_API_URL, FERRY_ENDPOINT_ID, FERRY_ENDPOINT_SECRET)')
    .option('--config <file>', 'a file written by `ferry endpoint register --write-config`')
    .option('--pool-size <n>', 'processes per runtime (default: one per core)')
    .option('--runtimes <list>', PROCESS_RUNTIMES.join(','))
    .addOption(
      new Option('--isolation <mode>', "how other users' tasks are kept apart (default: auto)").choices([
        'auto',
        'multi-user',
        'sandbox',
        'none',
      ]),
    )
    .option('--user-map <json>', 'multi-user: {"<ferry user id>": "<local account>", ...}')
    .option('--task-env <json>', 'variables every task sees: {"NAME": "value", ...}')
    .option('--env-passthrough <names>', "the agent's variables tasks may see, comma-separated")
    .addOption(new Option('--sandbox-network <on|off>', 'sandbox: whether tasks reach the network (default: on)').choices(['on', 'off']))
    .option('--owner-unsandboxed', "sandbox: run the endpoint owner's tasks outside the sandbox")
    .option('--idle-seconds <n>', "stop a user's idle runtime process after this long (default: 60)")
    .option('--max-processes <n>', 'runtime processes of all users at most (default: 2 × pool size × runtimes)')
    .option('--python <command>', 'the python interpreter (default: python3)')
    .action(
      async (o: {
        config?: string;
        poolSize?: string;
        runtimes?: string;
        isolation?: string;
        userMap?: string;
        taskEnv?: string;
        envPassthrough?: string;
        sandboxNetwork?: string;
        ownerUnsandboxed?: boolean;
        idleSeconds?: string;
        maxProcesses?: string;
        python?: string;
      }) => {
        const { runAgent, workerConfigFromEnv, workerSettingsFromEnv } = require('../workers/main') as typeof import('../workers/main');
        // Flags win over the environment, which wins over the config file.
        const flags: Record<string, string | undefined> = {
          FERRY_WORKER_CONFIG: o.config,
          FERRY_ISOLATION: o.isolation,
          FERRY_USER_MAP: o.userMap,
          FERRY_TASK_ENV: o.taskEnv,
          FERRY_ENV_PASSTHROUGH: o.envPassthrough,
          FERRY_SANDBOX_NETWORK: o.sandboxNetwork,
          FERRY_OWNER_UNSANDBOXED: o.ownerUnsandboxed ? 'true' : undefined,
          FERRY_IDLE_SECONDS: o.idleSeconds,
          FERRY_MAX_PROCESSES: o.maxProcesses,
          FERRY_PYTHON: o.python,
        };
        const env = { ...process.env, ...Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)) };
        let cfg: ReturnType<typeof workerConfigFromEnv>;
        let settings: ReturnType<typeof workerSettingsFromEnv>;
        let runtimes: ProcessRuntime[] | undefined;
        try {
          cfg = workerConfigFromEnv(env);
          settings = workerSettingsFromEnv(env);
          runtimes = parseProcessRuntimes(o.runtimes);
        } catch (err) {
          throw new CliError((err as Error).message, EXIT.usage);
        }
        const code = await runAgent(cfg, { poolSize: o.poolSize ? Number(o.poolSize) : undefined, runtimes }, settings);
        process.exit(code);
      },
    );

  const fn = program.command('function').description('register and list functions');
  fn.command('register [file]')
    .description(
      'register a function from a file (.py: python, needs --entrypoint; otherwise node, the file holds one function expression), ' +
        "or a command (--runtime shell|mpi: the file or --command holds the template, {name} filled from the task's kwargs)",
    )
    .option('--name <name>')
    .option('--description <text>')
    .option('--entrypoint <name>', 'python: the function to call')
    .addOption(new Option('--runtime <runtime>').choices(FUNCTION_RUNTIMES))
    .option('--command <cmd>', 'shell, mpi: the command template, instead of a file')
    .option('--walltime <seconds>', 'shell, mpi: kill the command after this long (its result: returncode 124)')
    .option('--snippet-lines <n>', 'shell, mpi: lines of stdout and stderr kept in the result (default 1000)')
    .option('--stdout <file>', "shell, mpi: also write stdout to this file, in the task's directory on the endpoint")
    .option('--stderr <file>', 'shell, mpi: also write stderr to this file')
    .action(async (file: string | undefined, o: FunctionOptions) => {
      const spec = functionSpecOf(file, o);
      const id = await client().registerFunction(spec);
      print(id, { function_id: id, ...spec, source: undefined });
    });
  fn.command('list')
    .description('your functions')
    .action(async () => {
      const fns = await client().listFunctions();
      print(table(fns as never[], ['function_id', 'name', 'runtime', 'entrypoint', 'created_at']), fns);
    });

  const task = program.command('task').description('read, wait for and cancel tasks');
  task.command('get <taskId>').action(async (id: string) => {
    const t = await client().getTask(id);
    print(await describeTask(t), t);
    if (t.status === 'failed' || t.status === 'cancelled') throw new CliError('', EXIT.taskFailed);
  });
  task
    .command('wait <taskIds...>')
    .description('wait until every task finishes; exit 3 if any failed, 4 on timeout')
    .option('--timeout <seconds>', 'give up after this long')
    .action(async (ids: string[], o: { timeout?: string }) => {
      const views = await waitFor(client(), ids, o.timeout ? Number(o.timeout) * 1000 : undefined, !globals().json);
      print(table(views as never[], ['task_id', 'status', 'completed_at']), views);
      if (views.some((v) => v.status !== 'success'))
        throw new CliError('', views.every((v) => FINAL.includes(v.status)) ? EXIT.taskFailed : EXIT.timeout);
    });
  task.command('cancel <taskId>').action(async (id: string) => {
    const t = await client().cancel(id);
    print(`${id}: ${t.status}`, t);
    if (t.status !== 'cancelled') throw new CliError(`task ${id} had already finished (${t.status})`, EXIT.error);
  });

  program
    .command('run <file>')
    .description('register the function in <file>, run it once on an endpoint and print its result')
    .requiredOption('--endpoint <endpointId>')
    .option('--entrypoint <name>', 'python: the function to call')
    .option('--args <json>', 'positional arguments as a JSON array', '[]')
    .option('--kwargs <json>', 'keyword arguments as a JSON object', '{}')
    .option('--timeout <seconds>', 'give up waiting after this long')
    .action(async (file: string, o: { endpoint: string; entrypoint?: string; args: string; kwargs: string; timeout?: string }) => {
      const args = parseJson(o.args, '--args');
      const kwargs = parseJson(o.kwargs, '--kwargs');
      if (!Array.isArray(args)) throw new CliError('--args must be a JSON array', EXIT.usage);
      const c = client();
      const functionId = await c.registerFunction(functionFromFile(file, o));
      const sub = await c.batchRun(o.endpoint, [{ function_id: functionId, args, kwargs: kwargs as Record<string, unknown> }]);
      const [view] = await waitFor(c, sub.task_ids, o.timeout ? Number(o.timeout) * 1000 : undefined, false);
      if (view!.status === 'success') {
        const value = await decodePayload(view!.result!);
        print(typeof value === 'string' ? value : JSON.stringify(value), { task_id: view!.task_id, status: view!.status, result: value });
        return;
      }
      print(await describeTask(view!), view);
      throw new CliError('', FINAL.includes(view!.status) ? EXIT.taskFailed : EXIT.timeout);
    });

  return program;
}

interface FunctionOptions {
  name?: string;
  description?: string;
  entrypoint?: string;
  runtime?: FunctionRuntime;
  command?: string;
  walltime?: string;
  snippetLines?: string;
  stdout?: string;
  stderr?: string;
}

/** `ferry function register`: code from a file, or a shell/mpi command template from a file or --command. */
function functionSpecOf(file: string | undefined, o: FunctionOptions): FunctionSpec {
  const shellOnly = (['command', 'walltime', 'snippetLines', 'stdout', 'stderr'] as const).filter((k) => o[k] !== undefined);
  if (o.runtime !== 'shell' && o.runtime !== 'mpi') {
    if (shellOnly.length)
      throw new CliError(`--${shellOnly[0]!.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} is for --runtime shell or mpi`, EXIT.usage);
    if (file === undefined) throw new CliError('name the file that holds the function', EXIT.usage);
    return { ...functionFromFile(file, { ...o, runtime: o.runtime }), description: o.description };
  }
  if ((file === undefined) === (o.command === undefined))
    throw new CliError('give the command in a file or with --command (one of them)', EXIT.usage);
  if (o.entrypoint) throw new CliError(`${o.runtime} functions take no --entrypoint`, EXIT.usage);
  const number = (v: string | undefined, what: string) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new CliError(`${what} must be a number`, EXIT.usage);
    return n;
  };
  const cmd = o.command ?? readFileSync(file!, 'utf8').replace(/\n+$/, '');
  try {
    const Kind = o.runtime === 'mpi' ? MPIFunction : ShellFunction;
    return new Kind(cmd, {
      name: o.name,
      description: o.description,
      walltime: number(o.walltime, '--walltime'),
      snippetLines: number(o.snippetLines, '--snippet-lines'),
      stdout: o.stdout,
      stderr: o.stderr,
    }).toFunctionSpec();
  } catch (err) {
    throw new CliError((err as Error).message, EXIT.usage);
  }
}

function functionFromFile(file: string, o: { name?: string; entrypoint?: string; runtime?: ProcessRuntime }) {
  const runtime = o.runtime ?? (extname(file) === '.py' ? 'python' : 'node');
  if (runtime === 'python' && !o.entrypoint) throw new CliError('python functions need --entrypoint', EXIT.usage);
  const source = readFileSync(file, 'utf8').trim();
  return { name: o.name ?? o.entrypoint ?? file, runtime, source, entrypoint: o.entrypoint } as const;
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new CliError(`${what} is not valid JSON`, EXIT.usage);
  }
}

async function describeTask(t: TaskView): Promise<string> {
  const base: Record<string, unknown> = {
    task_id: t.task_id,
    status: t.status,
    endpoint_id: t.endpoint_id,
    created_at: t.created_at,
    completed_at: t.completed_at,
  };
  if (t.status === 'success') base.result = await decodePayload(t.result!).catch((e) => `(${(e as Error).message})`);
  if (t.exception) base.exception = `${t.exception.type}: ${t.exception.message}`;
  return keyValues(base) + (t.exception?.traceback ? `\n\nremote traceback:\n${t.exception.traceback}` : '');
}

/**
 * Wait until every task is final or the timeout passes, by long poll (POST /v1/tasks/wait, 1,000
 * ids a wait) where the API has it and by batched reads where it does not; a progress line on
 * stderr while waiting. Views come back in the order of `ids`.
 */
async function waitFor(c: Client, ids: string[], timeoutMs: number | undefined, progress: boolean): Promise<TaskView[]> {
  const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
  const showProgress = progress && process.stderr.isTTY;
  const latest = new Map<string, TaskView>();
  const read = async (ask: string[]) => {
    const { tasks, unknown } = await c.getTasks(ask);
    if (unknown.length) throw new CliError(`unknown task ids: ${unknown.join(', ')}`, EXIT.error);
    for (const t of tasks) latest.set(t.task_id, t);
  };
  await read(ids);
  let longPoll = true;
  let delay = 50;
  for (;;) {
    const open = ids.filter((id) => !FINAL.includes(latest.get(id)!.status));
    if (showProgress) {
      const failed = [...latest.values()].filter((t) => t.status === 'failed').length;
      process.stderr.write(`\r${ids.length - open.length}/${ids.length} finished (${failed} failed)`);
    }
    const left = deadline - Date.now();
    if (!open.length || left <= 0) {
      if (showProgress) process.stderr.write('\n');
      return ids.map((id) => latest.get(id)!);
    }
    if (longPoll) {
      try {
        const answer = await c.waitForTasks(open.slice(0, 1000), Math.min(20_000, left));
        for (const t of answer.tasks) latest.set(t.task_id, t);
        if (answer.unknown.length) throw new CliError(`unknown task ids: ${answer.unknown.join(', ')}`, EXIT.error);
        continue;
      } catch (err) {
        // An API deployed before the wait route answers 404 (the route names unknown ids, never 404s): read in batches instead.
        if (!(err instanceof FerryApiError && err.status === 404)) throw err;
        longPoll = false;
      }
    }
    await sleep(Math.min(delay, left));
    delay = Math.min(1000, delay * 1.5);
    await read(open);
  }
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? EXIT.ok : EXIT.usage);
    if (err instanceof CliError) {
      if (err.message) console.error(`ferry: ${err.message}`);
      process.exit(err.exitCode);
    }
    if (err instanceof FerryApiError) {
      console.error(`ferry: ${err.message} (${err.status} ${err.code})`);
      process.exit(EXIT.error);
    }
    console.error(`ferry: ${(err as Error)?.message ?? err}`);
    process.exit(/credentials/.test(String((err as Error)?.message)) ? EXIT.usage : EXIT.error);
  }
}
