import { parseProcessRuntimes } from '../../core/runtimes';

// FERRY_RUNTIMES and `ferry worker start --runtimes`: which warm language processes an agent runs.
describe('parseProcessRuntimes', () => {
  test('unset means the default (every process runtime)', () => {
    expect(parseProcessRuntimes(undefined)).toBeUndefined();
  });

  test('a comma-separated list, spaces allowed', () => {
    expect(parseProcessRuntimes('python')).toEqual(['python']);
    expect(parseProcessRuntimes(' node , python ')).toEqual(['node', 'python']);
  });

  test('an unknown name is refused, naming it and the runtimes there are', () => {
    expect(() => parseProcessRuntimes('node,ruby')).toThrow('unknown runtime ruby (runtimes: node, python)');
    // shell and mpi need no process: they are not process runtimes.
    expect(() => parseProcessRuntimes('shell')).toThrow('unknown runtime shell');
  });

  test('a list that names nothing is refused, not read as "no runtimes"', () => {
    expect(() => parseProcessRuntimes('')).toThrow('no runtime named (runtimes: node, python)');
    expect(() => parseProcessRuntimes(' , ')).toThrow('no runtime named');
  });
});
