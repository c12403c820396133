import { NotFound } from '../../core/errors';
import { deleteFunction, getFunction, listFunctions, registerFunction, type FunctionRecord } from '../../core/tables/functions';
import { apiHandler, pageOf, pathId, route } from '../http';
import { registerFunctionBody } from '../schemas';

/** A function as its owner sees it; the source only when one function is read. */
const functionView = (f: FunctionRecord) => ({
  function_id: f.function_id,
  name: f.name,
  description: f.description ?? null,
  runtime: f.runtime,
  entrypoint: f.entrypoint,
  shell: f.runtime === 'shell' || f.runtime === 'mpi' ? (f.shell ?? {}) : undefined,
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

  'DELETE /v1/functions/{id}': route({ auth: 'user' }, async (req) => {
    const id = pathId(req, 'id', 'function');
    if (!(await deleteFunction(id, req.caller.userId))) throw new NotFound(`function ${id} not found`);
    return { body: { function_id: id, deleted: true } };
  }),
});
