import type { APIGatewayRequestAuthorizerEventV2, APIGatewaySimpleAuthorizerWithContextResult } from 'aws-lambda';
import { resolveToken } from '../core/tables/tokens';
import type { AuthContext } from './http';
import { logger, observed } from './observability';

/**
 * HTTP API Lambda authorizer (simple responses, cached by the Authorization header).
 *
 * A bad token is let through with principal "none" rather than denied: API Gateway answers a
 * denial with 403, and clients must see 401 for a missing, unknown, expired or revoked token.
 * Every route checks the principal before it does anything (lambdas/http.ts).
 */
export const handler = observed(authorize);

async function authorize(event: APIGatewayRequestAuthorizerEventV2): Promise<APIGatewaySimpleAuthorizerWithContextResult<AuthContext>> {
  const header = event.headers?.authorization ?? event.headers?.Authorization ?? '';
  const token = /^Bearer\s+(\S+)$/i.exec(header)?.[1];
  const principal = token ? await resolveToken(token) : undefined;
  // Never the token: only what kind of caller it named.
  logger.debug('authorized', { route: event.routeKey, principal: principal?.kind ?? 'none' });
  if (!principal) {
    return {
      isAuthorized: true,
      context: { principal: 'none', reason: token ? 'token is unknown, expired or revoked' : 'a bearer token is required' },
    };
  }
  return principal.kind === 'endpoint'
    ? { isAuthorized: true, context: { principal: 'endpoint', userId: principal.userId, endpointId: principal.endpointId } }
    : { isAuthorized: true, context: { principal: 'user', userId: principal.userId } };
}
