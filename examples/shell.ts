/**
 * Shell commands and MPI programs on a Ferry endpoint, as Globus Compute's ShellFunction and
 * MPIFunction run them. With `npm start` running: `npx tsx examples/shell.ts`
 * (FERRY_ENDPOINT_ID picks another endpoint).
 *
 * The endpoint's agent runs these itself (no node or python process): `/bin/bash -c` in a fresh
 * directory; MPI programs under the endpoint's launcher (`mpiexec` from Debian's `mpich` on a plain
 * machine, `srun` inside a Slurm block).
 */
import { existsSync, readFileSync } from 'node:fs';
import { Executor, MPIFunction, ShellFunction } from '../sdk';

const endpointId =
  process.env.FERRY_ENDPOINT_ID ||
  (existsSync('.ferry/endpoint.json') ? JSON.parse(readFileSync('.ferry/endpoint.json', 'utf8')).endpoint_id : undefined);
if (!endpointId) throw new Error('set FERRY_ENDPOINT_ID, or run `npm start` first');

// {name} fields of the command are filled from the keyword arguments given to submit().
const greet = new ShellFunction("echo 'Hello, {name}!' && uname -s");
// A failing command is a result too: its exit code, its output and an exception name.
const failing = new ShellFunction("echo 'about to fail' >&2; exit 7");
// walltime: seconds before the command is stopped (exit code 124, as `timeout` gives).
const tooSlow = new ShellFunction('sleep 30', { walltime: 1 });
// Literal braces are doubled, as in Python's str.format: ${{PMI_RANK}} reaches bash as ${PMI_RANK}.
const ranks = new MPIFunction("bash -c 'echo rank ${{PMI_RANK:-$OMPI_COMM_WORLD_RANK}} of ${{PMI_SIZE:-$OMPI_COMM_WORLD_SIZE}}'");

async function main() {
  const gce = new Executor({ endpointId });

  const hello = await gce.submit(greet, { name: 'Ferry' });
  console.log('Shell stdout:', JSON.stringify(hello.stdout.trim().split('\n')));
  console.log('Shell return code:', hello.returncode);

  const failed = await gce.submit(failing);
  console.log('Failing return code:', failed.returncode, failed.exceptionName);
  console.log('Failing stderr:', failed.stderr.trim());

  const slow = await gce.submit(tooSlow);
  console.log('Walltime:', slow.returncode, slow.exceptionName);

  // Two MPI ranks on one node; each rank prints its number.
  gce.resourceSpecification = { num_nodes: 1, ranks_per_node: 2 };
  const mpi = await gce.submit(ranks);
  console.log('MPI return code:', mpi.returncode);
  console.log(
    'MPI ranks:',
    JSON.stringify(
      mpi.stdout
        .split('\n')
        .filter((l) => l.startsWith('rank'))
        .sort(),
    ),
  );
  console.log(String(mpi));

  await gce.shutdown();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
