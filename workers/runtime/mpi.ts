import { spawnSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import type { ResourceSpecification } from '../../core/messages';
import { SANE_PATH } from './isolation';

/**
 * How an mpi task's ranks are launched (Globus Compute's MPIFunction, Parsl's PARSL_MPI_PREFIX):
 * - srun: inside a Slurm job (the agent of a block); a job step of the task's ranks on the job's nodes;
 * - mpiexec: MPICH's hydra (Debian's `mpich`), forking the ranks on this node (hosts for more);
 * - none: mpi tasks fail with MPIUnavailable.
 * `auto` picks srun inside a Slurm job (SLURM_JOB_ID in the agent's environment), else mpiexec on
 * PATH, else none.
 */

export type MpiLauncherSetting = 'auto' | 'mpiexec' | 'srun' | 'none';
export const MPI_LAUNCHER_SETTINGS: MpiLauncherSetting[] = ['auto', 'mpiexec', 'srun', 'none'];
export const MPI_PACKAGE_HINT = 'install the Debian package `mpich` (apt-get install mpich)';

export interface MpiLauncher {
  kind: 'mpiexec' | 'srun';
  /** The launcher by absolute path. */
  command: string;
  /** Nodes a task may use, this one first. */
  nodes: string[];
  /** srun: the job whose nodes the ranks run on, and the slurm.conf its commands read. */
  jobId?: string;
  slurmConf?: string;
}

/** The configured launcher cannot work here: the agent refuses to start. */
export class MpiConfigError extends Error {
  override name = 'MpiConfigError';
}

/** A command by absolute path, from `env`'s PATH and the fixed system PATH. */
function which(name: string, env: NodeJS.ProcessEnv): string | undefined {
  for (const dir of [...(env.PATH ?? '').split(':'), ...SANE_PATH.split(':')]) {
    if (!dir) continue;
    const full = path.join(dir, name);
    if (existsSync(full)) return full;
  }
  return undefined;
}

/** The Slurm job's nodes (scontrol expands SLURM_JOB_NODELIST), this node first. */
function slurmNodes(env: NodeJS.ProcessEnv): string[] {
  const self = env.SLURMD_NODENAME ?? hostname();
  let nodes: string[] = [];
  if (env.SLURM_JOB_NODELIST) {
    const out = spawnSync('scontrol', ['show', 'hostnames', env.SLURM_JOB_NODELIST], { encoding: 'utf8', env, timeout: 10_000 });
    nodes =
      out.status === 0
        ? out.stdout
            .split('\n')
            .map((s) => s.trim())
            .filter(Boolean)
        : [];
  }
  return [self, ...nodes.filter((n) => n !== self)];
}

/** Picks the launcher once, at agent start; undefined is none. Throws MpiConfigError when one is asked for and missing. */
export function resolveMpiLauncher(setting: MpiLauncherSetting = 'auto', env: NodeJS.ProcessEnv = process.env): MpiLauncher | undefined {
  if (!MPI_LAUNCHER_SETTINGS.includes(setting))
    throw new MpiConfigError(`mpi_launcher must be one of ${MPI_LAUNCHER_SETTINGS.join(', ')}, not ${JSON.stringify(setting)}`);
  if (setting === 'none') return undefined;
  const srun = (): MpiLauncher | undefined => {
    const command = which('srun', env);
    if (!command || !env.SLURM_JOB_ID) return undefined;
    return { kind: 'srun', command, nodes: slurmNodes(env), jobId: env.SLURM_JOB_ID, slurmConf: env.SLURM_CONF };
  };
  const mpiexec = (): MpiLauncher | undefined => {
    const found = which('mpiexec', env);
    if (!found) return undefined;
    return { kind: 'mpiexec', command: found, nodes: env.SLURM_JOB_ID ? slurmNodes(env) : [hostname()] };
  };
  switch (setting) {
    case 'srun': {
      const l = srun();
      if (!l) throw new MpiConfigError('mpi_launcher "srun" needs the agent to run inside a Slurm job (SLURM_JOB_ID) with srun on PATH');
      return l;
    }
    case 'mpiexec': {
      const l = mpiexec();
      if (!l) throw new MpiConfigError(`mpi_launcher "mpiexec" needs mpiexec on PATH; ${MPI_PACKAGE_HINT}`);
      return l;
    }
    case 'auto':
      return srun() ?? mpiexec();
  }
}

/** A line for the agent's start log. */
export function describeMpiLauncher(l: MpiLauncher | undefined): string {
  if (!l) return 'none';
  return `${l.kind} (${l.command}${l.kind === 'srun' ? `, job ${l.jobId}` : ''}, ${l.nodes.length} node${l.nodes.length === 1 ? '' : 's'})`;
}

/** Directories a sandbox must show for the launcher when it lives outside the system directories. */
export function launcherPrefix(l: MpiLauncher): string {
  let real = l.command;
  try {
    real = realpathSync(l.command);
  } catch {
    /* as found */
  }
  return path.dirname(path.dirname(real));
}

/** Why a task's ranks cannot be launched here, or its PARSL_* variables. */
export function mpiEnvironment(
  l: MpiLauncher,
  spec: ResourceSpecification,
): { ok: true; env: Record<string, string> } | { ok: false; type: string; message: string } {
  const { num_nodes: nodes, ranks_per_node: ppn, num_ranks: ranks } = spec;
  if (ranks > nodes * ppn) {
    return {
      ok: false,
      type: 'InvalidResourceSpecification',
      message: `num_ranks ${ranks} exceeds num_nodes ${nodes} × ranks_per_node ${ppn}`,
    };
  }
  if (nodes > l.nodes.length) {
    const where =
      l.kind === 'srun'
        ? `its Slurm job has ${l.nodes.length}`
        : l.nodes.length === 1
          ? 'it launches ranks on this node only'
          : `it knows ${l.nodes.length}`;
    return {
      ok: false,
      type: 'InvalidResourceSpecification',
      message: `the task asks for ${nodes} nodes; this agent's ${l.kind} cannot give them: ${where}`,
    };
  }
  const hosts = l.nodes.slice(0, nodes);
  const prefix =
    l.kind === 'srun'
      ? // --overlap: the ranks share the CPUs of the agent's own step, which holds the job's.
        [
          l.command,
          `--jobid=${l.jobId}`,
          '--overlap',
          `--nodes=${nodes}`,
          `--ntasks=${ranks}`,
          `--ntasks-per-node=${ppn}`,
          `--nodelist=${hosts.join(',')}`,
        ]
      : // One node: hydra forks the ranks here (its host names would not match a sandbox's own).
        [l.command, '-n', String(ranks), '-ppn', String(ppn), ...(nodes > 1 ? ['-hosts', hosts.join(',')] : [])];
  const env: Record<string, string> = {
    PARSL_MPI_PREFIX: prefix.join(' '),
    PARSL_NUM_RANKS: String(ranks),
    PARSL_NUM_NODES: String(nodes),
    PARSL_RANKS_PER_NODE: String(ppn),
    PARSL_MPI_NODELIST: hosts.join(','),
  };
  if (l.kind === 'srun' && l.slurmConf) env.SLURM_CONF = l.slurmConf;
  return { ok: true, env };
}
