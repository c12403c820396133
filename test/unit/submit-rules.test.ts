import { resourceSpecification } from '../../core/tasks/resources';
import { functionId, type FunctionInput } from '../../core/tables/functions';
import { legacySubmitOrder, submitOrder, submitPrefix } from '../../core/tables/task-records';

describe('resourceSpecification (an mpi task as Globus Compute reads it)', () => {
  it.each([
    [{}, { num_nodes: 1, ranks_per_node: 1, num_ranks: 1 }],
    [{ num_ranks: 7 }, { num_nodes: 1, ranks_per_node: 7, num_ranks: 7 }],
    [
      { num_nodes: 3, num_ranks: 7 },
      { num_nodes: 3, ranks_per_node: 3, num_ranks: 7 },
    ],
    [{ num_nodes: 4 }, { num_nodes: 4, ranks_per_node: 1, num_ranks: 4 }],
    [
      { num_nodes: 2, ranks_per_node: 4 },
      { num_nodes: 2, ranks_per_node: 4, num_ranks: 8 },
    ],
    [
      { num_nodes: 2, ranks_per_node: 4, num_ranks: 3 },
      { num_nodes: 2, ranks_per_node: 4, num_ranks: 3 },
    ],
  ])('fills %j as %j', (given, want) => {
    expect(resourceSpecification(given)).toEqual(want);
  });

  it('refuses ranks that do not fit, and filled-in values out of range', () => {
    expect(() => resourceSpecification({ num_nodes: 2, ranks_per_node: 2, num_ranks: 5 })).toThrow(
      'num_ranks 5 does not fit 2 node(s) × 2 ranks_per_node',
    );
    expect(() => resourceSpecification({ num_ranks: 1, ranks_per_node: 100_000, num_nodes: 100_000 })).not.toThrow();
    expect(() => resourceSpecification({ ranks_per_node: 100_000, num_nodes: 100_000 })).toThrow(/num_ranks/);
  });
});

describe('functionId', () => {
  const base: FunctionInput = {
    owner: 'u',
    name: 'f',
    runtime: 'shell',
    source: 'ls',
    description: 'd',
    shell: { walltime_ms: 5, snippet_lines: 2 },
  };
  it('is the same for the same function, whatever the order of its shell options', () => {
    expect(functionId({ ...base, shell: { snippet_lines: 2, walltime_ms: 5 } })).toBe(functionId(base));
  });
  it('changes with anything stored', () => {
    const variants: FunctionInput[] = [
      { ...base, owner: 'v' },
      { ...base, name: 'g' },
      { ...base, description: 'e' },
      { ...base, description: undefined },
      { ...base, runtime: 'mpi' },
      { ...base, source: 'ls -l' },
      { ...base, shell: undefined },
      { ...base, shell: { walltime_ms: 5, snippet_lines: 2, stdout: 'o' } },
      { ...base, runtime: 'python', entrypoint: 'f', shell: undefined },
      // Parts cannot run into each other: a name ending where a description begins is another function.
      { ...base, name: 'f", "d', description: '' },
    ];
    const ids = new Set([functionId(base), ...variants.map(functionId)]);
    expect(ids.size).toBe(variants.length + 1);
  });
});

describe('submit order', () => {
  it('sorts tasks by submit, then by position, as strings', () => {
    const now = new Date('2026-11-29T12:00:00.000Z');
    const a = submitPrefix(now, undefined);
    const keys = [0, 1, 9, 10, 499].map((i) => submitOrder(a, i));
    expect([...keys].sort()).toEqual(keys);
    expect(a).toMatch(/^2026-11-29T12:00:00\.000Z#[0-9a-f]{8}$/);
  });

  it('never puts a submit before the last one in its group, whatever the clock says', () => {
    const last = submitOrder('2026-11-29T12:00:05.000Z#ffffffff', 499);
    const next = submitPrefix(new Date('2026-11-29T12:00:01.000Z'), last);
    expect(next.startsWith('2026-11-29T12:00:05.001Z#')).toBe(true);
    expect(submitOrder(next, 0) > last).toBe(true);
    // Later than the last one: its own time.
    expect(submitPrefix(new Date('2026-11-29T12:00:09.000Z'), last).startsWith('2026-11-29T12:00:09.000Z#')).toBe(true);
    // A task kept from an older Ferry orders by its creation time.
    const legacy = legacySubmitOrder('2026-11-29T12:00:00.000Z', '00000000-0000-4000-8000-000000000001');
    expect(submitPrefix(new Date('2026-11-29T11:00:00.000Z'), legacy).startsWith('2026-11-29T12:00:00.001Z#')).toBe(true);
  });
});
