import { ownedFunction } from '../../core/access';
import { deleteOwnFunction, functionView } from '../../core/functions';
import { listFunctions, registerFunction } from '../../core/tables/functions';
import { apiHandler, pageOf, pathId, route } from '../http';
import { registerFunctionBody } from '../schemas';

export const handler = apiHandler({
  'POST /v1/functions': route({ auth: 'user', body: registerFunctionBody, maxBodyBytes: 256 * 1024 }, async ({ caller, body }) => {
    const { record, created } = await registerFunction({ owner: caller.userId, ...body });
    return { status: created ? 201 : 200, body: functionView(record) };
  }),

  'GET /v1/functions': route({ auth: 'user' }, async (req) => {
    const { limit, cursor } = pageOf(req);
    const page = await listFunctions(req.caller.userId, limit, cursor);
    return { body: { functions: page.items.map(functionView), next_cursor: page.next } };
  }),

  'GET /v1/functions/{id}': route({ auth: 'user' }, async (req) => {
    const f = await ownedFunction(pathId(req, 'id', 'function'), req.caller.userId);
    return { body: { ...functionView(f), source: f.source } };
  }),

  'DELETE /v1/functions/{id}': route({ auth: 'user' }, async (req) => {
    const id = pathId(req, 'id', 'function');
    await deleteOwnFunction(id, req.caller.userId);
    return { body: { function_id: id, deleted: true } };
  }),
});
