import { DeleteCommand, GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import { dynamo } from '../clients';
import { config } from '../config';
import { derivedId, sha256Hex } from '../ids';
import type { ShellOptions } from '../messages';
import type { FunctionRuntime } from '../runtimes';
import { conditionHeld, isConditionFailed } from './batch';
import { queryByOwner } from './cursor';

export interface FunctionRecord {
  function_id: string;
  owner: string;
  name: string;
  runtime: FunctionRuntime;
  /** Python: the name of the function to call in `source`. Node: the source is the function itself. shell, mpi: none. */
  entrypoint?: string;
  /** node, python: code; shell, mpi: the command template ({name} filled from a task's kwargs). */
  source: string;
  source_sha256: string;
  description?: string;
  /** shell and mpi only: Globus Compute's ShellFunction options (walltime, snippet lines, output files). */
  shell?: ShellOptions;
  created_at: string;
}

export interface FunctionInput {
  owner: string;
  name: string;
  runtime: FunctionRuntime;
  entrypoint?: string;
  source: string;
  description?: string;
  shell?: ShellOptions;
}

const table = () => config().tables.functions;

/**
 * The id of a function: derived from everything stored about it, so registering exactly the same
 * thing again gives the same id, and a function with another name, description or shell option is
 * another function (its GET shows what was registered). An empty description or shell is none.
 */
export function functionId(f: FunctionInput): string {
  const shell = f.shell ? SHELL_KEYS.map((k) => f.shell![k] ?? null) : null;
  return derivedId(
    'function',
    f.owner,
    f.runtime,
    f.entrypoint ?? '',
    sha256Hex(f.source),
    JSON.stringify([f.name, f.description ?? '', shell]),
  );
}

// Fixed order, so the id does not depend on the order of keys in a request.
const SHELL_KEYS = ['walltime_ms', 'snippet_lines', 'stdout', 'stderr'] as const;

/** Register a function; one user registering exactly the same function twice gets the same id. */
export async function registerFunction(input: FunctionInput): Promise<{ record: FunctionRecord; created: boolean }> {
  const shell = input.shell && Object.values(input.shell).some((v) => v !== undefined) ? input.shell : undefined;
  const f: FunctionInput = { ...input, description: input.description || undefined, shell };
  const function_id = functionId(f);
  const record: FunctionRecord = {
    function_id,
    owner: f.owner,
    name: f.name,
    runtime: f.runtime,
    ...(f.entrypoint !== undefined ? { entrypoint: f.entrypoint } : {}),
    source: f.source,
    source_sha256: sha256Hex(f.source),
    ...(f.description !== undefined ? { description: f.description } : {}),
    ...(f.shell !== undefined ? { shell: f.shell } : {}),
    created_at: new Date().toISOString(),
  };
  for (;;) {
    try {
      await dynamo().send(new PutCommand({ TableName: table(), Item: record, ConditionExpression: 'attribute_not_exists(function_id)' }));
      return { record, created: true };
    } catch (err) {
      if (!isConditionFailed(err)) throw err;
    }
    // Read strongly: a record deleted since the write was refused is written afresh.
    const held = await getFunction(function_id, { consistent: true });
    if (held) return { record: held, created: false };
  }
}

export async function getFunction(functionId: string, opts: { consistent?: boolean } = {}): Promise<FunctionRecord | undefined> {
  const out = await dynamo().send(
    new GetCommand({ TableName: table(), Key: { function_id: functionId }, ConsistentRead: opts.consistent }),
  );
  return out.Item as FunctionRecord | undefined;
}

/**
 * Delete a function of `owner`'s, in one conditional write; false when there is no such function
 * (unknown, already deleted, or another user's). Queued tasks carry their function's source, so
 * they still run; new submits of it are refused.
 */
export async function deleteFunction(functionId: string, owner: string): Promise<boolean> {
  return conditionHeld(
    dynamo().send(
      new DeleteCommand({
        TableName: table(),
        Key: { function_id: functionId },
        ConditionExpression: '#o = :o',
        ExpressionAttributeNames: { '#o': 'owner' },
        ExpressionAttributeValues: { ':o': owner },
      }),
    ),
  );
}

export const listFunctions = (owner: string, limit: number, cursor?: string): Promise<{ items: FunctionRecord[]; next?: string }> =>
  queryByOwner<FunctionRecord>(table(), 'function_id', owner, limit, cursor);
