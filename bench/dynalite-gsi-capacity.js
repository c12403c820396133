'use strict';
/**
 * dynalite answers ReturnConsumedCapacity INDEXES with the table's units only: it leaves out what
 * a write costs in each global secondary index. The bench's stack process preloads this file
 * (node --require), before dynalite loads: it adds the
 * GSI units by DynamoDB's rules, so the bench's write units per task are what AWS would bill.
 * For each GSI: an item that enters or leaves the index costs one write of its projected size
 * (1 KB units); one whose index key changes costs two (delete and put); one that stays with
 * changed projected attributes costs one; one whose projection is unchanged, or that is in the
 * index neither before nor after, costs nothing.
 * Plain JavaScript: node loads it with --require, before any TypeScript loader.
 */
const db = require('dynalite/db');

/** Table definitions by name, as dynalite's actions look them up (before they compute capacity). */
const tables = new Map();

const units = (item) => Math.ceil(db.itemSize(item) / 1024) || 1;

function projected(item, index, tableKeys) {
  if (index.Projection.ProjectionType === 'ALL') return item;
  const names = [...index.KeySchema.map((k) => k.AttributeName), ...tableKeys, ...(index.Projection.NonKeyAttributes || [])];
  return Object.fromEntries(names.filter((n) => item[n] !== undefined).map((n) => [n, item[n]]));
}

const sorted = (item) => JSON.stringify(item, Object.keys(item).sort());

/** What one write costs in `index`, from the item before (`old`) and after (`now`). */
function indexWriteUnits(index, tableKeys, old, now) {
  const keys = index.KeySchema.map((k) => k.AttributeName);
  const inIndex = (item) => !!item && keys.every((k) => item[k] != null);
  const [wasIn, isIn] = [inIndex(old), inIndex(now)];
  if (!wasIn && !isIn) return 0;
  if (!wasIn) return units(projected(now, index, tableKeys));
  if (!isIn) return units(projected(old, index, tableKeys));
  const [before, after] = [projected(old, index, tableKeys), projected(now, index, tableKeys)];
  const keyOf = (item) => JSON.stringify(keys.map((k) => item[k]));
  if (keyOf(before) !== keyOf(after)) return units(before) + units(after);
  return sorted(before) === sorted(after) ? 0 : Math.max(units(before), units(after));
}

const create = db.create;
db.create = function (options) {
  const store = create.call(this, options);
  const getTable = store.getTable;
  store.getTable = function (name, checkStatus, cb) {
    const done = typeof checkStatus === 'function' ? checkStatus : cb;
    const remember = (err, table) => {
      if (!err && table) tables.set(name, table);
      done(err, table);
    };
    return typeof checkStatus === 'function' ? getTable(name, remember) : getTable(name, checkStatus, remember);
  };
  return store;
};

const addConsumedCapacity = db.addConsumedCapacity;
// dynalite's put, update and delete all call it with (data, isRead, the item before, the item after).
db.addConsumedCapacity = function (data, isRead, old, now) {
  const capacity = addConsumedCapacity(data, isRead, old, now);
  const table = tables.get(data.TableName);
  if (!capacity || isRead || data.ReturnConsumedCapacity !== 'INDEXES' || !table || !table.GlobalSecondaryIndexes) return capacity;
  const tableKeys = table.KeySchema.map((k) => k.AttributeName);
  const gsis = {};
  let extra = 0;
  for (const index of table.GlobalSecondaryIndexes) {
    const u = indexWriteUnits(index, tableKeys, old, now);
    if (u) {
      gsis[index.IndexName] = { CapacityUnits: u };
      extra += u;
    }
  }
  return extra ? { ...capacity, CapacityUnits: capacity.CapacityUnits + extra, GlobalSecondaryIndexes: gsis } : capacity;
};

module.exports = { indexWriteUnits };
