import { randomUUID } from 'node:crypto';
import { Client, resultOf, type ClientOptions } from './client';
import { sha256 } from './codec';
import { FerryApiError, ResultsUnavailable, TaskCancelled } from './errors';
import { ComputeFuture } from './future';
import { checkResourceSpecification, ShellFunction, type ShellResult } from './shell';
import { FINAL, type ResourceSpecification, type Runtime, type TaskSpec, type TaskView } from './types';
import { backoffMs, sleep } from '../core/retry';

export interface ExecutorOptions extends ClientOptions {
  endpointId: string;
  /** A client to share; otherwise one is made from the credentials options. */
  client?: Client;
  /**
   * Tasks per submit request (the API takes at most 500); default 100, and up to 500 for tasks that
   * waited while an earlier request was under way.
   */
  batchSize?: number;
  /** How long a submission waits for others to share its request; default 0: those made in the same turn of the event loop. */
  batchDelayMs?: number;
  /**
   * Submit requests in flight at once. Default 1: each leaves when the one before is answered, so
   * the task group lists its tasks in submit order (reloadTasks). More send a large burst sooner,
   * but the API orders requests that overlap as they arrive.
   */
  submitConcurrency?: number;
  /** Group every task of this executor under this id (a new one by default). */
  taskGroupId?: string;
  /** Walltime for each task; the endpoint's default otherwise. */
  walltimeMs?: number;
  /** Memory cap of each task in MB; the endpoint's default otherwise (and the endpoint's maximum caps it). */
  memoryMb?: number;
  /** The ranks of each MPIFunction task (see `Executor.resourceSpecification`). */
  resourceSpecification?: Partial<ResourceSpecification>;
  /**
   * Results come by long poll (POST /v1/tasks/wait): a wait names up to 1,000 of the oldest
   * outstanding tasks and is answered as soon as one of them finishes, or after waitMs (default
   * 10,000; the API takes at most 20,000). Up to four waits are under way at once, so tasks
   * submitted while one waits are waited for at once too.
   */
  waitMs?: number;
  /**
   * How often the tasks not yet seen running are read (POST /v1/tasks/batch), so `future.status()`
   * follows them while their results are awaited; default 3000.
   */
  statusIntervalMs?: number;
  /**
   * An API without the wait route (an older deployment answers 404) is polled instead: every
   * pollMinMs (default 10) while tasks were submitted or finished in the last pollFastMs (default
   * 250), then the interval grows by half each quiet poll up to pollMaxMs (default 1000). After a
   * failed wait, the next one leaves after pollMinMs, doubled for each failure, up to pollMaxMs.
   */
  pollMinMs?: number;
  pollFastMs?: number;
  pollMaxMs?: number;
  /**
   * Polls (waits) in a row that may fail (each after the client's own retries, see `maxAttempts`)
   * before every outstanding future fails with ResultsUnavailable; default 5. Waits under way
   * together count once. A poll that succeeds starts the count again. A refusal no retry can
   * change (a 4xx such as a revoked token) fails them at once.
   */
  pollFailureLimit?: number;
}

interface FunctionRef {
  id: string;
  runtime: Runtime | undefined;
}

interface Pending {
  future: ComputeFuture<unknown>;
  functionId: Promise<FunctionRef>;
  args: unknown[];
  kwargs: Record<string, unknown>;
  /** The executor's resource specification when this task was submitted. */
  resourceSpecification?: Partial<ResourceSpecification>;
}

/** A pending task with its encoded spec, ready for a submit request. */
interface Encoded {
  p: Pending;
  spec: TaskSpec;
  runtime: Runtime | undefined;
}

/** A submitted task's future, and its function's runtime, which says how to read its result. */
interface Tracked {
  future: ComputeFuture<unknown>;
  runtime: Runtime | undefined;
}

// Stays under Lambda's 6 MB request payload with room for JSON and base64.
const MAX_REQUEST_BYTES = 4 * 1024 * 1024;
const MAX_BATCH = 500;
// The API reads at most 1,000 tasks per request (POST /v1/tasks/wait, /v1/tasks/batch).
const MAX_WAIT_IDS = 1000;
const MAX_WAITS = 4;
// Tasks left out of every wait for pollMaxMs (the waits under way name long tasks) get waits of their own, up to this many in all.
const MAX_WAITS_OVERFLOW = 16;

// never[]: any function's parameters accept it, so every function fits; Parameters<F> still reads F's own.
type AnyFn = (...args: never[]) => unknown;

/**
 * Runs functions on a Ferry endpoint, in the style of Globus Compute's Executor: `submit`
 * returns a ComputeFuture at once. Submissions made close together go out in one request;
 * each function's source is registered once; one poller gathers results for every future.
 */
export class Executor {
  readonly client: Client;
  readonly endpointId: string;
  readonly taskGroupId: string;
  /**
   * Globus Compute's `resource_specification`: the ranks of each MPIFunction task submitted from
   * now on, `{ num_nodes, ranks_per_node, num_ranks }` (what is left out, the API fills in: one
   * node, ranks enough for num_ranks). Other functions' tasks do not carry it.
   */
  resourceSpecification?: Partial<ResourceSpecification>;
  /** Requests made, for those who want to see the batching at work. */
  readonly stats = { submitRequests: 0, registrations: 0, polls: 0 };
  private readonly batchSize: number;
  // The batch of tasks that waited behind a request: a burst leaves in few, full requests.
  private readonly backlogBatchSize: number;
  private readonly batchDelayMs: number;
  private pending: Pending[] = [];
  private flushTimer?: NodeJS.Timeout | NodeJS.Immediate;
  private readonly sending = new Set<Promise<void>>();
  private readonly functionIds = new Map<string, Promise<FunctionRef>>();
  private readonly outstanding = new Map<string, Tracked>();
  // Submit requests under way: at most submitConcurrency. With 1 (the default) they reach the API
  // in submit order, and what is submitted meanwhile waits to leave together in the next ones.
  private active = 0;
  private readonly submitConcurrency: number;
  private polling = false;
  // Long polls: the ids some wait under way names; how many are under way; whether the API has the route.
  private readonly waiting = new Set<string>();
  private waits = 0;
  private waitUnsupported = false;
  private waitFailures = 0;
  private lastWaitFailure = 0;
  private statusTimer?: NodeJS.Timeout;
  private overflowTimer?: NodeJS.Timeout;
  private overflow = false;
  private lastActivity = 0;
  private closed = false;

  constructor(private readonly opts: ExecutorOptions) {
    this.client = opts.client ?? new Client(opts);
    this.endpointId = opts.endpointId;
    this.taskGroupId = opts.taskGroupId ?? randomUUID();
    this.batchSize = Math.min(Math.max(1, opts.batchSize ?? 100), MAX_BATCH);
    this.backlogBatchSize = opts.batchSize === undefined ? MAX_BATCH : this.batchSize;
    this.batchDelayMs = opts.batchDelayMs ?? 0;
    this.submitConcurrency = Math.max(1, Math.floor(opts.submitConcurrency ?? 1));
    if (opts.resourceSpecification) this.resourceSpecification = opts.resourceSpecification;
  }

  /**
   * Run a ShellFunction or MPIFunction with keyword arguments for its `{name}` placeholders; the
   * future resolves to a ShellResult, whatever the command's exit code.
   */
  submit(fn: ShellFunction, kwargs?: Record<string, unknown>): ComputeFuture<ShellResult>;
  /** Run `fn(...args)` on the endpoint; the function must be self-contained (it travels as source). */
  submit<F extends AnyFn>(fn: F, ...args: Parameters<F>): ComputeFuture<Awaited<ReturnType<F>>>;
  submit(fn: AnyFn | ShellFunction, ...args: unknown[]): ComputeFuture<unknown> {
    if (fn instanceof ShellFunction) {
      const kwargs = args[0] ?? {};
      if (typeof kwargs !== 'object' || Array.isArray(kwargs) || args.length > 1) {
        throw new TypeError(`a ${fn.constructor.name} takes keyword arguments only: submit(fn, { name: value })`);
      }
      return this.enqueue(this.functionIdOf(fn), [], kwargs as Record<string, unknown>);
    }
    return this.enqueue(this.functionIdOf(fn), args, {});
  }

  /** Run an already registered function (any runtime) with positional and keyword arguments. */
  submitToRegisteredFunction<T = unknown>(
    functionId: string,
    args: unknown[] = [],
    kwargs: Record<string, unknown> = {},
  ): ComputeFuture<T> {
    return this.enqueue(this.registered(functionId), args, kwargs);
  }

  /** Register a function (a JS function, ShellFunction or MPIFunction) once per executor; its id. */
  async registerFunction(fn: AnyFn | ShellFunction): Promise<string> {
    return (await this.functionIdOf(fn)).id;
  }

  /**
   * Futures for every task of a task group (this executor's by default), finished or not, in
   * submit order: Globus Compute's `reload_tasks`. Tasks this executor still tracks keep their
   * future; the others get new ones, polled like any other. A group may mix result types: name
   * the one you expect (`reloadTasks<ShellResult>()`), or narrow each result.
   */
  async reloadTasks<T = unknown>(taskGroupId: string = this.taskGroupId): Promise<ComputeFuture<T>[]> {
    const views = await this.client.getTaskGroup(taskGroupId);
    const runtimes = new Map<string, Promise<Runtime | undefined>>();
    for (const v of views)
      if (!runtimes.has(v.function_id))
        runtimes.set(
          v.function_id,
          this.client.functionRuntime(v.function_id).catch(() => undefined),
        );
    const futures: ComputeFuture<unknown>[] = [];
    for (const view of views) {
      const known = this.outstanding.get(view.task_id);
      if (known) {
        futures.push(known.future);
        continue;
      }
      // A deleted function's runtime cannot be read: its results come back as their JSON.
      const runtime = await runtimes.get(view.function_id)!;
      const future = new ComputeFuture<unknown>((f) => this.cancelFuture(f));
      this.track(future, view.task_id, runtime);
      await this.settle(view);
      futures.push(future);
    }
    this.ensurePolling();
    return futures as ComputeFuture<T>[];
  }

  /** A registered function's runtime decides how its arguments are encoded and its result read; looked up once. */
  private registered(functionId: string): Promise<FunctionRef> {
    return this.client.functionRuntime(functionId).then((runtime) => ({ id: functionId, runtime }));
  }

  /** `fn(item)` for every item, submitted together; resolves to the results in order. */
  map<F extends (item: never) => unknown>(fn: F, items: Iterable<Parameters<F>[0]>): Promise<Awaited<ReturnType<F>>[]> {
    const futures = [...items].map((item) => this.submit(fn, ...([item] as Parameters<F>)));
    return Promise.all(futures.map((f) => f.result()));
  }

  /**
   * Stop taking submissions. `wait` (default true) waits for every future; `cancelFutures`
   * cancels those not yet finished. Futures keep resolving after shutdown either way.
   */
  async shutdown(opts: { wait?: boolean; cancelFutures?: boolean } = {}): Promise<void> {
    this.closed = true;
    if (opts.cancelFutures) {
      for (const p of this.pending) p.future._reject(new TaskCancelled(undefined));
      this.pending = [];
      await Promise.all([...this.outstanding.values()].map((t) => t.future.cancel().catch(() => false)));
    }
    this.flush();
    if (opts.wait ?? true) {
      // A request that ends sends what waited behind it: wait until none is left.
      while (this.sending.size) await Promise.allSettled([...this.sending]);
      await Promise.allSettled([...this.outstanding.values()].map((t) => t.future.result()));
    }
  }

  private functionIdOf(fn: AnyFn | ShellFunction): Promise<FunctionRef> {
    const spec =
      fn instanceof ShellFunction ? fn.toFunctionSpec() : { name: fn.name || 'anonymous', runtime: 'node' as const, source: fn.toString() };
    const key = sha256(Buffer.from(JSON.stringify(spec)));
    let id = this.functionIds.get(key);
    if (!id) {
      this.stats.registrations++;
      id = this.client.registerFunction(spec).then((fid) => ({ id: fid, runtime: spec.runtime }));
      // A failed registration is retried by the next submit, not cached.
      id.catch(() => this.functionIds.delete(key));
      this.functionIds.set(key, id);
    }
    return id;
  }

  private enqueue<T>(functionId: Promise<FunctionRef>, args: unknown[], kwargs: Record<string, unknown>): ComputeFuture<T> {
    if (this.closed) throw new Error('this Executor is shut down');
    // Checked now, so a bad one fails this submit rather than the batch it would travel in.
    const resourceSpecification = this.resourceSpecification && checkResourceSpecification(this.resourceSpecification);
    const future: ComputeFuture<T> = new ComputeFuture<T>((f) => this.cancelFuture(f));
    this.pending.push({ future, functionId, args, kwargs, resourceSpecification });
    if (this.pending.length >= this.batchSize) this.flush();
    else this.flushTimer ??= this.batchDelayMs > 0 ? setTimeout(() => this.flush(), this.batchDelayMs) : setImmediate(() => this.flush());
    return future;
  }

  private flush(backlog = false): void {
    clearTimeout(this.flushTimer as NodeJS.Timeout);
    clearImmediate(this.flushTimer as NodeJS.Immediate);
    this.flushTimer = undefined;
    while (this.pending.length && this.active < this.submitConcurrency) {
      const batch = this.pending.splice(0, backlog ? this.backlogBatchSize : this.batchSize);
      this.active++;
      const p = this.send(batch).finally(() => {
        this.sending.delete(p);
        this.active--;
        // What was submitted while the request was under way leaves now, in full batches.
        if (this.pending.length) this.flush(true);
      });
      this.sending.add(p);
    }
  }

  private async send(all: Pending[]): Promise<void> {
    // A task whose function cannot be registered, or whose arguments cannot be encoded, fails alone.
    const prepared = await Promise.allSettled(
      all.map(async (p) => {
        const fn = await p.functionId;
        const spec = await this.client.taskSpec(this.endpointId, fn.id, p.args, p.kwargs, this.opts.walltimeMs, fn.runtime, {
          resourceSpecification: p.resourceSpecification,
        });
        return { spec: this.opts.memoryMb === undefined ? spec : { ...spec, memory_mb: this.opts.memoryMb }, runtime: fn.runtime };
      }),
    );
    const batch: Encoded[] = [];
    prepared.forEach((r, i) => {
      if (r.status === 'rejected') all[i]!.future._reject(r.reason);
      else batch.push({ p: all[i]!, ...r.value });
    });
    // Split further only if the encoded arguments would not fit in one request body.
    let start = 0;
    while (start < batch.length) {
      let end = start;
      let bytes = 0;
      while (end < batch.length && (end === start || bytes + specSize(batch[end]!.spec) <= MAX_REQUEST_BYTES))
        bytes += specSize(batch[end++]!.spec);
      await this.submitSlice(batch.slice(start, end));
      start = end;
    }
  }

  private async submitSlice(items: Encoded[]): Promise<void> {
    const live = items.filter(({ p }) => !p.future.done());
    if (!live.length) return;
    this.stats.submitRequests++;
    try {
      const out = await this.client.batchRun(
        this.endpointId,
        live.map((l) => l.spec),
        this.taskGroupId,
      );
      live.forEach(({ p, runtime }, i) => this.track(p.future, out.task_ids[i]!, runtime));
      this.lastActivity = Date.now();
    } catch (err) {
      const notQueued = err instanceof FerryApiError ? (err.details.not_queued as string[] | undefined) : undefined;
      const ids = err instanceof FerryApiError ? (err.details.task_ids as string[] | undefined) : undefined;
      live.forEach(({ p, runtime }, i) => {
        const id = ids?.[i];
        if (id && notQueued && !notQueued.includes(id)) this.track(p.future, id, runtime);
        else p.future._reject(err);
      });
    }
    this.ensurePolling();
  }

  private track(future: ComputeFuture<unknown>, taskId: string, runtime: Runtime | undefined): void {
    future.taskId = taskId;
    future._setStatus('waiting-for-endpoint');
    if (!future.done()) this.outstanding.set(taskId, { future, runtime });
  }

  private async cancelFuture(f: ComputeFuture<unknown>): Promise<boolean> {
    if (!f.taskId) {
      const i = this.pending.findIndex((p) => p.future === f);
      if (i >= 0) this.pending.splice(i, 1);
      f._reject(new TaskCancelled(undefined));
      return true;
    }
    const view = await this.client.cancel(f.taskId);
    await this.settle(view);
    return view.status === 'cancelled';
  }

  /**
   * Keep up to MAX_WAITS waits under way over every outstanding task, oldest first (or poll, where
   * the API cannot wait). A wait ends when one of its tasks finishes, and the next takes in what
   * was left out; tasks left out for pollMaxMs, because the waits under way name only long tasks,
   * get more waits (up to MAX_WAITS_OVERFLOW), so a short task is not held up behind long ones.
   */
  private ensurePolling(): void {
    if (this.waitUnsupported) return this.ensureBatchPolling();
    let leftOut: boolean;
    for (;;) {
      const ids: string[] = [];
      for (const id of this.outstanding.keys()) {
        if (this.waiting.has(id)) continue;
        ids.push(id);
        if (ids.length === MAX_WAIT_IDS) break;
      }
      leftOut = ids.length > 0;
      if (!leftOut || this.waitUnsupported || this.waits >= (this.overflow ? MAX_WAITS_OVERFLOW : MAX_WAITS)) break;
      this.waits++;
      for (const id of ids) this.waiting.add(id);
      void this.waitFor(ids).finally(() => {
        this.waits--;
        for (const id of ids) this.waiting.delete(id);
        this.ensurePolling();
      });
    }
    this.overflow = false;
    if (leftOut && !this.waitUnsupported && !this.overflowTimer && this.waits < MAX_WAITS_OVERFLOW) {
      this.overflowTimer = setTimeout(() => {
        this.overflowTimer = undefined;
        this.overflow = true;
        this.ensurePolling();
      }, this.opts.pollMaxMs ?? 1000);
      // The waits under way keep the process alive while results are awaited; this timer need not.
      this.overflowTimer.unref();
    }
    this.scheduleStatusRead();
  }

  /** One long poll: settles the futures of the tasks it answers as finished. */
  private async waitFor(ids: string[]): Promise<void> {
    const started = Date.now();
    try {
      this.stats.polls++;
      const page = await this.client.waitForTasks(ids, this.opts.waitMs ?? 10_000);
      this.waitFailures = 0;
      let finished = 0;
      for (const view of page.tasks) if (await this.settle(view)) finished++;
      this.forget(page.unknown);
      if (finished) this.lastActivity = Date.now();
    } catch (err) {
      // An API without the route (an older deployment): poll it as before.
      if (err instanceof FerryApiError && err.status === 404) {
        this.waitUnsupported = true;
        return;
      }
      // The client already retried this wait. Waits that failed together count once: one outage is one failure.
      if (started >= this.lastWaitFailure) {
        this.waitFailures++;
        this.lastWaitFailure = Date.now();
      }
      if (this.waitFailures >= Math.max(1, this.opts.pollFailureLimit ?? 5) || isRefusal(err)) {
        this.failOutstanding(new ResultsUnavailable(this.waitFailures, err));
        this.waitFailures = 0;
        return;
      }
      await sleep(backoffMs(this.waitFailures, { baseMs: this.opts.pollMinMs ?? 10, capMs: this.opts.pollMaxMs ?? 1000, jitter: 'none' }));
    }
  }

  /** Now and then, the status of tasks not yet seen running: a wait answers only finished ones. */
  private scheduleStatusRead(): void {
    if (this.statusTimer || this.waitUnsupported || !this.outstanding.size) return;
    this.statusTimer = setTimeout(async () => {
      try {
        const ids = [...this.outstanding].filter(([, t]) => t.future.status() !== 'running').map(([id]) => id);
        if (ids.length) {
          this.stats.polls++;
          await this.client.getTasks(ids, async (views) => {
            for (const view of views) if (await this.settle(view)) this.lastActivity = Date.now();
          });
        }
      } catch {
        // The waits report what fails; a status read is only a courtesy.
      } finally {
        this.statusTimer = undefined;
        this.scheduleStatusRead();
      }
    }, this.opts.statusIntervalMs ?? 3000);
    // The waits under way keep the process alive while results are awaited; this timer need not.
    this.statusTimer.unref();
  }

  private forget(unknown: string[]): void {
    for (const id of unknown) {
      this.outstanding.get(id)?.future._reject(new FerryApiError(404, 'NotFound', `task ${id} is no longer known`));
      this.outstanding.delete(id);
    }
  }

  private failOutstanding(error: ResultsUnavailable): void {
    for (const { future } of this.outstanding.values()) future._reject(error);
    this.outstanding.clear();
  }

  private ensureBatchPolling(): void {
    if (this.polling || !this.outstanding.size) return;
    this.polling = true;
    void this.poll().finally(() => {
      this.polling = false;
      this.ensureBatchPolling();
    });
  }

  /** Where the API cannot wait, one loop for every outstanding future: batched reads, quick while results arrive, slower while none do. */
  private async poll(): Promise<void> {
    const min = this.opts.pollMinMs ?? 10;
    const fast = this.opts.pollFastMs ?? 250;
    const max = this.opts.pollMaxMs ?? 1000;
    const limit = Math.max(1, this.opts.pollFailureLimit ?? 5);
    let delay = min;
    let failures = 0;
    while (this.outstanding.size) {
      await sleep(delay);
      let finished = 0;
      try {
        this.stats.polls++;
        // Views settle as each response arrives: a large poll reads its views over several requests.
        const { unknown } = await this.client.getTasks([...this.outstanding.keys()], async (views) => {
          for (const view of views) if (await this.settle(view)) finished++;
        });
        this.forget(unknown);
        failures = 0;
      } catch (err) {
        // The client already retried this poll; a transient failure is tried again, slower, but one
        // that persists (or that no retry can change) fails the futures rather than hang them.
        failures++;
        if (failures >= limit || isRefusal(err)) {
          this.failOutstanding(new ResultsUnavailable(failures, err));
          break;
        }
      }
      if (finished) this.lastActivity = Date.now();
      const quiet = Date.now() - this.lastActivity > fast;
      delay = failures ? Math.min(max, delay * 2) : quiet ? Math.min(max, delay * 1.5) : min;
    }
  }

  private async settle(view: TaskView): Promise<boolean> {
    const tracked = this.outstanding.get(view.task_id);
    if (!tracked) return false;
    const f = tracked.future;
    f._setStatus(view.status);
    if (!FINAL.includes(view.status)) return false;
    this.outstanding.delete(view.task_id);
    f._setOutput(view.output);
    try {
      f._resolve(await resultOf(view, tracked.runtime));
    } catch (err) {
      f._reject(err, view.status);
    }
    return true;
  }
}

/** A 4xx that another attempt cannot change (429 and 409 are the API asking to come back later). */
const isRefusal = (err: unknown): boolean =>
  err instanceof FerryApiError && err.status >= 400 && err.status < 500 && ![408, 409, 429].includes(err.status);

const specSize = (s: TaskSpec): number => (s.payload?.data?.length ?? (s.args ? JSON.stringify([s.args, s.kwargs]).length : 0)) + 200;
