import { decodePayload, encodeArgs, sha256 } from './codec';
import { resolveCredentials, type Credentials } from './config';
import { RemoteError, TaskCancelled, TaskPending } from './errors';
import { Http } from './http';
import type { Codec, EndpointInfo, EndpointStatus, FunctionInfo, Runtime, TaskOutput, TaskSpec, TaskView } from './types';

export interface ClientOptions extends Partial<Credentials> {
  maxAttempts?: number;
}

export interface FunctionSpec {
  name?: string;
  runtime?: Runtime;
  source: string;
  entrypoint?: string;
}

/** Arguments above this go to S3 by presigned PUT instead of in the submit body (API Gateway: 10 MB, Lambda: 6 MB per request). */
export const UPLOAD_THRESHOLD = 256 * 1024;

/** A typed wrapper over every route of the Ferry API. */
export class Client {
  readonly http: Http;

  constructor(opts: ClientOptions = {}) {
    const creds = resolveCredentials(opts);
    this.http = new Http({ ...creds, maxAttempts: opts.maxAttempts });
  }

  get apiUrl(): string {
    return this.http.apiUrl;
  }

  /** Register a function (a JS function, or source for any runtime); the same source gives the same id. */
  async registerFunction(fn: ((...args: never[]) => unknown) | FunctionSpec, name?: string): Promise<string> {
    const spec: FunctionSpec = typeof fn === 'function' ? { source: fn.toString(), name: name ?? (fn.name || 'anonymous') } : fn;
    const out = await this.http.request<FunctionInfo>('POST', '/v1/functions', {
      name: spec.name ?? name ?? 'function',
      runtime: spec.runtime ?? 'node',
      source: spec.source,
      entrypoint: spec.entrypoint,
    });
    return out.function_id;
  }

  getFunction(functionId: string): Promise<FunctionInfo> {
    return this.http.request('GET', `/v1/functions/${encodeURIComponent(functionId)}`);
  }

  async listFunctions(): Promise<FunctionInfo[]> {
    return (await this.http.request<{ functions: FunctionInfo[] }>('GET', '/v1/functions')).functions;
  }

  registerEndpoint(name: string, opts: { public?: boolean; walltime_ms?: number; max_attempts?: number } = {}): Promise<EndpointInfo & { endpoint_secret: string }> {
    return this.http.request('POST', '/v1/endpoints', { name, ...opts });
  }

  async getEndpoints(): Promise<EndpointInfo[]> {
    const all: EndpointInfo[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.http.request<{ endpoints: EndpointInfo[]; next_cursor?: string }>('GET', `/v1/endpoints${cursor ? `?cursor=${cursor}` : ''}`);
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

  shareEndpoint(endpointId: string, sharing: { public?: boolean; shared_with?: string[] }): Promise<EndpointInfo> {
    return this.http.request('POST', `/v1/endpoints/${encodeURIComponent(endpointId)}/share`, sharing);
  }

  deleteEndpoint(endpointId: string): Promise<{ endpoint_id: string; deleted: boolean; failed_tasks: number }> {
    return this.http.request('DELETE', `/v1/endpoints/${encodeURIComponent(endpointId)}`);
  }

  /** Encode node arguments as a task spec, uploading them to S3 first when they are large. */
  async taskSpec(
    endpointId: string,
    functionId: string,
    args: unknown[] = [],
    kwargs: Record<string, unknown> = {},
    walltimeMs?: number,
    runtime: Runtime = 'node',
  ): Promise<TaskSpec> {
    // Python functions cannot read v8's format: their arguments travel as JSON, and so do their results.
    if (runtime !== 'node') return { function_id: functionId, args, kwargs, walltime_ms: walltimeMs };
    const bytes = encodeArgs(args, kwargs);
    const payload = bytes.length > UPLOAD_THRESHOLD ? await this.uploadPayload(endpointId, bytes) : { codec: 'node-v8' as const, data: bytes.toString('base64') };
    return { function_id: functionId, payload, walltime_ms: walltimeMs };
  }

  /** Upload an encoded payload by presigned PUT; returns what a task's `payload` needs. */
  async uploadPayload(endpointId: string, bytes: Buffer, codec: Codec = 'node-v8') {
    const digest = sha256(bytes);
    const up = await this.http.request<{ ref: string; url: string }>('POST', '/v1/payloads', { endpoint_id: endpointId, codec, size: bytes.length, sha256: digest });
    const res = await fetch(up.url, { method: 'PUT', body: bytes });
    if (!res.ok) throw new Error(`payload upload failed (HTTP ${res.status}): ${(await res.text()).slice(0, 300)}`);
    return { codec, ref: up.ref, size: bytes.length, sha256: digest };
  }

  /** Submit one task; returns its id. */
  async run(functionId: string, endpointId: string, args: unknown[] = [], kwargs: Record<string, unknown> = {}): Promise<string> {
    const out = await this.batchRun(endpointId, [await this.taskSpec(endpointId, functionId, args, kwargs)]);
    return out.task_ids[0]!;
  }

  /** Submit up to 500 tasks in one request (the API's limit); safe to retry. */
  batchRun(endpointId: string, tasks: TaskSpec[], taskGroupId?: string): Promise<{ task_group_id: string; task_ids: string[] }> {
    return this.http.request('POST', `/v1/endpoints/${encodeURIComponent(endpointId)}/submit`, { task_group_id: taskGroupId, tasks }, { idempotent: true });
  }

  /** A batch to fill with `add` and send with `batchRun`, in the style of Globus Compute's `create_batch`. */
  createBatch(endpointId: string, taskGroupId?: string) {
    const specs: Promise<TaskSpec>[] = [];
    return {
      add: (functionId: string, args: unknown[] = [], kwargs: Record<string, unknown> = {}) => void specs.push(this.taskSpec(endpointId, functionId, args, kwargs)),
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

  /** The result of a finished task; a remote failure throws RemoteError, an unfinished task TaskPending. */
  async getResult(taskId: string): Promise<unknown> {
    return resultOf(await this.getTask(taskId));
  }

  /** Views of up to 1,000 tasks per request (more are split); unknown ids are listed apart. */
  async getTasks(taskIds: string[]): Promise<{ tasks: TaskView[]; unknown: string[] }> {
    const out = { tasks: [] as TaskView[], unknown: [] as string[] };
    for (let i = 0; i < taskIds.length; i += 1000) {
      const page = await this.http.request<{ tasks: TaskView[]; unknown: string[] }>('POST', '/v1/tasks/batch', { task_ids: taskIds.slice(i, i + 1000) });
      out.tasks.push(...page.tasks);
      out.unknown.push(...page.unknown);
    }
    return out;
  }

  /** Status, and result or exception where finished, for each task id. */
  async getBatchResult(taskIds: string[]): Promise<Record<string, { status: string; pending: boolean; result?: unknown; exception?: RemoteError; output?: TaskOutput }>> {
    const { tasks } = await this.getTasks(taskIds);
    const out: Record<string, { status: string; pending: boolean; result?: unknown; exception?: RemoteError; output?: TaskOutput }> = {};
    for (const t of tasks) {
      const entry: (typeof out)[string] = { status: t.status, pending: !['success', 'failed', 'cancelled'].includes(t.status) };
      if (t.output) entry.output = t.output;
      if (t.status === 'success') entry.result = await decodePayload(t.result!);
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

export const remoteErrorOf = (t: TaskView): RemoteError =>
  new RemoteError(t.task_id, t.exception?.type ?? 'Error', t.exception?.message ?? 'the task failed', t.exception?.traceback ?? '', t.output);

export async function resultOf(t: TaskView): Promise<unknown> {
  if (t.status === 'success') return decodePayload(t.result!);
  if (t.status === 'failed') throw remoteErrorOf(t);
  if (t.status === 'cancelled') throw new TaskCancelled(t.task_id);
  throw new TaskPending(t.task_id, t.status);
}
