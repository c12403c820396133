'use strict';
/**
 * A cheaper local DynamoDB (dynalite) for the requests Ferry sends again and again, with the same
 * answers and errors: local/dynamo-store.ts installs this into dynalite's modules (this process's)
 * before its first request. Per request, dynalite parsed each expression with its PEG parsers
 * (conditions, updates, projections), walked its declaration of the request's types node by node,
 * and decoded its table's definition from the store: most of its time on Ferry's workload. Here each
 * expression's parse is reused (below), the type check is compiled once per operation
 * (compiledCheckTypes) and an active table's decoded definition is kept for item calls (keepTables).
 *
 * A parse is reused only where it cannot differ: the parse tree of an expression is a function of
 * its text, the whole of ExpressionAttributeNames and the type of each ExpressionAttributeValues
 * entry; the values themselves sit in the tree by reference (the parsers' resolveAttrVal), so a
 * reused tree is a fresh copy with this request's values in their slots. Two checks read a
 * value's content, BETWEEN's bounds and attribute_type's type name: trees holding them are never
 * reused. Failed parses (a string or a thrown SyntaxError) are never reused either, so every error
 * comes from dynalite's own parser. dynalite rewrites some trees after parsing (a key condition
 * written `:v = key` is turned around), hence a fresh copy per request, which no other request sees.
 * Plain JavaScript (it began on a worker thread, without the TypeScript loader), with its
 * declarations in dynamo-fast-paths.d.ts.
 */

// Enough for every expression Ferry sends many times over; past it the cache starts again.
const MAX_TEMPLATES = 1000;

/**
 * Hook dynalite's three expression parsers (their module objects, which its validations call
 * through), the type check of each request (its validations' module object, which its request
 * handler calls through) and the table lookup of each store it creates from now on.
 */
function install() {
  for (const name of ['conditionParser', 'updateParser', 'projectionParser']) {
    memoize(require(`dynalite/db/${name}`));
  }
  const validations = require('dynalite/validations');
  if (!validations.checkTypes.compiled) validations.checkTypes = compiledCheckTypes(validations.checkTypes);
  const db = require('dynalite/db');
  if (!db.create.keepsTables) {
    const create = db.create;
    db.create = function (options) {
      return keepTables(create.call(this, options));
    };
    db.create.keepsTables = true;
  }
}

/**
 * Every item call (GetItem, PutItem, UpdateItem, Query, the batches...) began by reading its
 * table's definition from the store and decoding its JSON. The store keeps the decoded definition
 * of an active table for those calls; it reads them only (dynalite's table calls, which change
 * it, read their own copy as before). Any write of the definition (CreateTable, UpdateTable,
 * DeleteTable, each status change) drops it, at its start and at its end, and a read that
 * overlapped a write is not kept. Only while the store is open: closing answers as before.
 */
function keepTables(store) {
  const getTable = store.getTable;
  const tableDb = store.tableDb;
  const kept = new Map();
  let writes = 0;
  const dropped = () => {
    writes++;
    kept.clear();
  };
  for (const method of ['put', 'del', 'batch']) {
    const write = tableDb[method];
    tableDb[method] = function (...args) {
      dropped();
      const done = args[args.length - 1];
      if (typeof done === 'function') {
        args[args.length - 1] = function (...out) {
          dropped();
          return done.apply(this, out);
        };
        return write.apply(this, args);
      }
      const pending = write.apply(this, args);
      if (pending && typeof pending.then === 'function') pending.then(dropped, dropped);
      return pending;
    };
  }
  const open = () => !!store.lifecycleManager && store.lifecycleManager.getState() === 'open' && store.db.status === 'open';
  store.getTable = function (name, checkStatus, cb) {
    const statusArgument = typeof checkStatus !== 'function';
    const done = statusArgument ? cb : checkStatus;
    const read = (callback) => (statusArgument ? getTable.call(this, name, checkStatus, callback) : getTable.call(this, name, callback));
    // A table call (describe, update, delete) asks without the status check, and decodes its own copy.
    if (!checkStatus || !open()) return read(done);
    const table = kept.get(name);
    if (table) return void setImmediate(done, null, table);
    const before = writes;
    return read((err, found) => {
      if (!err && found && writes === before && open()) kept.set(name, found);
      done(err, found);
    });
  };
  return store;
}

function memoize(parser) {
  if (parser.parse.reusesTrees) return;
  const parse = parser.parse;
  const templates = new Map();
  const memoized = function (input, options) {
    const context = options && options.context;
    const key = typeof input === 'string' && context && !options.startRule ? keyOf(input, context) : undefined;
    if (key === undefined) return parse.call(this, input, options);
    const template = templates.get(key);
    if (template) return reuse(template, context);
    // A fresh set of unused names and values shows which ones this expression uses, even when an
    // earlier expression of the same request used them first; the request's sets then lose the same keys.
    const seen = { ...context, unusedAttrNames: keySet(context.attrNames), unusedAttrVals: keySet(context.attrVals) };
    try {
      const tree = parse.call(this, input, { ...options, context: seen });
      if (tree && typeof tree === 'object') {
        const made = templateOf(tree, context.attrVals);
        if (made) {
          if (templates.size >= MAX_TEMPLATES) templates.clear();
          templates.set(key, {
            build: made,
            usedNames: usedKeys(context.attrNames, seen.unusedAttrNames),
            usedVals: usedKeys(context.attrVals, seen.unusedAttrVals),
          });
        }
      }
      return tree;
    } finally {
      forget(context.unusedAttrNames, context.attrNames, seen.unusedAttrNames);
      forget(context.unusedAttrVals, context.attrVals, seen.unusedAttrVals);
    }
  };
  memoized.reusesTrees = true;
  parser.parse = memoized;
}

/**
 * What a parse depends on besides the values' content, or undefined when it is not safe to tell
 * (a value that is not an attribute value object).
 */
function keyOf(input, context) {
  let key = `${context.isKeyCondition ? 'k' : ''}${JSON.stringify(input)}${context.attrNames ? JSON.stringify(context.attrNames) : '-'}`;
  const vals = context.attrVals;
  if (vals) {
    for (const k in vals) {
      const v = vals[k];
      if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
      key += `${JSON.stringify(k)}${Object.keys(v).join('+')};`;
    }
  } else key += '-';
  return key;
}

function keySet(map) {
  const set = {};
  for (const k in map || {}) set[k] = true;
  return set;
}

function usedKeys(map, unused) {
  return Object.keys(map || {}).filter((k) => !unused[k]);
}

/** Remove from the request's set of unused keys those the parse used (gone from `unused`). */
function forget(requestUnused, map, unused) {
  if (!requestUnused) return;
  for (const k in map || {}) if (!unused[k]) delete requestUnused[k];
}

/**
 * A builder of copies of `tree` (a function of the request's values), each of the request's values
 * in its slot; or undefined when the tree must not be reused: it reads a value's content (BETWEEN,
 * attribute_type) or holds a part of a value other than the whole.
 */
function templateOf(tree, attrVals) {
  const slots = new Map();
  const inner = new Set();
  for (const k in attrVals || {}) {
    slots.set(attrVals[k], k);
    collect(attrVals[k], inner, true);
  }
  // The update parser lists each path twice (in its section and in `paths`): a copy shares it too.
  const seen = new Set();
  const shared = new Map();
  let reusable = true;
  const visit = (node) => {
    if (!node || typeof node !== 'object' || slots.has(node)) return;
    if (inner.has(node)) return void (reusable = false);
    if (node.type === 'between' || (node.type === 'function' && node.name === 'attribute_type')) reusable = false;
    if (seen.has(node)) return void (shared.has(node) || shared.set(node, shared.size));
    seen.add(node);
    for (const k of Object.keys(node)) visit(node[k]);
  };
  visit(tree);
  if (!reusable) return undefined;
  const builders = new Map();
  const compile = (node) => {
    if (!node || typeof node !== 'object') return () => node;
    if (slots.has(node)) {
      const key = slots.get(node);
      return (vals) => vals[key];
    }
    if (builders.has(node)) return builders.get(node);
    let build;
    if (Array.isArray(node)) {
      const parts = node.map(compile);
      build = (vals, memo) => {
        const out = new Array(parts.length);
        for (let i = 0; i < parts.length; i++) out[i] = parts[i](vals, memo);
        return out;
      };
    } else {
      const keys = Object.keys(node);
      const parts = keys.map((k) => compile(node[k]));
      const proto = Object.getPrototypeOf(node);
      build = (vals, memo) => {
        const out = proto === Object.prototype ? {} : Object.create(proto);
        for (let i = 0; i < keys.length; i++) out[keys[i]] = parts[i](vals, memo);
        return out;
      };
    }
    if (shared.has(node)) {
      const at = shared.get(node);
      const fresh = build;
      build = (vals, memo) => memo[at] || (memo[at] = fresh(vals, memo));
    }
    builders.set(node, build);
    return build;
  };
  const build = compile(tree);
  return (vals) => build(vals, new Array(shared.size));
}

/** Every object inside an attribute value (not the value itself, unless `skipTop` is false). */
function collect(value, into, skipTop) {
  if (!value || typeof value !== 'object') return;
  if (!skipTop) into.add(value);
  for (const k of Object.keys(value)) collect(value[k], into, false);
}

/** A request's own tree from a template: fresh objects and arrays, this request's values in the slots. */
function reuse(template, context) {
  for (const k of template.usedNames) if (context.unusedAttrNames) delete context.unusedAttrNames[k];
  for (const k of template.usedVals) if (context.unusedAttrVals) delete context.unusedAttrVals[k];
  return template.build(context.attrVals);
}

/** What a compiled check returns where dynalite's own check would throw or convert a value. */
const AS_DYNALITE = Symbol('as dynalite');

// dynalite's children of an AttrStruct (validations/index.js checkType).
const ATTRIBUTE_VALUE_CHILDREN = {
  S: 'String',
  B: 'Blob',
  N: 'String',
  BOOL: 'Boolean',
  NULL: 'Boolean',
  BS: { type: 'List', children: 'Blob' },
  NS: { type: 'List', children: 'String' },
  SS: { type: 'List', children: 'String' },
  L: { type: 'List', children: 'AttrStruct<ValueStruct>' },
  M: { type: 'Map<AttributeValue>', children: 'AttrStruct<ValueStruct>' },
};

/**
 * dynalite's checkTypes (a request's fields by their declared types: unknown and null fields
 * dropped, integers floored), compiled once per action's declaration instead of reading the
 * declaration at every node. It answers only requests whose every field already has its JSON
 * type; anything dynalite would convert ('true' for a Boolean) or refuse goes to dynalite's own
 * check, untouched, so every conversion and error is still dynalite's.
 */
function compiledCheckTypes(checkTypes) {
  const structs = new WeakMap();
  const bySpec = new WeakMap();
  const byName = new Map();
  const attrStructs = new Map();

  const struct = (types) => {
    if (!types || typeof types !== 'object') return () => AS_DYNALITE;
    let check = structs.get(types);
    if (check) return check;
    let keys;
    let checks;
    check = (data) => {
      if (!data || typeof data !== 'object' || Array.isArray(data)) return AS_DYNALITE;
      if (!checks) {
        keys = Object.keys(types);
        checks = keys.map((k) => spec(types[k]));
      }
      const out = {};
      for (let i = 0; i < keys.length; i++) {
        const v = data[keys[i]];
        if (v == null) continue;
        const checked = checks[i](v);
        if (checked === AS_DYNALITE) return AS_DYNALITE;
        if (checked != null) out[keys[i]] = checked;
      }
      return out;
    };
    structs.set(types, check);
    return check;
  };

  // A check of one declared type, given a non-null value (dynalite answers null for null first).
  const spec = (declared) => {
    const memo = typeof declared === 'string' ? byName : declared && typeof declared === 'object' ? bySpec : undefined;
    if (!memo) return () => AS_DYNALITE;
    let check = memo.get(declared);
    if (check) return check;
    let impl;
    check = (v) => impl(v);
    memo.set(declared, check);
    impl = compileSpec(declared);
    return check;
  };

  const orNull = (check) => (v) => (v == null ? null : check(v));

  const compileSpec = (declared) => {
    let children = declared.children;
    if (typeof children === 'string') children = { type: children };
    let type = declared.type ? declared.type : declared;
    if (typeof type !== 'string') return () => AS_DYNALITE;
    let subtype;
    const parts = type.match(/(.+?)<(.+)>$/);
    if (parts) {
      type = parts[1];
      subtype = parts[2];
    }
    switch (type) {
      case 'AttrStruct': {
        let check = attrStructs.get(subtype);
        if (!check) {
          let impl;
          check = (v) => impl(v);
          attrStructs.set(subtype, check);
          impl = spec({ type: `${subtype}<AttributeValue>`, children: ATTRIBUTE_VALUE_CHILDREN });
        }
        return check;
      }
      case 'Boolean':
        return (v) => (typeof v === 'boolean' ? v : AS_DYNALITE);
      case 'Short':
      case 'Integer':
      case 'Long':
        return (v) => (typeof v === 'number' ? Math.floor(v) : AS_DYNALITE);
      case 'Double':
        return (v) => (typeof v === 'number' ? v : AS_DYNALITE);
      case 'String':
        return (v) => (typeof v === 'string' ? v : AS_DYNALITE);
      case 'Blob':
        return (v) => (typeof v === 'string' && v.length % 4 === 0 && Buffer.from(v, 'base64').toString('base64') === v ? v : AS_DYNALITE);
      case 'List':
      case 'ParameterizedList': {
        if (!children) return () => AS_DYNALITE;
        const child = orNull(spec(children));
        return (v) => {
          if (!Array.isArray(v)) return AS_DYNALITE;
          const out = new Array(v.length);
          for (let i = 0; i < v.length; i++) if ((out[i] = child(v[i])) === AS_DYNALITE) return AS_DYNALITE;
          return out;
        };
      }
      case 'Map':
      case 'ParameterizedMap': {
        if (!children) return () => AS_DYNALITE;
        const child = orNull(spec(children));
        return (v) => {
          if (typeof v !== 'object' || Array.isArray(v)) return AS_DYNALITE;
          const out = {};
          for (const k of Object.keys(v)) if ((out[k] = child(v[k])) === AS_DYNALITE) return AS_DYNALITE;
          return out;
        };
      }
      case 'ValueStruct':
      case 'FieldStruct':
        return struct(children);
      default:
        // An unknown type: dynalite's own answer (an error).
        return () => AS_DYNALITE;
    }
  };

  const compiled = function (data, types) {
    const checked = struct(types)(data);
    return checked === AS_DYNALITE ? checkTypes.call(this, data, types) : checked;
  };
  compiled.compiled = true;
  compiled.AS_DYNALITE = AS_DYNALITE;
  return compiled;
}

module.exports = { install, compiledCheckTypes };
