import { grantWorker } from '../../core/credentials';
import { apiHandler, route } from '../http';

export const handler = apiHandler({
  /** A worker trades its endpoint secret for short-lived, endpoint-scoped AWS credentials (core/credentials.ts grantWorker). */
  'POST /v1/endpoints/{id}/credentials': route({ auth: 'endpoint' }, async ({ caller }) => ({
    body: await grantWorker(caller.endpointId),
  })),
});
