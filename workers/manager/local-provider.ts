import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import type { BlockLaunch, JobStatus, Provider } from './provider';
import { SECRET_ENV } from './slurm-provider';

interface LocalJob {
  children: ChildProcess[];
  running: number;
  endedBy?: string;
  timer?: NodeJS.Timeout;
}

/**
 * Blocks as processes on this machine: `nodes_per_block` agents per block (what `ferry worker
 * start` does, now started, watched and stopped by the manager). A walltime, when set, is
 * enforced like a scheduler's: the agents are ended at it.
 */
export class LocalProvider implements Provider {
  readonly kind = 'local';
  private readonly jobs = new Map<string, LocalJob>();
  private next = 1;

  async submit(block: BlockLaunch): Promise<string> {
    const jobId = `local-${process.pid}-${this.next++}`;
    const end = Math.floor(Date.now() / 1000) + block.walltimeSeconds;
    const env = { ...process.env };
    for (const k of [...SECRET_ENV, ...(block.unsetEnv ?? [])]) delete env[k];
    const job: LocalJob = { children: [], running: block.nodes };
    for (let node = 0; node < block.nodes; node++) {
      const out = openSync(join(block.dir, `${block.blockId}-${jobId}-${node}.out`), 'a', 0o600);
      const child = spawn(block.command[0]!, block.command.slice(1), {
        env: { ...env, ...block.env, FERRY_BLOCK_JOB_ID: jobId, FERRY_BLOCK_END: String(end), FERRY_PARENT_PID: String(process.pid) },
        stdio: ['ignore', out, out],
      });
      closeSync(out);
      child.once('exit', (code, signal) => {
        job.endedBy ??= signal ? `agent killed by ${signal}` : code ? `agent exited ${code}` : undefined;
        if (--job.running === 0) clearTimeout(job.timer);
      });
      job.children.push(child);
    }
    if (Number.isFinite(block.walltimeSeconds))
      job.timer = setTimeout(() => this.kill(job, 'SIGKILL'), block.walltimeSeconds * 1000).unref();
    this.jobs.set(jobId, job);
    return jobId;
  }

  async status(jobIds: readonly string[]): Promise<Map<string, JobStatus>> {
    const out = new Map<string, JobStatus>();
    for (const id of jobIds) {
      const job = this.jobs.get(id);
      if (!job) out.set(id, { state: 'ended', detail: 'UNKNOWN' });
      else if (job.running > 0) out.set(id, { state: 'running', detail: 'RUNNING', nodes: 'localhost' });
      else out.set(id, { state: 'ended', detail: job.endedBy ? 'FAILED' : 'COMPLETED', reason: job.endedBy });
    }
    return out;
  }

  async cancel(jobId: string): Promise<void> {
    const job = this.jobs.get(jobId);
    if (job) this.kill(job, 'SIGKILL');
  }

  private kill(job: LocalJob, signal: NodeJS.Signals): void {
    for (const c of job.children) if (c.exitCode === null && c.signalCode === null) c.kill(signal);
  }

  async close(): Promise<void> {
    for (const job of this.jobs.values()) this.kill(job, 'SIGKILL');
  }
}
