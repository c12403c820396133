import { vendWorkerCredentials } from '../../core/credentials';
import { deleteEndpointQueues, ensureEndpointQueues } from '../../core/queues/endpoint-queue';
import { getEndpoint } from '../../core/tables/endpoints';
import { apiHandler, endpointGone, route } from '../http';

export const handler = apiHandler({
  /**
   * A worker trades its endpoint secret for short-lived, endpoint-scoped AWS credentials. Its
   * queues are checked first and made again if they are gone (deleted outside Ferry), so an
   * agent that starts (or restarts) always finds the queue its grant names.
   */
  'POST /v1/endpoints/{id}/credentials': route({ auth: 'endpoint' }, async ({ caller }) => {
    const ep = await getEndpoint(caller.endpointId);
    if (!ep) throw endpointGone(caller.endpointId);
    if ((await ensureEndpointQueues(ep)) === 'recreated' && !(await getEndpoint(caller.endpointId, { consistent: true }))) {
      // DELETE /v1/endpoints ran meanwhile: what was just made would outlive the record naming it.
      await deleteEndpointQueues({ queueUrl: ep.queue_url, dlqUrl: ep.dlq_url });
      throw endpointGone(caller.endpointId);
    }
    return { body: await vendWorkerCredentials(ep) };
  }),
});
