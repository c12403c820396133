/**
 * The API's shapes as clients see them (see README's API table). Where the server defines the
 * shape, it is imported as a type only: nothing of the server's code reaches the SDK at run time.
 */
import type { EndpointStatus } from '../core/endpoints';
import type { ResourceSpecification, ShellOptions } from '../core/messages';
import type { FunctionRuntime } from '../core/runtimes';
import type { Codec } from '../core/runtimes';
import type { TaskState } from '../core/states';
import type { SubmitTaskInput } from '../core/tasks/submit';
import type { PayloadView, TaskView } from '../core/tasks/views';

export type { Codec, EndpointStatus, PayloadView, ResourceSpecification, ShellOptions, TaskView };
export type { TaskOutput } from '../core/tables/task-records';
export type TaskStatus = TaskState;
/** node and python run code; shell and mpi run a command template (ShellFunction, MPIFunction). */
export type Runtime = FunctionRuntime;
/**
 * One task of a submit request: JSON args, or an encoded payload (inline base64 or an uploaded ref);
 * mpi functions also take the ranks to launch (what is left out, the API fills in).
 */
export type TaskSpec = SubmitTaskInput & { resource_specification?: Partial<ResourceSpecification> };

export interface FunctionInfo {
  function_id: string;
  name: string;
  runtime: Runtime;
  entrypoint?: string;
  description?: string | null;
  /** shell and mpi functions: how the command runs (walltime_ms, snippet_lines, stdout, stderr files). */
  shell?: ShellOptions;
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
  /** Function ids this endpoint runs, if it is restricted to some (Globus Compute's allowed_functions). */
  allowed_functions?: string[];
}

/** GET /v1/endpoints/{id}/allowed_functions: `restricted` false means any function may run there. */
export interface AllowedFunctions {
  endpoint_id: string;
  restricted: boolean;
  functions: string[];
}

/** POST /v1/tasks/wait: the finished tasks among those asked (see Client.waitForTasks). */
export interface WaitAnswer {
  tasks: TaskView[];
  unknown: string[];
  unread?: string[];
  pending: number;
}

export const FINAL: readonly TaskStatus[] = ['success', 'failed', 'cancelled'];
