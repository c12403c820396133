import { vendWorkerCredentials } from '../../core/credentials';
import { getEndpoint } from '../../core/tables/endpoints';
import { apiHandler, endpointGone, route } from '../http';

export const handler = apiHandler({
  /** A worker trades its endpoint secret for short-lived, endpoint-scoped AWS credentials. */
  'POST /v1/endpoints/{id}/credentials': route({ auth: 'endpoint' }, async ({ caller }) => {
    const ep = await getEndpoint(caller.endpointId);
    if (!ep) throw endpointGone(caller.endpointId);
    return { body: await vendWorkerCredentials(ep) };
  }),
});
