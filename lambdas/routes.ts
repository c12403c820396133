/**
 * Every API route and the handler module that serves it. Data only: the local API server
 * loads the modules from it, and the CDK app names the same files for bundling.
 */
export const API_ROUTES = [
  { routeKey: 'POST /v1/functions', module: 'api/functions' },
  { routeKey: 'GET /v1/functions', module: 'api/functions' },
  { routeKey: 'GET /v1/functions/{id}', module: 'api/functions' },
  { routeKey: 'DELETE /v1/functions/{id}', module: 'api/functions' },
  { routeKey: 'POST /v1/endpoints', module: 'api/endpoints' },
  { routeKey: 'GET /v1/endpoints', module: 'api/endpoints' },
  { routeKey: 'GET /v1/endpoints/{id}', module: 'api/endpoints' },
  { routeKey: 'GET /v1/endpoints/{id}/status', module: 'api/endpoints' },
  { routeKey: 'POST /v1/endpoints/{id}/share', module: 'api/endpoints' },
  { routeKey: 'GET /v1/endpoints/{id}/allowed_functions', module: 'api/endpoints' },
  { routeKey: 'DELETE /v1/endpoints/{id}', module: 'api/endpoints' },
  { routeKey: 'POST /v1/endpoints/{id}/heartbeat', module: 'api/endpoints' },
  { routeKey: 'POST /v1/endpoints/{id}/credentials', module: 'api/credentials' },
  { routeKey: 'POST /v1/endpoints/{id}/submit', module: 'api/tasks' },
  { routeKey: 'GET /v1/tasks/{id}', module: 'api/tasks' },
  { routeKey: 'POST /v1/tasks/batch', module: 'api/tasks' },
  { routeKey: 'POST /v1/tasks/wait', module: 'api/tasks' },
  { routeKey: 'GET /v1/task-groups/{id}', module: 'api/tasks' },
  { routeKey: 'POST /v1/tasks/{id}/cancel', module: 'api/tasks' },
  { routeKey: 'POST /v1/payloads', module: 'api/payloads' },
] as const;

export type ApiModule = (typeof API_ROUTES)[number]['module'];
