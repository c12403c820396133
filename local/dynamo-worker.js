'use strict';
/**
 * dynalite on a thread of its own (local/dynamo-thread.ts starts it): the local stack's process
 * keeps the socket, the signature checks and the handlers, and this thread does the storage work,
 * so the local DynamoDB uses a second core. Requests arrive already read and authenticated, as
 * messages `{ id, method, url, headers, body }`; each answer goes back as `{ id, status, headers, body }`.
 * Plain JavaScript: a worker thread runs without the TypeScript loader of its parent.
 */
const { parentPort, workerData } = require('node:worker_threads');
const { Readable } = require('node:stream');
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
      const bytes = body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(String(body), 'utf8');
      parentPort.postMessage({ id, status: this.statusCode, headers, body: bytes }, [bytes.buffer].filter((b) => b.byteLength === bytes.length));
    },
  };
}

parentPort.on('message', (msg) => {
  if (msg === 'close') return server.close(() => parentPort.postMessage('closed'));
  const req = Object.assign(Readable.from([Buffer.from(msg.body)]), { method: msg.method, url: msg.url, headers: msg.headers });
  handle(req, response(msg.id));
});
