import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';

/**
 * An endpoint manager's configuration: the YAML of `ferry endpoint start --config`, with Globus
 * Compute's names (engine / provider keys of a Globus Compute endpoint's config.yaml), so a
 * provider block can be copied over. Keys Ferry does not know are errors naming their path; keys
 * Globus Compute (or Parsl) has but Ferry has no use for are warnings.
 */

/** Slurm's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS. */
export function walltimeSeconds(text: string): number {
  const m = /^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$/.exec(text.trim());
  if (!m) throw new Error(`not a Slurm time: ${JSON.stringify(text)}`);
  const [, d, a, b, c] = m;
  const n = (s?: string) => (s === undefined ? 0 : Number(s));
  if (d !== undefined) return n(d) * 86400 + n(a) * 3600 + n(b) * 60 + n(c);
  if (c !== undefined) return n(a) * 3600 + n(b) * 60 + n(c);
  if (b !== undefined) return n(a) * 60 + n(b);
  return n(a) * 60;
}

const walltime = z.string().refine((s) => {
  try {
    return walltimeSeconds(s) > 0;
  } catch {
    return false;
  }
}, 'a Slurm time such as "00:30:00" or "1-00:00:00"');

const count = z.number().int().nonnegative();
const blocks = {
  init_blocks: count.default(0),
  min_blocks: count.default(0),
  max_blocks: count.default(1),
  nodes_per_block: z.number().int().positive().default(1),
  walltime: walltime.default('00:30:00'),
  worker_init: z.string().default(''),
};

const slurmProvider = z.strictObject({
  type: z.literal('SlurmProvider'),
  ...blocks,
  partition: z.string().default(''),
  account: z.string().default(''),
  qos: z.string().default(''),
  constraint: z.string().default(''),
  /** Parsl's default: whole nodes for the block. */
  exclusive: z.boolean().default(true),
  /** GB per node (Parsl's mem_per_node). */
  mem_per_node: z.number().positive().optional(),
  cores_per_node: z.number().int().positive().optional(),
  scheduler_options: z.string().default(''),
  /** Seconds an sbatch / squeue / scancel may take. */
  cmd_timeout: z.number().positive().default(30),
  launcher: z.strictObject({ type: z.literal('SrunLauncher') }).optional(),
});

const localProvider = z.strictObject({
  type: z.literal('LocalProvider'),
  ...blocks,
  // Local agents have no scheduler limit; given one, they are drained and replaced like a job's.
  walltime: walltime.optional(),
  launcher: z.strictObject({ type: z.literal('SingleNodeLauncher') }).optional(),
});

const engine = z.strictObject({
  type: z.enum(['GlobusComputeEngine', 'HighThroughputEngine', 'GlobusMPIEngine']).optional(),
  /** How the agents launch mpi tasks' ranks (GlobusMPIEngine's mpi_launcher); default the agents' own setting, auto: srun in a Slurm job. */
  mpi_launcher: z.enum(['auto', 'srun', 'mpiexec', 'none']).optional(),
  /** Agents' slots per node; default one per core of the node. */
  max_workers_per_node: z.number().int().positive().optional(),
  /** Seconds a block may sit idle before it is released (Globus Compute's default: 120). */
  max_idletime: z.number().nonnegative().default(120),
  /** Where agents in blocks reach the manager (its report listener); default this host's name. */
  address: z.string().optional(),
  /**
   * Ferry: relay mode, for compute nodes without outbound access. The manager long-polls the
   * endpoint queue and relays tasks, results and payloads; agents reach only the manager (on
   * `address`). Default false: agents talk to AWS and the Ferry API themselves.
   */
  relay: z.boolean().default(false),
  /** Ferry: seconds before a block's walltime at which its agents stop taking tasks; default a quarter of the walltime, at most 5 minutes. */
  drain_before_walltime: z.number().nonnegative().optional(),
  provider: z.discriminatedUnion('type', [slurmProvider, localProvider]),
});

export const endpointConfigSchema = z.strictObject({
  /** The file `ferry endpoint register --write-config` wrote, relative to the config file. */
  credentials: z.string(),
  engine,
});

export type EndpointConfig = z.infer<typeof endpointConfigSchema>;
export type ProviderConfig = EndpointConfig['engine']['provider'];
export type SlurmProviderConfig = Extract<ProviderConfig, { type: 'SlurmProvider' }>;
export type LocalProviderConfig = Extract<ProviderConfig, { type: 'LocalProvider' }>;

/** Globus Compute / Parsl keys that mean nothing to Ferry: accepted with a warning. */
const IGNORED: Record<string, string[]> = {
  '': [
    'display_name',
    'amqp_port',
    'heartbeat_period',
    'heartbeat_threshold',
    'idle_heartbeats_soft',
    'idle_heartbeats_hard',
    'environment',
    'allowed_functions',
    'authentication_policy',
    'subscription_id',
    'multi_user',
    'debug',
    'public',
    'detach_endpoint',
    'log_dir',
    'stdout',
    'stderr',
    'endpoint_setup',
    'endpoint_teardown',
    'local_compute_services',
    'funcx_service_address',
    'high_assurance',
    'admins',
  ],
  engine: [
    'label',
    'worker_debug',
    'heartbeat_period',
    'heartbeat_threshold',
    'poll_period',
    'strategy',
    'job_status_kwargs',
    'cores_per_worker',
    'mem_per_worker',
    'available_accelerators',
    'prefetch_capacity',
    'encrypted',
    'worker_port_range',
    'interchange_port_range',
    'address_probe_timeout',
    'container_type',
    'container_uri',
    'container_cmd_options',
    'working_dir',
    'run_in_sandbox',
    'worker_logdir_root',
    'max_retries_on_system_failure',
  ],
  'engine.provider': ['parallelism', 'move_files', 'clusters', 'channel', 'cmd_timeout_kwargs'],
};

export class EndpointConfigError extends Error {}

export interface LoadedConfig {
  config: EndpointConfig;
  /** The credentials file, made absolute. */
  credentialsFile: string;
  warnings: string[];
}

/** Parse and check a config's YAML text; `file` names it in messages and anchors relative paths. */
export function parseEndpointConfig(text: string, file = 'endpoint.yaml'): LoadedConfig {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length) throw new EndpointConfigError(`${file}: ${doc.errors[0]!.message}`);
  const raw: unknown = doc.toJS() ?? {};
  const warnings: string[] = [];
  dropIgnored(raw, '', warnings, file);
  const parsed = endpointConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const at = issue.path.join('.');
      if (issue.code === 'unrecognized_keys') return issue.keys.map((k) => `${file}: ${at ? `${at}.` : ''}${k}: unknown key`).join('\n');
      return `${file}: ${at || '(top level)'}: ${issue.message}`;
    });
    throw new EndpointConfigError(lines.join('\n'));
  }
  const config = parsed.data;
  const p = config.engine.provider;
  if (p.min_blocks > p.max_blocks)
    throw new EndpointConfigError(`${file}: engine.provider.min_blocks (${p.min_blocks}) exceeds max_blocks (${p.max_blocks})`);
  if (p.init_blocks > p.max_blocks)
    throw new EndpointConfigError(`${file}: engine.provider.init_blocks (${p.init_blocks}) exceeds max_blocks (${p.max_blocks})`);
  const credentialsFile = isAbsolute(config.credentials) ? config.credentials : resolve(dirname(resolve(file)), config.credentials);
  return { config, credentialsFile, warnings };
}

export function loadEndpointConfig(file: string): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new EndpointConfigError(`cannot read ${file}: ${(err as Error).message}`);
  }
  return parseEndpointConfig(text, file);
}

function dropIgnored(node: unknown, path: string, warnings: string[], file: string): void {
  if (!node || typeof node !== 'object' || Array.isArray(node)) return;
  const obj = node as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if ((IGNORED[path] ?? []).includes(key)) {
      warnings.push(`${file}: ${path ? `${path}.` : ''}${key}: a Globus Compute setting Ferry ignores`);
      delete obj[key];
    }
  }
  if (path === '') dropIgnored(obj.engine, 'engine', warnings, file);
  if (path === 'engine') dropIgnored(obj.provider, 'engine.provider', warnings, file);
}

/** Seconds before walltime at which a block's agents stop taking tasks. */
export function drainSeconds(engine: EndpointConfig['engine']): number {
  if (engine.drain_before_walltime !== undefined) return engine.drain_before_walltime;
  if (!engine.provider.walltime) return 0;
  return Math.min(300, Math.floor(walltimeSeconds(engine.provider.walltime) / 4));
}
