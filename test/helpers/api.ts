import { sleep } from '../../core/retry';
import type { Json } from './json';
/** A tiny HTTP caller for tests: what curl would do, with the status kept beside the JSON. */
export interface Answer<T = Json> {
  status: number;
  body: T;
}

export function caller(baseUrl: string, token?: string) {
  return async function call<T = Json>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Answer<T>> {
    const res = await fetch(baseUrl + path, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // keep the text
    }
    return { status: res.status, body: parsed as T };
  };
}

/** Poll until `check` returns a value, or fail after `timeoutMs`. */
export async function eventually<T>(
  check: () => Promise<T | undefined | false>,
  timeoutMs = 10_000,
  what = 'condition',
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

/** What a worker agent does first: trade the endpoint secret for credentials scoped to its endpoint, by the real route. */
export async function vendedCredentials(apiUrl: string, endpointId: string, secret: string) {
  const answer = await caller(apiUrl, secret)('POST', `/v1/endpoints/${endpointId}/credentials`);
  if (answer.status !== 200) throw new Error(`credentials refused: ${answer.status} ${JSON.stringify(answer.body)}`);
  const c = answer.body.credentials;
  return {
    grant: answer.body,
    credentials: {
      accessKeyId: c.access_key_id as string,
      secretAccessKey: c.secret_access_key as string,
      sessionToken: c.session_token as string | undefined,
    },
  };
}
