import { NotFound } from '../../core/errors';
import { getFunction, listFunctions, registerFunction } from '../../core/tables/functions';
import { apiHandler, pageOf, pathId, route } from '../http';
import { registerFunctionBody } from '../schemas';

const functionView = (f: { function_id: string; name: string; runtime: string; entrypoint?: string; source_sha256: string; created_at: string }) => ({
  function_id: f.function_id,
  name: f.name,
  runtime: f.runtime,
  entrypoint: f.entrypoint,
  source_sha256: f.source_sha256,
  created_at: f.created_at,
});

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
    const id = pathId(req, 'id', 'function');
    const f = await getFunction(id);
    if (!f || f.owner !== req.caller.userId) throw new NotFound(`function ${id} not found`);
    return { body: { ...functionView(f), source: f.source } };
  }),
});
