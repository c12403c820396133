import { randomUUID } from 'node:crypto';
import { backoffMs, sleep } from '../core/retry';
import { FerryApiError } from './errors';
import { send, type Answer } from './transport';

export interface HttpOptions {
  apiUrl: string;
  token: string;
  /** Attempts for retryable failures (429, 5xx, network); default 5. */
  maxAttempts?: number;
  timeoutMs?: number;
}

const RETRYABLE = new Set([429, 500, 502, 503, 504]);

/**
 * JSON over HTTPS with retries. POSTs that create things carry an Idempotency-Key, the same on
 * every retry, so a request whose answer was lost never creates twice.
 */
export class Http {
  constructor(private readonly opts: HttpOptions) {}

  get apiUrl(): string {
    return this.opts.apiUrl;
  }

  async request<T>(method: string, path: string, body?: unknown, opts: { idempotent?: boolean } = {}): Promise<T> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.opts.token}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (opts.idempotent) headers['idempotency-key'] = randomUUID();
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const attempts = this.opts.maxAttempts ?? 5;
    for (let attempt = 1; ; attempt++) {
      let res: Answer;
      try {
        res = await send(this.opts.apiUrl + path, { method, headers, body: payload, timeoutMs: this.opts.timeoutMs ?? 60_000 });
      } catch (err) {
        if (attempt >= attempts)
          throw new Error(
            `cannot reach the Ferry API at ${this.opts.apiUrl}: ${(err as { code?: string }).code ?? (err as Error).message}`,
            {
              cause: err,
            },
          );
        await sleep(backoff(attempt));
        continue;
      }
      const text = res.text;
      if (res.status >= 200 && res.status < 300) return (text ? JSON.parse(text) : undefined) as T;
      // A partial submit is not retried whole: it names the tasks that were not queued.
      // 409 RequestInProgress: an earlier attempt of this very request is still being served.
      const retryable =
        (RETRYABLE.has(res.status) && !text.includes('PartialSubmitFailure')) || (res.status === 409 && text.includes('RequestInProgress'));
      const retry = retryable && attempt < attempts;
      if (retry) {
        const after = Number(res.headers['retry-after']);
        await sleep(Number.isFinite(after) && after > 0 ? after * 1000 : backoff(attempt));
        continue;
      }
      throw toApiError(res.status, text);
    }
  }
}

function toApiError(status: number, text: string): FerryApiError {
  try {
    const body = JSON.parse(text) as { error?: { code: string; message: string }; message?: string };
    if (body.error) {
      const { code, message, ...details } = body.error as { code: string; message: string } & Record<string, unknown>;
      return new FerryApiError(status, code, message, details);
    }
    return new FerryApiError(status, status === 401 ? 'Unauthorized' : 'HttpError', body.message ?? text);
  } catch {
    return new FerryApiError(status, 'HttpError', text.slice(0, 500) || `HTTP ${status}`);
  }
}

// Exponential backoff with full jitter, capped at 5 s.
const backoff = (attempt: number) => backoffMs(attempt, { baseMs: 100, capMs: 5_000, jitter: 'full' });
