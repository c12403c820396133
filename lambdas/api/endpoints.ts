import { ownedEndpoint, usableEndpoint } from '../../core/access';
import {
  allowedFunctionsView,
  deleteEndpoint,
  endpointStatus,
  endpointView,
  heartbeat,
  registerEndpoint,
  shareEndpoint,
} from '../../core/endpoints';
import { listEndpoints } from '../../core/tables/endpoints';
import { apiHandler, pageOf, pathId, route } from '../http';
import { heartbeatBody, registerEndpointBody, shareEndpointBody } from '../schemas';

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
    const ep = await usableEndpoint(pathId(req, 'id', 'endpoint'), req.caller.userId);
    return { body: endpointView(ep, req.caller.userId) };
  }),

  'GET /v1/endpoints/{id}/status': route({ auth: 'user' }, async (req) => {
    // A strongly consistent read: an agent's goodbye heartbeat shows at once, not a moment later.
    const ep = await usableEndpoint(pathId(req, 'id', 'endpoint'), req.caller.userId, { consistent: true });
    return { body: await endpointStatus(ep) };
  }),

  'POST /v1/endpoints/{id}/share': route({ auth: 'user', body: shareEndpointBody }, async (req) => {
    const ep = await ownedEndpoint(pathId(req, 'id', 'endpoint'), req.caller.userId);
    return { body: endpointView(await shareEndpoint(ep, req.body), req.caller.userId) };
  }),

  'GET /v1/endpoints/{id}/allowed_functions': route({ auth: 'user' }, async (req) => {
    const ep = await usableEndpoint(pathId(req, 'id', 'endpoint'), req.caller.userId);
    return { body: allowedFunctionsView(ep) };
  }),

  'DELETE /v1/endpoints/{id}': route({ auth: 'user' }, async (req) => {
    const ep = await ownedEndpoint(pathId(req, 'id', 'endpoint'), req.caller.userId);
    const out = await deleteEndpoint(ep);
    return { body: { endpoint_id: ep.endpoint_id, deleted: true, ...out } };
  }),

  'POST /v1/endpoints/{id}/heartbeat': route({ auth: 'endpoint', body: heartbeatBody }, async ({ caller, body }) => {
    const { worker_id, stopped, ...hb } = body;
    await heartbeat(caller.endpointId, worker_id, hb, stopped);
    return { body: { ok: true } };
  }),
});
