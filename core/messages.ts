import { z } from 'zod';
import { envelopeSchema } from './payload';

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
    runtime: z.enum(['node', 'python']),
    source: z.string(),
    entrypoint: z.string().optional(),
  }),
  tasks: z
    .array(
      z.object({
        task_id: z.string(),
        args: envelopeSchema,
        walltime_ms: z.number().int().positive(),
        /** The task's memory cap in MB; absent: the endpoint's (agent's) default, which also caps it. */
        memory_mb: z.number().int().positive().optional(),
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

/** What a worker (or the dead-letter consumer) sends to the results queue. */
export const resultMessageSchema = z.discriminatedUnion('kind', [
  z.object({ v: z.literal(1), kind: z.literal('started'), task_id: z.string(), endpoint_id: z.string(), worker_id: z.string(), at: z.string() }),
  z.object({
    v: z.literal(1),
    kind: z.literal('success'),
    task_id: z.string(),
    endpoint_id: z.string(),
    worker_id: z.string(),
    at: z.string(),
    result: envelopeSchema,
    output: taskOutputSchema.optional(),
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
