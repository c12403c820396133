'use strict';
/**
 * Ferry's node runtime: a long-lived process, forked by RuntimePool, that runs one task at a time.
 * Plain CommonJS so it starts the same under tsx, jest or plain node, with no loader.
 *
 * Protocol (see frames.ts): requests arrive on fd 3, replies leave on fd 4; each frame is a u32be
 * length, a u32be header length, a JSON header and the raw body. fd 1 and 2 belong to the user.
 */
const { spawnSync } = require('node:child_process');
const { readFileSync } = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const util = require('node:util');
const v8 = require('node:v8');
const vm = require('node:vm');
const { createRequire } = require('node:module');
const { Worker } = require('node:worker_threads');

const REQUEST_FD = 3;
const REPLY_FD = 4;
const FUNCTION_FILENAME = '<ferry function>';
const ownGroup = process.argv.includes('--own-group');
// Taken before any task runs: a task that patches JSON must not break this process's protocol.
const jsonStringify = JSON.stringify;
const jsonParse = JSON.parse;

// --- parent death: never outlive the pool ----------------------------------------------------

function die() {
  // The runner leads its own process group, so this takes the task's subprocesses along.
  if (ownGroup) {
    try {
      process.kill(-process.pid, 'SIGKILL');
    } catch {
      /* fall through */
    }
  }
  process.exit(0);
}

process.on('disconnect', die);
// A task stuck in synchronous code blocks this thread's event loop, so a watchdog thread polls
// the parent pid as well and kills the process group when the pool's process is gone.
const watchdog = new Worker(
  `const { workerData: w } = require('node:worker_threads');
   setInterval(() => {
     if (process.ppid !== w.ppid) { try { process.kill(w.group ? -w.pid : w.pid, 'SIGKILL'); } catch {} }
   }, 500);`,
  { eval: true, workerData: { ppid: process.ppid, pid: process.pid, group: ownGroup }, stdout: false, stderr: false },
);
watchdog.unref();

// vm's main-context loader is what makes `await import()` work inside the function; it is flagged
// experimental in node 20 and would print a warning into the user's stderr on first use.
const emitWarning = process.emitWarning;
process.emitWarning = function (warning, ...rest) {
  const text = typeof warning === 'string' ? warning : warning && warning.message;
  if (typeof text === 'string' && text.includes('USE_MAIN_CONTEXT_DEFAULT_LOADER')) return;
  return emitWarning.call(process, warning, ...rest);
};

// --- framing ---------------------------------------------------------------------------------

const replies = new net.Socket({ fd: REPLY_FD, readable: false, writable: true });
replies.on('error', die);

function send(header, body = Buffer.alloc(0)) {
  const head = Buffer.from(jsonStringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeUInt32BE(4 + head.length + body.length, 0);
  prefix.writeUInt32BE(head.length, 4);
  replies.write(Buffer.concat([prefix, head, body]));
}

const requests = new net.Socket({ fd: REQUEST_FD, readable: true, writable: false });
let pending = Buffer.alloc(0);
const queue = [];
let running = false;

requests.on('data', (chunk) => {
  pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
  while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32BE(0)) {
    const length = pending.readUInt32BE(0);
    const headLength = pending.readUInt32BE(4);
    const header = jsonParse(pending.subarray(8, 8 + headLength).toString('utf8'));
    queue.push({ header, body: pending.subarray(8 + headLength, 4 + length) });
    pending = pending.subarray(4 + length);
  }
  void drain();
});
requests.on('end', die);
requests.on('error', die);

async function drain() {
  if (running) return;
  running = true;
  while (queue.length) {
    const { header, body } = queue.shift();
    const reply = await runTask(header, body);
    endOutput(header.endMark);
    send({ op: 'reply', id: header.id, ...reply.header }, reply.body);
  }
  running = false;
}

/**
 * Marks the end of a task's output in its stdout and stderr, after all it wrote there, so the pool
 * can tell this task's output from the next one's however far its reading lags (the mark comes
 * from the pool with each task and is stripped from what the user sees).
 */
function endOutput(mark) {
  if (typeof mark !== 'string' || !mark) return;
  for (const stream of [process.stdout, process.stderr]) {
    try {
      stream.write(mark);
    } catch {
      /* the task closed it: the pool stops waiting after a moment */
    }
  }
}

// --- codecs ----------------------------------------------------------------------------------

function decodeArgs(codec, body) {
  let decoded;
  if (codec === 'json') decoded = body.length ? jsonParse(body.toString('utf8')) : {};
  // node's v8 serializer keeps Date, Map, Set, BigInt, typed arrays, and Buffer as Buffer.
  else if (codec === 'node-v8') decoded = body.length ? v8.deserialize(body) : {};
  else throw new Error(`the node runtime cannot read the ${codec} codec; use json or node-v8`);
  if (decoded === null || typeof decoded !== 'object') throw new Error('arguments must be an object {args, kwargs}');
  const args = decoded.args === undefined ? [] : decoded.args;
  const kwargs = decoded.kwargs === undefined || decoded.kwargs === null ? {} : decoded.kwargs;
  if (!Array.isArray(args)) throw new Error('args must be an array');
  if (typeof kwargs !== 'object' || Array.isArray(kwargs)) throw new Error('kwargs must be an object');
  return { args, kwargs };
}

class SerializationError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SerializationError';
  }
}

const where = (p) => (p === '' ? 'the result' : `the result at ${p}`);

/** JSON.stringify silently drops or rewrites what it cannot represent; a result must not be. */
function toStrictJson(result) {
  const paths = new Map();
  const text = jsonStringify(result === undefined ? null : result, function (key, value) {
    const parentPath = paths.get(this) ?? '';
    const p =
      this === undefined || (key === '' && !paths.has(this)) ? '' : Array.isArray(this) ? `${parentPath}[${key}]` : `${parentPath}.${key}`;
    const hint = '; return plain data or use the node-v8 codec';
    switch (typeof value) {
      case 'bigint':
        throw new SerializationError(`${where(p)} is a BigInt, which JSON cannot represent${hint}`);
      case 'function':
        throw new SerializationError(`${where(p)} is a function, which JSON cannot represent${hint}`);
      case 'symbol':
        throw new SerializationError(`${where(p)} is a symbol, which JSON cannot represent${hint}`);
      case 'number':
        if (!Number.isFinite(value)) throw new SerializationError(`${where(p)} is ${value}, which JSON cannot represent${hint}`);
        break;
      case 'object':
        if (value === null) break;
        if (value instanceof Map || value instanceof Set || ArrayBuffer.isView(value) || value instanceof ArrayBuffer) {
          const kind = value.constructor ? value.constructor.name : 'object';
          throw new SerializationError(`${where(p)} is a ${kind}, which JSON would turn into a plain object${hint}`);
        }
        paths.set(value, p);
        break;
      default:
        break;
    }
    return value;
  });
  return Buffer.from(text, 'utf8');
}

function encodeResult(codec, result) {
  if (codec === 'json') {
    try {
      return toStrictJson(result);
    } catch (err) {
      if (err instanceof SerializationError) throw err;
      // e.g. "Converting circular structure to JSON"
      throw new SerializationError(`the result cannot be encoded as JSON: ${err.message}`);
    }
  }
  try {
    return v8.serialize(result);
  } catch (err) {
    throw new SerializationError(`the result cannot be encoded with the node-v8 codec: ${err.message}`);
  }
}

// --- evaluating the function -----------------------------------------------------------------

const taskRequire = createRequire(path.join(process.cwd(), FUNCTION_FILENAME));
// Compiled scripts are reused between tasks; running one yields a fresh function each time.
const scripts = new Map();
const SCRIPT_CACHE_SIZE = 64;

function compile(source) {
  let script = scripts.get(source);
  if (script) {
    scripts.delete(source);
  } else {
    // `(${source})` makes a named function declaration an expression; a trailing `;` would not parse.
    const body = source.trim().replace(/;+$/, '');
    script = new vm.Script(`(function (require, module, exports, __filename, __dirname) { return (\n${body}\n); })`, {
      filename: FUNCTION_FILENAME,
      lineOffset: -1,
      importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
    });
    if (scripts.size >= SCRIPT_CACHE_SIZE) scripts.delete(scripts.keys().next().value);
  }
  scripts.set(source, script);
  const module = { exports: {} };
  return script.runInThisContext()(taskRequire, module, module.exports, FUNCTION_FILENAME, process.cwd());
}

// --- running a task --------------------------------------------------------------------------

function typeOf(err) {
  const ctor = err.constructor && typeof err.constructor.name === 'string' ? err.constructor.name : '';
  if (typeof err.name === 'string' && err.name && err.name !== 'Error') return err.name;
  if (ctor && ctor !== 'Object') return ctor;
  return typeof err.name === 'string' && err.name ? err.name : 'Error';
}

/** The stack down to the user's outermost frame: what called the function is the runner's business. */
function tracebackOf(err) {
  const stack = typeof err.stack === 'string' ? err.stack : `${typeOf(err)}: ${err.message}`;
  let lines = stack.split('\n');
  const isFrame = (line) => /^\s+at /.test(line);
  let lastUserFrame = -1;
  lines.forEach((line, i) => {
    if (isFrame(line) && line.includes(FUNCTION_FILENAME)) lastUserFrame = i;
  });
  if (lastUserFrame >= 0) lines = lines.filter((line, i) => i <= lastUserFrame || !isFrame(line));
  else lines = lines.filter((line) => !line.includes(module.filename));
  let text = lines.join('\n');
  if (err.cause !== undefined) text += `\n[cause]: ${util.inspect(err.cause, { depth: 4 })}`;
  return text;
}

function failure(type, message, traceback = `${type}: ${message}`) {
  return { header: { ok: false, error: { type, message, traceback } }, body: Buffer.alloc(0) };
}

function errorReply(thrown, codec) {
  const isErrorLike = thrown !== null && typeof thrown === 'object' && typeof thrown.message === 'string';
  if (!isErrorLike) {
    const message = `the function threw a ${thrown === null ? 'null' : typeof thrown}, not an Error: ${util.inspect(thrown, { depth: 4, breakLength: Infinity })}`;
    return failure('ThrownValue', message);
  }
  const reply = failure(typeOf(thrown), thrown.message, tracebackOf(thrown));
  if (codec === 'node-v8') {
    // The error itself, so an SDK can rethrow it with its own name, message and stack.
    try {
      reply.body = v8.serialize(thrown);
      reply.header.payloadCodec = 'node-v8';
    } catch {
      /* not serialisable: the type, message and traceback still say what happened */
    }
  }
  return reply;
}

// --- memory cap without cgroups ----------------------------------------------------------------

/** RLIMIT_DATA's soft limit now, in bytes (Infinity when unlimited), or undefined when unreadable. */
function dataSoftLimit() {
  try {
    const m = /^Max data size\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!m) return undefined;
    return m[1] === 'unlimited' ? Infinity : Number(m[1]);
  } catch {
    return undefined;
  }
}

/**
 * Without cgroups the pool sends each task's cap (bytes), and this process lowers (or raises, up
 * to the hard limit it was started with) its own RLIMIT_DATA soft limit before the task runs. node
 * has no setrlimit: a prlimit of the same uid, in the same pid namespace, sets it on this pid, which
 * needs no capability. Only when it differs, so tasks at one cap pay nothing. An error, or undefined.
 */
function applyDataLimit(bytes) {
  if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes <= 0) return undefined;
  if (dataSoftLimit() === bytes) return undefined;
  const out = spawnSync('prlimit', [`--pid=${process.pid}`, `--data=${bytes}:`], {
    env: { PATH: '/usr/bin:/bin:/usr/sbin:/sbin' },
    encoding: 'utf8',
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: 10_000,
  });
  if (out.status === 0 && dataSoftLimit() === bytes) return undefined;
  const why = (out.error && out.error.message) || String(out.stderr || '').trim() || `exit ${out.status}`;
  return failure(
    'MemoryLimitUnavailable',
    `the task's memory cap of ${Math.round(bytes / 1048576)} MB could not be set (prlimit: ${why}); the task did not run`,
  );
}

async function runTask(header, body) {
  const codec = header.codec;
  const unlimited = applyDataLimit(header.dataLimit);
  if (unlimited) return unlimited;
  let call;
  try {
    call = decodeArgs(codec, body);
  } catch (err) {
    return failure('DeserializationError', `the arguments cannot be decoded with the ${codec} codec: ${err.message}`);
  }
  let result;
  try {
    const fn = compile(String(header.source));
    if (typeof fn !== 'function') {
      return failure('TypeError', `the source evaluates to ${fn === null ? 'null' : typeof fn}, not a function`);
    }
    const args = Object.keys(call.kwargs).length ? [...call.args, call.kwargs] : call.args;
    result = await fn(...args);
  } catch (thrown) {
    return errorReply(thrown, codec);
  }
  try {
    return { header: { ok: true, codec }, body: encodeResult(codec, result) };
  } catch (err) {
    return failure('SerializationError', err.message);
  }
}

send({ op: 'ready', pid: process.pid, runtime: 'node', version: process.version });
