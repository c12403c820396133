import * as validations from 'dynalite/validations';

// The local DynamoDB's compiled type check (local/dynamo-fast-paths.js) against dynalite's
// own, on requests of every operation: the same result, key order included, or the same error.
const { compiledCheckTypes } = jest.requireActual<{ compiledCheckTypes: (original: CheckTypes) => CheckTypes }>(
  '../../local/dynamo-fast-paths',
);

type CheckTypes = (data: unknown, types: Record<string, unknown>) => unknown;
type Spec = string | { type?: string; children?: Spec | Record<string, Spec> };

const OPERATIONS = [
  'BatchGetItem',
  'BatchWriteItem',
  'CreateTable',
  'DeleteItem',
  'DeleteTable',
  'DescribeTable',
  'DescribeTimeToLive',
  'GetItem',
  'ListTables',
  'PutItem',
  'Query',
  'Scan',
  'TagResource',
  'UntagResource',
  'ListTagsOfResource',
  'UpdateItem',
  'UpdateTable',
];
const typesOf = (op: string) =>
  jest.requireActual<{ types: Record<string, Spec> }>(`dynalite/validations/${validations.toLowerFirst(op)}`).types;

const compiled = compiledCheckTypes(validations.checkTypes);

/** dynalite's answer and the compiled one, each on its own copy (dynalite's deletes fields of its input). */
function both(data: unknown, types: Record<string, unknown>) {
  const run = (check: CheckTypes) => {
    try {
      return { result: JSON.stringify(check(structuredClone(data), types)) };
    } catch (err) {
      const e = err as { message: string; statusCode?: number; body?: unknown };
      return { error: e.message, statusCode: e.statusCode, body: e.body };
    }
  };
  return { dynalite: run(validations.checkTypes), compiled: run(compiled) };
}

/** A small seeded generator, so a failure replays. */
function random(seed: number) {
  let s = seed >>> 0;
  return () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
}

const ATTRIBUTE_TYPES = ['S', 'N', 'B', 'BOOL', 'NULL', 'SS', 'NS', 'BS', 'L', 'M'];
const ODD_VALUES: unknown[] = [null, 'true', 'no', 'x', '', 'AAAA', 'AAA', 1, 2.5, -3.7, true, false, [], [1], {}, { S: 'x' }];

/** A request shaped by `spec`, with some fields odd (wrong JSON types, convertible strings, unknown keys). */
function generate(spec: Spec | Record<string, Spec>, rnd: () => number, depth: number, odd: number): unknown {
  if (rnd() < odd) return ODD_VALUES[Math.floor(rnd() * ODD_VALUES.length)];
  const declared = typeof spec === 'string' ? { type: spec } : (spec as { type?: string; children?: Spec });
  if (!declared.type) return generateStruct(spec as Record<string, Spec>, rnd, depth, odd);
  const [outer, inner] = /^(.+?)<(.+)>$/.exec(declared.type)?.slice(1) ?? [declared.type, undefined];
  const children = declared.children;
  switch (outer) {
    case 'AttrStruct':
      return generateAttribute(rnd, depth, odd);
    case 'Boolean':
      return rnd() < 0.5;
    case 'Short':
    case 'Integer':
    case 'Long':
      return Math.floor(rnd() * 100) + (rnd() < 0.3 ? 0.5 : 0);
    case 'Double':
      return rnd() * 10;
    case 'String':
      return ['x', 'ALL', 'task_id', ':v'][Math.floor(rnd() * 4)];
    case 'Blob':
      return ['AAAA', 'YWJj', 'YWI='][Math.floor(rnd() * 3)];
    case 'List':
    case 'ParameterizedList':
      return depth > 3 ? [] : Array.from({ length: Math.floor(rnd() * 3) }, () => generate(children as Spec, rnd, depth + 1, odd));
    case 'Map':
    case 'ParameterizedMap':
      return depth > 3
        ? {}
        : Object.fromEntries(
            Array.from({ length: Math.floor(rnd() * 3) }, (_, i) => [`k${i}`, generate(children as Spec, rnd, depth + 1, odd)]),
          );
    case 'ValueStruct':
    case 'FieldStruct':
      return generateStruct(children as Record<string, Spec>, rnd, depth + 1, odd, inner);
    default:
      throw new Error(`no generator for ${declared.type}`);
  }
}

function generateStruct(types: Record<string, Spec>, rnd: () => number, depth: number, odd: number, _name?: string): unknown {
  const out: Record<string, unknown> = {};
  for (const [k, spec] of Object.entries(types)) if (rnd() < 0.6) out[k] = generate(spec, rnd, depth, odd);
  if (rnd() < 0.2) out.Unknown = 'dropped';
  if (rnd() < 0.1) out.Null = null;
  return out;
}

function generateAttribute(rnd: () => number, depth: number, odd: number): unknown {
  const type = ATTRIBUTE_TYPES[Math.floor(rnd() * (depth > 3 ? 8 : ATTRIBUTE_TYPES.length))];
  const value = (() => {
    switch (type) {
      case 'S':
      case 'N':
        return String(Math.floor(rnd() * 100));
      case 'B':
        return 'YWJj';
      case 'BOOL':
      case 'NULL':
        return rnd() < 0.5 || ['TRUE', 'yes', '0'][Math.floor(rnd() * 3)];
      case 'SS':
      case 'NS':
        return ['1', '2'];
      case 'BS':
        return ['AAAA'];
      case 'L':
        return Array.from({ length: Math.floor(rnd() * 3) }, () => generateAttribute(rnd, depth + 1, odd));
      default:
        return { a: generateAttribute(rnd, depth + 1, odd), b: generateAttribute(rnd, depth + 1, odd) };
    }
  })();
  return rnd() < odd ? { [type]: ODD_VALUES[Math.floor(rnd() * ODD_VALUES.length)] } : { [type]: value };
}

describe("the local DynamoDB's compiled type check (local/dynamo-fast-paths.js)", () => {
  it('answers the requests Ferry sends as dynalite does, key order included', () => {
    const requests: [string, unknown][] = [
      [
        'UpdateItem',
        {
          TableName: 'ferry-local-tasks',
          Key: { task_id: { S: 't1' } },
          UpdateExpression: 'SET #s = :to, transitions = list_append(if_not_exists(transitions, :initial), :t)',
          ConditionExpression: '#s IN (:f0, :f1)',
          ExpressionAttributeNames: { '#s': 'state' },
          ExpressionAttributeValues: {
            ':to': { S: 'done' },
            ':initial': { L: [] },
            ':t': { L: [{ M: { at: { S: 'now' }, n: { N: '1' }, ok: { BOOL: true }, nil: { NULL: true } } }] },
            ':f0': { S: 'a' },
            ':f1': { S: 'b' },
          },
          ReturnValues: 'ALL_NEW',
          ReturnConsumedCapacity: 'INDEXES',
        },
      ],
      [
        'BatchGetItem',
        {
          RequestItems: {
            shares: {
              Keys: [{ share_id: { S: 's1' } }, { share_id: { S: 's2' } }],
              ConsistentRead: true,
              ProjectionExpression: '#t',
              ExpressionAttributeNames: { '#t': 'tasks' },
            },
          },
        },
      ],
      [
        'Query',
        {
          TableName: 'tasks',
          IndexName: 'open-since-index',
          KeyConditionExpression: 'open_on = :e AND created_at < :b',
          ExpressionAttributeValues: { ':e': { S: 'e' }, ':b': { S: 'b' } },
          Limit: 100.7,
          ScanIndexForward: false,
          ExclusiveStartKey: { task_id: { S: 'x' } },
        },
      ],
      [
        'BatchWriteItem',
        {
          RequestItems: {
            tasks: [
              { PutRequest: { Item: { task_id: { S: 'x' }, payload: { B: 'YWJj' }, tags: { SS: ['a', 'b'] } } } },
              { DeleteRequest: { Key: { task_id: { S: 'y' } } } },
            ],
          },
          ReturnConsumedCapacity: 'TOTAL',
        },
      ],
      [
        'PutItem',
        { TableName: 'tasks', Item: { task_id: { S: 'x' }, n: { NS: ['1', '2'] } }, ConditionExpression: 'attribute_not_exists(task_id)' },
      ],
    ];
    for (const [op, data] of requests) {
      const { dynalite, compiled } = both(data, typesOf(op));
      expect(dynalite.result).toBeDefined();
      expect(compiled).toEqual(dynalite);
    }
  });

  it.each(OPERATIONS)('answers generated %s requests, odd ones too, as dynalite does', (op) => {
    const types = typesOf(op);
    for (let seed = 1; seed <= 400; seed++) {
      const rnd = random(seed * 7919 + op.length);
      const data = generate(types, rnd, 0, seed % 4 === 0 ? 0 : seed % 4 === 1 ? 0.02 : 0.1);
      const answers = both(data, types);
      expect({ seed, data, ...answers }).toEqual({ seed, data, dynalite: answers.dynalite, compiled: answers.dynalite });
    }
  });

  it('leaves bodies that are not objects to dynalite', () => {
    for (const data of [[], [1], 'x', 5, true]) {
      const { dynalite, compiled } = both(data, typesOf('GetItem'));
      expect(compiled).toEqual(dynalite);
    }
  });
});
