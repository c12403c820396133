import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { APIGatewayProxyEventV2, APIGatewayRequestAuthorizerEventV2, Context } from 'aws-lambda';
import { handler as authorizer } from '../lambdas/authorizer';
import { BadRequest, FerryError, Forbidden, NotFound, PayloadTooLarge, Unauthorized } from '../core/errors';
import type { ApiEvent, ApiResult } from '../lambdas/http';
import { API_ROUTES, type ApiModule } from '../lambdas/routes';
import { listenOnLoopback, type LoopbackServer } from './listen';

/**
 * A stand-in for API Gateway's HTTP API: each request becomes an APIGatewayProxyEventV2 with its
 * routeKey and pathParameters, the authorizer runs first, and its context reaches the handler —
 * the same handler modules the CDK stack deploys.
 */
export type Handler = (event: ApiEvent, context: Context) => Promise<ApiResult>;

const MODULES: Record<ApiModule, () => { handler: Handler }> = {
  'api/functions': () => require('../lambdas/api/functions'),
  'api/endpoints': () => require('../lambdas/api/endpoints'),
  'api/credentials': () => require('../lambdas/api/credentials'),
  'api/tasks': () => require('../lambdas/api/tasks'),
  'api/payloads': () => require('../lambdas/api/payloads'),
};

interface CompiledRoute {
  routeKey: string;
  method: string;
  pattern: RegExp;
  params: string[];
  handler: Handler;
  /** The Lambda function that serves it ('test' for a test-only route). */
  module: ApiModule | 'test';
}

function compile(extra: Record<string, Handler> = {}): CompiledRoute[] {
  const all: { routeKey: string; module?: ApiModule; handler?: Handler }[] = [
    ...API_ROUTES,
    ...Object.entries(extra).map(([routeKey, handler]) => ({ routeKey, handler })),
  ];
  return all.map(({ routeKey, module, handler }) => {
    const [method, path] = routeKey.split(' ') as [string, string];
    const params: string[] = [];
    const source = path.replace(/\{(\w+)\}/g, (_, name: string) => (params.push(name), '([^/]+)'));
    return {
      routeKey,
      method,
      pattern: new RegExp(`^${source}$`),
      params,
      handler: handler ?? ((e, c) => MODULES[module!]().handler(e, c)),
      module: module ?? 'test',
    };
  });
}

// API Gateway (HTTP API): 10 MB request payload.
export const MAX_REQUEST_BYTES = 10 * 1024 * 1024;
// Lambda: 6 MB (6,291,456 bytes) response payload for a synchronous invoke, counted over the
// serialized result object ({statusCode, headers, body}), not just the body.
export const MAX_RESPONSE_BYTES = 6 * 1024 * 1024;
// API Gateway (HTTP API): the integration timeout, 30 s at most.
export const INTEGRATION_TIMEOUT_MS = 30_000;

/** What API Gateway answers when the Lambda integration fails (an error, or a response Lambda refused). */
const INTEGRATION_FAILED = { status: 500, body: { message: 'Internal Server Error' } };
/** What API Gateway (HTTP API) answers when the integration runs past its timeout. */
const INTEGRATION_TIMED_OUT = { status: 503, body: { message: 'Service Unavailable' } };

/** One answered request, as the stand-in saw it: `payloadBytes` is the Lambda response payload's size. */
export interface ApiResponseRecord {
  routeKey: string;
  status: number;
  /** The serialized Lambda result (what Lambda's 6 MB limit counts); 0 when no handler answered. */
  payloadBytes: number;
  /** The HTTP body sent to the client. */
  bodyBytes: number;
}

const observers = new Set<(r: ApiResponseRecord) => void>();

/**
 * Watch every answer of every stand-in API server in this process (tests measure response sizes
 * with it); returns the function that stops watching.
 */
export function observeApiResponses(fn: (r: ApiResponseRecord) => void): () => void {
  observers.add(fn);
  return () => observers.delete(fn);
}

export type ApiServer = LoopbackServer;

export interface ApiServerOptions {
  port?: number;
  host?: string;
  /**
   * Seconds an authorizer answer is reused for the same Authorization header, as API Gateway's
   * authorizer cache does (infra sets 30 s): a revoked token works until its entry lapses.
   */
  authorizerCacheSeconds?: number;
  /** API Gateway's integration timeout; 30 s as deployed (tests shorten it). */
  integrationTimeoutMs?: number;
  /**
   * Test-only: more routes, by route key, served like the real ones (authorizer first, the same
   * limits). They exist only in this process; the deployed API has exactly API_ROUTES.
   */
  extraRoutes?: Record<string, Handler>;
}

export async function startApiServer(opts: ApiServerOptions = {}): Promise<ApiServer> {
  const routes = compile(opts.extraRoutes);
  const authorize = cachedAuthorizer((opts.authorizerCacheSeconds ?? 30) * 1000);
  const host = opts.host ?? '127.0.0.1';
  const timeoutMs = opts.integrationTimeoutMs ?? INTEGRATION_TIMEOUT_MS;
  const server: Server = createServer((req, res) => {
    serve(routes, authorize, timeoutMs, req, res).catch((err) => {
      console.error('local API: unhandled', err);
      if (!res.headersSent) sendError(res, new FerryError('internal error'));
    });
  });
  // Long task polls and big bodies are fine; only idle sockets are reaped.
  server.keepAliveTimeout = 30_000;
  return listenOnLoopback(server, opts.port, host);
}

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
  record?: Omit<ApiResponseRecord, 'status' | 'bodyBytes'>,
): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
  const seen: ApiResponseRecord = {
    routeKey: record?.routeKey ?? '',
    payloadBytes: record?.payloadBytes ?? 0,
    status,
    bodyBytes: Buffer.byteLength(text),
  };
  for (const fn of observers) fn(seen);
}

/**
 * The stand-in's own refusals, in Ferry's error shape (API Gateway would send only `{"message"}`,
 * which is kept beside it for clients that read that).
 */
function sendError(res: ServerResponse, err: FerryError): void {
  send(res, err.status, { error: { code: err.code, message: err.message }, message: err.message });
}

/** The body, or undefined past the limit; the rest is still read, so the client sees the 413 rather than a reset. */
async function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size <= MAX_REQUEST_BYTES) chunks.push(chunk as Buffer);
    // Past a few times the limit the sender is not worth waiting for.
    if (size > 4 * MAX_REQUEST_BYTES) {
      req.destroy();
      return undefined;
    }
  }
  return size > MAX_REQUEST_BYTES ? undefined : Buffer.concat(chunks);
}

/** Path parameters decoded as API Gateway does; undefined when one is not valid percent-encoding. */
function decodePathValues(values: string[]): string[] | undefined {
  try {
    return values.map(decodeURIComponent);
  } catch {
    return undefined;
  }
}

type Authorize = (event: APIGatewayRequestAuthorizerEventV2) => ReturnType<typeof authorizer>;

function cachedAuthorizer(ttlMs: number): Authorize {
  const cache = new Map<string, { until: number; answer: Awaited<ReturnType<typeof authorizer>> }>();
  return async (event) => {
    const key = event.identitySource?.[0] ?? '';
    const hit = cache.get(key);
    if (hit && hit.until > Date.now()) return hit.answer;
    const answer = await authorizer(event);
    if (ttlMs > 0) {
      if (cache.size > 10_000) cache.clear();
      cache.set(key, { until: Date.now() + ttlMs, answer });
    }
    return answer;
  };
}

async function serve(
  routes: CompiledRoute[],
  authorize: Authorize,
  timeoutMs: number,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const method = req.method ?? 'GET';
  let match: { route: CompiledRoute; values: string[] | undefined } | undefined;
  for (const route of routes) {
    const m = route.method === method ? route.pattern.exec(url.pathname) : null;
    if (m) {
      match = { route, values: decodePathValues(m.slice(1)) };
      break;
    }
  }
  // Answers API Gateway gives before any Lambda runs, with its statuses (a wrong method is no route
  // to an HTTP API: 404), in Ferry's error shape.
  const body = await readBody(req);
  if (!match) return sendError(res, new NotFound(`no route ${method} ${url.pathname.slice(0, 200)}`));
  if (body === undefined)
    return sendError(
      res,
      new PayloadTooLarge(
        `request body over ${MAX_REQUEST_BYTES} bytes (API Gateway's limit); upload large arguments with POST /v1/payloads`,
      ),
    );
  if (!match.values) return sendError(res, new BadRequest('the path is not valid percent-encoding'));

  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(',') : v;
  // API Gateway: a request without the authorizer's identity source (the Authorization header) is refused before the authorizer runs.
  if (!headers.authorization)
    return sendError(res, new Unauthorized('the Authorization header is missing; send Authorization: Bearer <token>'));

  const { route } = match;
  const values = match.values;
  const pathParameters = Object.fromEntries(route.params.map((p, i) => [p, values[i]!]));
  const queryStringParameters = url.searchParams.size ? Object.fromEntries(url.searchParams) : undefined;
  const now = Date.now();
  const requestContext = {
    accountId: '000000000000',
    apiId: 'local',
    domainName: headers.host ?? 'localhost',
    domainPrefix: 'local',
    http: {
      method,
      path: url.pathname,
      protocol: 'HTTP/1.1',
      sourceIp: req.socket.remoteAddress ?? '127.0.0.1',
      userAgent: headers['user-agent'] ?? '',
    },
    requestId: randomUUID(),
    routeKey: route.routeKey,
    stage: '$default',
    time: new Date(now).toUTCString(),
    timeEpoch: now,
  };
  const authEvent: APIGatewayRequestAuthorizerEventV2 = {
    version: '2.0',
    type: 'REQUEST',
    routeArn: `arn:aws:execute-api:local:000000000000:local/$default/${method}${url.pathname}`,
    identitySource: [headers.authorization],
    routeKey: route.routeKey,
    rawPath: url.pathname,
    rawQueryString: url.search.slice(1),
    cookies: [],
    headers,
    queryStringParameters: queryStringParameters ?? {},
    requestContext,
    pathParameters,
    stageVariables: {},
  } as APIGatewayRequestAuthorizerEventV2;
  const auth = await authorize(authEvent);
  if (!auth.isAuthorized) return sendError(res, new Forbidden('the authorizer denied the request'));

  const isText = body.length === 0 || /json|text/.test(headers['content-type'] ?? 'application/json');
  const event = {
    version: '2.0',
    routeKey: route.routeKey,
    rawPath: url.pathname,
    rawQueryString: url.search.slice(1),
    headers,
    queryStringParameters,
    pathParameters,
    requestContext: { ...requestContext, authorizer: { lambda: auth.context } },
    body: body.length ? (isText ? body.toString('utf8') : body.toString('base64')) : undefined,
    isBase64Encoded: !isText,
  } as unknown as APIGatewayProxyEventV2 as ApiEvent;
  const context = { awsRequestId: requestContext.requestId, functionName: `ferry-local-${route.module}` } as Context;
  const outcome = await invoke(route.handler, event, context, timeoutMs);
  const where = { routeKey: route.routeKey, requestId: requestContext.requestId };
  if (outcome.kind === 'timeout') {
    console.error(
      JSON.stringify({
        level: 'error',
        message: `local API: ${route.routeKey} ran past API Gateway's ${timeoutMs} ms integration timeout; answered 503 as API Gateway does`,
        ...where,
      }),
    );
    return send(res, INTEGRATION_TIMED_OUT.status, INTEGRATION_TIMED_OUT.body, {}, { routeKey: route.routeKey, payloadBytes: 0 });
  }
  if (outcome.kind === 'error') {
    console.error(
      JSON.stringify({
        level: 'error',
        message: `local API: ${route.routeKey} threw (Lambda reports a function error; API Gateway answers 500)`,
        error: String(outcome.error),
        ...where,
      }),
    );
    return send(res, INTEGRATION_FAILED.status, INTEGRATION_FAILED.body, {}, { routeKey: route.routeKey, payloadBytes: 0 });
  }
  const out = outcome.result;
  const payloadBytes = Buffer.byteLength(JSON.stringify(out) ?? '');
  if (payloadBytes > MAX_RESPONSE_BYTES) {
    // What AWS does: Lambda refuses the response (Function.ResponseSizeTooLarge), API Gateway answers 500.
    console.error(
      JSON.stringify({
        level: 'error',
        message: `local API: RESPONSE TOO LARGE: ${route.routeKey} answered ${payloadBytes} bytes, over Lambda's ${MAX_RESPONSE_BYTES}-byte response limit; on AWS Lambda refuses it and API Gateway answers 500, so the stand-in does too`,
        payloadBytes,
        ...where,
      }),
    );
    return send(res, INTEGRATION_FAILED.status, INTEGRATION_FAILED.body, {}, { routeKey: route.routeKey, payloadBytes });
  }
  const text = out.body ?? '';
  res.writeHead(out.statusCode ?? 200, { 'content-length': Buffer.byteLength(text), ...(out.headers as Record<string, string>) });
  res.end(text);
  const seen: ApiResponseRecord = {
    routeKey: route.routeKey,
    status: out.statusCode ?? 200,
    payloadBytes,
    bodyBytes: Buffer.byteLength(text),
  };
  for (const fn of observers) fn(seen);
}

type Outcome = { kind: 'ok'; result: ApiResult } | { kind: 'error'; error: unknown } | { kind: 'timeout' };

/** Run a handler as API Gateway waits on its integration: an answer, a thrown error, or past the timeout (the handler runs on, unheard, as a Lambda does). */
async function invoke(handler: Handler, event: ApiEvent, context: Context, timeoutMs: number): Promise<Outcome> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<Outcome>((resolve) => {
    timer = setTimeout(() => resolve({ kind: 'timeout' }), timeoutMs);
  });
  const ran = handler(event, context).then(
    (result): Outcome => ({ kind: 'ok', result }),
    (error): Outcome => ({ kind: 'error', error }),
  );
  try {
    return await Promise.race([ran, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
