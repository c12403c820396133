import { z } from 'zod';
import { envelopeSchema } from './payload';
import { FUNCTION_RUNTIMES } from './runtimes';

/** How often an agent beats unless it says otherwise in its heartbeat (agents older than `heartbeat_ms`). */
export const DEFAULT_HEARTBEAT_MS = 30_000;

/**
 * Globus Compute's ShellFunction options, kept with the function. `walltime_ms`: past it the command is
 * killed and its result has returncode 124 (not a failed task); `snippet_lines`: the last lines of
 * stdout and stderr the ShellResult keeps (default 1000); `stdout`/`stderr`: files, relative to the
 * task's working directory, that also receive the streams.
 */
export interface ShellOptions {
  walltime_ms?: number;
  snippet_lines?: number;
  stdout?: string;
  stderr?: string;
}
// Plain interfaces, not z.infer: the SDK's bundled declarations carry them without zod
// (test/unit/shared-types.test.ts checks each schema gives exactly its interface).
export const shellOptionsSchema = z
  .object({
    walltime_ms: z
      .number()
      .int()
      .min(1)
      .max(24 * 3600 * 1000)
      .optional(),
    snippet_lines: z.number().int().min(0).max(100_000).optional(),
    stdout: z.string().min(1).max(1024).optional(),
    stderr: z.string().min(1).max(1024).optional(),
  })
  .strict() satisfies z.ZodType<ShellOptions>;

/** An MPI task's ranks (Globus Compute's resource_specification); the API fills all three. */
export interface ResourceSpecification {
  num_nodes: number;
  ranks_per_node: number;
  num_ranks: number;
}
export const resourceSpecificationSchema = z
  .object({
    num_nodes: z.number().int().min(1).max(100_000),
    ranks_per_node: z.number().int().min(1).max(100_000),
    num_ranks: z.number().int().min(1).max(10_000_000),
  })
  .strict() satisfies z.ZodType<ResourceSpecification>;

/**
 * What a worker receives on its endpoint queue: one function and a bundle of its tasks, with
 * everything needed to run them and no table read. Bundling a large submit's tasks keeps SQS
 * calls per task low (SendMessageBatch holds only 10 messages) and sends the source once.
 */
export const taskMessageSchema = z.object({
  v: z.literal(1),
  endpoint_id: z.string(),
  /** The submitting user: the agent keys runtime processes and OS isolation on it. Only the API can send to an endpoint queue, so workers may trust it. */
  user_id: z.string().min(1),
  function: z.object({
    function_id: z.string(),
    runtime: z.enum(FUNCTION_RUNTIMES),
    /** node: a function expression; python: a module defining `entrypoint`; shell, mpi: a command template ({name} from kwargs). */
    source: z.string(),
    entrypoint: z.string().optional(),
    /** shell and mpi functions only: how Globus Compute's ShellFunction runs the command. */
    shell: shellOptionsSchema.optional(),
  }),
  tasks: z
    .array(
      z.object({
        task_id: z.string(),
        args: envelopeSchema,
        walltime_ms: z.number().int().positive(),
        /** The task's memory cap in MB; absent: the endpoint's (agent's) default, which also caps it. */
        memory_mb: z.number().int().positive().optional(),
        /** mpi functions only, always present there: the ranks to launch, filled in by the API. */
        resource_specification: resourceSpecificationSchema.optional(),
      }),
    )
    .min(1)
    .max(100),
  submitted_at: z.string(),
});
export type TaskMessage = z.infer<typeof taskMessageSchema>;
export type TaskInMessage = TaskMessage['tasks'][number];

export const remoteExceptionSchema = z.object({
  type: z.string().max(1024),
  message: z.string().max(64 * 1024),
  traceback: z.string().max(256 * 1024),
  payload: envelopeSchema.optional(),
});

/**
 * What a task printed, capped by the agent (head and tail, with a "[ferry: N bytes of output cut]"
 * marker where bytes were cut); `*_bytes` count everything printed. SQS: 256 KiB per message, so
 * the agent cuts it further until the whole report fits.
 */
export const taskOutputSchema = z.object({
  stdout: z.string().max(256 * 1024),
  stderr: z.string().max(256 * 1024),
  stdout_bytes: z.number().int().nonnegative(),
  stderr_bytes: z.number().int().nonnegative(),
  truncated: z.boolean().optional(),
});
export type TaskOutput = z.infer<typeof taskOutputSchema>;

/**
 * What a worker (or the dead-letter consumer) sends to the results queue. A task that finishes
 * within the agent's started-report delay sends only its result, with `started_at`: one message
 * and one write per task instead of two.
 */
export const resultMessageSchema = z.discriminatedUnion('kind', [
  z.object({
    v: z.literal(1),
    kind: z.literal('started'),
    task_id: z.string(),
    endpoint_id: z.string(),
    worker_id: z.string(),
    at: z.string(),
  }),
  z.object({
    v: z.literal(1),
    kind: z.literal('success'),
    task_id: z.string(),
    endpoint_id: z.string(),
    worker_id: z.string(),
    at: z.string(),
    result: envelopeSchema,
    output: taskOutputSchema.optional(),
    /** When the task started (ISO), on a task that finished before its separate "started" report was due. */
    started_at: z.string().optional(),
  }),
  z.object({
    v: z.literal(1),
    kind: z.literal('failed'),
    task_id: z.string(),
    endpoint_id: z.string(),
    worker_id: z.string(),
    at: z.string(),
    exception: remoteExceptionSchema,
    output: taskOutputSchema.optional(),
    /** As on success: the start of a task that sent no separate "started" report. */
    started_at: z.string().optional(),
  }),
]);
export type ResultMessage = z.infer<typeof resultMessageSchema>;

/** A message body as JSON, or undefined when it is not JSON (the schema check then refuses it). */
export function parseBody(body: string | undefined): unknown {
  try {
    return JSON.parse(body ?? '');
  } catch {
    return undefined;
  }
}
