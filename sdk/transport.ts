import { request as httpRequest, Agent as HttpAgent, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';

/** An answer, read whole. */
export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
}

// Connections are kept for the next request (an idle one holds no process open: node unrefs it).
const agents = { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true }) };

/**
 * One HTTP request with node's own client, answered whole. The SDK's calls to the API are small
 * JSON requests, many of them (a submit, then waits): fetch spent more CPU on each than the
 * request itself, and the SDK runs where node:http is (it already needs node:crypto and node:v8).
 * A network failure or a request past `timeoutMs` rejects with an error carrying its code.
 */
export function send(
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string; timeoutMs: number },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const secure = target.protocol === 'https:';
    const body = init.body === undefined ? undefined : Buffer.from(init.body);
    const req = (secure ? httpsRequest : httpRequest)(
      target,
      {
        method: init.method,
        headers: body ? { ...init.headers, 'content-length': String(body.length) } : init.headers,
        agent: secure ? agents.https : agents.http,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', fail);
      },
    );
    function fail(err: Error) {
      clearTimeout(timer);
      reject(err);
    }
    const timer = setTimeout(
      () => req.destroy(Object.assign(new Error(`no answer within ${init.timeoutMs} ms`), { code: 'ETIMEDOUT' })),
      init.timeoutMs,
    );
    req.on('error', fail);
    req.end(body);
  });
}
