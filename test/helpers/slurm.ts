import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep } from '../../core/retry';

/**
 * A real Slurm cluster of `nodes` nodes on this machine, for tests: its own slurm.conf (in a temp
 * dir: own ports, spool and state, so a cluster already running here is left alone), one
 * slurmctld and one slurmd per node (`slurmd -N <node>`: several slurmd on one host, each node
 * with its own port), munged started if none answers. Needs root and Debian's slurm-wlm and
 * munge (.ci/run installs them). Daemons are stopped by pid.
 */
export interface SlurmCluster {
  dir: string;
  conf: string;
  /** For every process that talks to this cluster (sbatch, squeue, ... read SLURM_CONF). */
  env: Record<string, string>;
  nodes: string[];
  squeue(): string;
  stop(): Promise<void>;
}

export const slurmAvailable = (): boolean =>
  process.getuid?.() === 0 &&
  ['slurmctld', 'slurmd', 'sbatch', 'munged'].every((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status === 0);

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const mungeAnswers = () => spawnSync('sh', ['-c', 'munge -n | unmunge'], { stdio: 'ignore' }).status === 0;

/** Start munged as the munge user unless one already answers; returns its pid if this call started it. */
function ensureMunge(): number | undefined {
  if (mungeAnswers()) return undefined;
  if (!existsSync('/etc/munge/munge.key')) {
    spawnSync('sh', [
      '-c',
      'dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null && chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key',
    ]);
  }
  spawnSync('sh', [
    '-c',
    'mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge',
  ]);
  const r = spawnSync('runuser', ['-u', 'munge', '--', '/usr/sbin/munged'], { encoding: 'utf8' });
  if (r.status !== 0 || !mungeAnswers()) throw new Error(`could not start munged: ${r.stderr}`);
  const pidFile = '/run/munge/munged.pid';
  return existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : undefined;
}

export async function startSlurm(opts: { nodes?: number; cpus?: number } = {}): Promise<SlurmCluster> {
  const nodeCount = opts.nodes ?? 1;
  const cpus = opts.cpus ?? 2;
  const mungePid = ensureMunge();
  const dir = mkdtempSync(join(tmpdir(), 'ferry-slurm-'));
  for (const d of ['state', 'log']) mkdirSync(join(dir, d));
  const host = hostname();
  const [ctldPort, slurmdPort] = [await freePort(), await freePort()];
  const nodes = Array.from({ length: nodeCount }, (_, i) => `fn${i + 1}`);
  const nodePorts: number[] = [];
  for (const n of nodes) {
    mkdirSync(join(dir, `spool-${n}`));
    nodePorts.push(await freePort());
  }
  const conf = join(dir, 'slurm.conf');
  writeFileSync(
    conf,
    [
      `ClusterName=ferrytest${process.pid}`,
      `SlurmctldHost=${host}(127.0.0.1)`,
      `SlurmctldPort=${ctldPort}`,
      `SlurmdPort=${slurmdPort}`,
      'SlurmUser=root',
      'SlurmdUser=root',
      'AuthType=auth/munge',
      `StateSaveLocation=${dir}/state`,
      `SlurmdSpoolDir=${dir}/spool-%n`,
      `SlurmctldPidFile=${dir}/slurmctld.pid`,
      `SlurmdPidFile=${dir}/slurmd-%n.pid`,
      `SlurmctldLogFile=${dir}/log/slurmctld.log`,
      `SlurmdLogFile=${dir}/log/slurmd-%n.log`,
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'MpiDefault=none',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_Core',
      'SchedulerType=sched/backfill',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      'ReturnToService=2',
      // Short test cycles: a cancelled job's processes get SIGKILL 2 s after SIGTERM.
      'KillWait=2',
      'MinJobAge=300',
      'SchedulerParameters=sched_interval=2',
      ...nodes.map(
        (n, i) => `NodeName=${n} NodeHostname=${host} NodeAddr=127.0.0.1 Port=${nodePorts[i]} CPUs=${cpus} RealMemory=1000 State=UNKNOWN`,
      ),
      `PartitionName=debug Nodes=${nodes.join(',')} Default=YES MaxTime=INFINITE State=UP`,
      '',
    ].join('\n'),
  );
  const env = { SLURM_CONF: conf };
  const daemons: ChildProcess[] = [];
  const start = (cmd: string, args: string[]) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: 'ignore' });
    daemons.push(child);
  };
  start('slurmctld', ['-D', '-c', '-f', conf]);
  for (const n of nodes) start('slurmd', ['-D', '-f', conf, '-N', n]);
  const run = (cmd: string, args: string[]) => spawnSync(cmd, args, { env: { ...process.env, ...env }, encoding: 'utf8' });
  const deadline = Date.now() + 30_000;
  for (;;) {
    const states = run('sinfo', ['--noheader', '--Node', '--format=%N %t']).stdout.trim().split('\n').filter(Boolean);
    if (states.length === nodes.length && states.every((l) => / idle$/.test(l))) break;
    if (Date.now() > deadline) {
      for (const d of daemons) d.kill('SIGKILL');
      throw new Error(
        `slurm did not come up: ${states.join('; ')}\n${readFileSync(join(dir, 'log', 'slurmctld.log'), 'utf8').slice(-2000)}`,
      );
    }
    await sleep(300);
  }
  return {
    dir,
    conf,
    env,
    nodes,
    squeue: () => run('squeue', ['--noheader', '--states=all', '--format=%i %j %T %N']).stdout,
    async stop() {
      // Jobs first, so no agent outlives its slurmd.
      run('scancel', ['--full', '--me']);
      const until = Date.now() + 15_000;
      while (Date.now() < until && run('squeue', ['--noheader', '--me']).stdout.trim()) await sleep(300);
      await Promise.all(
        daemons.map(
          (d) =>
            new Promise<void>((resolve) => {
              if (d.exitCode !== null || d.signalCode !== null) return resolve();
              const t = setTimeout(() => d.kill('SIGKILL'), 10_000);
              d.once('exit', () => (clearTimeout(t), resolve()));
              d.kill('SIGTERM');
            }),
        ),
      );
      if (mungePid) process.kill(mungePid, 'SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
