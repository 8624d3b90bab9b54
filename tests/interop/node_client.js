// Interop peer: Node `ws` as a client of `pushwire serve`.
//
// Run by tests/interop.rs after scripts/setup-interop.sh installed `ws` here:
//
//     node node_client.js echo HOST:PORT             text, binary, 256 KiB, ping, close on /echo
//     node node_client.js channel HOST:PORT CHANNEL  subscribe with pushwire.v1, publish over HTTP
//
// Prints one line per check and "ok" at the end; exits non-zero on any failure or after 20 s.
'use strict';

const http = require('http');
const WebSocket = require('ws');

const TIMEOUT_MS = 10000;
setTimeout(() => fail(new Error('timed out')), 2 * TIMEOUT_MS);

function fail(err) {
  console.error(`FAILED: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
}

function check(cond, what) {
  if (!cond) fail(new Error(what));
  console.log(`passed: ${what}`);
}

function request(addr, method, path, body) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), addr.slice(addr.lastIndexOf(':') + 1)];
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path, timeout: TIMEOUT_MS,
      headers: body === undefined ? {} : { 'Content-Type': 'text/plain' } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    });
    req.on('timeout', () => req.destroy(new Error('HTTP timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

// Resolves with the next event of `type` from `ws`, rejects on error or early close.
function next(ws, type) {
  return new Promise((resolve, reject) => {
    const done = (fn, v) => { ws.off(type, onEvent); ws.off('error', onError); fn(v); };
    const onEvent = (...args) => done(resolve, args);
    const onError = (e) => done(reject, e);
    ws.once(type, onEvent);
    ws.once('error', onError);
  });
}

function open(url, protocols) {
  const ws = new WebSocket(url, protocols, { handshakeTimeout: TIMEOUT_MS, maxPayload: 4 << 20 });
  return next(ws, 'open').then(() => ws);
}

async function echo(addr) {
  const ws = await open(`ws://${addr}/echo`);
  for (const msg of ['héllo ✓', Buffer.from([0, 1, 2, 255]), Buffer.alloc(256 * 1024, 7)]) {
    const binary = Buffer.isBuffer(msg);
    ws.send(msg, { binary });
    const [data, isBinary] = await next(ws, 'message');
    const same = binary ? isBinary && Buffer.compare(data, msg) === 0 : !isBinary && data.toString() === msg;
    check(same, `echo of ${binary ? `${msg.length} binary bytes` : 'text'}`);
  }
  ws.ping(Buffer.from('node'));
  const [pong] = await next(ws, 'pong');
  check(pong.toString() === 'node', 'pong for a ping');
  ws.close(1000, 'done');
  const [code] = await next(ws, 'close');
  check(code === 1000, `closing handshake answered with 1000 (got ${code})`);
}

async function channel(addr, name) {
  const poll = await request(addr, 'GET', `/channels/${name}`);
  check(poll.status === 200, 'short poll for the current cursor');
  const since = encodeURIComponent(JSON.parse(poll.body).next);
  // Listen before the handshake completes: the subscription's opening frame follows the 101 at
  // once and may arrive in the same read.
  const ws = new WebSocket(`ws://${addr}/channels/${name}?since=${since}`, ['pushwire.v1'],
    { handshakeTimeout: TIMEOUT_MS, maxPayload: 4 << 20 });
  const opening = next(ws, 'message');
  await next(ws, 'open');
  check(ws.protocol === 'pushwire.v1', 'pushwire.v1 selected');
  const [first] = await opening;
  const opened = JSON.parse(first.toString());
  check(opened.type === 'open' && opened.next === JSON.parse(poll.body).next, 'subscription opens with its cursor');
  const message = next(ws, 'message');
  const pub = await request(addr, 'POST', `/channels/${name}`, 'from node');
  check(pub.status === 201, 'publish over HTTP');
  const [data, isBinary] = await message;
  const envelope = JSON.parse(data.toString());
  check(!isBinary && envelope.data === 'from node', 'envelope carries the data');
  check(envelope.id === JSON.parse(pub.body).id, 'envelope carries the message id');
  ws.close(1000);
  const [code] = await next(ws, 'close');
  check(code === 1000, 'closing handshake answered with 1000');
}

const [mode, ...args] = process.argv.slice(2);
({ echo, channel })[mode](...args).then(() => { console.log('ok'); process.exit(0); }, fail);
