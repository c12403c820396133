import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SlurmProviderConfig } from './config';
import { shellQuote, type BlockLaunch, type JobState, type JobStatus, type Provider } from './provider';

/** What this process holds that a job must never inherit through sbatch's default --export=ALL. */
export const SECRET_ENV = [
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_PROFILE',
  'FERRY_ENDPOINT_SECRET',
  'FERRY_TOKEN',
  'FERRY_WORKER_ROLE_ARN',
  'FERRY_WORKER_ROLE_ID',
];

/** Slurm's job states (squeue %T) by what they mean for a block. */
const STATES: Record<string, JobState> = {
  PENDING: 'pending',
  CONFIGURING: 'pending',
  REQUEUED: 'pending',
  REQUEUE_HOLD: 'pending',
  REQUEUE_FED: 'pending',
  RESV_DEL_HOLD: 'pending',
  SUSPENDED: 'running',
  STOPPED: 'running',
  RUNNING: 'running',
  // Still on its nodes while Slurm cleans up; it takes no new work.
  COMPLETING: 'running',
  SIGNALING: 'running',
  STAGE_OUT: 'running',
  RESIZING: 'running',
};

const hhmmss = (seconds: number) => {
  const s = Math.max(60, Math.ceil(seconds));
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
};

/**
 * Blocks as Slurm batch jobs: `sbatch` a script that runs `worker_init`, then `srun`s one agent per
 * node; `squeue --states=all` says what became of them (Slurm keeps ended jobs MinJobAge, 300 s
 * by default; a job it no longer lists has ended); `scancel` ends them.
 */
export class SlurmProvider implements Provider {
  readonly kind = 'slurm';

  constructor(
    private readonly cfg: SlurmProviderConfig,
    private readonly opts: { maxWorkersPerNode?: number; env?: NodeJS.ProcessEnv } = {},
  ) {}

  /** The batch script of a block: #SBATCH lines, scheduler_options verbatim, worker_init, then srun. */
  jobScript(block: BlockLaunch): string {
    const c = this.cfg;
    const sbatch = [
      `--job-name=${block.jobName}`,
      `--nodes=${block.nodes}`,
      '--ntasks-per-node=1',
      `--time=${hhmmss(block.walltimeSeconds)}`,
      `--output=${join(block.dir, `${block.blockId}-%j.out`)}`,
    ];
    if (c.partition) sbatch.push(`--partition=${c.partition}`);
    if (c.account) sbatch.push(`--account=${c.account}`);
    if (c.qos) sbatch.push(`--qos=${c.qos}`);
    if (c.constraint) sbatch.push(`--constraint=${c.constraint}`);
    if (c.exclusive) sbatch.push('--exclusive');
    if (c.mem_per_node !== undefined) sbatch.push(`--mem=${Math.floor(c.mem_per_node * 1024)}M`);
    // The agent's slots need cores: all of the node's when exclusive, else what is asked for.
    const cpus = c.cores_per_node ?? (c.exclusive ? undefined : this.opts.maxWorkersPerNode);
    if (cpus) sbatch.push(`--cpus-per-task=${cpus}`);
    const exports = Object.entries(block.env).map(([k, v]) => `export ${k}=${shellQuote(v)}`);
    return [
      '#!/bin/bash',
      `# Ferry endpoint block ${block.blockId}: one agent per node, launched with srun.`,
      ...sbatch.map((o) => `#SBATCH ${o}`),
      c.scheduler_options.trim(),
      '',
      c.worker_init.trim(),
      '',
      ...(block.unsetEnv?.length ? [`unset ${block.unsetEnv.filter((k) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(k)).join(' ')}`] : []),
      ...exports,
      `export FERRY_BLOCK_JOB_ID="$SLURM_JOB_ID"`,
      // The job's end as its agents count it: they stop taking tasks drain_before_walltime before.
      `export FERRY_BLOCK_END=$(( $(date +%s) + ${block.walltimeSeconds} ))`,
      `srun --nodes=${block.nodes} --ntasks=${block.nodes} --ntasks-per-node=1 --kill-on-bad-exit=0 ${block.command.map(shellQuote).join(' ')}`,
      '',
    ].join('\n');
  }

  async submit(block: BlockLaunch): Promise<string> {
    const script = join(block.dir, `${block.blockId}.sbatch`);
    writeFileSync(script, this.jobScript(block), { mode: 0o700 });
    const out = await this.run('sbatch', ['--parsable', script]);
    // --parsable: "<job id>" or "<job id>;<cluster>".
    const jobId = out.trim().split(';')[0]!;
    if (!/^\d+$/.test(jobId)) throw new Error(`sbatch answered ${JSON.stringify(out.trim())}`);
    return jobId;
  }

  async status(jobIds: readonly string[]): Promise<Map<string, JobStatus>> {
    const found = new Map<string, JobStatus>();
    if (!jobIds.length) return found;
    // All of this user's jobs rather than -j: squeue fails outright when no listed id is known any more.
    const out = await this.run('squeue', ['--noheader', '--me', '--states=all', '--format=%i|%T|%r|%N']);
    const wanted = new Set(jobIds);
    for (const line of out.split('\n')) {
      const [id, state, reason, nodes] = line.trim().split('|');
      if (!id || !wanted.has(id)) continue;
      found.set(id, {
        state: STATES[state!] ?? 'ended',
        detail: state!,
        reason: reason && reason !== 'None' ? reason : undefined,
        nodes: nodes || undefined,
      });
    }
    for (const id of jobIds) if (!found.has(id)) found.set(id, { state: 'ended', detail: 'UNKNOWN' });
    return found;
  }

  async cancel(jobId: string): Promise<void> {
    await this.run('scancel', [jobId]);
  }

  private run(cmd: string, args: string[]): Promise<string> {
    const env = { ...(this.opts.env ?? process.env) };
    for (const k of SECRET_ENV) delete env[k];
    return new Promise((resolve, reject) => {
      execFile(cmd, args, { env, timeout: this.cfg.cmd_timeout * 1000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
        else resolve(stdout);
      });
    });
  }
}
