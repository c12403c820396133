/**
 * Globus Compute's ShellFunction, MPIFunction and ShellResult. The command runs on the endpoint
 * under /bin/bash (the agent runs it itself: no node or python runtime is involved), with
 * `{name}` placeholders filled from the task's keyword arguments, as Python's str.format does
 * (`{{` and `}}` are literal braces; values are inserted as text, not shell-quoted).
 */
import type { FunctionSpec } from './client';
import type { ResourceSpecification, ShellOptions } from './types';

export interface ShellFunctionOptions {
  /** Seconds the command may run; past them it is killed and its ShellResult has returncode 124 and exceptionName 'subprocess.TimeoutExpired'. */
  walltime?: number;
  /** Lines of stdout and stderr the ShellResult keeps, from the end (the endpoint's default: 1000). */
  snippetLines?: number;
  /** Files (relative to the task's working directory on the endpoint) that also receive the command's stdout and stderr. */
  stdout?: string;
  stderr?: string;
  /** The registered function's name; Globus Compute's default, "ShellFunction: <cmd>", otherwise. */
  name?: string;
  description?: string;
}

// POST /v1/functions: names are 1 to 128 characters.
const MAX_NAME = 128;

export class ShellFunction {
  readonly runtime: 'shell' | 'mpi' = 'shell';
  readonly walltime?: number;
  readonly snippetLines?: number;
  readonly stdout?: string;
  readonly stderr?: string;
  readonly description?: string;
  private readonly givenName?: string;

  constructor(
    readonly cmd: string,
    opts: ShellFunctionOptions = {},
  ) {
    if (typeof cmd !== 'string' || !cmd.trim()) throw new TypeError(`${new.target.name} needs a command`);
    if (opts.walltime !== undefined && !(Number.isFinite(opts.walltime) && opts.walltime > 0))
      throw new RangeError(`walltime must be a positive number of seconds, not ${opts.walltime}`);
    if (opts.snippetLines !== undefined && !(Number.isInteger(opts.snippetLines) && opts.snippetLines >= 0))
      throw new RangeError(`snippetLines must be a whole number >= 0, not ${opts.snippetLines}`);
    this.walltime = opts.walltime;
    this.snippetLines = opts.snippetLines;
    this.stdout = opts.stdout;
    this.stderr = opts.stderr;
    this.description = opts.description;
    this.givenName = opts.name;
  }

  /** The name it is registered under. */
  get name(): string {
    return this.givenName ?? `${this.constructor.name}: ${this.cmd}`.slice(0, MAX_NAME).trim();
  }

  /** The options as the API stores them; only those given, so equal functions register as one. */
  get shellOptions(): ShellOptions {
    const shell: ShellOptions = {};
    if (this.walltime !== undefined) shell.walltime_ms = Math.max(1, Math.round(this.walltime * 1000));
    if (this.snippetLines !== undefined) shell.snippet_lines = this.snippetLines;
    if (this.stdout !== undefined) shell.stdout = this.stdout;
    if (this.stderr !== undefined) shell.stderr = this.stderr;
    return shell;
  }

  /** What POST /v1/functions takes for it. */
  toFunctionSpec(): FunctionSpec {
    return { name: this.name, runtime: this.runtime, source: this.cmd, description: this.description, shell: this.shellOptions };
  }
}

/**
 * A command run under the endpoint's MPI launcher (mpiexec, or srun in a Slurm block) as
 * `$PARSL_MPI_PREFIX <cmd>`. Each task needs a resource specification: set
 * `executor.resourceSpecification = { num_nodes, ranks_per_node, num_ranks }` (what is left out
 * is filled in: one node, ranks enough for num_ranks).
 */
export class MPIFunction extends ShellFunction {
  override readonly runtime = 'mpi' as const;
}

/** What a ShellFunction or MPIFunction answers, whatever the exit code (a non-zero one is not a failed task). */
export class ShellResult {
  constructor(
    /** The command as run, placeholders filled. */
    readonly cmd: string,
    /** The last snippetLines lines of stdout and stderr (capped like any task output). */
    readonly stdout: string,
    readonly stderr: string,
    readonly returncode: number,
    /** null, 'subprocess.CalledProcessError' (non-zero exit) or 'subprocess.TimeoutExpired' (walltime passed; returncode 124). */
    readonly exceptionName: string | null = null,
  ) {}

  /** From the result's JSON: `{cmd, returncode, stdout, stderr, exception_name}`. */
  static fromJSON(value: WireShellResult): ShellResult {
    return new ShellResult(value.cmd, value.stdout, value.stderr, value.returncode, value.exception_name ?? null);
  }

  /** Globus Compute's summary: the exception if any, the exit code, and the last ten lines of each stream. */
  toString(): string {
    const tail = (s: string) =>
      s
        .slice(-1024)
        .split('\n')
        .filter((l, i, all) => i < all.length - 1 || l !== '')
        .slice(-10)
        .join('\n');
    return `${this.exceptionName ? `${this.exceptionName}\n` : ''}exit code: ${this.returncode}\n   stdout:\n${tail(this.stdout)}\n\n   stderr:\n${tail(this.stderr)}`;
  }
}

export interface WireShellResult {
  cmd: string;
  returncode: number;
  stdout: string;
  stderr: string;
  exception_name?: string | null;
}

export function isWireShellResult(v: unknown): v is WireShellResult {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return typeof r.cmd === 'string' && typeof r.returncode === 'number' && typeof r.stdout === 'string' && typeof r.stderr === 'string';
}

/** Check a resource specification before it goes out, so one bad MPI task cannot fail the whole batch it travels in. */
export function checkResourceSpecification(spec: Partial<ResourceSpecification>): Partial<ResourceSpecification> {
  if (typeof spec !== 'object' || spec === null)
    throw new TypeError('resourceSpecification must be an object: { num_nodes?, ranks_per_node?, num_ranks? }');
  const out: Partial<ResourceSpecification> = {};
  for (const [key, value] of Object.entries(spec)) {
    if (key !== 'num_nodes' && key !== 'ranks_per_node' && key !== 'num_ranks')
      throw new TypeError(`resourceSpecification: unknown key ${key} (num_nodes, ranks_per_node, num_ranks)`);
    if (value === undefined) continue;
    if (!Number.isInteger(value) || (value as number) < 1)
      throw new RangeError(`resourceSpecification.${key} must be a positive whole number, not ${value}`);
    out[key] = value as number;
  }
  const nodes = out.num_nodes ?? 1;
  if (out.num_ranks !== undefined && out.ranks_per_node !== undefined && out.num_ranks > nodes * out.ranks_per_node) {
    throw new RangeError(
      `resourceSpecification: num_ranks ${out.num_ranks} does not fit ${nodes} node(s) × ${out.ranks_per_node} ranks_per_node`,
    );
  }
  return out;
}
