import { createServer } from 'node:net';

/** `n` distinct free loopback ports, held open together while they are picked so none repeats. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<import('node:net').Server>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as import('node:net').AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** The first of `n` consecutive free loopback ports (`npm start` and `ferry local up` take FERRY_PORT and the four after it). */
export async function consecutiveFreePorts(n: number): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const [base] = await freePorts(1);
    let ok = true;
    for (let p = base! + 1; ok && p < base! + n; p++) ok = await free(p);
    if (ok) return base!;
  }
  throw new Error(`no ${n} consecutive free ports found`);
}
