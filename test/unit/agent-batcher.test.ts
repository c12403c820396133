import { Batcher } from '../../workers/agent/batcher';

/**
 * The agent's batcher of SQS reports and deletes: how many calls a busy agent makes, and that a
 * quiet one waits for nothing. `flushItems` stands in for the SQS call and resolves when the test
 * says so, to hold sends "under way".
 */
function recorder(fail: (item: string) => boolean = () => false) {
  const calls: string[][] = [];
  const release: (() => void)[] = [];
  const batcher = new Batcher<string>(
    (items) =>
      new Promise((resolve) => {
        calls.push(items);
        release.push(() => resolve(new Set(items.flatMap((item, i) => (fail(item) ? [i] : [])))));
      }),
  );
  return { batcher, calls, release };
}
const turn = () => new Promise((r) => setImmediate(r));

test('a lone item leaves on the next turn, in a call of its own', async () => {
  const { batcher, calls, release } = recorder();
  const done = batcher.add('a');
  await turn();
  expect(calls).toEqual([['a']]);
  release.shift()!();
  await expect(done).resolves.toBeUndefined();
});

test('while two sends are under way, what arrives waits and then leaves together', async () => {
  const { batcher, calls, release } = recorder();
  const all = [batcher.add('a')];
  await turn();
  all.push(batcher.add('b'));
  await turn();
  expect(calls).toEqual([['a'], ['b']]);
  for (const item of ['c', 'd', 'e', 'f']) {
    all.push(batcher.add(item));
    await turn();
  }
  // Both sends still under way: nothing more has left.
  expect(calls).toHaveLength(2);
  release.shift()!();
  await turn();
  await turn();
  expect(calls).toEqual([['a'], ['b'], ['c', 'd', 'e', 'f']]);
  release.splice(0).forEach((r) => r());
  await expect(Promise.all(all)).resolves.toHaveLength(6);
});

test('an item SQS did not take is rejected; the others of its call are not', async () => {
  const { batcher, release } = recorder((item) => item === 'bad');
  const good = batcher.add('good');
  const bad = batcher.add('bad');
  await turn();
  release.shift()!();
  await expect(good).resolves.toBeUndefined();
  await expect(bad).rejects.toThrow('SQS did not take it');
});

test('with a linger, a lone item waits for company, and ten leave at once', async () => {
  jest.useFakeTimers({ doNotFake: ['setImmediate'] });
  try {
    const calls: string[][] = [];
    const batcher = new Batcher<string>((items) => (calls.push(items), Promise.resolve(new Set<number>())), { lingerMs: 50 });
    const first = [batcher.add('a'), batcher.add('b')];
    await turn();
    expect(calls).toEqual([]);
    jest.advanceTimersByTime(49);
    await turn();
    expect(calls).toEqual([]);
    jest.advanceTimersByTime(1);
    await turn();
    expect(calls).toEqual([['a', 'b']]);
    await expect(Promise.all(first)).resolves.toHaveLength(2);
    const ten = Array.from({ length: 10 }, (_, i) => batcher.add(`t${i}`));
    await turn();
    expect(calls).toHaveLength(2);
    expect(calls[1]).toHaveLength(10);
    await expect(Promise.all(ten)).resolves.toHaveLength(10);
  } finally {
    jest.useRealTimers();
  }
});

test('with a busy linger, a lone item leaves at once; while a call is under way the next waits for company, or for that call', async () => {
  jest.useFakeTimers({ doNotFake: ['setImmediate'] });
  try {
    const calls: string[][] = [];
    const release: (() => void)[] = [];
    const batcher = new Batcher<string>(
      (items) => new Promise((resolve) => (calls.push(items), release.push(() => resolve(new Set<number>())))),
      { busyLingerMs: 5 },
    );
    const all = [batcher.add('a')];
    await turn();
    // Nothing under way: no wait.
    expect(calls).toEqual([['a']]);
    all.push(batcher.add('b'), batcher.add('c'));
    await turn();
    expect(calls).toHaveLength(1);
    jest.advanceTimersByTime(5);
    await turn();
    // 'a' is still under way after 5 ms: the second call goes with what gathered.
    expect(calls).toEqual([['a'], ['b', 'c']]);
    release.splice(0).forEach((r) => r());
    await turn();
    all.push(batcher.add('d'));
    await turn();
    expect(calls).toHaveLength(3);
    all.push(batcher.add('e'), batcher.add('f'));
    await turn();
    expect(calls).toHaveLength(3);
    // The call under way comes back before the linger ends: the others leave with no more wait.
    release.shift()!();
    await turn();
    await turn();
    expect(calls).toEqual([['a'], ['b', 'c'], ['d'], ['e', 'f']]);
    release.splice(0).forEach((r) => r());
    await expect(Promise.all(all)).resolves.toHaveLength(6);
  } finally {
    jest.useRealTimers();
  }
});
