'use strict';
/**
 * Cheaper expressions for the local DynamoDB (dynalite): its PEG parsers (conditions, updates,
 * projections) ran for every request, yet Ferry sends the same few expression strings again and
 * again, only with other values; they were the largest part of the dynalite thread's time.
 * local/dynamo-worker.js installs this before dynalite loads, on its thread only.
 *
 * A parse is reused only where it cannot differ: the parse tree of an expression is a function of
 * its text, the whole of ExpressionAttributeNames and the type of each ExpressionAttributeValues
 * entry; the values themselves sit in the tree by reference (the parsers' resolveAttrVal), so a
 * reused tree is a fresh copy with this request's values in their slots. Two checks read a
 * value's content, BETWEEN's bounds and attribute_type's type name: trees holding them are never
 * reused. Failed parses (a string or a thrown SyntaxError) are never reused either, so every error
 * comes from dynalite's own parser. dynalite rewrites some trees after parsing (a key condition
 * written `:v = key` is turned around), hence a copy per request and a frozen template.
 * Plain JavaScript: a worker thread runs without the TypeScript loader of its parent.
 */

// Enough for every expression Ferry sends many times over; past it the cache starts again.
const MAX_TEMPLATES = 1000;

/** Where a request's value goes in a reused tree: ExpressionAttributeValues[key]. */
class ValueSlot {
  constructor(key) {
    this.key = key;
    Object.freeze(this);
  }
}

/** Hook dynalite's three expression parsers (their module objects, which its validations call through). */
function install() {
  for (const name of ['conditionParser', 'updateParser', 'projectionParser']) {
    memoize(require(`dynalite/db/${name}`));
  }
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
          templates.set(key, { tree: made, usedNames: usedKeys(context.attrNames, seen.unusedAttrNames), usedVals: usedKeys(context.attrVals, seen.unusedAttrVals) });
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
 * A frozen copy of `tree` with each of the request's values replaced by its slot, or undefined
 * when it must not be reused: it reads a value's content (BETWEEN, attribute_type) or holds a part
 * of a value other than the whole.
 */
function templateOf(tree, attrVals) {
  const slots = new Map();
  const inner = new Set();
  for (const k in attrVals || {}) {
    slots.set(attrVals[k], new ValueSlot(k));
    collect(attrVals[k], inner, true);
  }
  const copies = new Map();
  let reusable = true;
  const copy = (node) => {
    if (!node || typeof node !== 'object') return node;
    const slot = slots.get(node);
    if (slot) return slot;
    if (inner.has(node)) return (reusable = false), node;
    if (node.type === 'between' || (node.type === 'function' && node.name === 'attribute_type')) reusable = false;
    let out = copies.get(node);
    if (out) return out;
    out = Array.isArray(node) ? new Array(node.length) : Object.create(Object.getPrototypeOf(node));
    copies.set(node, out);
    for (const k of Object.keys(node)) out[k] = copy(node[k]);
    return Object.freeze(out);
  };
  const made = copy(tree);
  return reusable ? made : undefined;
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
  const vals = context.attrVals;
  const copies = new Map();
  const copy = (node) => {
    if (!node || typeof node !== 'object') return node;
    if (node instanceof ValueSlot) return vals[node.key];
    let out = copies.get(node);
    if (out) return out;
    if (Array.isArray(node)) {
      out = new Array(node.length);
      copies.set(node, out);
      for (let i = 0; i < node.length; i++) out[i] = copy(node[i]);
    } else {
      out = Object.create(Object.getPrototypeOf(node));
      copies.set(node, out);
      for (const k of Object.keys(node)) out[k] = copy(node[k]);
    }
    return out;
  };
  return copy(template.tree);
}

module.exports = { install };
