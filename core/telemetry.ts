/**
 * How core code logs and counts, without knowing where it runs. In a Lambda, lambdas/observability.ts
 * installs Powertools (a structured Logger with the invocation's request and correlation ids, and
 * EMF metrics flushed at the end of each invocation); anywhere else (the CLI, the local stack's own
 * loops, unit tests of core) the default writes one JSON line to stderr and counts nothing.
 * core/ must not import Lambda-only code, so the dependency points this way.
 */

/** The task counts Ferry publishes (metric `Tasks<Outcome>`, namespace Ferry), per stage and per endpoint. */
export type TaskOutcome = 'submitted' | 'started' | 'succeeded' | 'failed' | 'cancelled' | 'lost';

/** What infra/lib/observability.ts charts and alarms on: one definition of the names. */
export const METRICS_NAMESPACE = 'Ferry';
export const SERVICE_NAME = 'ferry';
export const TASK_METRICS: Record<TaskOutcome, string> = {
  submitted: 'TasksSubmitted',
  started: 'TasksStarted',
  succeeded: 'TasksSucceeded',
  failed: 'TasksFailed',
  cancelled: 'TasksCancelled',
  lost: 'TasksLost',
};
export const TASK_LATENCY_METRIC = 'TaskLatency';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Telemetry {
  log(level: LogLevel, message: string, fields?: Record<string, unknown>): void;
  /** `count` tasks of `endpointId` reached `outcome` (each task is counted once per outcome: only on the write that moved it). */
  tasks(outcome: TaskOutcome, endpointId: string, count?: number): void;
  /** Milliseconds from a task's submission to its final state, as its worker reported it. */
  taskLatency(ms: number): void;
}

const WRITE: Record<LogLevel, (line: string) => void> = {
  debug: () => undefined,
  info: (line) => console.error(line),
  warn: (line) => console.error(line),
  error: (line) => console.error(line),
};

/** Outside a Lambda: a JSON line on stderr for info and above; no metrics. */
export const plainTelemetry: Telemetry = {
  log: (level, message, fields) =>
    WRITE[level](JSON.stringify({ level, message, ...fields }, (_k, v: unknown) => (v instanceof Error ? String(v) : v))),
  tasks: () => undefined,
  taskLatency: () => undefined,
};

let current: Telemetry = plainTelemetry;

/** The telemetry core code reports to. */
export const telemetry = (): Telemetry => current;

/** Install another implementation (lambdas/observability.ts does, when a handler module loads). */
export function setTelemetry(t: Telemetry): void {
  current = t;
}
