import type { ResourceSpecification, ShellOptions } from '../../core/messages';
import { launcherPrefix, mpiEnvironment, MPI_PACKAGE_HINT, type MpiLauncher } from './mpi';
import type { Codec } from '../../core/runtimes';
import type { RunOutcome, RuntimePool } from './pool';

/**
 * Globus Compute's ShellFunction and MPIFunction, run by the agent itself with no runtime process:
 * the function's source is a command template (Python's str.format, filled from the task's
 * kwargs), run with `/bin/bash -c` through the pool (RuntimePool.runCommand: the user's isolation,
 * scratch, limits and output caps). Whatever its exit status, the task succeeds with a ShellResult
 * `{cmd, returncode, stdout, stderr, exception_name}` as JSON; an mpi command runs as
 * `$PARSL_MPI_PREFIX <cmd>` with the task's ranks.
 */

export interface ShellTask {
  taskId: string;
  user: string;
  runtime: 'shell' | 'mpi';
  /** The command template. */
  source: string;
  shell?: ShellOptions;
  args: Buffer;
  codec: Codec | string;
  walltimeMs: number;
  memoryMb?: number;
  resourceSpecification?: ResourceSpecification;
}

/** What a ShellFunction returns, as Globus Compute's ShellResult has it. */
export interface ShellResult {
  cmd: string;
  returncode: number;
  stdout: string;
  stderr: string;
  exception_name: null | 'subprocess.CalledProcessError' | 'subprocess.TimeoutExpired';
}

export const DEFAULT_SNIPPET_LINES = 1000;

const failed = (type: string, message: string): RunOutcome => ({ ok: false, error: { type, message, traceback: `${type}: ${message}` } });

export class ShellRunner {
  constructor(
    private readonly pool: RuntimePool,
    /** How mpi tasks' ranks start; undefined: mpi tasks fail with MPIUnavailable. */
    private readonly mpi: MpiLauncher | undefined,
  ) {}

  async run(t: ShellTask): Promise<RunOutcome> {
    if (t.codec !== 'json')
      return failed(
        'UnsupportedCodec',
        `${t.runtime} functions read json arguments ({"args": [], "kwargs": {...}}), not ${JSON.stringify(t.codec)}`,
      );
    let parsed: { args?: unknown; kwargs?: unknown };
    try {
      parsed = JSON.parse(t.args.toString('utf8')) as typeof parsed;
    } catch (err) {
      return failed('InvalidTask', `the arguments are not JSON: ${(err as Error).message}`);
    }
    const args = Array.isArray(parsed?.args) ? parsed.args : [];
    const kwargs =
      parsed?.kwargs && typeof parsed.kwargs === 'object' && !Array.isArray(parsed.kwargs)
        ? (parsed.kwargs as Record<string, unknown>)
        : {};
    if (args.length) {
      return failed(
        'TypeError',
        `a ${t.runtime === 'mpi' ? 'MPIFunction' : 'ShellFunction'} takes keyword arguments only (its command's {name} fields), but ${args.length} positional argument${args.length === 1 ? ' was' : 's were'} given`,
      );
    }
    let cmd: string;
    try {
      cmd = formatCommand(t.source, kwargs);
    } catch (err) {
      if (err instanceof FormatError) return failed(err.type, err.message);
      throw err;
    }

    let mpiEnv: Record<string, string> = {};
    let binds: string[] = [];
    let unconfinedOnly: string | undefined;
    if (t.runtime === 'mpi') {
      if (!this.mpi) {
        return failed(
          'MPIUnavailable',
          `this endpoint has no MPI launcher (mpi_launcher: none, or neither srun in a Slurm job nor mpiexec on PATH); ${MPI_PACKAGE_HINT}`,
        );
      }
      if (!t.resourceSpecification)
        return failed('MissingResourceSpecification', 'an mpi task needs a resource_specification: num_nodes, ranks_per_node, num_ranks');
      const prepared = mpiEnvironment(this.mpi, t.resourceSpecification);
      if (!prepared.ok) return failed(prepared.type, prepared.message);
      mpiEnv = prepared.env;
      binds = [launcherPrefix(this.mpi)];
      if (this.mpi.kind === 'srun') {
        // slurmd starts srun's ranks as the job's user, outside whatever confines the task.
        unconfinedOnly =
          "srun starts MPI ranks through slurmd as the Slurm job's user, outside this task's isolation, so only tasks that run unconfined as the agent's user may use it " +
          "(the endpoint owner's, with owner_unsandboxed: true or isolation none); with mpi_launcher: mpiexec the ranks run inside the sandbox";
      }
      // Globus Compute's MPIFunction: the launcher prefix, then the command.
      cmd = `$PARSL_MPI_PREFIX ${cmd}`;
    }

    const outcome = await this.pool.runCommand({
      taskId: t.taskId,
      user: t.user,
      script: cmd,
      env: (dir) => ({ GC_TASK_UUID: t.taskId, GC_TASK_SANDBOX_DIR: dir, ...mpiEnv }),
      walltimeMs: t.walltimeMs,
      commandWalltimeMs: t.shell?.walltime_ms,
      memoryMb: t.memoryMb,
      files:
        t.shell?.stdout !== undefined || t.shell?.stderr !== undefined ? { stdout: t.shell?.stdout, stderr: t.shell?.stderr } : undefined,
      mpi: t.runtime === 'mpi',
      binds,
      unconfinedOnly,
    });
    if (!outcome.ok) return outcome;
    const lines = t.shell?.snippet_lines ?? DEFAULT_SNIPPET_LINES;
    const result: ShellResult = {
      cmd,
      returncode: outcome.returncode,
      stdout: lastLines(outcome.stdout, lines),
      stderr: lastLines(outcome.stderr, lines),
      exception_name: outcome.timedOut ? 'subprocess.TimeoutExpired' : outcome.returncode !== 0 ? 'subprocess.CalledProcessError' : null,
    };
    return { ok: true, result: Buffer.from(JSON.stringify(result)), codec: 'json', output: outcome.output };
  }
}

/** The last `n` lines of `text`, line ends kept. */
export function lastLines(text: string, n: number): string {
  if (n <= 0 || !text) return '';
  return text
    .split(/(?<=\n)/)
    .slice(-n)
    .join('');
}

// --- Python's str.format, for command templates ------------------------------------------------

/** A template that Python's str.format would refuse, with the exception Python would raise. */
export class FormatError extends Error {
  constructor(
    readonly type: 'KeyError' | 'IndexError' | 'ValueError' | 'AttributeError' | 'TypeError',
    message: string,
  ) {
    super(message);
  }
}

/**
 * `template.format(**kwargs)` as Python does it: `{name}`, `{name[key]}`, `!s`/`!r`/`!a`,
 * a format spec (fill, align, sign, width, grouping, precision; types s d f e g x o b %), `{{` and
 * `}}`. Values are inserted as text with no shell quoting, as Globus Compute does.
 */
export function formatCommand(template: string, kwargs: Record<string, unknown>): string {
  let out = '';
  for (let i = 0; i < template.length; i++) {
    const ch = template[i]!;
    if (ch === '}') {
      if (template[i + 1] === '}') {
        out += '}';
        i++;
        continue;
      }
      throw new FormatError('ValueError', "Single '}' encountered in format string");
    }
    if (ch !== '{') {
      out += ch;
      continue;
    }
    if (template[i + 1] === '{') {
      out += '{';
      i++;
      continue;
    }
    // The field runs to its matching '}' (a format spec may hold nested {fields}).
    let depth = 1;
    let j = i + 1;
    for (; j < template.length && depth; j++) {
      if (template[j] === '{') depth++;
      else if (template[j] === '}') depth--;
    }
    if (depth)
      throw new FormatError(
        'ValueError',
        i === template.length - 1 ? "Single '{' encountered in format string" : "expected '}' before end of string",
      );
    out += formatField(template.slice(i + 1, j - 1), kwargs);
    i = j - 1;
  }
  return out;
}

function formatField(field: string, kwargs: Record<string, unknown>): string {
  // The name ends at the first '!' or ':' outside [brackets].
  let end = 0;
  for (let inBracket = false; end < field.length; end++) {
    const ch = field[end];
    if (ch === '[') inBracket = true;
    else if (ch === ']') inBracket = false;
    else if (!inBracket && (ch === '!' || ch === ':')) break;
  }
  const name = field.slice(0, end);
  let rest = field.slice(end);
  let conversion: string | undefined;
  if (rest.startsWith('!')) {
    conversion = rest[1];
    rest = rest.slice(2);
    if (rest && !rest.startsWith(':')) throw new FormatError('ValueError', "expected ':' after conversion specifier");
  }
  const spec = rest.startsWith(':') ? formatCommand(rest.slice(1), kwargs) : '';
  let value = lookup(name, kwargs);
  if (conversion !== undefined) {
    if (conversion === 's') value = pyStr(value);
    else if (conversion === 'r' || conversion === 'a') value = pyRepr(value);
    else throw new FormatError('ValueError', `Unknown conversion specifier ${conversion ?? ''}`);
  }
  return applySpec(value, spec);
}

function lookup(name: string, kwargs: Record<string, unknown>): unknown {
  const m = /^([^.[]*)(.*)$/s.exec(name)!;
  const arg = m[1]!;
  if (arg === '' || /^\d+$/.test(arg))
    throw new FormatError('IndexError', `Replacement index ${arg || 0} out of range for positional args tuple`);
  if (!Object.prototype.hasOwnProperty.call(kwargs, arg)) throw new FormatError('KeyError', pyRepr(arg));
  let value = kwargs[arg];
  let rest = m[2]!;
  while (rest) {
    const attr = /^\.([^.[]+)/.exec(rest);
    const item = /^\[([^\]]+)\]/.exec(rest);
    if (attr) {
      // JSON values are str, int, float, bool, None, list or dict in Python: none has a data attribute.
      throw new FormatError('AttributeError', `'${pyType(value)}' object has no attribute ${pyRepr(attr[1]!)}`);
    } else if (item) {
      const key = item[1]!;
      if ((Array.isArray(value) || typeof value === 'string') && /^\d+$/.test(key)) {
        const seq = typeof value === 'string' ? [...value] : value;
        if (Number(key) >= seq.length)
          throw new FormatError('IndexError', `${pyType(value) === 'str' ? 'string' : 'list'} index out of range`);
        value = seq[Number(key)];
      } else if (value && typeof value === 'object' && !Array.isArray(value)) {
        if (!Object.prototype.hasOwnProperty.call(value, key))
          throw new FormatError('KeyError', pyRepr(/^\d+$/.test(key) ? Number(key) : key));
        value = (value as Record<string, unknown>)[key];
      } else {
        throw new FormatError('TypeError', `'${pyType(value)}' object is not subscriptable`);
      }
      rest = rest.slice(item[0].length);
    } else {
      throw new FormatError('ValueError', "Only '.' or '[' may follow ']' in format field specifier");
    }
  }
  return value;
}

const SPEC = /^(?:(.)?([<>=^]))?([+\- ])?(#)?(0)?(\d+)?([,_])?(?:\.(\d+))?([bcdeEfFgGnosxX%])?$/s;

function applySpec(value: unknown, spec: string): string {
  if (!spec) return pyStr(value);
  const m = SPEC.exec(spec);
  if (!m) throw new FormatError('ValueError', `Invalid format specifier '${spec}' for object of type '${pyType(value)}'`);
  const [, fillChar, alignChar, sign, alternate, zero, widthText, grouping, precisionText, type] = m;
  const precision = precisionText === undefined ? undefined : Number(precisionText);
  let body: string;
  let numeric = false;
  if (typeof value === 'number' && type !== 's') {
    numeric = true;
    const n = value;
    const abs = Math.abs(n);
    switch (type) {
      case undefined:
        body = precision === undefined ? pyStr(abs) : String(Number(abs.toPrecision(Math.max(1, precision))));
        break;
      case 'd':
      case 'n':
        if (!Number.isInteger(n)) throw new FormatError('ValueError', `Unknown format code 'd' for object of type 'float'`);
        body = String(abs);
        break;
      case 'f':
      case 'F':
        body = abs.toFixed(precision ?? 6);
        break;
      case 'e':
      case 'E':
        body = abs.toExponential(precision ?? 6).replace(/e([+-])(\d)$/, 'e$10$2');
        if (type === 'E') body = body.toUpperCase();
        break;
      case 'g':
      case 'G':
        body = String(Number(abs.toPrecision(Math.max(1, precision ?? 6))));
        break;
      case '%':
        body = (abs * 100).toFixed(precision ?? 6) + '%';
        break;
      case 'x':
      case 'X':
      case 'o':
      case 'b':
        if (!Number.isInteger(n)) throw new FormatError('ValueError', `Unknown format code '${type}' for object of type 'float'`);
        body = abs.toString(type === 'o' ? 8 : type === 'b' ? 2 : 16);
        if (type === 'X') body = body.toUpperCase();
        if (alternate) body = `0${type}${body}`;
        break;
      default:
        throw new FormatError('ValueError', `Unknown format code '${type}' for object of type '${pyType(value)}'`);
    }
    if (grouping) {
      const [int, frac] = body.split('.');
      body = int!.replace(/\B(?=(\d{3})+(?!\d))/g, grouping) + (frac !== undefined ? '.' + frac : '');
    }
    const signText = n < 0 || Object.is(n, -0) ? '-' : sign === '+' ? '+' : sign === ' ' ? ' ' : '';
    body = signText + body;
  } else {
    if (type !== undefined && type !== 's')
      throw new FormatError('ValueError', `Unknown format code '${type}' for object of type '${pyType(value)}'`);
    if (sign) throw new FormatError('ValueError', 'Sign not allowed in string format specifier');
    body = pyStr(value);
    if (precision !== undefined) body = [...body].slice(0, precision).join('');
  }
  const width = widthText === undefined ? 0 : Number(widthText);
  const len = [...body].length;
  if (len >= width) return body;
  const fill = fillChar ?? (zero && !alignChar ? '0' : ' ');
  const align = alignChar ?? (zero && numeric ? '=' : numeric ? '>' : '<');
  const pad = width - len;
  if (align === '<') return body + fill.repeat(pad);
  if (align === '>') return fill.repeat(pad) + body;
  if (align === '^') return fill.repeat(Math.floor(pad / 2)) + body + fill.repeat(Math.ceil(pad / 2));
  // '=': padding after the sign.
  const signed = /^[+\- ]/.test(body) ? 1 : 0;
  return body.slice(0, signed) + fill.repeat(pad) + body.slice(signed);
}

function pyType(v: unknown): string {
  if (v === null || v === undefined) return 'NoneType';
  if (typeof v === 'string') return 'str';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float';
  if (Array.isArray(v)) return 'list';
  return 'dict';
}

/** Python's str() of a JSON value. */
export function pyStr(v: unknown): string {
  if (typeof v === 'string') return v;
  return pyRepr(v);
}

/** Python's repr() of a JSON value. */
export function pyRepr(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return 'nan';
    if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
    return String(v).replace(/e([+-])(\d)$/, 'e$10$2');
  }
  if (typeof v === 'string') {
    const quote = v.includes("'") && !v.includes('"') ? '"' : "'";
    const escaped = v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t');
    return quote + (quote === "'" ? escaped.replace(/'/g, "\\'") : escaped) + quote;
  }
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(', ')}]`;
  return `{${Object.entries(v as Record<string, unknown>)
    .map(([k, x]) => `${pyRepr(k)}: ${pyRepr(x)}`)
    .join(', ')}}`;
}
