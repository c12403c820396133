/**
 * dynalite answers ReturnConsumedCapacity INDEXES with the table's units only: it leaves out
 * what a write costs in each global secondary index. This patch (for the bench's stack
 * process only) adds them by DynamoDB's rules, so the bench's write units per task are what
 * AWS would bill: for each GSI, an item that enters or leaves the index costs one write of its
 * projected size (1 KB units); one whose index key changes costs two (delete and put); one
 * that stays with changed projected attributes costs one; one whose projection is unchanged,
 * or that is in the index neither before nor after, costs nothing.
 */
// dynalite ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const db = require('dynalite/db') as {
  addConsumedCapacity: (data: Record<string, any>, isRead: boolean, first?: Item, second?: Item) => Capacity | undefined;
  itemSize: (item: Item) => number;
};

type Item = Record<string, unknown>;
interface Capacity { CapacityUnits: number; TableName: string; Table?: { CapacityUnits: number }; GlobalSecondaryIndexes?: Record<string, { CapacityUnits: number }> }
interface IndexDefinition { IndexName: string; KeySchema: { AttributeName: string }[]; Projection: { ProjectionType: string; NonKeyAttributes?: string[] } }
export interface TableDefinition { TableName: string; KeySchema: { AttributeName: string }[]; GlobalSecondaryIndexes?: IndexDefinition[] }

const units = (item: Item) => Math.ceil(db.itemSize(item) / 1024) || 1;

function projected(item: Item, index: IndexDefinition, tableKeys: string[]): Item {
  if (index.Projection.ProjectionType === 'ALL') return item;
  const names = [...index.KeySchema.map((k) => k.AttributeName), ...tableKeys, ...(index.Projection.NonKeyAttributes ?? [])];
  return Object.fromEntries(names.filter((n) => item[n] !== undefined).map((n) => [n, item[n]]));
}

/** What one write costs in `index`, from the item before (`old`) and after (`now`). */
export function indexWriteUnits(index: IndexDefinition, tableKeys: string[], old: Item | undefined, now: Item | undefined): number {
  const keys = index.KeySchema.map((k) => k.AttributeName);
  const inIndex = (item?: Item) => !!item && keys.every((k) => item[k] != null);
  const [wasIn, isIn] = [inIndex(old), inIndex(now)];
  if (!wasIn && !isIn) return 0;
  if (!wasIn) return units(projected(now!, index, tableKeys));
  if (!isIn) return units(projected(old!, index, tableKeys));
  const [before, after] = [projected(old!, index, tableKeys), projected(now!, index, tableKeys)];
  const keyOf = (item: Item) => JSON.stringify(keys.map((k) => item[k]));
  if (keyOf(before) !== keyOf(after)) return units(before) + units(after);
  return JSON.stringify(before, Object.keys(before).sort()) === JSON.stringify(after, Object.keys(after).sort()) ? 0 : Math.max(units(before), units(after));
}

/** Makes dynalite's consumed capacity include GSI writes for the tables given. */
export function countIndexWrites(tables: TableDefinition[]): void {
  const byName = new Map(tables.map((t) => [t.TableName, t]));
  const original = db.addConsumedCapacity;
  db.addConsumedCapacity = (data, isRead, first, second) => {
    const capacity = original(data, isRead, first, second);
    const table = byName.get(data.TableName);
    if (!capacity || isRead || data.ReturnConsumedCapacity !== 'INDEXES' || !table?.GlobalSecondaryIndexes) return capacity;
    // dynalite's put, update and delete all pass (data, isRead, the item before, the item after); a delete has no after.
    const [old, now] = [first, second];
    const tableKeys = table.KeySchema.map((k) => k.AttributeName);
    const gsis: Record<string, { CapacityUnits: number }> = {};
    for (const index of table.GlobalSecondaryIndexes) {
      const u = indexWriteUnits(index, tableKeys, old, now);
      if (u) gsis[index.IndexName] = { CapacityUnits: u };
    }
    const extra = Object.values(gsis).reduce((n, g) => n + g.CapacityUnits, 0);
    return extra ? { ...capacity, CapacityUnits: capacity.CapacityUnits + extra, GlobalSecondaryIndexes: gsis } : capacity;
  };
}
