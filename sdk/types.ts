/** The API's shapes as clients see them (see README's API table). */
export type TaskStatus = 'received' | 'waiting-for-endpoint' | 'running' | 'success' | 'failed' | 'cancelled';
export type Codec = 'json' | 'node-v8' | 'python-pickle';
export type Runtime = 'node' | 'python';

export interface PayloadView {
  codec: Codec;
  size: number;
  sha256: string;
  data?: string;
  value?: unknown;
  url?: string;
}

export interface TaskView {
  task_id: string;
  status: TaskStatus;
  task_group_id: string;
  function_id: string;
  endpoint_id: string;
  created_at: string;
  completed_at?: string;
  transitions: { state: TaskStatus; at: string; by: string }[];
  result?: PayloadView;
  exception?: { type: string; message: string; traceback: string; payload?: PayloadView };
}

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

export interface EndpointStatus {
  endpoint_id: string;
  status: 'online' | 'offline';
  workers: number;
  idle_workers: number;
  running: number;
  queued: number;
  in_flight: number;
  agents: number;
  runtimes: string[];
  last_heartbeat?: string;
}

/** One task of a submit request: JSON args, or an encoded payload (inline base64 or an uploaded ref). */
export interface TaskSpec {
  function_id: string;
  args?: unknown[];
  kwargs?: Record<string, unknown>;
  payload?: { codec: Codec; data?: string; ref?: string; size?: number; sha256?: string };
  walltime_ms?: number;
}

export const FINAL: readonly TaskStatus[] = ['success', 'failed', 'cancelled'];
