import type { APIGatewayProxyEventV2WithLambdaAuthorizer, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { z } from 'zod';
import { UUID_RE } from '../core/ids';
import {
  BadRequest,
  FerryError,
  Forbidden,
  MalformedJson,
  NotFound,
  PayloadTooLarge,
  Throttled,
  Unauthorized,
  ValidationFailed,
} from '../core/errors';
import { logger, observed } from './observability';
import { pageQuery, type PageQuery } from './schemas';

/** What the authorizer puts in the request context (see lambdas/authorizer.ts). */
export interface AuthContext {
  principal: 'user' | 'endpoint' | 'none';
  userId?: string;
  endpointId?: string;
  reason?: string;
}
export type ApiEvent = APIGatewayProxyEventV2WithLambdaAuthorizer<AuthContext>;
export type ApiResult = APIGatewayProxyStructuredResultV2;

export type UserCaller = { kind: 'user'; userId: string };
export type EndpointCaller = { kind: 'endpoint'; endpointId: string; userId: string };
export type Caller = UserCaller | EndpointCaller;
type Auth = 'user' | 'endpoint';

export interface ApiRequest<B, A extends Auth = 'user'> {
  caller: A extends 'endpoint' ? EndpointCaller : UserCaller;
  body: B;
  params: Record<string, string>;
  query: Record<string, string>;
  header(name: string): string | undefined;
  event: ApiEvent;
}

export interface Reply {
  status?: number;
  body: unknown;
}

interface RouteSpec<S extends z.ZodType | undefined, A extends Auth> {
  /** Who may call: a user token, or an endpoint's secret. */
  auth: A;
  body?: S;
  /** Largest request body accepted (Lambda: 6 MB payload; API Gateway: 10 MB). */
  maxBodyBytes?: number;
}

type RouteFn = (event: ApiEvent) => Promise<Reply>;

const DEFAULT_MAX_BODY = 1024 * 1024;

/** A route: checks the caller, parses and validates the body with zod, then runs `fn`. */
export function route<A extends Auth, S extends z.ZodType | undefined = undefined>(
  spec: RouteSpec<S, A>,
  fn: (req: ApiRequest<S extends z.ZodType ? z.infer<S> : undefined, A>) => Promise<Reply>,
): RouteFn {
  return async (event) => {
    const caller = callerOf(event, spec.auth);
    const body = spec.body ? parseBody(event, spec.body, spec.maxBodyBytes ?? DEFAULT_MAX_BODY) : undefined;
    const headers = lowerKeys(event.headers ?? {});
    return fn({
      caller: caller as never,
      body: body as never,
      params: (event.pathParameters ?? {}) as Record<string, string>,
      query: (event.queryStringParameters ?? {}) as Record<string, string>,
      header: (name) => headers[name.toLowerCase()],
      event,
    });
  };
}

function callerOf(event: ApiEvent, auth: 'user' | 'endpoint'): Caller {
  const ctx = event.requestContext.authorizer?.lambda;
  if (!ctx || ctx.principal === 'none' || !ctx.userId) throw new Unauthorized(ctx?.reason ?? 'a valid bearer token is required');
  if (auth === 'user' && ctx.principal !== 'user') throw new Forbidden('this route takes a user token, not an endpoint secret');
  if (auth === 'endpoint') {
    if (ctx.principal !== 'endpoint' || !ctx.endpointId) throw new Forbidden('this route takes the endpoint secret');
    const id = event.pathParameters?.id;
    if (!id || !UUID_RE.test(id)) throw new NotFound(`endpoint ${shown(id)} not found`);
    if (id !== ctx.endpointId) throw new Forbidden('the endpoint secret belongs to another endpoint');
    return { kind: 'endpoint', endpointId: ctx.endpointId, userId: ctx.userId };
  }
  return { kind: 'user', userId: ctx.userId };
}

function parseBody<S extends z.ZodType>(event: ApiEvent, schema: S, maxBytes: number): z.infer<S> {
  const raw = event.body === undefined ? '' : event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body;
  if (Buffer.byteLength(raw) > maxBytes)
    throw new PayloadTooLarge(`request body over ${maxBytes} bytes; upload large arguments with POST /v1/payloads`);
  let json: unknown;
  try {
    json = raw === '' ? {} : JSON.parse(raw);
  } catch (err) {
    throw new MalformedJson(`request body is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new ValidationFailed(describeIssues(parsed.error));
  return parsed.data;
}

export const describeIssues = (err: z.ZodError): string =>
  err.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : 'body'}: ${i.message}`)
    .join('; ');

/** One path parameter checked against a schema (ids are UUIDs; anything else is a 404, not a table read). */
export function pathId(req: { params: Record<string, string> }, name: string, what: string): string {
  const v = req.params[name];
  if (!v || !UUID_RE.test(v)) throw new NotFound(`${what} ${shown(v)} not found`);
  return v;
}

/** A client's value echoed in a message, cut short: it may be anything up to the 10 MB request. */
const shown = (v: string | undefined): string => JSON.stringify((v ?? '').slice(0, 64));

/** A query string checked against its schema (lambdas/schemas.ts): a bad parameter is a 400, never clamped. */
function queryOf<S extends z.ZodType>(req: { query: Record<string, string> }, schema: S): z.infer<S> {
  const parsed = schema.safeParse(req.query);
  if (!parsed.success) throw new ValidationFailed(describeIssues(parsed.error));
  return parsed.data;
}

/** The `limit` and `cursor` of a listing (lambdas/schemas.ts pageQuery). */
export const pageOf = (req: { query: Record<string, string> }): PageQuery => queryOf(req, pageQuery);

/** One request header checked against its schema; a bad value is a 400 that says what the header must be. */
export function headerOf<S extends z.ZodType>(req: { header(name: string): string | undefined }, name: string, schema: S): z.infer<S> {
  const parsed = schema.safeParse(req.header(name));
  if (!parsed.success) throw new BadRequest(parsed.error.issues.map((i) => i.message).join('; '));
  return parsed.data;
}

const lowerKeys = (h: Record<string, string | undefined>) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));

const json = (status: number, body: unknown): ApiResult => ({
  statusCode: status,
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

/** The one place where errors become HTTP answers: `{"error": {"code", "message", ...details}}`. */
export function errorReply(err: unknown): ApiResult {
  const typed = err instanceof FerryError ? err : awsThrottle(err);
  if (typed) return json(typed.status, { error: { code: typed.code, message: typed.message, ...typed.details } });
  logger.error('unhandled error', { error: err });
  return json(500, { error: { code: 'InternalError', message: 'internal error' } });
}

/** AWS's answer to too many requests (DynamoDB, SQS, S3) as the client's: retry with backoff. */
function awsThrottle(err: unknown): Throttled | undefined {
  const name = (err as { name?: string } | undefined)?.name;
  return name === 'ThrottlingException' || name === 'ProvisionedThroughputExceededException' || name === 'RequestThrottled'
    ? new Throttled('the service is busy; retry with backoff')
    : undefined;
}

/**
 * A Lambda handler serving several routes, dispatched on the API Gateway route key, through the
 * middy stack every Ferry Lambda shares (lambdas/observability.ts). Each answer is one DEBUG line
 * (route and status; POWERTOOLS_LOGGER_SAMPLE_RATE samples them); a 4xx is the caller's business,
 * a 500 is logged at ERROR with its stack.
 */
export function apiHandler(routes: Record<string, RouteFn>) {
  const dispatch = async (event: ApiEvent, _context: Context): Promise<ApiResult> => {
    const fn = routes[event.routeKey];
    if (!fn) return errorReply(new NotFound(`no route ${event.routeKey}`));
    const reply = await fn(event);
    return json(reply.status ?? 200, reply.body);
  };
  return observed<ApiEvent, ApiResult>(dispatch).use({
    after: async (request) => {
      logger.debug('answered', { route: request.event.routeKey, status: request.response?.statusCode });
    },
    onError: async (request) => {
      request.response = errorReply(request.error);
      const err = request.error as { code?: unknown; name?: unknown } | null;
      logger.debug('answered', {
        route: request.event.routeKey,
        status: request.response.statusCode,
        error_code: err instanceof FerryError ? err.code : err?.name,
      });
    },
  });
}
