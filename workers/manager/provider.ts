/**
 * Where an endpoint manager gets capacity: a provider starts a *block* (a batch job of
 * `nodes_per_block` nodes, or a group of local processes), says what became of it, and cancels
 * it. Everything scheduler-specific lives behind this interface, so PBS Pro/Torque or LSF is one
 * more file of this shape (qsub / qstat / qdel; bsub / bjobs / bkill).
 */

/** What one block runs: on each of its nodes, one agent process. */
export interface BlockLaunch {
  /** The manager's name for the block, e.g. "b3"; unique per manager. */
  blockId: string;
  /** A name the scheduler shows (job name). */
  jobName: string;
  nodes: number;
  walltimeSeconds: number;
  /** Environment of each agent (no secrets: those are in files the environment names). */
  env: Record<string, string>;
  /** Variables the agents must not inherit from the manager (relay mode: AWS_*, the API's address). */
  unsetEnv?: string[];
  /** The agent's command line: absolute paths, run on every node of the block. */
  command: string[];
  /** Where the block's job script and output go. */
  dir: string;
}

export type JobState = 'pending' | 'running' | 'ended';

export interface JobStatus {
  state: JobState;
  /** The scheduler's word, e.g. PENDING, RUNNING, CANCELLED, TIMEOUT, NODE_FAIL, COMPLETED. */
  detail: string;
  /** Scheduler's reason (pending reason, or why it ended), when it gives one. */
  reason?: string;
  nodes?: string;
}

export interface Provider {
  /** e.g. "slurm", "local". */
  readonly kind: string;
  /** Submit a block; resolves with its job id once the scheduler has accepted it. */
  submit(block: BlockLaunch): Promise<string>;
  /** The state of these jobs; a job the scheduler no longer knows is `ended` with detail UNKNOWN. */
  status(jobIds: readonly string[]): Promise<Map<string, JobStatus>>;
  /**
   * End the job now. (A graceful end needs no scheduler: the manager asks the block's agents to
   * drain in its answer to their reports, and the job ends when they exit.)
   */
  cancel(jobId: string): Promise<void>;
  /** Release whatever the provider holds itself (local processes are ended by cancel). */
  close?(): Promise<void>;
}

/** POSIX shell quoting for values written into job scripts. */
export const shellQuote = (s: string): string => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
