import { EndpointConfigError, drainSeconds, parseEndpointConfig, walltimeSeconds } from '../../workers/manager/config';
import { SlurmProvider } from '../../workers/manager/slurm-provider';

const slurm = `
credentials: ep.json
engine:
  max_workers_per_node: 2
  max_idletime: 60
  provider:
    type: SlurmProvider
    partition: debug
    account: ""
    qos: ""
    nodes_per_block: 1
    init_blocks: 0
    min_blocks: 0
    max_blocks: 4
    walltime: "00:30:00"
    worker_init: ""
    scheduler_options: ""
`;

describe('endpoint.yaml', () => {
  it("takes the issue's example with Globus Compute's names", () => {
    const { config, credentialsFile, warnings } = parseEndpointConfig(slurm, '/home/u/ep/endpoint.yaml');
    expect(credentialsFile).toBe('/home/u/ep/ep.json');
    expect(warnings).toEqual([]);
    expect(config.engine).toMatchObject({ max_workers_per_node: 2, max_idletime: 60 });
    expect(config.engine.provider).toMatchObject({
      type: 'SlurmProvider',
      partition: 'debug',
      nodes_per_block: 1,
      max_blocks: 4,
      walltime: '00:30:00',
      exclusive: true,
    });
    expect(drainSeconds(config.engine)).toBe(300);
  });

  it('names the path of an unknown key, and of a misspelt one', () => {
    expect(() => parseEndpointConfig(slurm.replace('partition: debug', 'partiton: debug'))).toThrow(
      'engine.provider.partiton: unknown key',
    );
    expect(() => parseEndpointConfig(slurm + 'colour: blue\n')).toThrow('endpoint.yaml: colour: unknown key');
    expect(() => parseEndpointConfig(slurm.replace('max_blocks: 4', 'max_blocks: -1'))).toThrow(/engine\.provider\.max_blocks/);
    expect(() => parseEndpointConfig(slurm.replace('"00:30:00"', '"half an hour"'))).toThrow(/engine\.provider\.walltime: a Slurm time/);
    expect(() => parseEndpointConfig(slurm.replace('SlurmProvider', 'PBSProProvider'))).toThrow(/engine\.provider\.type/);
    expect(() => parseEndpointConfig(slurm.replace('min_blocks: 0', 'min_blocks: 5'))).toThrow(EndpointConfigError);
  });

  it('warns about Globus Compute keys Ferry ignores', () => {
    const text = `amqp_port: 443\ndisplay_name: My cluster\n${slurm.replace('  max_idletime: 60', '  max_idletime: 60\n  type: GlobusComputeEngine\n  label: htex\n  worker_debug: false').replace('    walltime', '    parallelism: 1.0\n    walltime')}`;
    const { warnings, config } = parseEndpointConfig(text);
    expect(warnings).toEqual([
      'endpoint.yaml: amqp_port: a Globus Compute setting Ferry ignores',
      'endpoint.yaml: display_name: a Globus Compute setting Ferry ignores',
      'endpoint.yaml: engine.label: a Globus Compute setting Ferry ignores',
      'endpoint.yaml: engine.worker_debug: a Globus Compute setting Ferry ignores',
      'endpoint.yaml: engine.provider.parallelism: a Globus Compute setting Ferry ignores',
    ]);
    expect(config.engine.type).toBe('GlobusComputeEngine');
  });

  it('reads Slurm times', () => {
    expect(walltimeSeconds('00:01:00')).toBe(60);
    expect(walltimeSeconds('30')).toBe(1800);
    expect(walltimeSeconds('10:30')).toBe(630);
    expect(walltimeSeconds('1-02')).toBe(93600);
    expect(walltimeSeconds('2-00:00:05')).toBe(172805);
  });

  it('writes a job script with scheduler_options verbatim, worker_init before srun, one agent per node', () => {
    const { config } = parseEndpointConfig(
      slurm
        .replace('account: ""', 'account: proj1')
        .replace('worker_init: ""', 'worker_init: |\n      module load nodejs\n      conda activate ferry')
        .replace('scheduler_options: ""', 'scheduler_options: "#SBATCH --gres=gpu:1"')
        .replace('nodes_per_block: 1', 'nodes_per_block: 2'),
    );
    const p = config.engine.provider;
    if (p.type !== 'SlurmProvider') throw new Error('slurm');
    const script = new SlurmProvider(p).jobScript({
      blockId: 'b1',
      jobName: 'ferry-x-b1',
      nodes: 2,
      walltimeSeconds: 1800,
      env: { FERRY_BLOCK_ID: 'b1', FERRY_WORKER_CONFIG: "/home/u/it's/ep.json" },
      command: ['/usr/bin/node', '/opt/ferry/block-agent.js'],
      dir: '/home/u/.ferry/endpoints/x',
    });
    const lines = script.split('\n');
    expect(lines).toEqual(
      expect.arrayContaining([
        '#SBATCH --nodes=2',
        '#SBATCH --time=00:30:00',
        '#SBATCH --partition=debug',
        '#SBATCH --account=proj1',
        '#SBATCH --exclusive',
        '#SBATCH --gres=gpu:1',
      ]),
    );
    expect(lines.some((l) => l.startsWith('#SBATCH --qos'))).toBe(false);
    expect(script).toContain(`export FERRY_WORKER_CONFIG='/home/u/it'\\''s/ep.json'`);
    expect(script.indexOf('module load nodejs')).toBeGreaterThan(script.lastIndexOf('#SBATCH'));
    expect(script.indexOf('conda activate ferry')).toBeLessThan(script.indexOf('\nsrun '));
    expect(lines.at(-2)).toBe('srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --kill-on-bad-exit=0 /usr/bin/node /opt/ferry/block-agent.js');
  });
});
