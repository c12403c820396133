import { GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import { dynamo } from '../clients';
import { config } from '../config';
import { derivedId, sha256Hex } from '../ids';
import { batchGet, isConditionFailed } from './batch';
import { queryByOwner } from './cursor';

export type RuntimeName = 'node' | 'python';

export interface FunctionRecord {
  function_id: string;
  owner: string;
  name: string;
  runtime: RuntimeName;
  /** Python: the name of the function to call in `source`. Node: the source is the function itself. */
  entrypoint?: string;
  source: string;
  source_sha256: string;
  created_at: string;
}

const table = () => config().tables.functions;

/** Register a function; one user registering the same code twice gets the same id. */
export async function registerFunction(input: {
  owner: string;
  name: string;
  runtime: RuntimeName;
  entrypoint?: string;
  source: string;
}): Promise<{ record: FunctionRecord; created: boolean }> {
  const source_sha256 = sha256Hex(input.source);
  const function_id = derivedId('function', input.owner, input.runtime, input.entrypoint ?? '', source_sha256);
  const record: FunctionRecord = { function_id, ...input, source_sha256, created_at: new Date().toISOString() };
  try {
    await dynamo().send(new PutCommand({ TableName: table(), Item: record, ConditionExpression: 'attribute_not_exists(function_id)' }));
    return { record, created: true };
  } catch (err) {
    if (!isConditionFailed(err)) throw err;
    return { record: (await getFunction(function_id))!, created: false };
  }
}

export async function getFunction(functionId: string): Promise<FunctionRecord | undefined> {
  const out = await dynamo().send(new GetCommand({ TableName: table(), Key: { function_id: functionId } }));
  return out.Item as FunctionRecord | undefined;
}

export const getFunctions = (ids: readonly string[]): Promise<FunctionRecord[]> => batchGet<FunctionRecord>(table(), 'function_id', ids);

export const listFunctions = (owner: string, limit = 100, cursor?: string): Promise<{ items: FunctionRecord[]; next?: string }> =>
  queryByOwner<FunctionRecord>(table(), 'function_id', owner, limit, cursor);

