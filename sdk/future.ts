import { TaskCancelled, TaskTimeout } from './errors';
import type { TaskOutput, TaskStatus } from './types';

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/**
 * A task's future, as Globus Compute's ComputeFuture: awaitable (`await future`), with `taskId`
 * once submitted, `done()`, `result({ timeoutMs })`, `exception()`, `cancel()` and `status()`.
 * A failure not yet awaited never becomes an unhandled rejection. Beyond Globus Compute:
 * `output()`, what the task printed (stdout and stderr, capped by the endpoint).
 */
export class ComputeFuture<T = unknown> implements PromiseLike<T> {
  taskId?: string;
  private state: TaskStatus | 'pending-submit' = 'pending-submit';
  private printed?: TaskOutput;
  private settled?: Settled<T>;
  private readonly promise: Promise<T>;
  // Methods, not function-typed fields: a ComputeFuture<number> is then also a ComputeFuture<unknown>.
  private settle!: { resolve(v: T): void; reject(e: unknown): void };

  constructor(private readonly canceller: (f: ComputeFuture<unknown>) => Promise<boolean>) {
    this.promise = new Promise<T>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.promise.catch(() => undefined);
  }

  then<R1 = T, R2 = never>(
    onFulfilled?: ((v: T) => R1 | PromiseLike<R1>) | null,
    onRejected?: ((e: unknown) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    return this.promise.then(onFulfilled, onRejected);
  }

  /** True once the task has finished: success, failure or cancellation. */
  done(): boolean {
    return this.settled !== undefined;
  }

  /** The last state seen: 'pending-submit' until the batch holding it is accepted. */
  status(): TaskStatus | 'pending-submit' {
    return this.state;
  }

  /** The value; rejects with RemoteError on a remote failure, TaskTimeout after `timeoutMs`. */
  result(opts: { timeoutMs?: number } = {}): Promise<T> {
    if (opts.timeoutMs === undefined) return this.promise;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TaskTimeout(this.taskId, opts.timeoutMs!)), opts.timeoutMs);
    });
    return Promise.race([this.promise, timeout]).finally(() => clearTimeout(timer));
  }

  /** The error the task ended with, or undefined if it succeeded; waits for it to finish. */
  async exception(opts: { timeoutMs?: number } = {}): Promise<unknown> {
    try {
      await this.result(opts);
      return undefined;
    } catch (err) {
      if (err instanceof TaskTimeout) throw err;
      return err;
    }
  }

  /**
   * What the task printed: `{ stdout, stderr, stdout_bytes, stderr_bytes, truncated? }`, head and
   * tail kept with a "[ferry: N bytes of output cut]" marker where cut; waits for the task to
   * finish; undefined if it printed nothing (or never ran).
   */
  async output(opts: { timeoutMs?: number } = {}): Promise<TaskOutput | undefined> {
    await this.exception(opts);
    return this.printed;
  }

  /** Cancel the task if it has not finished; true if it is now cancelled. */
  async cancel(): Promise<boolean> {
    if (this.done()) return this.state === 'cancelled';
    return this.canceller(this);
  }

  /** @internal */
  _setStatus(s: TaskStatus): void {
    if (!this.settled) this.state = s;
  }

  /** @internal */
  _setOutput(output: TaskOutput | undefined): void {
    if (!this.settled) this.printed = output;
  }

  /** @internal */
  _resolve(value: T): void {
    if (this.settled) return;
    this.state = 'success';
    this.settled = { ok: true, value };
    this.settle.resolve(value);
  }

  /** @internal */
  _reject(error: unknown, state: TaskStatus = 'failed'): void {
    if (this.settled) return;
    this.state = error instanceof TaskCancelled ? 'cancelled' : state;
    this.settled = { ok: false, error };
    this.settle.reject(error);
  }
}
