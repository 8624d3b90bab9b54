// Interop peer: Node `ws` as an echo server for pushwire's client (client::WsClient).
//
//     node node_server.js   listens on 127.0.0.1 (a free port), prints "listening PORT", echoes
//                           every message (text as text, binary as binary); exits after 30 s
'use strict';

const { WebSocketServer } = require('ws');

const server = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: 4 << 20 });
server.on('listening', () => console.log(`listening ${server.address().port}`));
server.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('close', (code) => console.log(`client closed with ${code}`));
});
setTimeout(() => process.exit(0), 30000);
