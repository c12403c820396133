'use strict';
/**
 * dynalite on a thread of its own (local/dynamo-thread.ts starts it): the local stack's process
 * keeps the socket, the signature checks and the handlers, and this thread does the storage work,
 * so the local DynamoDB uses a second core. Requests arrive already read and authenticated, as
 * arrays of `{ id, method, url, headers, body }`; answers go back as arrays of `{ id, status, headers, body }`.
 * Plain JavaScript: a worker thread runs without the TypeScript loader of its parent.
 */
const { EventEmitter } = require('node:events');
const { parentPort, workerData } = require('node:worker_threads');
// Before dynalite's first request: its expression parsers reuse the trees of repeated expressions.
require('./dynamo-fast-paths').install();
const dynalite = require('dynalite');

const server = dynalite(workerData.options);
const handle = server.listeners('request')[0];
// dynalite closes its store (LevelDB's files and lock) only through its server's close(), and
// that only once it has listened: it listens on a loopback port nothing is told of.
server.listen(0, '127.0.0.1');

/** What dynalite uses of a ServerResponse, collected into one message. */
function response(id) {
  const headers = {};
  return {
    statusCode: 200,
    setHeader(name, value) {
      headers[name.toLowerCase()] = String(value);
    },
    getHeader(name) {
      return headers[name.toLowerCase()];
    },
    writeHead(status, more) {
      this.statusCode = status;
      for (const [k, v] of Object.entries(more || {})) this.setHeader(k, v);
      return this;
    },
    end(body) {
      if (this.ended) return;
      this.ended = true;
      const bytes = body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(String(body), 'utf8');
      answered({ id, status: this.statusCode, headers, body: bytes });
    },
  };
}

/** An error answer in DynamoDB's JSON shape. */
function answer(res, status, type, message) {
  const body = JSON.stringify({ __type: type, message });
  res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0', 'content-length': String(Buffer.byteLength(body)) });
  res.end(body);
}

/**
 * A body that is JSON but not an object (`null`, a number, a list): DynamoDB refuses it as a
 * SerializationException; dynalite would read members of it, and `null` would throw.
 */
function notAnObject(body) {
  let i = 0;
  while (i < body.length && (body[i] === 0x20 || body[i] === 0x0a || body[i] === 0x0d || body[i] === 0x09)) i++;
  if (i === body.length || body[i] === 0x7b /* { */) return false;
  try {
    JSON.parse(body.toString('utf8'));
    return true;
  } catch {
    return false; // not JSON at all: dynalite's own SerializationException
  }
}

/**
 * Answers go back together, once per turn of this thread's event loop: a message between threads
 * costs far more than its bytes (waking the other thread), so a busy stack pays it once for many
 * calls. A body that owns its whole buffer is moved, not copied.
 */
let outbox = [];
let transfers = [];
function answered(answer) {
  if (answer.body.byteOffset === 0 && answer.body.byteLength === answer.body.buffer.byteLength) transfers.push(answer.body.buffer);
  if (outbox.push(answer) === 1) setImmediate(sendAnswers);
}
function sendAnswers() {
  const batch = outbox;
  const moved = transfers;
  outbox = [];
  transfers = [];
  parentPort.postMessage(batch, moved);
}

parentPort.on('message', (msg) => {
  if (msg === 'close') return server.close(() => parentPort.postMessage('closed'));
  for (const one of msg) serve(one);
});

/** One request of a batch (local/dynamo-thread.ts sends them as an array). */
function serve(msg) {
  const body = Buffer.from(msg.body);
  const res = response(msg.id);
  if (notAnObject(body))
    return answer(res, 400, 'com.amazon.coral.service#SerializationException', 'Start of structure or map found where not expected');
  // The request's events fire here, not a tick later: what dynalite throws while it reads and
  // checks a request is this request's 500, never the thread's end.
  const req = Object.assign(new EventEmitter(), { method: msg.method, url: msg.url, headers: msg.headers });
  try {
    handle(req, res);
    req.emit('data', body);
    req.emit('end');
  } catch (err) {
    console.error('local DynamoDB: a request failed inside dynalite', err);
    if (!res.ended) answer(res, 500, 'com.amazonaws.dynamodb.v20120810#InternalServerError', 'local DynamoDB failed on this request');
  }
}
