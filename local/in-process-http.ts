import type { HttpHandlerOptions, HttpRequest, HttpResponse, RequestHandler } from '@smithy/types';

/** One HTTP exchange, whole: what an in-process server takes and gives back. */
export interface DirectRequest {
  method: string;
  /** Path and query, as on the request line. */
  url: string;
  headers: Record<string, string>;
  body: Buffer;
}
export interface DirectResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}
export type DirectCall = (req: DirectRequest) => Promise<DirectResponse>;

/**
 * An AWS SDK request handler that hands each request to a server in this process instead of
 * writing it to a socket: the local stack's own handlers reach its store this way, as a Lambda
 * reaches DynamoDB without crossing the machine's network stack twice. The client is the real
 * SDK client (serialisation, signing, retries, errors); only the transport is skipped.
 */
export class InProcessHttpHandler implements RequestHandler<HttpRequest, HttpResponse, HttpHandlerOptions> {
  readonly metadata = { handlerProtocol: 'http/1.1' };

  constructor(private readonly call: DirectCall) {}

  async handle(request: HttpRequest, options: HttpHandlerOptions = {}): Promise<{ response: HttpResponse }> {
    if (options.abortSignal?.aborted) throw Object.assign(new Error('Request aborted'), { name: 'AbortError' });
    const query = Object.entries(request.query ?? {}).flatMap(([k, v]) =>
      (Array.isArray(v) ? v : [v]).map((x) => (x === null ? encodeURIComponent(k) : `${encodeURIComponent(k)}=${encodeURIComponent(x)}`)),
    );
    const raw: unknown = request.body;
    const body =
      raw instanceof Uint8Array
        ? Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength)
        : typeof raw === 'string'
          ? Buffer.from(raw)
          : Buffer.alloc(0);
    const out = await this.call({
      method: request.method,
      url: `${request.path}${query.length ? `?${query.join('&')}` : ''}`,
      headers: lowerCased(request.headers),
      body,
    });
    // The SDK collects a body into bytes before it parses it: bytes already whole skip a stream.
    return {
      response: {
        statusCode: out.status,
        headers: out.headers,
        body: new Uint8Array(out.body.buffer, out.body.byteOffset, out.body.byteLength),
      },
    };
  }

  updateHttpClientConfig(): void {}

  httpHandlerConfigs(): Record<string, never> {
    return {};
  }

  destroy(): void {}
}

/** Header names as a Node server sees them. */
const lowerCased = (headers: Record<string, string>): Record<string, string> =>
  Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
