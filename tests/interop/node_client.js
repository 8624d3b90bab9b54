// Interop peer: Node `ws` as a client of `pushwire serve`.
//
// Run by tests/interop.rs after scripts/setup-interop.sh installed `ws` here:
//
//     node node_client.js echo HOST:PORT             text, binary, 256 KiB, ping, close on /echo
//     node node_client.js channel HOST:PORT CHANNEL  subscribe with pushwire.v1, publish over HTTP
//     node node_client.js deflate HOST:PORT CHANNEL  permessage-deflate (RFC 7692) through a proxy
//                                                   that reads RSV1 of every frame on the wire
//
// Prints one line per check and "ok" at the end; exits non-zero on any failure or after 20 s.
'use strict';

const http = require('http');
const net = require('net');
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

// A TCP proxy in front of `addr` that parses the WebSocket frames (RFC 6455 §5.2) going each
// way after the opening handshake and records [direction, opcode, rsv1] per frame.
function frameSniffingProxy(addr) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
  const frames = [];
  const sniff = (direction, skipHead) => {
    let buf = Buffer.alloc(0);
    let inHead = skipHead;
    return (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (inHead) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        buf = buf.subarray(end + 4);
        inHead = false;
      }
      for (;;) {
        if (buf.length < 2) return;
        const masked = (buf[1] & 0x80) !== 0;
        let len = buf[1] & 0x7f;
        let at = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2);
          at = 4;
        } else if (len === 127) {
          if (buf.length < 10) return;
          len = Number(buf.readBigUInt64BE(2));
          at = 10;
        }
        at += masked ? 4 : 0;
        if (buf.length < at + len) return;
        frames.push([direction, buf[0] & 0x0f, (buf[0] & 0x40) !== 0]);
        buf = buf.subarray(at + len);
      }
    };
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(port, host);
    const up = sniff('to-server', true);
    const down = sniff('to-client', true);
    client.on('data', (c) => { up(c); upstream.write(c); });
    upstream.on('data', (c) => { down(c); client.write(c); });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () =>
    resolve({ addr: `127.0.0.1:${server.address().port}`, frames, server })));
}

async function deflate(addr, name) {
  const proxy = await frameSniffingProxy(addr);
  const doc = JSON.stringify({ items: Array.from({ length: 40 }, (_, i) => ({ id: i, symbol: 'ABC', price: 101.25 })) });
  check(doc.length > 1024, 'the document is above ws\'s 1 KiB compression threshold');
  const options = { handshakeTimeout: TIMEOUT_MS, maxPayload: 4 << 20, perMessageDeflate: true };
  const ws = new WebSocket(`ws://${proxy.addr}/echo`, options);
  // 'open' follows 'upgrade' in the same tick: listen for both first.
  const [[response]] = await Promise.all([next(ws, 'upgrade'), next(ws, 'open')]);
  const answer = response.headers['sec-websocket-extensions'] || '';
  check(answer.startsWith('permessage-deflate') && answer.includes('server_no_context_takeover')
    && answer.includes('client_no_context_takeover'), `permessage-deflate negotiated (${answer})`);
  ws.send(doc);
  const [echoed, echoedBinary] = await next(ws, 'message');
  check(!echoedBinary && echoed.toString() === doc, 'compressed echo inflated by ws');
  check(proxy.frames.some(([d, op, rsv1]) => d === 'to-server' && op === 1 && rsv1), 'RSV1 on ws\'s text frame to pushwire');
  check(proxy.frames.some(([d, op, rsv1]) => d === 'to-client' && op === 1 && rsv1), 'RSV1 on pushwire\'s echo');
  ws.close(1000);
  await next(ws, 'close');
  // Several subscribers through the proxy, one publish: each gets a compressed frame.
  proxy.frames.length = 0;
  const subscribers = [];
  for (let i = 0; i < 5; i++) {
    const sub = new WebSocket(`ws://${proxy.addr}/channels/${name}`, options);
    await next(sub, 'open');
    check(sub.extensions.startsWith('permessage-deflate'), `subscriber ${i} negotiated permessage-deflate`);
    subscribers.push(sub);
  }
  const received = subscribers.map((sub) => next(sub, 'message'));
  const pub = await request(addr, 'POST', `/channels/${name}`, doc);
  check(pub.status === 201, 'publish 1 KiB+ over HTTP');
  for (const [i, got] of (await Promise.all(received)).entries()) {
    check(!got[1] && got[0].toString() === doc, `subscriber ${i} inflated the broadcast`);
  }
  const broadcast = proxy.frames.filter(([d, op]) => d === 'to-client' && op === 1);
  check(broadcast.length === 5 && broadcast.every(([, , rsv1]) => rsv1), 'RSV1 on all 5 broadcast frames on the wire');
  for (const sub of subscribers) sub.close(1000);
  await Promise.all(subscribers.map((sub) => next(sub, 'close')));
  proxy.server.close();
}

const [mode, ...args] = process.argv.slice(2);
({ echo, channel, deflate })[mode](...args).then(() => { console.log('ok'); process.exit(0); }, fail);
