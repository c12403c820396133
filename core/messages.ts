import { z } from 'zod';
import { envelopeSchema } from './payload';

/** What a worker receives on its endpoint queue: everything needed to run the task, no table read. */
export const taskMessageSchema = z.object({
  v: z.literal(1),
  task_id: z.string(),
  endpoint_id: z.string(),
  function: z.object({
    function_id: z.string(),
    runtime: z.enum(['node', 'python']),
    source: z.string(),
    entrypoint: z.string().optional(),
  }),
  args: envelopeSchema,
  walltime_ms: z.number().int().positive(),
  submitted_at: z.string(),
});
export type TaskMessage = z.infer<typeof taskMessageSchema>;

export const remoteExceptionSchema = z.object({
  type: z.string().max(1024),
  message: z.string().max(64 * 1024),
  traceback: z.string().max(256 * 1024),
  payload: envelopeSchema.optional(),
});

/** What a worker (or the dead-letter consumer) sends to the results queue. */
export const resultMessageSchema = z.discriminatedUnion('kind', [
  z.object({ v: z.literal(1), kind: z.literal('started'), task_id: z.string(), endpoint_id: z.string(), worker_id: z.string(), at: z.string() }),
  z.object({ v: z.literal(1), kind: z.literal('success'), task_id: z.string(), endpoint_id: z.string(), worker_id: z.string(), at: z.string(), result: envelopeSchema }),
  z.object({
    v: z.literal(1),
    kind: z.literal('failed'),
    task_id: z.string(),
    endpoint_id: z.string(),
    worker_id: z.string(),
    at: z.string(),
    exception: remoteExceptionSchema,
  }),
]);
export type ResultMessage = z.infer<typeof resultMessageSchema>;
