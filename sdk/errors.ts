import type { TaskOutput } from './types';

/** An error answered by the Ferry API: `{"error": {"code", "message", ...}}` with its HTTP status. */
export class FerryApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'FerryApiError';
  }
}

/**
 * The executor could not read its tasks' results: the API kept failing (`polls` polls in a row,
 * each after the client's own retries) or refused the reads outright (`cause`, a FerryApiError for
 * a 4xx such as a revoked token). The tasks themselves may still finish: read them later with
 * Client.getTask or Executor.reloadTasks.
 */
export class ResultsUnavailable extends Error {
  constructor(
    readonly polls: number,
    override readonly cause: unknown,
  ) {
    super(
      `could not read task results: ${polls} poll${polls === 1 ? '' : 's'} in a row failed; last error: ${(cause as Error)?.message ?? String(cause)}`,
    );
    this.name = 'ResultsUnavailable';
  }
}

/** What every RemoteError carries, whichever built-in class it was rebuilt as. */
interface RemoteFailure {
  readonly taskId: string;
  /** The remote exception's type name as the worker reported it: 'TypeError', 'ValueError', 'ZeroDivisionError'... */
  readonly remoteType: string;
  readonly remoteTraceback: string;
  /** The task's stdout and stderr (capped by the endpoint), if it printed anything. */
  readonly output?: TaskOutput;
}

// Marks every RemoteError, including those built as a TypeError or RangeError, so `instanceof RemoteError` sees them.
const REMOTE = Symbol.for('ferry.RemoteError');

const setFailure = <E extends Error>(
  target: E,
  taskId: string,
  remoteType: string,
  remoteTraceback: string,
  output: TaskOutput | undefined,
) => Object.assign(target, { taskId, remoteType, remoteTraceback, ...(output !== undefined ? { output } : {}) });

/**
 * The function raised on the worker; the remote type, message and traceback come from there, and
 * what it printed before. A remote exception whose type is a JavaScript built-in (TypeError,
 * RangeError, SyntaxError, ReferenceError, EvalError, URIError; from Python: TypeError,
 * SyntaxError, NameError as ReferenceError, RecursionError as RangeError) is rebuilt as that class,
 * so it is `instanceof TypeError` and `instanceof RemoteError` at once, with `name` its remote type;
 * any other type (ValueError, a class of the user's, TaskTimeout) is a plain RemoteError.
 */
export class RemoteError extends Error implements RemoteFailure {
  declare readonly taskId: string;
  declare readonly remoteType: string;
  declare readonly remoteTraceback: string;
  declare readonly output?: TaskOutput;

  constructor(taskId: string, remoteType: string, message: string, remoteTraceback: string, output?: TaskOutput) {
    super(message);
    setFailure(this, taskId, remoteType, remoteTraceback, output);
    // The stack's first line says what toString says: "RemoteError: ValueError: message".
    if (typeof this.stack === 'string') this.stack = `${this.toString()}${framesOf(this.stack)}`;
  }

  /**
   * A remote failure as the class that fits it best: the JavaScript built-in its type names where
   * that is honest (see the class comment), otherwise a plain RemoteError.
   */
  static of(taskId: string, remoteType: string, message: string, remoteTraceback: string, output?: TaskOutput): RemoteError {
    const rebuilt = rebuiltClass(remoteType, remoteTraceback);
    const err: Error = rebuilt
      ? setFailure(new rebuilt(message), taskId, remoteType, remoteTraceback, output)
      : new RemoteError(taskId, remoteType, message, remoteTraceback, output);
    // The stack starts where the SDK was asked for the result, not inside this factory.
    const stack = String(err.stack);
    const header = stack.slice(0, stack.length - framesOf(stack).length);
    Error.captureStackTrace(err, RemoteError.of);
    err.stack = header + framesOf(String(err.stack));
    return err as RemoteError;
  }

  /** True for every RemoteError, also those rebuilt as a built-in class (whose prototype chain is the built-in's). */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (this !== RemoteError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[REMOTE] === true;
  }

  override toString(): string {
    return `RemoteError: ${this.remoteType}: ${this.message}`;
  }
}
Object.defineProperty(RemoteError.prototype, 'name', { value: 'RemoteError', writable: true, configurable: true });
Object.defineProperty(RemoteError.prototype, REMOTE, { value: true });

/** The "    at ..." lines of a stack, without its header (which may span lines when the message does). */
const framesOf = (stack: string): string => {
  const i = stack.search(/\n\s+at /);
  return i >= 0 ? stack.slice(i) : '';
};

/**
 * Built-ins a remote type is rebuilt as. Python's TypeError and SyntaxError mean what
 * JavaScript's do; NameError (and UnboundLocalError) is JavaScript's ReferenceError, and
 * RecursionError is the RangeError JavaScript throws when the stack overflows. Not AggregateError:
 * its `errors` do not travel (neither the traceback nor v8's serializer keeps them), and one
 * without them would lie. Python's ValueError, KeyError, ZeroDivisionError... have no JavaScript
 * counterpart and stay plain RemoteErrors.
 */
const JS_BUILTINS: Record<string, ErrorConstructor> = {
  TypeError,
  RangeError,
  SyntaxError,
  ReferenceError,
  EvalError,
  URIError,
};
const PYTHON_BUILTINS: Record<string, ErrorConstructor> = {
  TypeError,
  SyntaxError,
  NameError: ReferenceError,
  UnboundLocalError: ReferenceError,
  RecursionError: RangeError,
};

const rebuiltClasses = new Map<string, new (message: string) => Error>();

function rebuiltClass(remoteType: string, remoteTraceback: string): (new (message: string) => Error) | undefined {
  const fromPython = remoteTraceback.startsWith('Traceback (most recent call last)');
  const base = Object.hasOwn(fromPython ? PYTHON_BUILTINS : JS_BUILTINS, remoteType)
    ? (fromPython ? PYTHON_BUILTINS : JS_BUILTINS)[remoteType]
    : undefined;
  if (!base) return undefined;
  const key = `${fromPython ? 'python' : 'js'}:${remoteType}`;
  let cls = rebuiltClasses.get(key);
  if (!cls) {
    // A subclass of the built-in: real prototype chain, native stack, `name` the remote type (set
    // on the prototype before construction, so the stack's first line reads "TypeError: ...").
    const made = class extends base {};
    Object.defineProperty(made, 'name', { value: `Remote${remoteType}` });
    Object.defineProperty(made.prototype, 'name', { value: remoteType, writable: true, configurable: true });
    Object.defineProperty(made.prototype, REMOTE, { value: true });
    cls = made;
    rebuiltClasses.set(key, cls);
  }
  return cls;
}

export class TaskCancelled extends Error {
  constructor(readonly taskId: string | undefined) {
    super(taskId ? `task ${taskId} was cancelled` : 'the task was cancelled before it was submitted');
    this.name = 'TaskCancelled';
  }
}

export class TaskTimeout extends Error {
  constructor(
    readonly taskId: string | undefined,
    readonly timeoutMs: number,
  ) {
    super(`task ${taskId ?? '(not yet submitted)'} did not finish within ${timeoutMs} ms`);
    this.name = 'TaskTimeout';
  }
}

/** A result was asked for before the task finished. */
export class TaskPending extends Error {
  constructor(
    readonly taskId: string,
    readonly status: string,
  ) {
    super(`task ${taskId} is ${status}`);
    this.name = 'TaskPending';
  }
}
