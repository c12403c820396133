import { NotFound } from './errors';
import { deleteFunction, type FunctionRecord } from './tables/functions';
import { isCommandRuntime } from './runtimes';

/** A function as its owner sees it; the source only when one function is read (GET /v1/functions/{id} adds it). */
export const functionView = (f: FunctionRecord) => ({
  function_id: f.function_id,
  name: f.name,
  description: f.description ?? null,
  runtime: f.runtime,
  entrypoint: f.entrypoint,
  shell: isCommandRuntime(f.runtime) ? (f.shell ?? {}) : undefined,
  source_sha256: f.source_sha256,
  created_at: f.created_at,
});

/** Delete a function of this user's; unknown, already deleted, or another user's: not found. */
export async function deleteOwnFunction(functionId: string, userId: string): Promise<void> {
  if (!(await deleteFunction(functionId, userId))) throw new NotFound(`function ${functionId} not found`);
}
