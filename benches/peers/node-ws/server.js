// A Node `ws` peer for benches/compare.sh: the same endpoints `pushwire bench` drives.
//
// Implements: GET /echo (WebSocket) echoes text and binary messages; GET /channels/NAME
// (WebSocket) subscribes to NAME; POST /channels/NAME sends the body as a text message to every
// subscriber of NAME (the broadcast loop of the `ws` README) and answers 201.
// Does not: keep history, or anything but what the benchmark needs. One Node process.
//
// Usage: node server.js 127.0.0.1:PORT; prints `node-ws listening on http://ADDR` when ready.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const MAX_BODY_BYTES = 64 * 1024;
const [host, port] = (process.argv[2] || '127.0.0.1:0').split(':');
const channels = new Map(); // name -> Set of WebSockets

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
const server = http.createServer((req, res) => {
  const name = req.url.startsWith('/channels/') ? req.url.slice('/channels/'.length) : null;
  if (req.method !== 'POST' || !name) {
    res.writeHead(404, { 'Content-Length': 0 }).end();
    return;
  }
  const parts = [];
  let length = 0;
  req.on('data', (part) => {
    length += part.length;
    if (length > MAX_BODY_BYTES) req.destroy();
    else parts.push(part);
  });
  req.on('end', () => {
    const body = Buffer.concat(parts);
    for (const ws of channels.get(name) || []) ws.send(body, { binary: false });
    res.writeHead(201, { 'Content-Length': 0 }).end();
  });
});

server.on('upgrade', (req, socket, head) => {
  socket.setNoDelay(true);
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (req.url === '/echo') {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    } else if (req.url.startsWith('/channels/')) {
      const name = req.url.slice('/channels/'.length);
      if (!channels.has(name)) channels.set(name, new Set());
      channels.get(name).add(ws);
      ws.on('close', () => channels.get(name).delete(ws));
    } else {
      ws.close(1008);
    }
  });
});

server.listen(Number(port), host, () => {
  const a = server.address();
  console.log(`node-ws listening on http://${a.address}:${a.port}`);
});
