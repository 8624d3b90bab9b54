// Browser tests: Debian's Chromium, driven by playwright-core, against the real pushwire binary.
//
// Checks: the demo page's five panels (one transport each) receive what is published over HTTP;
// pushwire.js falls back when a transport is refused (403 from `--disable`), when a stream's
// first byte never comes (a buffering proxy), and when a WebSocket that worked is cut and then
// refused mid-stream, delivering ids 1..N exactly once and in order across the switch; the demo
// page over https:// (`--tls-cert`, a test CA made here with openssl and trusted by its SPKI
// hash) receiving over wss:// with permessage-deflate (RSV1 frames counted by the server) and SSE.
// PushwireClient (rooms): three channels on one connection per transport, resuming each channel
// exactly after the proxy drops and refuses everything, with a gap on exactly the channel past
// its history; the chain WebSocket -> SSE -> long poll with three channels; exceptSelf, presence
// and join/leave; a bare EventSource on two channels resuming by itself (composite
// Last-Event-ID); the chat demo with two pages in rooms (messages per room, member lists on
// join, leave and page close; a screenshot of a member list in target/browser/chat-members.png);
// PushwireClient on two nodes sharing a real redis-server (commands pipelined on one connection,
// messages, exceptSelf and presence across the nodes).
// Saves a screenshot of the demo page to target/browser/demo.png.
//
// Run: scripts/setup-browser.sh once, `cargo build`, then `npm test` here (or scripts/test.sh).
// Missing Chromium or node_modules fails the run; nothing is skipped.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BINARY = join(ROOT, "target/debug/pushwire");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 15_000; // the longest any single expectation waits

let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  throw new Error(`playwright-core is missing (${e.message}): run scripts/setup-browser.sh`);
}
if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`);
if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run cargo build`);

const children = new Set(); // every process and server started here, stopped in after()
process.on("exit", () => {
  for (const c of children) if (c.kill) c.kill("SIGKILL");
});

// Starts `pushwire serve --listen 127.0.0.1:0 FLAGS`; its first stdout line names the address.
async function startServer(flags = []) {
  const child = spawn(BINARY, ["serve", "--listen", "127.0.0.1:0", ...flags], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  children.add(child);
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("pushwire did not start within 10 s")), 10_000);
    let out = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const nl = out.indexOf("\n");
      if (nl < 0) return;
      clearTimeout(timer);
      const m = /^pushwire listening on (https?:\/\/\S+)$/.exec(out.slice(0, nl).trim());
      m ? resolve(m[1]) : reject(new Error(`unexpected first line: ${out.slice(0, nl)}`));
    });
    child.on("exit", (code) => reject(new Error(`pushwire exited with ${code}`)));
  });
  return {
    url,
    port: Number(new URL(url).port),
    stop() {
      child.kill("SIGKILL");
      children.delete(child);
    },
  };
}

// Starts `redis-server` (no persistence) on a free loopback port; resolves once it accepts.
async function startRedis() {
  const port = await new Promise((resolve) => {
    const probe = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.add(child);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("redis-server did not start within 10 s")), 10_000);
    let out = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
      if (out.includes("Ready to accept connections")) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on("exit", (code) => reject(new Error(`redis-server exited with ${code}: ${out}`)));
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    stop() {
      child.kill("SIGKILL");
      children.delete(child);
    },
  };
}

// Publishes a text message over HTTP; returns its id.
async function publish(server, channel, text) {
  const res = await fetch(`${server.url}/channels/${channel}`, {
    method: "POST",
    headers: { "Content-Type": "text/plain" },
    body: text,
    signal: AbortSignal.timeout(5_000),
  });
  assert.equal(res.status, 201);
  return (await res.json()).id;
}

// A proxy in front of a server that can misbehave the way real ones do: `refuseWebSocket`
// answers upgrades 403 (and `cutWebSockets()` drops the open ones); `holdStreams` never answers
// `?mode=stream` requests, like a proxy that buffers the whole response.
async function startProxy(server) {
  const state = { refuseWebSocket: false, holdStreams: false, refuseSse: false, down: false, sockets: new Set(), requests: [] };
  const proxy = http.createServer((req, res) => {
    state.requests.push({ url: req.url, headers: req.headers });
    if (state.down) return res.writeHead(503, { "Content-Length": "0", Connection: "close" }).end();
    if (state.holdStreams && /[?&]mode=stream/.test(req.url)) return; // held until the client gives up
    if (state.refuseSse && /[?&]mode=sse/.test(req.url)) return res.writeHead(403, { "Content-Length": "0" }).end();
    const up = http.request({ host: "127.0.0.1", port: server.port, method: req.method, path: req.url, headers: req.headers });
    up.on("response", (upRes) => {
      res.writeHead(upRes.statusCode, upRes.headers);
      res.flushHeaders();
      upRes.pipe(res);
    });
    up.on("error", () => res.destroy());
    res.on("close", () => up.destroy());
    req.pipe(up);
  });
  const clientSockets = new Set(); // every connection to the proxy, for cutAll()
  proxy.on("connection", (socket) => {
    clientSockets.add(socket);
    socket.on("close", () => clientSockets.delete(socket));
  });
  proxy.on("upgrade", (req, socket, head) => {
    state.requests.push({ url: req.url, headers: req.headers });
    if (state.refuseWebSocket || state.down) return socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    const up = net.connect(server.port, "127.0.0.1", () => {
      let lines = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(lines + "\r\n");
      up.write(head);
      socket.pipe(up).pipe(socket);
    });
    const drop = () => {
      socket.destroy();
      up.destroy();
      state.sockets.delete(drop);
    };
    socket.on("error", drop).on("close", drop);
    up.on("error", drop).on("close", drop);
    state.sockets.add(drop);
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  const handle = {
    url: `http://127.0.0.1:${proxy.address().port}`,
    state,
    cutWebSockets() {
      state.refuseWebSocket = true;
      for (const drop of [...state.sockets]) drop();
    },
    // The server side of every open connection goes away (WebSockets, streams, parked polls).
    cutAll() {
      for (const drop of [...state.sockets]) drop();
      for (const socket of [...clientSockets]) socket.destroy();
    },
    stop() {
      for (const drop of [...state.sockets]) drop();
      proxy.closeAllConnections();
      proxy.close();
      children.delete(handle);
    },
  };
  children.add(handle);
  return handle;
}

let context, userDataDir;

before(async () => {
  userDataDir = mkdtempSync(join(tmpdir(), "pushwire-chromium-"));
  // Playwright passes --headless and --user-data-dir itself (headless: true, the temp dir).
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
});

after(async () => {
  for (const c of [...children]) c.stop ? c.stop() : c.kill("SIGKILL");
  if (context) await context.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});

// A page on `origin` with pushwire.js loaded and one client logging into `window.log`.
async function clientPage(origin, channel, options) {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  await page.goto(`${origin}/healthz`);
  await page.addScriptTag({ url: "/pushwire.js" });
  await page.evaluate(
    ([channel, options]) => {
      const log = (window.log = { messages: [], opens: [], switches: [], gaps: [] });
      const client = (window.client = new Pushwire(`/channels/${channel}`, options));
      client.addEventListener("open", (e) => log.opens.push(e.detail.transport));
      client.addEventListener("transport", (e) => log.switches.push(`${e.detail.from}->${e.detail.to}`));
      client.addEventListener("gap", (e) => log.gaps.push(e.detail.next));
      client.addEventListener("message", (e) =>
        log.messages.push({ id: e.detail.id, data: e.detail.data, transport: client.transport }),
      );
    },
    [channel, options],
  );
  page.errors = errors;
  return page;
}

const log = (page) => page.evaluate(() => window.log);
const waitFor = (page, fn, arg) => page.waitForFunction(fn, arg, { timeout: WAIT_MS });
const offsets = (messages) => messages.map((m) => Number(m.id.split(":")[1]));
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

test("demo page: all five panels receive what is published over HTTP", { timeout: 60_000 }, async () => {
  const server = await startServer();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(`${server.url}/?channel=demo-test`);
  const panels = ["websocket", "sse", "stream", "longpoll", "poll"];
  await waitFor(page, (ids) => ids.every((id) => document.querySelector(`#panel-${id} .state`)?.textContent === "open"), panels);

  const ids = [];
  for (let i = 1; i <= 5; i++) ids.push(await publish(server, "demo-test", JSON.stringify({ text: `hello ${i}`, sent: Date.now() })));
  await waitFor(page, (ids) => ids.every((id) => document.querySelectorAll(`#panel-${id} li`).length >= 5), panels);
  for (const panel of panels) {
    const got = await page.$$eval(`#panel-${panel} li`, (lis) => lis.map((li) => [li.dataset.id, li.firstChild.textContent]));
    assert.deepEqual(got, ids.map((id, i) => [id, `hello ${i + 1}`]), `panel ${panel}`);
  }
  mkdirSync(join(ROOT, "target/browser"), { recursive: true });
  await page.screenshot({ path: join(ROOT, "target/browser/demo.png"), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
  server.stop();
});

for (const [flags, expected] of [
  [["--disable", "ws"], "sse"],
  [["--disable", "ws", "--disable", "sse"], "longpoll"],
]) {
  test(`with ${flags.join(" ")} the client falls back to ${expected}`, { timeout: 60_000 }, async () => {
    const server = await startServer(flags);
    const page = await clientPage(server.url, "fallback", {
      transports: ["websocket", "sse", "longpoll", "poll"],
      firstByteTimeoutMs: 3_000,
    });
    await waitFor(page, () => window.log.opens.length > 0);
    for (let i = 1; i <= 3; i++) await publish(server, "fallback", `m${i}`);
    await waitFor(page, () => window.log.messages.length >= 3);
    const got = await log(page);
    assert.equal(got.opens[0], expected);
    assert.deepEqual(got.switches, expected === "sse" ? ["websocket->sse"] : ["websocket->sse", "sse->longpoll"]);
    assert.deepEqual(got.messages.map((m) => [m.data, m.transport]), range(1, 3).map((i) => [`m${i}`, expected]));
    assert.deepEqual(page.errors, []);
    await page.close();
    server.stop();
  });
}

test("a stream whose first byte never comes (buffering proxy) falls back to long polling", { timeout: 60_000 }, async () => {
  const server = await startServer();
  const proxy = await startProxy(server);
  proxy.state.holdStreams = true;
  const page = await clientPage(proxy.url, "held", { transports: ["stream", "longpoll"], firstByteTimeoutMs: 1_000 });
  await waitFor(page, () => window.log.opens.length > 0);
  for (let i = 1; i <= 3; i++) await publish(server, "held", `m${i}`);
  await waitFor(page, () => window.log.messages.length >= 3);
  const got = await log(page);
  assert.deepEqual(got.switches, ["stream->longpoll"]);
  assert.deepEqual(got.opens, ["longpoll"]);
  assert.deepEqual(got.messages.map((m) => m.data), ["m1", "m2", "m3"]);
  await page.close();
  proxy.stop();
  server.stop();
});

test("a WebSocket cut and refused mid-stream: the switch to SSE loses and repeats nothing", { timeout: 60_000 }, async () => {
  const N = 30;
  const server = await startServer();
  const proxy = await startProxy(server);
  const page = await clientPage(proxy.url, "switch", {
    transports: ["websocket", "sse", "longpoll"],
    backoffBaseMs: 50,
    sseRetryMs: 100,
  });
  const sseRequests = [];
  page.on("request", (r) => /[?&]mode=sse/.test(r.url()) && sseRequests.push(new URL(r.url())));
  await waitFor(page, () => window.log.opens.length > 0);
  const ids = [];
  for (let i = 1; i <= 10; i++) ids.push(await publish(server, "switch", `m${i}`));
  await waitFor(page, () => window.log.messages.length >= 10);
  // From here the proxy drops the WebSocket and answers new upgrades 403: after three failures
  // of a transport that worked, the client moves on with its cursor. Publish during the outage.
  proxy.cutWebSockets();
  for (let i = 11; i <= 20; i++) await publish(server, "switch", `m${i}`);
  await waitFor(page, () => window.log.switches.length > 0);
  for (let i = 21; i <= N; i++) await publish(server, "switch", `m${i}`);
  await waitFor(page, (n) => window.log.messages.length >= n, N);
  await new Promise((r) => setTimeout(r, 500)); // time for a repeat to show, had there been one
  const got = await log(page);
  assert.deepEqual(got.switches, ["websocket->sse"]);
  assert.deepEqual(got.opens, ["websocket", "sse"]);
  assert.deepEqual(got.gaps, []);
  assert.deepEqual(offsets(got.messages), range(1, N));
  assert.deepEqual(got.messages.map((m) => m.data), range(1, N).map((i) => `m${i}`));
  assert.ok(got.messages.slice(0, 10).every((m) => m.transport === "websocket"));
  assert.ok(got.messages.slice(20).every((m) => m.transport === "sse"));
  // On the wire: the event stream resumed exactly after the last message the WebSocket brought.
  assert.equal(sseRequests.length, 1);
  assert.equal(sseRequests[0].searchParams.get("last_event_id"), ids[9]);
  assert.deepEqual(page.errors, []);
  await page.close();
  proxy.stop();
  server.stop();
});

// A page on `origin` with a PushwireClient (rooms) joined to `channels`, logging into `window.log`;
// `window.join(channel, options)` joins one more.
async function roomsPage(origin, channels, options) {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  await page.goto(`${origin}/healthz`);
  await page.addScriptTag({ url: "/pushwire.js" });
  await page.evaluate(
    ([channels, options]) => {
      const log = (window.log = { messages: {}, gaps: {}, opens: [], switches: [], joins: [], leaves: [], errors: [] });
      const client = (window.rooms = new PushwireClient("/", options));
      client.addEventListener("open", (e) => log.opens.push(e.detail.transport));
      client.addEventListener("transport", (e) => log.switches.push(`${e.detail.from}->${e.detail.to}`));
      window.join = (channel, opts = {}) => {
        log.messages[channel] = [];
        log.gaps[channel] = [];
        return client.subscribe(
          channel,
          {
            message: (m) => log.messages[channel].push({ id: m.id, data: m.data, transport: client.transport }),
            gap: (g) => log.gaps[channel].push(g.next),
            join: (j) => log.joins.push([channel, j.member.info]),
            leave: (l) => log.leaves.push([channel, l.member.info]),
            error: (e) => log.errors.push([channel, e.code]),
          },
          opts,
        );
      };
      for (const channel of channels) window.join(channel);
    },
    [channels, options],
  );
  page.errors = errors;
  return page;
}

// Every subscription knows where it starts: nothing published from here on is missed.
const roomsReady = (page) =>
  waitFor(page, () => window.log.opens.length > 0 && [...window.rooms.subscriptions.values()].every((s) => s.cursor));
const dataOf = (page, channel) => page.evaluate((c) => window.log.messages[c].map((m) => m.data), channel);

test("PushwireClient over WebSocket: three channels on one connection, exceptSelf, presence, join/leave, unsubscribe", { timeout: 90_000 }, async () => {
  const server = await startServer();
  const a = await roomsPage(server.url, ["r.a", "r.b", "r.c"], { transports: ["websocket"] });
  await roomsReady(a);
  for (let i = 1; i <= 2; i++) for (const c of ["r.a", "r.b", "r.c"]) await publish(server, c, `${c}-${i}`);
  await waitFor(a, () => Object.values(window.log.messages).every((m) => m.length >= 2));
  for (const c of ["r.a", "r.b", "r.c"]) assert.deepEqual(await dataOf(a, c), [`${c}-1`, `${c}-2`], c);

  // Presence: A watches joins on r.p; B joins it with its info, then its page closes.
  await a.evaluate(() => window.join("r.p", { joins: true, info: { name: "A" } }));
  await waitFor(a, () => window.rooms.subscriptions.get("r.p").cursor);
  const b = await roomsPage(server.url, ["r.a"], { transports: ["websocket"] });
  await roomsReady(b);
  await b.evaluate(() => window.join("r.p", { info: { name: "B" } }));
  await waitFor(a, () => window.log.joins.length >= 1);
  const present = await a.evaluate(() => window.rooms.presence("r.p"));
  assert.equal(present.count, 2);
  assert.deepEqual(present.members.map((m) => m.info.name).sort(), ["A", "B"]);

  // exceptSelf: B gets A's message, A does not; without it A gets its own too.
  const own = await a.evaluate(() => window.rooms.publish("r.a", "own", { exceptSelf: true }));
  assert.match(own, /^[0-9a-f]+:3$/);
  await a.evaluate(() => window.rooms.publish("r.a", "echo"));
  await waitFor(b, () => window.log.messages["r.a"].length >= 2);
  await waitFor(a, () => window.log.messages["r.a"].length >= 3);
  assert.deepEqual(await dataOf(b, "r.a"), ["own", "echo"]);
  assert.deepEqual(await dataOf(a, "r.a"), ["r.a-1", "r.a-2", "echo"]);

  // Unsubscribe: nothing more from r.c, the others go on on the same connection.
  await a.evaluate(() => window.rooms.unsubscribe("r.c"));
  await publish(server, "r.c", "r.c-late");
  await publish(server, "r.b", "r.b-3");
  await waitFor(a, () => window.log.messages["r.b"].length >= 3);
  assert.deepEqual(await dataOf(a, "r.c"), ["r.c-1", "r.c-2"]);

  await b.close();
  await waitFor(a, () => window.log.leaves.length >= 1);
  const got = await log(a);
  assert.deepEqual(got.joins, [["r.p", { name: "B" }]]);
  assert.deepEqual(got.leaves, [["r.p", { name: "B" }]]);
  assert.deepEqual(got.opens, ["websocket"]);
  assert.deepEqual(got.errors, []);
  assert.deepEqual(a.errors, []);
  await a.close();
  server.stop();
});

test("PushwireClient on two nodes sharing Redis: pipelined commands, messages, exceptSelf and presence across the nodes", { timeout: 90_000 }, async () => {
  const redis = await startRedis();
  const one = await startServer(["--redis", redis.url]);
  const two = await startServer(["--redis", redis.url]);
  const a = await roomsPage(one.url, ["n.a", "n.b", "n.c"], { transports: ["websocket"] });
  const b = await roomsPage(two.url, ["n.a"], { transports: ["sse"] });
  await roomsReady(a);
  await roomsReady(b);
  for (const c of ["n.a", "n.b", "n.c"]) await publish(two, c, `${c}-1`);
  await waitFor(a, () => Object.values(window.log.messages).every((m) => m.length >= 1));
  for (const c of ["n.a", "n.b", "n.c"]) assert.deepEqual(await dataOf(a, c), [`${c}-1`], c);

  // Commands sent back to back on one connection, the subscribes waiting for their channels to
  // go live on Redis while the publishes are answered: each answer is its own command's.
  const ids = await a.evaluate(async () => {
    window.join("n.x");
    const first = window.rooms.publish("n.a", "own", { exceptSelf: true });
    window.join("n.y", { joins: true, info: { name: "A" } });
    const second = window.rooms.publish("n.b", "piped");
    return Promise.all([first, second]);
  });
  assert.match(ids[0], /^[0-9a-f]+:2$/);
  assert.match(ids[1], /^[0-9a-f]+:2$/);
  await waitFor(b, () => window.log.messages["n.a"].length >= 2);
  await waitFor(a, () => window.log.messages["n.b"].length >= 2);
  assert.deepEqual(await dataOf(b, "n.a"), ["n.a-1", "own"]);
  assert.deepEqual(await dataOf(a, "n.a"), ["n.a-1"], "exceptSelf across nodes");
  assert.deepEqual(await dataOf(a, "n.b"), ["n.b-1", "piped"]);

  // Presence across the nodes: C joins n.y on node two; A on node one sees it come and go.
  const c = await roomsPage(two.url, [], { transports: ["websocket"] });
  await c.evaluate(() => window.join("n.y", { info: { name: "C" } }));
  await waitFor(a, () => window.log.joins.length >= 1);
  const present = await a.evaluate(() => window.rooms.presence("n.y"));
  assert.deepEqual(present.members.map((m) => m.info.name).sort(), ["A", "C"]);
  await c.close();
  await waitFor(a, () => window.log.leaves.length >= 1);
  const got = await log(a);
  assert.deepEqual(got.joins, [["n.y", { name: "C" }]]);
  assert.deepEqual(got.leaves, [["n.y", { name: "C" }]]);
  assert.deepEqual(got.errors, []);
  assert.deepEqual((await log(b)).errors, []);
  assert.deepEqual(a.errors, []);
  assert.deepEqual(b.errors, []);
  await a.close();
  await b.close();
  one.stop();
  two.stop();
  redis.stop();
});

for (const transport of ["websocket", "sse", "stream", "longpoll", "poll"]) {
  test(`PushwireClient over ${transport}: three channels resume exactly per channel after a server-side disconnect; a gap only on the channel past its history`, { timeout: 90_000 }, async () => {
    const server = await startServer(["--history-messages", "5"]);
    const proxy = await startProxy(server);
    const channels = ["f.a", "f.b", "f.c"];
    const page = await roomsPage(proxy.url, channels, {
      transports: [transport],
      backoffBaseMs: 50,
      backoffMaxMs: 500,
      sseRetryMs: 100,
      pollIntervalMs: 100,
    });
    await roomsReady(page);
    const ids = Object.fromEntries(channels.map((c) => [c, []]));
    const send = async (c, n) => {
      for (let i = 0; i < n; i++) ids[c].push(await publish(server, c, `${c}-${ids[c].length + 1}`));
    };
    for (const c of channels) await send(c, 3);
    await waitFor(page, () => Object.values(window.log.messages).every((m) => m.length >= 3));
    // The server side goes away and refuses for a while; meanwhile f.b outgrows its history.
    proxy.state.down = true;
    proxy.cutAll();
    const mark = proxy.state.requests.length;
    await send("f.a", 2);
    await send("f.b", 8);
    await send("f.c", 2);
    await new Promise((r) => setTimeout(r, 300));
    proxy.state.down = false;
    await waitFor(page, () => {
      const m = window.log.messages;
      return m["f.a"].length >= 5 && m["f.b"].length >= 8 && m["f.c"].length >= 5;
    });
    await new Promise((r) => setTimeout(r, 500)); // time for a repeat to show, had there been one
    const got = await log(page);
    assert.deepEqual(offsets(got.messages["f.a"]), range(1, 5));
    assert.deepEqual(offsets(got.messages["f.c"]), range(1, 5));
    assert.deepEqual(offsets(got.messages["f.b"]), [1, 2, 3, ...range(7, 11)]);
    assert.deepEqual(got.messages["f.b"].map((m) => m.data), [1, 2, 3, 7, 8, 9, 10, 11].map((i) => `f.b-${i}`));
    assert.deepEqual(got.gaps["f.a"], []);
    assert.deepEqual(got.gaps["f.c"], []);
    assert.equal(got.gaps["f.b"].length, 1);
    assert.ok(got.gaps["f.b"][0].endsWith(":6"), `gap ${got.gaps["f.b"][0]}`);
    assert.deepEqual(got.switches, []);
    assert.ok(got.opens.length >= 2 && got.opens.every((t) => t === transport), `opens ${got.opens}`);
    if (transport !== "websocket") {
      // On the wire: the first request after the outage resumed each channel after its third message.
      const resumed = proxy.state.requests.slice(mark).map((r) => new URL(r.url, proxy.url)).find((u) => u.searchParams.get("since"));
      assert.ok(resumed, "no request resumed with since");
      assert.deepEqual(resumed.searchParams.getAll("channel"), channels);
      assert.equal(resumed.searchParams.get("since"), channels.map((c) => ids[c][2]).join(","));
    }
    assert.deepEqual(page.errors, []);
    await page.close();
    proxy.stop();
    server.stop();
  });
}

test("PushwireClient falls back WebSocket -> SSE -> long poll with three channels, each switch resuming every channel exactly", { timeout: 90_000 }, async () => {
  const server = await startServer();
  const proxy = await startProxy(server);
  const channels = ["s.a", "s.b", "s.c"];
  const page = await roomsPage(proxy.url, channels, {
    transports: ["websocket", "sse", "longpoll"],
    backoffBaseMs: 50,
    backoffMaxMs: 500,
    sseRetryMs: 100,
  });
  await roomsReady(page);
  const round = async (i) => {
    for (const c of channels) await publish(server, c, `${c}-${i}`);
  };
  const each = (n) => waitFor(page, (n) => Object.values(window.log.messages).every((m) => m.length >= n), n);
  for (let i = 1; i <= 2; i++) await round(i);
  await each(2);
  proxy.cutWebSockets(); // cut and refused from now: after three failures, SSE
  for (let i = 3; i <= 4; i++) await round(i);
  await each(4);
  proxy.state.refuseSse = true; // the same for SSE: long polling next
  proxy.cutAll();
  for (let i = 5; i <= 6; i++) await round(i);
  await each(6);
  await new Promise((r) => setTimeout(r, 500)); // time for a repeat to show, had there been one
  const got = await log(page);
  assert.deepEqual(got.switches, ["websocket->sse", "sse->longpoll"]);
  for (const c of channels) {
    assert.deepEqual(offsets(got.messages[c]), range(1, 6), c);
    assert.deepEqual(got.messages[c].map((m) => m.data), range(1, 6).map((i) => `${c}-${i}`));
    assert.deepEqual(got.gaps[c], [], c);
    assert.deepEqual(got.messages[c].slice(0, 2).map((m) => m.transport), ["websocket", "websocket"]);
    assert.deepEqual(got.messages[c].slice(4).map((m) => m.transport), ["longpoll", "longpoll"]);
  }
  assert.deepEqual(page.errors, []);
  await page.close();
  proxy.stop();
  server.stop();
});

test("an EventSource on two channels reconnects by itself after the server drops it and resumes exactly (composite Last-Event-ID)", { timeout: 60_000 }, async () => {
  const server = await startServer(["--sse-retry", "0.2"]);
  const proxy = await startProxy(server);
  const page = await context.newPage();
  await page.goto(`${proxy.url}/healthz`);
  await page.evaluate(() => {
    window.got = [];
    window.gaps = 0;
    window.opens = 0;
    const es = new EventSource("/channels/e.a,e.b");
    es.onopen = () => window.opens++;
    es.onmessage = (e) => window.got.push(JSON.parse(e.data));
    es.addEventListener("gap", () => window.gaps++);
  });
  await waitFor(page, () => window.opens >= 1);
  for (let i = 1; i <= 3; i++) for (const c of ["e.a", "e.b"]) await publish(server, c, `${c}-${i}`);
  await waitFor(page, () => window.got.length >= 6);
  const mark = proxy.state.requests.length;
  proxy.cutAll();
  for (let i = 4; i <= 6; i++) for (const c of ["e.a", "e.b"]) await publish(server, c, `${c}-${i}`);
  await waitFor(page, () => window.got.length >= 12 && window.opens >= 2);
  await new Promise((r) => setTimeout(r, 500));
  const got = await page.evaluate(() => ({ got: window.got, gaps: window.gaps }));
  for (const c of ["e.a", "e.b"]) {
    const mine = got.got.filter((m) => m.channel === c);
    assert.deepEqual(offsets(mine), range(1, 6), c);
    assert.deepEqual(mine.map((m) => m.data), range(1, 6).map((i) => `${c}-${i}`));
  }
  assert.equal(got.got.length, 12);
  assert.equal(got.gaps, 0);
  // The browser's own reconnect sent the compact composite id: HASH.OFFSET.OFFSET.
  const again = proxy.state.requests.slice(mark).find((r) => r.url.startsWith("/channels/e.a,e.b"));
  assert.match(again.headers["last-event-id"], /^[0-9a-f]{16}\.3\.3$/);
  await page.close();
  proxy.stop();
  server.stop();
});

test("chat demo: two pages in rooms; messages reach exactly their room, member lists follow joins, leaves and a closed page", { timeout: 90_000 }, async () => {
  const server = await startServer();
  const open = async (query) => {
    const page = await context.newPage();
    page.errors = [];
    page.on("pageerror", (e) => page.errors.push(e));
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.goto(`${server.url}/?channel=chat-demo&${query}`);
    return page;
  };
  const members = (page, room) => page.$$eval(`#room-${room} .members li`, (lis) => lis.map((li) => li.textContent));
  const lines = (page, room) =>
    page.$$eval(`#room-${room} .messages li:not(.notice)`, (lis) => lis.map((li) => li.firstChild.textContent));
  const waitMembers = (page, room, names) =>
    waitFor(page, ([room, names]) => {
      const got = [...document.querySelectorAll(`#room-${room} .members li`)].map((li) => li.textContent);
      return JSON.stringify(got) === JSON.stringify(names);
    }, [room, names]);
  const say = async (page, room, text) => {
    await page.fill(`#room-${room} .say input`, text);
    await page.click(`#room-${room} .say button`);
  };

  const ann = await open("name=Ann&rooms=lobby,games");
  const bob = await open("name=Bob&rooms=lobby,music");
  await waitMembers(ann, "lobby", ["Ann", "Bob"]);
  await waitMembers(bob, "lobby", ["Ann", "Bob"]);
  await waitMembers(ann, "games", ["Ann"]);
  await waitMembers(bob, "music", ["Bob"]);

  await say(ann, "lobby", "hi lobby");
  await say(ann, "games", "hi games");
  await say(bob, "music", "hi music");
  await say(bob, "lobby", "hello Ann");
  await waitFor(ann, () => document.querySelectorAll("#room-lobby .messages li:not(.notice)").length >= 2);
  await waitFor(bob, () => document.querySelectorAll("#room-lobby .messages li:not(.notice)").length >= 2);
  await waitFor(bob, () => document.querySelectorAll("#room-music .messages li:not(.notice)").length >= 1);
  await waitFor(ann, () => document.querySelectorAll("#room-games .messages li:not(.notice)").length >= 1);
  await new Promise((r) => setTimeout(r, 300)); // time for a stray message to show, had there been one
  for (const page of [ann, bob]) assert.deepEqual(await lines(page, "lobby"), ["Ann: hi lobby", "Bob: hello Ann"]);
  assert.deepEqual(await lines(ann, "games"), ["Ann: hi games"]);
  assert.deepEqual(await lines(bob, "music"), ["Bob: hi music"]);
  assert.equal(await ann.$("#room-music"), null);
  assert.equal(await bob.$("#room-games"), null);

  // Bob joins games from the form: Ann's list grows and she sees the notice.
  await bob.fill("#room", "games");
  await bob.click("#join button");
  await waitMembers(bob, "games", ["Ann", "Bob"]);
  await waitMembers(ann, "games", ["Ann", "Bob"]);
  assert.ok((await ann.textContent("#room-games .messages")).includes("Bob joined"));
  mkdirSync(join(ROOT, "target/browser"), { recursive: true });
  const shot = join(ROOT, "target/browser/chat-members.png");
  await ann.locator("#room-games").screenshot({ path: shot });
  assert.ok(statSync(shot).size > 1000, "the member list screenshot is empty");
  // Ann leaves games with its button: Bob's list shrinks.
  await ann.click("#room-games .leave");
  await waitMembers(bob, "games", ["Bob"]);
  // Bob's page closes: he leaves every room he was in.
  assert.deepEqual(bob.errors, []);
  await bob.close();
  await waitMembers(ann, "lobby", ["Ann"]);
  assert.ok((await ann.textContent("#room-lobby .messages")).includes("Bob left"));
  assert.deepEqual(ann.errors, []);
  await ann.close();
  server.stop();
});

// A test CA and a certificate it signed for localhost and 127.0.0.1, made with openssl in a
// temporary folder: { dir, ca, cert (the chain), key, caSpki (base64 SHA-256 of the CA's
// SubjectPublicKeyInfo, what --ignore-certificate-errors-spki-list takes) }.
function testPki() {
  const dir = mkdtempSync(join(tmpdir(), "pushwire-browser-pki-"));
  const at = (name) => join(dir, name);
  const openssl = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=pushwire browser test CA");
  openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost");
  writeFileSync(at("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-days", "2", "-extfile", "ext.cnf", "-out", "leaf.pem");
  writeFileSync(at("server.pem"), readFileSync(at("leaf.pem"), "utf8") + readFileSync(at("ca.pem"), "utf8"));
  const ca = readFileSync(at("ca.pem"));
  const spki = new X509Certificate(ca).publicKey.export({ type: "spki", format: "der" });
  return { dir, ca, cert: at("server.pem"), key: at("server.key"), caSpki: createHash("sha256").update(spki).digest("base64") };
}

// One HTTPS request trusting `ca`; resolves with { status, body }.
function httpsRequest(url, ca, method = "GET", body) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, ca, timeout: 5_000, headers: body === undefined ? {} : { "Content-Type": "text/plain" } }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    });
    req.on("timeout", () => req.destroy(new Error("HTTPS timeout")));
    req.on("error", reject);
    req.end(body);
  });
}

test("demo page over https:// (test CA by SPKI hash): wss:// with permessage-deflate and SSE receive", { timeout: 90_000 }, async () => {
  const pki = testPki();
  // Every WebSocket message of 64 bytes or more is compressed when the extension is on.
  const server = await startServer(["--tls-cert", pki.cert, "--tls-key", pki.key, "--ws-deflate-min-bytes", "64"]);
  assert.match(server.url, /^https:\/\//);
  const origin = `https://localhost:${server.port}`;
  const metric = async (name) => {
    const res = await httpsRequest(`${origin}/metrics`, pki.ca);
    const line = res.body.split("\n").find((l) => l.startsWith(`pushwire_${name} `));
    assert.ok(line, `no ${name} in /metrics`);
    return Number(line.split(" ")[1]);
  };
  // A browser of its own: trusting a certificate by its SPKI hash is a launch flag.
  const dataDir = mkdtempSync(join(tmpdir(), "pushwire-chromium-tls-"));
  const tlsContext = await chromium.launchPersistentContext(dataDir, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      `--ignore-certificate-errors-spki-list=${pki.caSpki}`,
    ],
  });
  try {
    const page = await tlsContext.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e));
    // The WebSocket's opening handshake as Chromium saw it (DevTools protocol).
    const cdp = await tlsContext.newCDPSession(page);
    await cdp.send("Network.enable");
    const handshakes = [];
    cdp.on("Network.webSocketHandshakeResponseReceived", (e) => handshakes.push(e.response));
    const wsUrls = [];
    cdp.on("Network.webSocketCreated", (e) => wsUrls.push(e.url));
    const response = await page.goto(`${origin}/?channel=tls-demo`);
    assert.equal(response.status(), 200);
    assert.equal((await response.securityDetails())?.protocol, "TLS 1.3");
    const panels = ["websocket", "sse"];
    await waitFor(page, (ids) => ids.every((id) => document.querySelector(`#panel-${id} .state`)?.textContent === "open"), panels);
    assert.ok(wsUrls.some((u) => u.startsWith(`wss://localhost:${server.port}/channels/tls-demo`)), `WebSocket URLs: ${wsUrls}`);
    const extensions = handshakes.map((r) => Object.entries(r.headers).find(([k]) => k.toLowerCase() === "sec-websocket-extensions")?.[1]);
    assert.ok(extensions.some((e) => e && e.startsWith("permessage-deflate")), `negotiated: ${JSON.stringify(extensions)}`);

    const compressedBefore = await metric("ws_deflate_frames_sent_total");
    const ids = [];
    for (let i = 1; i <= 3; i++) {
      const text = `hello over TLS ${i} ${"abc".repeat(100)}`;
      const res = await httpsRequest(`${origin}/channels/tls-demo`, pki.ca, "POST", JSON.stringify({ text, sent: Date.now() }));
      assert.equal(res.status, 201, res.body);
      ids.push(JSON.parse(res.body).id);
    }
    await waitFor(page, (ids) => ids.every((id) => document.querySelectorAll(`#panel-${id} li`).length >= 3), panels);
    for (const panel of panels) {
      const got = await page.$$eval(`#panel-${panel} li`, (lis) => lis.map((li) => li.dataset.id));
      assert.deepEqual(got, ids, `panel ${panel}`);
    }
    // RSV1 on the wire: the server sent the three messages to the demo page's WebSocket (the
    // only deflate subscriber) as compressed frames, and Chromium inflated them.
    assert.equal((await metric("ws_deflate_frames_sent_total")) - compressedBefore, 3);
    assert.ok((await metric("tls_handshakes_total")) >= 1);
    assert.deepEqual(errors, []);
    await page.close();
  } finally {
    await tlsContext.close();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(pki.dir, { recursive: true, force: true });
    server.stop();
  }
});
