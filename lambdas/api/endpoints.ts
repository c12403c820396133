import {
  allowedFunctionsView,
  deleteEndpoint,
  endpointStatus,
  endpointView,
  registerEndpoint,
  visibleEndpoint,
} from '../../core/endpoints';
import { NotFound } from '../../core/errors';
import { getEndpoint, listEndpoints, recordHeartbeat, setSharing } from '../../core/tables/endpoints';
import { apiHandler, endpointGone, pageOf, pathId, route } from '../http';
import { heartbeatBody, registerEndpointBody, shareEndpointBody } from '../schemas';

/** An endpoint the caller owns; anyone else's is unknown. */
async function ownedEndpoint(id: string, userId: string) {
  const ep = await getEndpoint(id);
  if (!ep || ep.owner !== userId) throw new NotFound(`endpoint ${id} not found`);
  return ep;
}

export const handler = apiHandler({
  'POST /v1/endpoints': route({ auth: 'user', body: registerEndpointBody }, async ({ caller, body }) => {
    const { endpoint, secret } = await registerEndpoint({ owner: caller.userId, ...body });
    return { status: 201, body: { ...endpointView(endpoint, caller.userId), endpoint_secret: secret } };
  }),

  'GET /v1/endpoints': route({ auth: 'user' }, async (req) => {
    const { limit, cursor } = pageOf(req);
    const page = await listEndpoints(req.caller.userId, limit, cursor);
    return { body: { endpoints: page.items.map((ep) => endpointView(ep, req.caller.userId)), next_cursor: page.next } };
  }),

  'GET /v1/endpoints/{id}': route({ auth: 'user' }, async (req) => {
    const ep = await visibleEndpoint(pathId(req, 'id', 'endpoint'), req.caller.userId);
    return { body: endpointView(ep, req.caller.userId) };
  }),

  'GET /v1/endpoints/{id}/status': route({ auth: 'user' }, async (req) => {
    // A strongly consistent read: an agent's goodbye heartbeat shows at once, not a moment later.
    const ep = await visibleEndpoint(pathId(req, 'id', 'endpoint'), req.caller.userId, { consistent: true });
    return { body: await endpointStatus(ep) };
  }),

  'POST /v1/endpoints/{id}/share': route({ auth: 'user', body: shareEndpointBody }, async (req) => {
    const ep = await ownedEndpoint(pathId(req, 'id', 'endpoint'), req.caller.userId);
    const updated = await setSharing(ep.endpoint_id, req.body);
    if (!updated) throw new NotFound(`endpoint ${ep.endpoint_id} not found`);
    return { body: endpointView(updated, req.caller.userId) };
  }),

  'GET /v1/endpoints/{id}/allowed_functions': route({ auth: 'user' }, async (req) => {
    const ep = await visibleEndpoint(pathId(req, 'id', 'endpoint'), req.caller.userId);
    return { body: allowedFunctionsView(ep) };
  }),

  'DELETE /v1/endpoints/{id}': route({ auth: 'user' }, async (req) => {
    const ep = await ownedEndpoint(pathId(req, 'id', 'endpoint'), req.caller.userId);
    const out = await deleteEndpoint(ep);
    return { body: { endpoint_id: ep.endpoint_id, deleted: true, ...out } };
  }),

  'POST /v1/endpoints/{id}/heartbeat': route({ auth: 'endpoint', body: heartbeatBody }, async ({ caller, body }) => {
    const { worker_id, stopped, ...hb } = body;
    // A deleted endpoint's secret is still admitted while the authorizer's answer is cached (30 s).
    if (!(await recordHeartbeat(caller.endpointId, worker_id, hb, stopped))) throw endpointGone(caller.endpointId);
    return { body: { ok: true } };
  }),
});
