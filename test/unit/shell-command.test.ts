import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { workerSettingsFromEnv } from '../../workers/main';
import { parseEndpointConfig } from '../../workers/manager/config';
import { MpiConfigError, mpiEnvironment, resolveMpiLauncher, type MpiLauncher } from '../../workers/runtime/mpi';
import { FormatError, formatCommand, lastLines } from '../../workers/runtime/shell';

// Templates are filled as Python's str.format fills them: checked against a real python3, all at once.
type Formatted = { ok: true; text: string } | { ok: false; type: string; message: string };
const pythonFormat = (templates: string[], kwargs: Record<string, unknown>): Formatted[] => {
  const script = [
    'import json, sys',
    'ts, kw = json.loads(sys.stdin.read())',
    'def fmt(t):',
    '    try:',
    '        return {"ok": True, "text": t.format(**kw)}',
    '    except Exception as e:',
    '        return {"ok": False, "type": type(e).__name__, "message": str(e)}',
    'print(json.dumps([fmt(t) for t in ts]))',
  ].join('\n');
  return JSON.parse(execFileSync('python3', ['-c', script], { input: JSON.stringify([templates, kwargs]) }).toString());
};
const ours = (template: string, kwargs: Record<string, unknown>) => {
  try {
    return { ok: true, text: formatCommand(template, kwargs) };
  } catch (err) {
    if (!(err instanceof FormatError)) throw err;
    return { ok: false, type: err.type, message: err.message };
  }
};

describe('command templates', () => {
  const templates = [
    'echo {name}',
    'echo {{literal}} {name} }}{{',
    'echo {n} {x} {flag} {none} {items} {conf}',
    'echo {items[0]} {items[1]} {conf[depth]} {conf[path]}',
    'echo {conf.path}',
    'echo {name[0]}{name[4]} {name[9]}',
    'echo {name!r} {n!s} {conf!r}',
    'echo [{name:>8}] [{name:<8}] [{name:^9}] [{name:*^9}] [{name:.3}]',
    'echo [{n:5d}] [{n:05d}] [{n:+d}] [{x:.2f}] [{x:08.3f}] [{n:x}] [{n:#x}] [{big:,}] [{big:_d}] [{n:e}] [{x:%}] [{n:{width}}]',
    'echo {missing}',
    'echo {0}',
    'echo {}',
    'echo {name',
    'echo name}',
    'echo {',
    'echo {items[5]}',
    'echo {conf[nope]}',
    'echo {name:d}',
  ];
  it('fills templates as python3 does, and refuses the same ones with the same exception types', () => {
    const kw = {
      name: 'World',
      n: 42,
      x: -3.5,
      flag: true,
      none: null,
      items: ['a', 1],
      conf: { depth: 2, path: "/tmp/it's" },
      big: 1234567,
      width: 6,
    };
    const python = pythonFormat(templates, kw);
    templates.forEach((template, i) => {
      const py = python[i]!;
      const got = ours(template, kw);
      if (py.ok) expect({ template, ...got }).toEqual({ template, ...py });
      else expect({ template, ...got }).toMatchObject({ template, ok: false, type: py.type });
    });
    expect(ours('echo {missing}', kw)).toEqual({ ok: false, type: 'KeyError', message: "'missing'" });
  });

  it('keeps the last lines of a stream', () => {
    expect(lastLines('a\nb\nc\n', 2)).toBe('b\nc\n');
    expect(lastLines('a\nb\nc', 2)).toBe('b\nc');
    expect(lastLines('a\n', 0)).toBe('');
    expect(lastLines('', 5)).toBe('');
  });
});

describe('MPI launchers', () => {
  let bin: string;
  beforeAll(() => {
    bin = mkdtempSync(path.join(os.tmpdir(), 'ferry-mpi-bin-'));
    symlinkSync('/bin/true', path.join(bin, 'srun'));
  });
  afterAll(() => rmSync(bin, { recursive: true, force: true }));

  it('auto: srun inside a Slurm job, else mpiexec on PATH, else none', () => {
    const inJob = resolveMpiLauncher('auto', { PATH: bin, SLURM_JOB_ID: '17', SLURMD_NODENAME: 'fn1', SLURM_CONF: '/etc/x/slurm.conf' });
    expect(inJob).toMatchObject({ kind: 'srun', command: path.join(bin, 'srun'), jobId: '17', slurmConf: '/etc/x/slurm.conf' });
    expect(inJob!.nodes[0]).toBe('fn1');
    // This machine has MPICH (.ci/run installs it): mpiexec from the system PATH.
    expect(resolveMpiLauncher('auto', { PATH: bin })).toMatchObject({ kind: 'mpiexec', nodes: [os.hostname()] });
    expect(resolveMpiLauncher('none', { PATH: bin })).toBeUndefined();
    expect(() => resolveMpiLauncher('srun', { PATH: bin })).toThrow(MpiConfigError);
  });

  it('builds PARSL_MPI_PREFIX and the PARSL_* variables for mpiexec and srun', () => {
    const mpiexec: MpiLauncher = { kind: 'mpiexec', command: '/usr/bin/mpiexec', nodes: ['n1'] };
    expect(mpiEnvironment(mpiexec, { num_nodes: 1, ranks_per_node: 4, num_ranks: 3 })).toEqual({
      ok: true,
      env: {
        PARSL_MPI_PREFIX: '/usr/bin/mpiexec -n 3 -ppn 4',
        PARSL_NUM_RANKS: '3',
        PARSL_NUM_NODES: '1',
        PARSL_RANKS_PER_NODE: '4',
        PARSL_MPI_NODELIST: 'n1',
      },
    });
    expect(mpiEnvironment(mpiexec, { num_nodes: 2, ranks_per_node: 1, num_ranks: 2 })).toMatchObject({
      ok: false,
      type: 'InvalidResourceSpecification',
    });
    const srun: MpiLauncher = {
      kind: 'srun',
      command: '/usr/bin/srun',
      nodes: ['fn2', 'fn1', 'fn3'],
      jobId: '9',
      slurmConf: '/s/slurm.conf',
    };
    const two = mpiEnvironment(srun, { num_nodes: 2, ranks_per_node: 2, num_ranks: 4 });
    expect(two).toEqual({
      ok: true,
      env: {
        PARSL_MPI_PREFIX: '/usr/bin/srun --jobid=9 --overlap --nodes=2 --ntasks=4 --ntasks-per-node=2 --nodelist=fn2,fn1',
        PARSL_NUM_RANKS: '4',
        PARSL_NUM_NODES: '2',
        PARSL_RANKS_PER_NODE: '2',
        PARSL_MPI_NODELIST: 'fn2,fn1',
        SLURM_CONF: '/s/slurm.conf',
      },
    });
    const multi: MpiLauncher = { kind: 'mpiexec', command: 'mpiexec', nodes: ['a', 'b'] };
    expect(mpiEnvironment(multi, { num_nodes: 2, ranks_per_node: 1, num_ranks: 2 })).toMatchObject({
      ok: true,
      env: { PARSL_MPI_PREFIX: 'mpiexec -n 2 -ppn 1 -hosts a,b' },
    });
    expect(mpiEnvironment(srun, { num_nodes: 4, ranks_per_node: 1, num_ranks: 4 })).toMatchObject({
      ok: false,
      type: 'InvalidResourceSpecification',
    });
    expect(mpiEnvironment(srun, { num_nodes: 1, ranks_per_node: 1, num_ranks: 2 })).toMatchObject({
      ok: false,
      type: 'InvalidResourceSpecification',
    });
  });

  it('reads mpi_launcher from the worker config and the endpoint YAML', () => {
    expect(workerSettingsFromEnv({ FERRY_MPI_LAUNCHER: 'mpiexec' }).mpiLauncher).toBe('mpiexec');
    expect(() => workerSettingsFromEnv({ FERRY_MPI_LAUNCHER: 'aprun' })).toThrow(/mpi_launcher must be one of/);
    const yaml = 'credentials: ep.json\nengine:\n  type: GlobusMPIEngine\n  mpi_launcher: srun\n  provider:\n    type: LocalProvider\n';
    expect(parseEndpointConfig(yaml).config.engine.mpi_launcher).toBe('srun');
  });
});
