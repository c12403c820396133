import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Http } from '../../sdk/http';

/**
 * The SDK's requests to the API (node's own HTTP client, sdk/transport.ts) against real servers on
 * loopback: what a request carries, what is retried, and how an unreachable, silent or
 * untrusted API is reported.
 */
const servers: Server[] = [];
afterAll(() => Promise.all(servers.map((s) => new Promise((r) => (s.closeAllConnections(), s.close(r))))));

async function listen(server: Server): Promise<string> {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const bodyOf = (req: IncomingMessage) =>
  new Promise<string>((resolve) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => resolve(text));
  });

test('sends the token and JSON body, retries a 503 after its Retry-After with the same Idempotency-Key, and reads the answer', async () => {
  const seen: { auth?: string; key?: string; type?: string; body: string }[] = [];
  const host = await listen(
    createServer((req, res) => {
      void bodyOf(req).then((body) => {
        seen.push({
          auth: req.headers.authorization,
          key: req.headers['idempotency-key'] as string,
          type: req.headers['content-type'],
          body,
        });
        if (seen.length === 1) return res.writeHead(503, { 'retry-after': '0' }).end('{"message":"Service Unavailable"}');
        res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ task_ids: ['t1'] }));
      });
    }),
  );
  const http = new Http({ apiUrl: `http://${host}`, token: 'tok' });
  expect(await http.request('POST', '/v1/endpoints/e/submit', { tasks: [1] }, { idempotent: true })).toEqual({ task_ids: ['t1'] });
  expect(seen).toHaveLength(2);
  expect(seen[0]).toMatchObject({ auth: 'Bearer tok', type: 'application/json', body: '{"tasks":[1]}' });
  expect(seen[1]!.key).toBe(seen[0]!.key);
  expect(seen[0]!.key).toMatch(/^[0-9a-f-]{36}$/);
});

test('reports an API error in its documented shape, without retrying a 4xx', async () => {
  let calls = 0;
  const host = await listen(
    createServer((_req, res) => {
      calls++;
      res
        .writeHead(404, { 'content-type': 'application/json' })
        .end(JSON.stringify({ error: { code: 'NotFound', message: 'task x not found' } }));
    }),
  );
  await expect(new Http({ apiUrl: `http://${host}`, token: 't' }).request('GET', '/v1/tasks/x')).rejects.toMatchObject({
    status: 404,
    code: 'NotFound',
    message: 'task x not found',
  });
  expect(calls).toBe(1);
});

test('says the API cannot be reached when nothing listens, or when it does not answer in time', async () => {
  const closed = createServer();
  const host = await listen(closed);
  await new Promise((r) => closed.close(r));
  await expect(new Http({ apiUrl: `http://${host}`, token: 't', maxAttempts: 2 }).request('GET', '/v1/tasks/x')).rejects.toThrow(
    `cannot reach the Ferry API at http://${host}: ECONNREFUSED`,
  );
  const silent = await listen(createServer(() => undefined));
  await expect(
    new Http({ apiUrl: `http://${silent}`, token: 't', maxAttempts: 1, timeoutMs: 200 }).request('GET', '/v1/tasks/x'),
  ).rejects.toThrow(`cannot reach the Ferry API at http://${silent}: ETIMEDOUT`);
});

test('speaks TLS to an https API and refuses one whose certificate it cannot trust', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-tls-'));
  try {
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '1', '-subj', '/CN=127.0.0.1'],
      {
        cwd: dir,
        stdio: 'ignore',
      },
    );
    let served = 0;
    const tls = createTlsServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, (_req, res) => {
      served++;
      res.end('{}');
    });
    const host = await listen(tls as unknown as Server);
    await expect(new Http({ apiUrl: `https://${host}`, token: 't', maxAttempts: 1 }).request('GET', '/v1/tasks/x')).rejects.toThrow(
      `cannot reach the Ferry API at https://${host}: DEPTH_ZERO_SELF_SIGNED_CERT`,
    );
    expect(served).toBe(0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
