import { isCommandRuntime } from '../core/runtimes';
import { decodePayload, encodeArgs, sha256 } from './codec';
import { resolveCredentials, type Credentials } from './config';
import { RemoteError, TaskCancelled, TaskPending } from './errors';
import { Http } from './http';
import { checkResourceSpecification, isWireShellResult, ShellFunction, ShellResult } from './shell';
import type {
  AllowedFunctions,
  Codec,
  EndpointInfo,
  EndpointStatus,
  FunctionInfo,
  ResourceSpecification,
  Runtime,
  ShellOptions,
  TaskOutput,
  TaskSpec,
  TaskView,
  WaitAnswer,
} from './types';

export interface ClientOptions extends Partial<Credentials> {
  maxAttempts?: number;
}

export interface FunctionSpec {
  name?: string;
  runtime?: Runtime;
  /** node: a function expression; python: a module defining `entrypoint`; shell, mpi: the command template. */
  source: string;
  entrypoint?: string;
  description?: string;
  /** shell and mpi only (see ShellFunction). */
  shell?: ShellOptions;
}

/** Options of a submit that depend on the function: mpi functions need their ranks. */
export interface RunOptions {
  resourceSpecification?: Partial<ResourceSpecification>;
}

type AnyFunction = (...args: never[]) => unknown;

/** Arguments above this go to S3 by presigned PUT instead of in the submit body (API Gateway: 10 MB, Lambda: 6 MB per request). */
export const UPLOAD_THRESHOLD = 256 * 1024;

/** A typed wrapper over every route of the Ferry API. */
export class Client {
  readonly http: Http;
  // A function's runtime decides how its arguments are encoded and its result is read; it never changes.
  private readonly runtimes = new Map<string, Promise<Runtime>>();

  constructor(opts: ClientOptions = {}) {
    const creds = resolveCredentials(opts);
    this.http = new Http({ ...creds, maxAttempts: opts.maxAttempts });
  }

  get apiUrl(): string {
    return this.http.apiUrl;
  }

  /**
   * Register a function: a JS function, a ShellFunction or MPIFunction, or source for any runtime.
   * The same function with the same name and description gives the same id.
   */
  async registerFunction(fn: AnyFunction | ShellFunction | FunctionSpec, name?: string): Promise<string> {
    const spec: FunctionSpec =
      typeof fn === 'function'
        ? { source: fn.toString(), name: name ?? (fn.name || 'anonymous') }
        : fn instanceof ShellFunction
          ? { ...fn.toFunctionSpec(), name: name ?? fn.name }
          : fn;
    const runtime = spec.runtime ?? 'node';
    const out = await this.http.request<FunctionInfo>('POST', '/v1/functions', {
      name: spec.name ?? name ?? 'function',
      runtime,
      source: spec.source,
      entrypoint: spec.entrypoint,
      description: spec.description,
      shell: spec.shell,
    });
    this.runtimes.set(out.function_id, Promise.resolve(runtime));
    return out.function_id;
  }

  getFunction(functionId: string): Promise<FunctionInfo> {
    return this.http.request('GET', `/v1/functions/${encodeURIComponent(functionId)}`);
  }

  /** A function's runtime, read once per client (registering it tells the client already). */
  functionRuntime(functionId: string): Promise<Runtime> {
    let runtime = this.runtimes.get(functionId);
    if (!runtime) {
      runtime = this.getFunction(functionId).then((f) => f.runtime);
      runtime.catch(() => this.runtimes.delete(functionId));
      this.runtimes.set(functionId, runtime);
    }
    return runtime;
  }

  /** Delete one of your functions; submitting it afterwards is 404. Tasks already queued still run. */
  async deleteFunction(functionId: string): Promise<{ function_id: string; deleted: boolean }> {
    const out = await this.http.request<{ function_id: string; deleted: boolean }>(
      'DELETE',
      `/v1/functions/${encodeURIComponent(functionId)}`,
    );
    this.runtimes.delete(functionId);
    return out;
  }

  async listFunctions(): Promise<FunctionInfo[]> {
    return (await this.http.request<{ functions: FunctionInfo[] }>('GET', '/v1/functions')).functions;
  }

  /** `allowed_functions`: the only function ids the endpoint will run (others are refused at submit with 403 FunctionNotAllowed). */
  registerEndpoint(
    name: string,
    opts: { public?: boolean; walltime_ms?: number; max_attempts?: number; allowed_functions?: string[] } = {},
  ): Promise<EndpointInfo & { endpoint_secret: string }> {
    return this.http.request('POST', '/v1/endpoints', { name, ...opts });
  }

  async getEndpoints(): Promise<EndpointInfo[]> {
    const all: EndpointInfo[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.http.request<{ endpoints: EndpointInfo[]; next_cursor?: string }>(
        'GET',
        `/v1/endpoints${cursor ? `?cursor=${cursor}` : ''}`,
      );
      all.push(...page.endpoints);
      cursor = page.next_cursor;
    } while (cursor);
    return all;
  }

  getEndpoint(endpointId: string): Promise<EndpointInfo> {
    return this.http.request('GET', `/v1/endpoints/${encodeURIComponent(endpointId)}`);
  }

  getEndpointStatus(endpointId: string): Promise<EndpointStatus> {
    return this.http.request('GET', `/v1/endpoints/${encodeURIComponent(endpointId)}/status`);
  }

  /** Owner only; `allowed_functions` replaces the endpoint's list of the functions it runs. */
  shareEndpoint(
    endpointId: string,
    sharing: { public?: boolean; shared_with?: string[]; allowed_functions?: string[] },
  ): Promise<EndpointInfo> {
    return this.http.request('POST', `/v1/endpoints/${encodeURIComponent(endpointId)}/share`, sharing);
  }

  /** The functions an endpoint runs: `restricted: false` means any. */
  getAllowedFunctions(endpointId: string): Promise<AllowedFunctions> {
    return this.http.request('GET', `/v1/endpoints/${encodeURIComponent(endpointId)}/allowed_functions`);
  }

  deleteEndpoint(endpointId: string): Promise<{ endpoint_id: string; deleted: boolean; failed_tasks: number; still_failing: boolean }> {
    return this.http.request('DELETE', `/v1/endpoints/${encodeURIComponent(endpointId)}`);
  }

  /**
   * Encode arguments as a task spec for the function's runtime (looked up if not given), uploading
   * node arguments to S3 first when they are large. mpi functions need `resourceSpecification`.
   */
  async taskSpec(
    endpointId: string,
    functionId: string,
    args: unknown[] = [],
    kwargs: Record<string, unknown> = {},
    walltimeMs?: number,
    runtime?: Runtime,
    opts: RunOptions = {},
  ): Promise<TaskSpec> {
    runtime ??= await this.functionRuntime(functionId);
    if (runtime === 'mpi') {
      if (!opts.resourceSpecification)
        throw new TypeError(
          'an MPIFunction needs a resource specification: set executor.resourceSpecification = { num_nodes, ranks_per_node, num_ranks }',
        );
      return {
        function_id: functionId,
        args,
        kwargs,
        walltime_ms: walltimeMs,
        resource_specification: checkResourceSpecification(opts.resourceSpecification),
      };
    }
    // Python functions cannot read v8's format, and commands take JSON keyword arguments: their arguments travel as JSON, and so do their results.
    if (runtime !== 'node') return { function_id: functionId, args, kwargs, walltime_ms: walltimeMs };
    const bytes = encodeArgs(args, kwargs);
    const payload =
      bytes.length > UPLOAD_THRESHOLD
        ? await this.uploadPayload(endpointId, bytes)
        : { codec: 'node-v8' as const, data: bytes.toString('base64') };
    return { function_id: functionId, payload, walltime_ms: walltimeMs };
  }

  /** Upload an encoded payload by presigned PUT; returns what a task's `payload` needs. */
  async uploadPayload(endpointId: string, bytes: Buffer, codec: Codec = 'node-v8') {
    const digest = sha256(bytes);
    const up = await this.http.request<{ ref: string; url: string }>('POST', '/v1/payloads', {
      endpoint_id: endpointId,
      codec,
      size: bytes.length,
      sha256: digest,
    });
    const res = await fetch(up.url, { method: 'PUT', body: bytes });
    if (!res.ok) throw new Error(`payload upload failed (HTTP ${res.status}): ${(await res.text()).slice(0, 300)}`);
    return { codec, ref: up.ref, size: bytes.length, sha256: digest };
  }

  /** Submit one task; returns its id. */
  async run(
    functionId: string,
    endpointId: string,
    args: unknown[] = [],
    kwargs: Record<string, unknown> = {},
    opts: RunOptions = {},
  ): Promise<string> {
    const out = await this.batchRun(endpointId, [await this.taskSpec(endpointId, functionId, args, kwargs, undefined, undefined, opts)]);
    return out.task_ids[0]!;
  }

  /** Submit up to 500 tasks in one request (the API's limit); safe to retry. */
  batchRun(endpointId: string, tasks: TaskSpec[], taskGroupId?: string): Promise<{ task_group_id: string; task_ids: string[] }> {
    return this.http.request(
      'POST',
      `/v1/endpoints/${encodeURIComponent(endpointId)}/submit`,
      { task_group_id: taskGroupId, tasks },
      { idempotent: true },
    );
  }

  /** A batch to fill with `add` and send with `batchRun`, in the style of Globus Compute's `create_batch`. */
  createBatch(endpointId: string, taskGroupId?: string, opts: RunOptions = {}) {
    const specs: Promise<TaskSpec>[] = [];
    return {
      add: (functionId: string, args: unknown[] = [], kwargs: Record<string, unknown> = {}) => {
        const spec = this.taskSpec(endpointId, functionId, args, kwargs, undefined, undefined, opts);
        spec.catch(() => undefined); // reported by submit()
        specs.push(spec);
      },
      submit: async () => this.batchRun(endpointId, await Promise.all(specs), taskGroupId),
    };
  }

  getTask(taskId: string): Promise<TaskView> {
    return this.http.request('GET', `/v1/tasks/${encodeURIComponent(taskId)}`);
  }

  /** What a finished task printed (stdout and stderr, capped by its endpoint); undefined if nothing or not finished. */
  async getOutput(taskId: string): Promise<TaskOutput | undefined> {
    return (await this.getTask(taskId)).output;
  }

  /**
   * The result of a finished task (a ShellResult for shell and mpi functions); a remote failure
   * throws RemoteError, an unfinished task TaskPending.
   */
  async getResult(taskId: string): Promise<unknown> {
    return this.resultOf(await this.getTask(taskId));
  }

  /** A task view's value, or the error it ended with, read as its function's runtime answers. */
  async resultOf(t: TaskView, runtime?: Runtime): Promise<unknown> {
    if (t.status !== 'success') return resultOf(t, runtime);
    const value = await decodePayload(t.result!);
    // Only a value shaped like a command's result needs the function's runtime to tell.
    if (!isWireShellResult(value)) return value;
    runtime ??= await this.functionRuntime(t.function_id).catch(() => undefined);
    return asRuntimeResult(value, runtime);
  }

  /**
   * Views of any number of tasks, in the order asked; unknown ids are listed apart. One request
   * reads up to 1,000 ids, and answers as many views as fit in its response (the API names the
   * rest in `unread`): those are asked for again until every view is read. `onPage` sees each
   * response's views as they arrive.
   */
  async getTasks(taskIds: string[], onPage?: (views: TaskView[]) => unknown): Promise<{ tasks: TaskView[]; unknown: string[] }> {
    const out = { tasks: [] as TaskView[], unknown: [] as string[] };
    for (let i = 0; i < taskIds.length; i += 1000) {
      let ask = taskIds.slice(i, i + 1000);
      while (ask.length) {
        const page = await this.http.request<{ tasks: TaskView[]; unknown: string[]; unread?: string[] }>('POST', '/v1/tasks/batch', {
          task_ids: ask,
        });
        out.tasks.push(...page.tasks);
        out.unknown.push(...page.unknown);
        await onPage?.(page.tasks);
        const unread = page.unread ?? [];
        // The API always answers at least one view: a page with none and ids left would never end.
        if (unread.length && !page.tasks.length) throw new Error(`the API read none of ${unread.length} tasks and named them unread`);
        ask = unread;
      }
    }
    return out;
  }

  /**
   * Views of the finished tasks among up to 1,000 ids, as soon as one of them is finished, or none
   * when `waitMs` (at most 20,000) passes first: POST /v1/tasks/wait. `unknown` lists ids that are
   * not (or no longer) yours; `unread`, finished ones that did not fit in the response (ask again);
   * `pending`, how many are still open. An API without the route answers 404.
   */
  waitForTasks(taskIds: string[], waitMs = 10_000): Promise<WaitAnswer> {
    return this.http.request('POST', '/v1/tasks/wait', { task_ids: taskIds, wait_ms: waitMs });
  }

  /** Status, and result or exception where finished, for each task id. */
  async getBatchResult(
    taskIds: string[],
  ): Promise<Record<string, { status: string; pending: boolean; result?: unknown; exception?: RemoteError; output?: TaskOutput }>> {
    const { tasks } = await this.getTasks(taskIds);
    const out: Record<string, { status: string; pending: boolean; result?: unknown; exception?: RemoteError; output?: TaskOutput }> = {};
    for (const t of tasks) {
      const entry: (typeof out)[string] = { status: t.status, pending: !['success', 'failed', 'cancelled'].includes(t.status) };
      if (t.output) entry.output = t.output;
      if (t.status === 'success') entry.result = await this.resultOf(t);
      if (t.status === 'failed') entry.exception = remoteErrorOf(t);
      out[t.task_id] = entry;
    }
    return out;
  }

  async getTaskGroup(taskGroupId: string): Promise<TaskView[]> {
    const all: TaskView[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.http.request<{ tasks: TaskView[]; next_cursor?: string }>(
        'GET',
        `/v1/task-groups/${encodeURIComponent(taskGroupId)}?limit=1000${cursor ? `&cursor=${cursor}` : ''}`,
      );
      all.push(...page.tasks);
      cursor = page.next_cursor;
    } while (cursor);
    return all;
  }

  cancel(taskId: string): Promise<TaskView> {
    return this.http.request('POST', `/v1/tasks/${encodeURIComponent(taskId)}/cancel`);
  }
}

/** A failed task's exception: a built-in error class where its type names one (RemoteError.of), else a plain RemoteError. */
export const remoteErrorOf = (t: TaskView): RemoteError =>
  RemoteError.of(
    t.task_id,
    t.exception?.type ?? 'Error',
    t.exception?.message ?? 'the task failed',
    t.exception?.traceback ?? '',
    t.output,
  );

/** A shell or mpi function answers `{cmd, returncode, stdout, stderr, exception_name}`: a ShellResult. */
export const asRuntimeResult = (value: unknown, runtime: Runtime | undefined): unknown =>
  runtime !== undefined && isCommandRuntime(runtime) && isWireShellResult(value) ? ShellResult.fromJSON(value) : value;

/** The value of a finished task whose function's runtime is known, or the error it ended with. */
export async function resultOf(t: TaskView, runtime?: Runtime): Promise<unknown> {
  if (t.status === 'success') return asRuntimeResult(await decodePayload(t.result!), runtime);
  if (t.status === 'failed') throw remoteErrorOf(t);
  if (t.status === 'cancelled') throw new TaskCancelled(t.task_id);
  throw new TaskPending(t.task_id, t.status);
}
