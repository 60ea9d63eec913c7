// corefn warm host for Node.js handlers.
//
// A corefn worker starts this file as a long-lived child process,
// `node host.js MODULE_PATH HANDLER_NAME`. It loads the user's module once and
// then answers requests one at a time, in order, for as long as it lives.
//
// Protocol (the full specification is runtimes/PROTOCOL.md): every message is
// a frame, `u32 meta_len, u32 body_len` (big-endian), a UTF-8 JSON object and
// raw body bytes. Requests arrive on fd 3 and responses leave on fd 4. The
// first frame the host writes is {"ready": true}, or
// {"error": "cannot load handler: ..."} followed by exit 1. After that every
// request frame gets exactly one response frame: {"status", "headers"} plus
// the body, or {"error": "Name: message"} when the handler failed. End of
// file on fd 3 means the worker is done with this host: exit 0.
//
// What this host must never do:
//   * write protocol data to fd 1 or 2. Those are the function's log; the
//     handler's console.log goes there, and so does every stack.
//   * die because of a handler that throws, rejects or returns garbage: that
//     becomes an error frame and the next request is served as usual. Only a
//     broken protocol stream, or an exception nobody awaited (the process
//     state is then unknown, as Node itself decides), ends the host.
//   * run two requests at once: the worker counts on one request per host.
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');
const util = require('util');

const REQUEST_FD = 3;
const RESPONSE_FD = 4;
const MAX_META = 1 << 20;
const MAX_BODY = 64 << 20;
const ERROR_LIMIT = 300;
const EMPTY = Buffer.alloc(0);
const TEXT = 'text/plain; charset=utf-8';
const JSON_TYPE = 'application/json';
const OCTETS = 'application/octet-stream';

class BadResult extends Error {}

// --- Frames ------------------------------------------------------------------

// fs.writevSync keeps the response path free of event-loop turns and makes
// "written" mean written, so exiting right after a frame loses nothing.
// fd 4 may be non-blocking (pipe2 with O_NONBLOCK): then a full pipe gives
// EAGAIN, and we sleep a little and retry rather than spin.
const sleepCell = new Int32Array(new SharedArrayBuffer(4));

function writeAll(parts) {
  let backoff = 0.05;
  for (;;) {
    let written;
    try {
      written = fs.writevSync(RESPONSE_FD, parts);
    } catch (err) {
      if (err.code === 'EAGAIN') {
        Atomics.wait(sleepCell, 0, 0, backoff);
        backoff = Math.min(backoff * 2, 5);
        continue;
      }
      if (err.code === 'EPIPE') process.exit(0); // the worker is gone: nobody to answer
      throw err;
    }
    backoff = 0.05;
    while (parts.length && written >= parts[0].length) written -= parts.shift().length;
    if (!parts.length) return;
    parts[0] = parts[0].subarray(written);
  }
}

function sendFrame(meta, body = EMPTY) {
  const metaBytes = Buffer.from(JSON.stringify(meta));
  const head = Buffer.allocUnsafe(8);
  head.writeUInt32BE(metaBytes.length, 0);
  head.writeUInt32BE(body.length, 4);
  writeAll(body.length ? [head, metaBytes, body] : [head, metaBytes]);
}

function oneLine(text) {
  text = String(text).replace(/\s+/g, ' ').trim();
  return text.length > ERROR_LIMIT ? `${text.slice(0, ERROR_LIMIT - 3)}...` : text;
}

function isErrorLike(err) {
  return err !== null && typeof err === 'object' && typeof err.message === 'string';
}

function describe(err) {
  if (!isErrorLike(err)) return `non-Error value thrown: ${util.inspect(err)}`;
  const name = typeof err.name === 'string' && err.name ? err.name : 'Error';
  return err.message ? `${name}: ${err.message}` : name;
}

// Incremental frame parser over the chunks of the request stream. A frame
// that arrived in one chunk is sliced out of it without copying; only a frame
// spread over several chunks is concatenated, once, when it is complete.
class FrameParser {
  constructor() {
    this.chunks = [];
    this.buffered = 0;
  }

  push(chunk) {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  coalesce() {
    this.chunks = [Buffer.concat(this.chunks, this.buffered)];
  }

  // [meta, body] Buffers, or null until a whole frame is buffered. Throws on
  // lengths over the limits.
  next() {
    if (this.buffered < 8) return null;
    if (this.chunks[0].length < 8) this.coalesce();
    const head = this.chunks[0];
    const metaLen = head.readUInt32BE(0);
    const bodyLen = head.readUInt32BE(4);
    if (metaLen > MAX_META || bodyLen > MAX_BODY) {
      throw new RangeError(`frame too large: meta ${metaLen} bytes (limit ${MAX_META}), ` +
                           `body ${bodyLen} bytes (limit ${MAX_BODY})`);
    }
    const total = 8 + metaLen + bodyLen;
    if (this.buffered < total) return null;
    if (head.length < total) this.coalesce();
    const first = this.chunks[0];
    const meta = first.subarray(8, 8 + metaLen);
    const body = first.subarray(8 + metaLen, total);
    if (first.length === total) this.chunks.shift();
    else this.chunks[0] = first.subarray(total);
    this.buffered -= total;
    return [meta, body];
  }
}

// --- Request -----------------------------------------------------------------

// What a handler receives; see "Handler contracts" in PROTOCOL.md. Header and
// query objects have no prototype, so a query like `__proto__=x` is just a
// name. `body` is decoded on first use: a handler reading rawBody should not
// pay for turning megabytes of binary into a string.
class Request {
  constructor(meta, rawBody) {
    this.method = meta.method;
    this.path = meta.path;
    this.query = meta.query || '';
    this.queryStringParameters = parseQuery(this.query);
    this.headers = joinHeaders(meta.headers);
    this.rawBody = rawBody;
    this.remoteAddr = meta.remote_addr;
  }

  get body() {
    const text = this.rawBody.toString('utf8');
    Object.defineProperty(this, 'body', { value: text, enumerable: true });
    return text;
  }

  async json() {
    return JSON.parse(this.body);
  }

  async text() {
    return this.body;
  }
}

function parseQuery(query) {
  const params = Object.create(null);
  if (query) {
    for (const [name, value] of new URLSearchParams(query)) {
      if (!(name in params)) params[name] = value;
    }
  }
  return params;
}

function joinHeaders(pairs) {
  const headers = Object.create(null);
  if (pairs) {
    for (const [name, value] of pairs) {
      headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
    }
  }
  return headers;
}

// --- Response ----------------------------------------------------------------

function isBytes(value) {
  return ArrayBuffer.isView(value) || value instanceof ArrayBuffer;
}

function toBuffer(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

function headerPairs(headers) {
  const pairs = [];
  if (headers === undefined || headers === null) return pairs;
  if (typeof headers !== 'object') throw new BadResult(`handler returned headers of type ${typeof headers}`);
  // A Map or a fetch Headers object works as well as a plain object.
  const entries = typeof headers[Symbol.iterator] === 'function' ? headers : Object.entries(headers);
  for (const entry of entries) {
    const [name, value] = entry;
    if (value === undefined || value === null) continue;
    // An array value repeats the header (several set-cookie lines).
    for (const one of Array.isArray(value) ? value : [value]) {
      const type = typeof one;
      if (type !== 'string' && type !== 'number' && type !== 'boolean') {
        throw new BadResult(`handler returned header ${name}: ${util.inspect(one)}; expected a string`);
      }
      pairs.push([String(name), String(one)]);
    }
  }
  return pairs;
}

function bodyBytes(body) {
  if (typeof body === 'string') return [Buffer.from(body), TEXT];
  if (body === undefined || body === null) return [EMPTY, null];
  if (isBytes(body)) return [toBuffer(body), OCTETS];
  const json = JSON.stringify(body);
  if (json === undefined) throw new BadResult(`handler returned a body of type ${typeof body}`);
  return [Buffer.from(json), JSON_TYPE];
}

// [status, header pairs, body Buffer] for a handler's result.
function toResponse(result) {
  if (result === undefined || result === null) return [204, [], EMPTY];
  let status = 200;
  let pairs = [];
  let body = result;
  if (typeof result === 'string' || isBytes(result) || Array.isArray(result)) {
    // Bare bodies: not a {statusCode, headers, body} object.
  } else if (typeof result === 'object') {
    if (result.statusCode !== undefined) status = result.statusCode;
    if (!Number.isInteger(status) || status < 100 || status > 599) {
      throw new BadResult(`handler returned statusCode ${util.inspect(status)}; expected an integer in 100..599`);
    }
    pairs = headerPairs(result.headers);
    body = result.body;
  } else {
    throw new BadResult(`handler returned ${typeof result}`);
  }
  const [data, defaultType] = bodyBytes(body);
  // An empty body gets no type, so a 204 or 304 stays bare.
  if (data.length && defaultType && !pairs.some(([name]) => name.toLowerCase() === 'content-type')) {
    pairs.push(['content-type', defaultType]);
  }
  return [status, pairs, data];
}

// --- Host --------------------------------------------------------------------

let inFlight = false; // a request has been read and not yet answered
// The id of the request being served, echoed in its reply: the worker takes
// only the reply to the request it sent, so nothing a handler writes to fd 4
// itself can pass for the answer to another request.
let callId = null;

// The answer to the request being served, carrying its id when it had one.
function reply(meta, body) {
  sendFrame(callId === null ? meta : { id: callId, ...meta }, body);
}

async function serve(handler, metaBytes, body) {
  let request;
  callId = null;
  try {
    const fields = JSON.parse(metaBytes.toString('utf8'));
    callId = fields.id === undefined ? null : fields.id;
    request = new Request(fields, body);
  } catch (err) {
    // A worker bug, but the frame was read whole: stay in sync, go on.
    const line = oneLine(`bad request meta: ${describe(err)}`);
    console.error(`corefn node host: ${line}`);
    reply({ error: line });
    return;
  }
  inFlight = true;
  let status, headers, data;
  try {
    [status, headers, data] = toResponse(await handler(request));
  } catch (err) {
    if (err instanceof BadResult) {
      console.error(`corefn: ${err.message}`);
      reply({ error: oneLine(err.message) });
    } else {
      console.error(err);
      reply({ error: oneLine(describe(err)) });
    }
    return;
  } finally {
    inFlight = false;
  }
  reply({ status, headers }, data);
}

// Pipes and socketpairs go through a libuv pipe handle (epoll, like piped
// process.stdin): it works whether or not the fd is non-blocking, and costs no
// thread-pool hop per read (fs.createReadStream's hop made a hello round trip
// 70-85 us instead of 15-30 us). A regular file (a recorded request stream,
// when debugging by hand) is read with a file stream.
function openRequests() {
  const stat = fs.fstatSync(REQUEST_FD);
  if (stat.isFIFO() || stat.isSocket()) {
    return new net.Socket({ fd: REQUEST_FD, readable: true, writable: false, allowHalfOpen: true });
  }
  return fs.createReadStream(null, { fd: REQUEST_FD, highWaterMark: 64 << 10, autoClose: false });
}

function run(handler) {
  const parser = new FrameParser();
  const input = openRequests();
  let running = false;
  let ended = false;

  // Serves every complete buffered frame, strictly one after the other; new
  // chunks that arrive meanwhile only queue up behind the current request.
  async function pump() {
    running = true;
    for (;;) {
      let frame;
      try {
        frame = parser.next();
      } catch (err) {
        console.error(`corefn node host: ${err.message}; exiting`);
        sendFrame({ error: oneLine(err.message) });
        process.exit(1);
      }
      if (frame === null) break;
      await serve(handler, frame[0], frame[1]);
    }
    running = false;
    if (ended) finish();
  }

  function finish() {
    if (parser.buffered) {
      console.error('corefn node host: end of file inside a frame; exiting');
      process.exit(1);
    }
    // Explicit: timers or sockets the handler left open must not keep a
    // retired host alive.
    process.exit(0);
  }

  input.on('data', (chunk) => {
    parser.push(chunk);
    if (!running) pump();
  });
  input.on('end', () => {
    ended = true;
    if (!running) finish();
  });
  input.on('error', (err) => {
    console.error('corefn node host: reading fd 3 failed:', err);
    process.exit(1);
  });
}

async function loadHandler(modulePath, name) {
  let mod;
  try {
    mod = require(modulePath);
  } catch (err) {
    if (!err || err.code !== 'ERR_REQUIRE_ESM') throw err;
    // An .mjs file or a "type": "module" package cannot be required.
    mod = await import(require('url').pathToFileURL(modulePath).href);
  }
  let fn = mod !== null && mod !== undefined ? mod[name] : undefined;
  if (typeof fn !== 'function' && name === 'handler') {
    if (typeof mod === 'function') fn = mod; // module.exports = async (req) => ...
    else if (mod && typeof mod.default === 'function') fn = mod.default; // export default
  }
  if (typeof fn !== 'function') {
    throw new TypeError(`${path.basename(modulePath)} exports no function "${name}"`);
  }
  return fn;
}

function loadFailure(err) {
  if (!isErrorLike(err)) return describe(err);
  let message = err.message;
  // "Cannot find module 'x'\nRequire stack:\n- host.js": the stack is ours.
  if (err.code === 'MODULE_NOT_FOUND') message = message.split('\n')[0];
  let line = message ? `${err.name || 'Error'}: ${message}` : describe(err);
  // V8 keeps a syntax error's location out of the message; the first line of
  // the stack is "file:line".
  if (err.name === 'SyntaxError' && typeof err.stack === 'string') {
    const where = /^(.+):(\d+)$/.exec(err.stack.split('\n')[0]);
    if (where) line += ` (${path.basename(where[1])}:${where[2]})`;
  }
  return line;
}

function onFatal(err, origin) {
  // An exception or rejection nobody awaited: the handler's state is unknown,
  // so, like plain Node, stop. The request in flight, if any, gets an answer.
  const what = origin === 'unhandledRejection' ? 'unhandled rejection' : 'uncaught exception';
  console.error(`corefn node host: ${what}, exiting:`, err);
  if (inFlight) {
    inFlight = false;
    try {
      reply({ error: oneLine(describe(err)) });
    } catch (writeErr) {
      console.error(writeErr);
    }
  }
  process.exit(1);
}

async function main() {
  process.on('uncaughtException', onFatal);
  const [modulePath, handlerName] = process.argv.slice(2);
  if (!modulePath) {
    console.error('usage: node host.js MODULE_PATH [HANDLER_NAME]');
    sendFrame({ error: 'cannot load handler: no MODULE_PATH argument' });
    process.exit(1);
  }
  let handler;
  try {
    handler = await loadHandler(path.resolve(modulePath), handlerName || 'handler');
  } catch (err) {
    console.error(err);
    sendFrame({ error: oneLine(`cannot load handler: ${loadFailure(err)}`) });
    process.exit(1);
  }
  sendFrame({ ready: true });
  run(handler);
}

main();
