import { startPythonStack, type PythonStack } from '../helpers/python';

// The Python client (python/ferry_compute) against a fresh local stack and one real agent:
// the Globus Compute tutorial with one changed import, then the package's own tests.
jest.setTimeout(120_000);

let served: PythonStack;
const python = (args: string[], timeoutMs = 90_000) => served.python(args, timeoutMs);

beforeAll(async () => {
  served = await startPythonStack('python-client', {}, {});
});

afterAll(async () => {
  await served?.stop();
});

it('runs the Globus Compute tutorial with one changed import', async () => {
  const run = await python(['examples/tutorial.py']);
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  const out = run.stdout;
  expect(out).toMatch(/^Submit returned: {2}<ComputeFuture at 0x[0-9a-f]+ state=pending>$/m);
  expect(out).toContain('Future is done:  False\nResult:  Hello World!\nFuture is done:  True\n');
  expect(out).toContain('Globus Compute returned an exception:  division by zero\n');
  expect(out).toContain('40 + 2 = 42\n10 + 32 = 42\n');
  expect(out).toMatch(/^Date fetched from endpoint: {2}\d{4}-\d{2}-\d{2}$/m);
  expect(out).toMatch(/^Echo output: {2}Hello World from/m);
  const estimates = JSON.parse(/^Estimates: (\[.*\])$/m.exec(out)![1]!) as number[];
  expect(estimates).toHaveLength(3);
  const average = Number(/^Average: (\d\.\d{5})$/m.exec(out)![1]);
  expect(Math.abs(average - Math.PI)).toBeLessThan(0.05);
  expect(out).toContain('Status: online\nWorkers: 2\n');
  expect(out).toMatch(/^Tasks: \d+$/m);
});

it('passes the end-to-end tests of the client: exceptions, kwargs, imports, popen, 100 tasks, 20 MB each way', async () => {
  const run = await python(['python/tests/e2e_client.py']);
  if (run.code !== 0) console.error(run.stderr);
  expect(run.code).toBe(0);
  expect(run.stderr).toMatch(/Ran \d+ tests in [\d.]+s\n\nOK\n$/);
  for (const name of [
    'test_zero_division_is_reraised_as_itself_with_the_remote_traceback',
    'test_args_and_kwargs',
    'test_imports_inside_the_body',
    'test_runs_an_external_program',
    'test_a_hundred_monte_carlo_tasks_in_one_request',
    'test_twenty_megabytes_each_way_through_presigned_urls',
    'test_a_function_typed_at_the_prompt_gets_a_clear_error',
  ]) {
    expect(run.stderr).toMatch(new RegExp(`${name} \\(.*\\) \\.\\.\\. ok`));
  }
});

it('passes the unit tests of the package (stdlib unittest, no server)', async () => {
  const run = await python(['-m', 'unittest', 'discover', '-s', 'python/tests', '-t', 'python']);
  if (run.code !== 0) console.error(run.stderr);
  expect(run.code).toBe(0);
  expect(run.stderr).toMatch(/\nOK\n$/);
});
