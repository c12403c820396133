/**
 * The API's shapes as clients see them (see README's API table). Where the server defines the
 * shape, it is imported as a type only: nothing of the server's code reaches the SDK at run time.
 */
import type { EndpointStatus } from '../core/endpoints';
import type { Codec } from '../core/payload';
import type { TaskState } from '../core/states';
import type { PayloadView, SubmitTaskInput, TaskView } from '../core/tasks';

export type { Codec, EndpointStatus, PayloadView, TaskView };
export type { TaskOutput } from '../core/tables/tasks';
export type TaskStatus = TaskState;
export type Runtime = 'node' | 'python';
/** One task of a submit request: JSON args, or an encoded payload (inline base64 or an uploaded ref). */
export type TaskSpec = SubmitTaskInput;

export interface FunctionInfo {
  function_id: string;
  name: string;
  runtime: Runtime;
  entrypoint?: string;
  source_sha256: string;
  created_at: string;
  source?: string;
}

export interface EndpointInfo {
  endpoint_id: string;
  name: string;
  owner?: string;
  public: boolean;
  shared_with?: string[];
  created_at: string;
  walltime_ms: number;
  max_attempts: number;
  endpoint_secret?: string;
}

export const FINAL: readonly TaskStatus[] = ['success', 'failed', 'cancelled'];
