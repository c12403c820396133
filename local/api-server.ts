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
type Handler = (event: ApiEvent, context: Context) => Promise<ApiResult>;

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
  module: ApiModule;
}

function compile(): CompiledRoute[] {
  return API_ROUTES.map(({ routeKey, module }) => {
    const [method, path] = routeKey.split(' ') as [string, string];
    const params: string[] = [];
    const source = path.replace(/\{(\w+)\}/g, (_, name: string) => (params.push(name), '([^/]+)'));
    return { routeKey, method, pattern: new RegExp(`^${source}$`), params, module };
  });
}

// API Gateway: 10 MB request payload.
const MAX_REQUEST_BYTES = 10 * 1024 * 1024;

export type ApiServer = LoopbackServer;

export interface ApiServerOptions {
  port?: number;
  host?: string;
  /**
   * Seconds an authorizer answer is reused for the same Authorization header, as API Gateway's
   * authorizer cache does (infra sets 30 s): a revoked token works until its entry lapses.
   */
  authorizerCacheSeconds?: number;
}

export async function startApiServer(opts: ApiServerOptions = {}): Promise<ApiServer> {
  const routes = compile();
  const authorize = cachedAuthorizer((opts.authorizerCacheSeconds ?? 30) * 1000);
  const host = opts.host ?? '127.0.0.1';
  const server: Server = createServer((req, res) => {
    serve(routes, authorize, req, res).catch((err) => {
      console.error('local API: unhandled', err);
      if (!res.headersSent) sendError(res, new FerryError('internal error'));
    });
  });
  // Long task polls and big bodies are fine; only idle sockets are reaped.
  server.keepAliveTimeout = 30_000;
  return listenOnLoopback(server, opts.port, host);
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
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

async function serve(routes: CompiledRoute[], authorize: Authorize, req: IncomingMessage, res: ServerResponse): Promise<void> {
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
  if (body === undefined) return sendError(res, new PayloadTooLarge(`request body over ${MAX_REQUEST_BYTES} bytes (API Gateway's limit); upload large arguments with POST /v1/payloads`));
  if (!match.values) return sendError(res, new BadRequest('the path is not valid percent-encoding'));

  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(',') : v;
  // API Gateway: a request without the authorizer's identity source (the Authorization header) is refused before the authorizer runs.
  if (!headers.authorization) return sendError(res, new Unauthorized('the Authorization header is missing; send Authorization: Bearer <token>'));

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
    http: { method, path: url.pathname, protocol: 'HTTP/1.1', sourceIp: req.socket.remoteAddress ?? '127.0.0.1', userAgent: headers['user-agent'] ?? '' },
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
  const out = await MODULES[route.module]().handler(event, context);
  const text = out.body ?? '';
  res.writeHead(out.statusCode ?? 200, { 'content-length': Buffer.byteLength(text), ...(out.headers as Record<string, string>) });
  res.end(text);
}
