import { z } from 'zod';
import { UUID_RE } from '../core/ids';
import { resourceSpecificationSchema, shellOptionsSchema } from '../core/messages';
import { CODECS, FUNCTION_RUNTIMES, isCommandRuntime } from '../core/runtimes';

/** Tasks in one submit request. */
export const MAX_TASKS_PER_SUBMIT = 500;

const uuid = z.string().regex(UUID_RE, 'must be a lower-case UUID');
const name = z.string().trim().min(1).max(128);

export const registerFunctionBody = z
  .object({
    name,
    runtime: z.enum(FUNCTION_RUNTIMES),
    // SQS: a task message carries the source, so it is kept well under the 256 KiB message limit.
    source: z
      .string()
      .min(1)
      .max(64 * 1024),
    entrypoint: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/)
      .max(128)
      .optional(),
    // Globus Compute keeps a function's description beside its name (register_function(description=...)).
    description: z.string().max(1024).optional(),
    shell: shellOptionsSchema.optional(),
  })
  .strict()
  .refine((f) => f.runtime !== 'python' || f.entrypoint, { message: 'python functions need an entrypoint', path: ['entrypoint'] })
  .refine((f) => !isCommandRuntime(f.runtime) || f.entrypoint === undefined, {
    message: 'shell and mpi functions take no entrypoint: their source is the command',
    path: ['entrypoint'],
  })
  .refine((f) => isCommandRuntime(f.runtime) || f.shell === undefined, {
    message: 'shell options apply to shell and mpi functions only',
    path: ['shell'],
  });

/** Globus Compute's allowed_functions: only these functions may run on the endpoint (an empty list: any). */
const allowedFunctions = z.array(uuid).max(1000);

export const registerEndpointBody = z
  .object({
    name,
    public: z.boolean().optional(),
    allowed_functions: allowedFunctions.optional(),
    walltime_ms: z
      .number()
      .int()
      .min(1000)
      .max(24 * 3600 * 1000)
      .optional(),
    max_attempts: z.number().int().min(1).max(10).optional(),
  })
  .strict();

export const shareEndpointBody = z
  .object({
    public: z.boolean().optional(),
    shared_with: z.array(z.string().min(1).max(128)).max(100).optional(),
    // null or []: any function may run again.
    allowed_functions: allowedFunctions.nullable().optional(),
  })
  .strict();

const shortText = z.string().max(256);
/** One block of an endpoint manager (a Slurm job, or agents on the manager's machine). */
const blockHeartbeat = z
  .object({
    block_id: z.string().min(1).max(64),
    job_id: z.string().max(64),
    state: z.enum(['pending', 'running', 'idle', 'draining', 'ended']),
    scheduler_state: shortText,
    reason: shortText.optional(),
    nodes: shortText.optional(),
    agents: z.number().int().nonnegative(),
    workers: z.number().int().nonnegative(),
    running: z.number().int().nonnegative(),
    idle_seconds: z.number().int().nonnegative().optional(),
    drain_reason: shortText.optional(),
    submitted_at: z.string().max(40),
    ends_at: z.string().max(40).optional(),
  })
  .strict();
// API Gateway: a heartbeat stays small; a manager reports its live blocks and its last few ended ones.
const managerHeartbeat = z.object({ provider: z.string().min(1).max(32), blocks: z.array(blockHeartbeat).max(200) }).strict();

export const heartbeatBody = z
  .object({
    worker_id: z.string().min(1).max(128),
    workers: z.number().int().nonnegative(),
    idle_workers: z.number().int().nonnegative(),
    running: z.number().int().nonnegative(),
    runtimes: z.array(z.string().max(32)).max(8),
    agent_version: z.string().max(64),
    /** The agent's heartbeat interval: it reads as gone once it has missed two. */
    heartbeat_ms: z.number().int().min(100).max(3_600_000).optional(),
    stopped: z.boolean().optional(),
    /** Sent by an endpoint manager (`ferry endpoint start`): its provider and blocks, not workers of its own. */
    manager: managerHeartbeat.optional(),
  })
  .strict();

const taskBody = z
  .object({
    function_id: uuid,
    args: z.array(z.unknown()).optional(),
    kwargs: z.record(z.string(), z.unknown()).optional(),
    payload: z
      .object({
        codec: z.enum(CODECS),
        data: z
          .string()
          .regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64')
          .optional(),
        ref: z.string().min(1).max(1024).optional(),
        size: z.number().int().nonnegative().optional(),
        sha256: z
          .string()
          .regex(/^[0-9a-f]{64}$/)
          .optional(),
      })
      .strict()
      .refine((p) => (p.data === undefined) !== (p.ref === undefined), 'give exactly one of data or ref')
      .refine((p) => p.ref === undefined || (p.size !== undefined && p.sha256 !== undefined), 'a ref needs its size and sha256')
      .optional(),
    walltime_ms: z
      .number()
      .int()
      .min(100)
      .max(24 * 3600 * 1000)
      .optional(),
    // MB; the endpoint's agent caps it at its own maximum (task_memory_mb).
    memory_mb: z
      .number()
      .int()
      .min(16)
      .max(1024 * 1024)
      .optional(),
    // mpi functions only; core/tasks/resources.ts fills in what is left out (resourceSpecification).
    resource_specification: resourceSpecificationSchema.partial().optional(),
  })
  .strict()
  .refine((t) => !(t.payload && (t.args || t.kwargs)), 'give args/kwargs or payload, not both');

export const submitBody = z
  .object({
    task_group_id: uuid.optional(),
    tasks: z.array(taskBody).min(1).max(MAX_TASKS_PER_SUBMIT),
  })
  .strict();

export const batchTasksBody = z.object({ task_ids: z.array(uuid).min(1).max(1000) }).strict();

/** API Gateway: 30 s per request; a wait of at most 20 s leaves room for its reads. */
const MAX_WAIT_MS = 20_000;
export const waitTasksBody = z
  .object({ task_ids: z.array(uuid).min(1).max(1000), wait_ms: z.number().int().min(0).max(MAX_WAIT_MS).default(10_000) })
  .strict();

export const createPayloadBody = z
  .object({ endpoint_id: uuid, codec: z.enum(CODECS), size: z.number().int().positive(), sha256: z.string().regex(/^[0-9a-f]{64}$/) })
  .strict();

/** Listings return pages of 1 to 1,000 items, 100 unless asked (the SDK pages a task group 1,000 at a time). */
const PAGE_LIMIT = { min: 1, max: 1000, default: 100 } as const;
const LIMIT_RANGE = `must be an integer from ${PAGE_LIMIT.min} to ${PAGE_LIMIT.max}`;

/** The query of every listing: the one `limit` rule (a bad limit is a 400, never clamped) and its cursor. */
export const pageQuery = z.object({
  limit: z
    .string()
    .regex(/^[0-9]+$/, LIMIT_RANGE)
    .transform(Number)
    .pipe(z.number().int().min(PAGE_LIMIT.min, LIMIT_RANGE).max(PAGE_LIMIT.max, LIMIT_RANGE))
    .default(PAGE_LIMIT.default),
  // Opaque here; core/tables/cursor.ts checks it against the query it continues.
  cursor: z.string().optional(),
});
export type PageQuery = z.infer<typeof pageQuery>;

/** A submit's Idempotency-Key header (RFC draft: a client-chosen string), absent or 1-255 printable ASCII characters. */
export const idempotencyKeyHeader = z
  .string()
  .regex(/^[\x21-\x7e]{1,255}$/, 'Idempotency-Key must be 1-255 printable ASCII characters')
  .optional();
