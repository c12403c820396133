import { startPythonStack, type PythonStack } from '../helpers/python';

// Globus Compute scripts on Ferry: python/tests/compat_globus.py uses each public name of
// globus_compute_sdk as its documentation shows (Executor with as_completed and wait, batches,
// reload_tasks, TaskExecutionFailed, ShellFunction, MPIFunction on 2 ranks under a real mpiexec,
// delete_function, allowed functions), against a fresh local stack and one real agent; then
// examples/shell_and_mpi.py.
jest.setTimeout(240_000);

let served: PythonStack;
const python = (args: string[], timeoutMs = 200_000) => served.python(args, timeoutMs);

beforeAll(async () => {
  // The agent finds mpiexec on PATH (Debian's mpich): `auto` picks it outside a Slurm job.
  served = await startPythonStack('python-compat', { FERRY_MPI_LAUNCHER: 'auto' }, { FERRY_COMPAT_MPI: '1' });
});

afterAll(async () => {
  await served?.stop();
});

it('runs the Globus Compute API compatibility suite', async () => {
  const run = await python(['python/tests/compat_globus.py']);
  if (run.code !== 0) console.error(run.stderr);
  expect(run.code).toBe(0);
  expect(run.stderr).toMatch(/Ran \d+ tests in [\d.]+s\n\nOK\n$/);
  expect(run.stderr).not.toMatch(/skipped/);
  for (const name of [
    'test_executor_as_context_manager_with_as_completed',
    'test_executor_with_wait',
    'test_batch_submit_and_get_batch_result',
    'test_reload_tasks_gives_every_task_of_the_group_in_submit_order',
    'test_except_task_execution_failed_and_except_value_error',
    'test_shell_function_success',
    'test_shell_function_non_zero_exit',
    'test_mpi_function_with_two_ranks',
    'test_delete_function',
    'test_allowed_functions',
  ]) {
    expect(run.stderr).toMatch(new RegExp(`${name} \\(.*\\) \\.\\.\\. ok`));
  }
});

it('runs examples/shell_and_mpi.py', async () => {
  const run = await python(['examples/shell_and_mpi.py']);
  if (run.code !== 0) console.error(run.stderr);
  expect(run.code).toBe(0);
  const out = run.stdout;
  expect(out).toContain("Shell stdout: ['Hello, Ferry!', 'Linux']\nShell return code: 0\n");
  expect(out).toContain('Failing return code: 7 subprocess.CalledProcessError\nFailing stderr: about to fail\n');
  expect(out).toContain('Walltime: 124 subprocess.TimeoutExpired\n');
  expect(out).toContain("MPI return code: 0\nMPI ranks: ['rank 0 of 2', 'rank 1 of 2']\n");
  expect(out).toContain('exit code: 0\n   stdout:\n');
});
