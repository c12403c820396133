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

/** The function raised on the worker; the remote type, message and traceback come from there, and what it printed before. */
export class RemoteError extends Error {
  constructor(
    readonly taskId: string,
    readonly remoteType: string,
    message: string,
    readonly remoteTraceback: string,
    /** The task's stdout and stderr (capped by the endpoint), if it printed anything. */
    readonly output?: TaskOutput,
  ) {
    super(message);
    this.name = 'RemoteError';
  }

  override toString(): string {
    return `RemoteError: ${this.remoteType}: ${this.message}`;
  }
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
