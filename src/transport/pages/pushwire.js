// pushwire.js: a browser client for pushwire channels (served at /pushwire.js).
//
// Implements two clients on one reconnect engine (transports tried in order, falling back to
// the next one when a transport is refused, never sends its first byte, or fails `maxFailures`
// times in a row; reconnects with exponential backoff and full jitter):
// - `Pushwire`: one channel over WebSocket (subprotocol pushwire.v1), Server-Sent Events
//   (EventSource), an NDJSON stream (fetch), long polling or short polling, carrying the cursor
//   EPOCH:OFFSET across reconnects and switches, so nothing is lost or repeated while the
//   server's history covers the outage.
// - `PushwireClient`: rooms, many channels on one connection. Over WebSocket it speaks the
//   pushwire.v1 command mode on `/ws` (subscribe, unsubscribe, publish, presence, join/leave);
//   over SSE, the stream and the polls it requests `/channels?channel=a&channel=b` and opens
//   that request again whenever the channel set changes. Every channel keeps its own cursor: a
//   new connection (a reconnect or a transport switch) subscribes every channel after its last
//   message, and a gap is reported on exactly the channel that lost messages.
//
// Does not: switch back to an earlier transport once a later one works; read the SSE `retry:`
// field or the opening `id:` line (EventSource hides both: the hint is the `sseRetryMs` option,
// and an SSE connection opened without a cursor first reads one with a short poll); receive
// named SSE events not listed in `events` with `Pushwire` (EventSource only dispatches types that
// have a listener; `PushwireClient` gets every name, inside its JSON envelopes); deliver
// join/leave or count as a presence member except over WebSocket (the server's presence is a
// property of command-mode WebSocket subscriptions); publish with `Pushwire` (POST to the
// channel URL, or use `PushwireClient.publish`).
//
//   const client = new Pushwire("/channels/news", { transports: ["websocket", "sse", "longpoll"] });
//   client.addEventListener("message", (e) => console.log(e.detail.id, e.detail.event, e.detail.data));
//   client.addEventListener("gap", (e) => console.log("lost messages before", e.detail.next));
//   client.addEventListener("transport", (e) => console.log(e.detail.from, "->", e.detail.to));
//   client.close();
//
//   const rooms = new PushwireClient("/", { transports: ["websocket", "sse", "longpoll"] });
//   const lobby = rooms.subscribe("chat.lobby", {
//     message: (m) => console.log(m.channel, m.id, m.data),
//     gap: (g) => console.log("lost messages on", g.channel, "before", g.next),
//     join: (j) => console.log(j.member.info, "joined"), leave: (l) => console.log(l.member.id, "left"),
//   }, { since: null, joins: true, info: { name: "Ann" } });
//   await rooms.publish("chat.lobby", "hi", { exceptSelf: true }); // resolves to the message's id
//   const { count, members } = await rooms.presence("chat.lobby");
//   rooms.unsubscribe("chat.lobby");
//
// Events of both clients (CustomEvent, fields in `detail`): open {transport}: a connection
// delivers (its first byte arrived); close {transport, reason}: an open connection ended (the
// client reconnects unless close() was called); transport {from, to, reason}: the client
// switches transports. `Pushwire` also fires message {id, event, data} where data is a string,
// or a Uint8Array for a binary message, and gap {next}: messages before `next` are gone. A
// `PushwireClient` subscription (the object `subscribe` returns, also an EventTarget, or the
// `handlers` given to `subscribe`, called with the detail) fires message {channel, id, event,
// data}, gap {channel, next}, join and leave {channel, member: {id, user, info}} (with
// `joins: true`, over WebSocket), error {channel, code, reason} (the server refused the
// subscription; it is dropped).
(function (global) {
  "use strict";

  const DEFAULTS = {
    transports: ["websocket", "sse", "longpoll", "poll"], // in order of preference; also "stream"
    since: null, // a cursor to resume after; null starts from now
    firstByteTimeoutMs: 5000, // every subscription sends its cursor at once; silence means a buffering proxy
    maxFailures: 3, // consecutive failures of a transport that once worked before switching
    backoffBaseMs: 500, // reconnect delay: random in [0, min(max, base * 2^(failures-1))]
    backoffMaxMs: 30000,
    sseRetryMs: 2000, // the server's --sse-retry: least delay before an SSE reconnect
    longPollWaitSeconds: 25,
    pollIntervalMs: 1000, // pause between short polls
    events: [], // named events to receive over SSE (other transports deliver every name)
  };

  // Cursors are "EPOCH:OFFSET"; within one epoch, offsets count messages from 1.
  function parseCursor(text) {
    const i = typeof text === "string" ? text.lastIndexOf(":") : -1;
    return i < 0 ? null : { epoch: text.slice(0, i), offset: Number(text.slice(i + 1)) };
  }

  // True when message `id` is at or before `cursor` in the same epoch: already delivered.
  function seen(id, cursor) {
    const a = parseCursor(id), b = parseCursor(cursor);
    return !!(a && b && a.epoch === b.epoch && a.offset <= b.offset);
  }

  function fromBase64(text) {
    return Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
  }

  // The URL with query parameters added; null values are left out.
  function withParams(url, params) {
    const u = new URL(url);
    for (const [k, v] of Object.entries(params)) if (v != null) u.searchParams.set(k, v);
    return u.toString();
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Each transport opens one connection: `transport(client, sink)` returns a function that stops
  // it. It reports through `sink`: open() once data flows, envelope(json) for a pushwire JSON
  // object, message(id, event, data), gap(next), end(reason) when it fails or ends.
  const TRANSPORTS = {
    websocket(client, sink) {
      const u = new URL(withParams(client.url, { since: client.cursor }));
      u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
      const ws = new WebSocket(u, "pushwire.v1");
      ws.onopen = () => {
        // Without pushwire.v1 the frames carry no cursors: useless to this client.
        if (ws.protocol !== "pushwire.v1") sink.end("server did not accept pushwire.v1");
      };
      ws.onmessage = (e) => sink.envelope(e.data); // the first frame is {"type":"open",...}
      ws.onclose = (e) => sink.end(`closed (${e.code})`); // also after an error or a refused upgrade
      return () => {
        ws.onopen = ws.onmessage = ws.onclose = null;
        ws.close();
      };
    },

    sse(client, sink) {
      let es = null, stopped = false;
      const start = () => {
        // The connection names its cursor in the query; reconnects are ours, not EventSource's.
        es = new EventSource(withParams(client.url, { mode: "sse", last_event_id: client.cursor }));
        es.onopen = () => sink.open();
        es.onerror = () => sink.end("event stream failed"); // EventSource would retry by itself
        es.addEventListener("gap", (e) => {
          try {
            sink.gap(JSON.parse(e.data).next);
          } catch (_) {
            sink.end("bad gap event");
          }
        });
        for (const name of ["message", ...client.options.events]) {
          es.addEventListener(name, (e) => sink.message(e.lastEventId, name, e.data));
          es.addEventListener(`b64:${name}`, (e) => sink.message(e.lastEventId, name, fromBase64(e.data)));
        }
      };
      if (client.cursor) {
        start();
      } else {
        // EventSource hides the stream's opening cursor (an id line without data), so a
        // connection that dropped before its first message could not resume: read the tail
        // cursor with a short poll first. (If polling is refused, start from now.)
        fetch(withParams(client.url, { mode: "poll" }), { cache: "no-store" })
          .then((res) => (res.ok ? res.json() : {}))
          .catch(() => ({}))
          .then((body) => {
            if (stopped) return;
            sink.cursor(body.next);
            start();
          });
      }
      return () => {
        stopped = true;
        if (es) es.close();
      };
    },

    stream(client, sink) {
      const abort = new AbortController();
      const url = withParams(client.url, { mode: "stream", since: client.cursor });
      (async () => {
        const res = await fetch(url, { headers: { Accept: "application/x-ndjson" }, signal: abort.signal, cache: "no-store" });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffered = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return sink.end("stream ended");
          buffered += value;
          let nl;
          while ((nl = buffered.indexOf("\n")) >= 0) {
            const line = buffered.slice(0, nl).trim(); // an empty line is a heartbeat
            buffered = buffered.slice(nl + 1);
            if (line) sink.envelope(line);
          }
        }
      })().catch((e) => sink.end(String(e)));
      return () => abort.abort();
    },

    longpoll: (client, sink) => poll(client, sink, true),
    poll: (client, sink) => poll(client, sink, false),
  };

  // Long and short polling: one request after another, each resuming from the cursor. A long
  // poll's first request uses wait=0, so it answers at once with the cursor (its "first byte").
  function poll(client, sink, long) {
    let abort = null, stopped = false, first = true;
    (async () => {
      while (!stopped) {
        const wait = long ? (first ? 0 : client.options.longPollWaitSeconds) : null;
        const url = withParams(client.url, { mode: long ? null : "poll", wait, since: client.cursor });
        abort = new AbortController();
        const timer = setTimeout(() => abort.abort(), (wait || 0) * 1000 + client.options.firstByteTimeoutMs);
        let body;
        try {
          const res = await fetch(url, { signal: abort.signal, cache: "no-store" });
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
          body = await res.json();
        } finally {
          clearTimeout(timer);
        }
        if (stopped) return;
        sink.open();
        const messages = Array.isArray(body.messages) ? body.messages : [];
        if (body.gap) {
          const c = messages.length ? parseCursor(messages[0].id) : null;
          sink.gap(c ? `${c.epoch}:${c.offset - 1}` : body.next);
        }
        for (const m of messages) sink.envelope(m);
        sink.cursor(body.next);
        first = false;
        if (!long) await sleep(client.options.pollIntervalMs);
      }
    })().catch((e) => sink.end(String(e)));
    return () => {
      stopped = true;
      if (abort) abort.abort();
    };
  }

  // One connection at a time over `options.transports`, in order. A subclass defines
  // `_start(name, conn)`, which opens a connection of transport `name` and returns a function
  // that stops it; the connection calls `conn.open()` once data flows and `conn.end(reason)`
  // when it fails or ends. It may define `_idle()`: true while there is nothing to connect for
  // (the engine then waits for `_restart`).
  class Reconnecting extends EventTarget {
    constructor(options, table) {
      super();
      this.options = Object.assign({}, DEFAULTS, options);
      for (const name of this.options.transports) {
        if (!Object.prototype.hasOwnProperty.call(table, name)) throw new Error(`pushwire: unknown transport ${name}`);
      }
      if (!this.options.transports.length) throw new Error("pushwire: no transports");
      this.transport = null; // the transport in use or being tried
      this._index = 0; // into options.transports
      this._failures = 0; // consecutive failures of the current transport
      this._streak = 0; // consecutive failures of any transport: the backoff exponent
      this._worked = new Set(); // transports that have opened at least once
      this._stop = null; // ends the current connection
      this._closed = false;
      this._timer = setTimeout(() => this._connect(), 0); // after the caller adds listeners
    }

    // Stops for good: no more events but a last `close` if a connection was open.
    close() {
      this._closed = true;
      clearTimeout(this._timer);
      this._timer = null;
      if (this._stop) this._stop("closed by the client");
    }

    _emit(type, detail) {
      this.dispatchEvent(new CustomEvent(type, { detail }));
    }

    // Ends the current connection without counting a failure and connects again at once, on
    // the same transport; or connects now if the engine was idle. During a backoff it does
    // nothing: the pending connection starts from the current state anyway.
    _restart(reason) {
      if (this._closed) return;
      if (this._stop) this._stop(reason, false);
      else if (this._timer === null) this._timer = setTimeout(() => this._connect(), 0);
    }

    _connect() {
      this._timer = null;
      if (this._closed) return;
      const name = this.options.transports[this._index];
      this.transport = name;
      if (this._idle && this._idle()) return;
      let live = true, opened = false, stop = null;
      const end = (reason, failed = true) => {
        if (!live) return;
        live = false;
        clearTimeout(deadline);
        if (this._stop === end) this._stop = null;
        if (stop) stop();
        if (opened) this._emit("close", { transport: name, reason });
        if (failed) this._ended(name, reason);
        else if (!this._closed) this._timer = setTimeout(() => this._connect(), 0);
      };
      // No first byte in time: refused silently, or a proxy that buffers the response.
      const deadline = setTimeout(() => end("no first byte in time"), this.options.firstByteTimeoutMs);
      const conn = {
        live: () => live,
        open: () => {
          if (!live || opened) return;
          opened = true;
          clearTimeout(deadline);
          this._failures = this._streak = 0;
          this._worked.add(name);
          this._emit("open", { transport: name });
        },
        end,
      };
      this._stop = end;
      try {
        stop = this._start(name, conn);
      } catch (e) {
        return end(String(e)); // e.g. a URL the WebSocket constructor refuses
      }
      if (!live) stop(); // it failed while starting
    }

    // A connection ended: reconnect after a backoff, or switch to the next transport at once.
    _ended(name, reason) {
      if (this._closed) return;
      this._failures += 1;
      this._streak += 1;
      const o = this.options;
      // Full jitter: random in [0, min(max, base * 2^(streak-1))] (spreads a crowd of clients).
      let delay = Math.random() * Math.min(o.backoffMaxMs, o.backoffBaseMs * 2 ** (this._streak - 1));
      if (!this._worked.has(name) || this._failures >= o.maxFailures) {
        this._index = (this._index + 1) % o.transports.length;
        this._failures = 0;
        const to = o.transports[this._index];
        if (to !== name) this._emit("transport", { from: name, to, reason });
        if (this._index !== 0) delay = 0; // try the next one at once; after the last, back off
      }
      if (o.transports[this._index] === "sse" && name === "sse") delay = Math.max(delay, o.sseRetryMs);
      this._timer = setTimeout(() => this._connect(), delay);
    }
  }

  class Pushwire extends Reconnecting {
    // `url` is "/channels/NAME" (relative to the page) or absolute; options as in DEFAULTS.
    constructor(url, options = {}) {
      super(options, TRANSPORTS);
      this.url = new URL(url, global.location && global.location.href).toString();
      this.cursor = this.options.since; // the last message seen, or where the subscription starts
    }

    _start(name, conn) {
      const sink = {
        open: conn.open,
        end: conn.end,
        cursor: (next) => {
          if (conn.live() && typeof next === "string") this.cursor = next;
        },
        gap: (next) => {
          if (!conn.live()) return;
          conn.open();
          this.cursor = next;
          this._emit("gap", { next });
        },
        message: (id, event, data) => {
          if (!conn.live() || seen(id, this.cursor)) return; // a duplicate: skip it
          if (id) this.cursor = id;
          this._emit("message", { id, event, data });
        },
        // A pushwire JSON object: {"type":"open"|"gap","next":C} or {"id":C,"data"|"data_b64":…}.
        envelope: (json) => {
          let m = json;
          try {
            if (typeof json === "string") m = JSON.parse(json);
          } catch (_) {
            return conn.end("bad JSON from the server");
          }
          if (m.type === "open") {
            conn.open();
            sink.cursor(m.next);
          } else if (m.type === "gap") sink.gap(m.next);
          else if (typeof m.id === "string") {
            conn.open();
            const data = typeof m.data_b64 === "string" ? fromBase64(m.data_b64) : m.data;
            sink.message(m.id, m.event || "message", data);
          }
        },
      };
      return TRANSPORTS[name](this, sink);
    }
  }

  function toBase64(bytes) {
    let text = "";
    for (const b of bytes) text += String.fromCharCode(b);
    return btoa(text);
  }

  // The composite `since` of a multi-channel request: each channel's cursor, "" for "from now"
  // (README "Cursors and gaps"); null when every channel starts from now.
  const compositeSince = (subs) => (subs.some((s) => s.cursor) ? subs.map((s) => s.cursor || "").join(",") : null);

  // PushwireClient's transports: `transport(client, conn, subs)` opens one connection for the
  // subscriptions `subs` (every one the client has when it starts) and returns a function that
  // stops it. Everything received goes to `client._frame(conn, json)`.
  const ROOM_TRANSPORTS = {
    websocket(client, conn) {
      const u = new URL("ws", client.base);
      u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
      const ws = new WebSocket(u, "pushwire.v1");
      ws.onopen = () => {
        if (ws.protocol !== "pushwire.v1") return conn.end("server did not accept pushwire.v1");
        client._ws = ws;
        // Every subscribe goes before what `open` listeners send (a presence command, say).
        for (const sub of client.subscriptions.values()) client._sendSubscribe(sub);
        conn.open();
      };
      ws.onmessage = (e) => (typeof e.data === "string" ? client._frame(conn, e.data) : conn.end("a binary frame in command mode"));
      ws.onclose = (e) => conn.end(`closed (${e.code})`); // also after an error or a refused upgrade
      return () => {
        if (client._ws === ws) client._ws = null;
        client._failPending("the connection closed");
        ws.onopen = ws.onmessage = ws.onclose = null;
        ws.close();
      };
    },

    sse(client, conn, subs) {
      let es = null, stopped = false;
      const start = () => {
        // Our own reconnects, each with every channel's cursor (not EventSource's, which would
        // resume with the compact id of the channel set it started with).
        es = new EventSource(client._channelsUrl(subs, { mode: "sse", since: compositeSince(subs) }));
        es.onopen = () => conn.open();
        es.onerror = () => conn.end("event stream failed");
        es.addEventListener("message", (e) => client._frame(conn, e.data));
        es.addEventListener("gap", (e) => client._frame(conn, e.data));
      };
      const fresh = subs.filter((s) => !s.cursor);
      if (!fresh.length) {
        start();
      } else {
        // EventSource hides the opening `id:`, so a channel with no cursor yet reads its tail
        // with a short poll first (if polling is refused, those channels start from now).
        fetch(client._channelsUrl(fresh, { mode: "poll" }), { cache: "no-store" })
          .then((res) => (res.ok ? res.json() : {}))
          .catch(() => ({}))
          .then((body) => {
            if (stopped) return;
            const next = typeof body.next === "string" ? body.next.split(",") : [];
            fresh.forEach((s, i) => {
              if (!s.cursor && next[i]) s.cursor = next[i];
            });
            start();
          });
      }
      return () => {
        stopped = true;
        if (es) es.close();
      };
    },

    stream(client, conn, subs) {
      const abort = new AbortController();
      const url = client._channelsUrl(subs, { mode: "stream", since: compositeSince(subs) });
      (async () => {
        const res = await fetch(url, { headers: { Accept: "application/x-ndjson" }, signal: abort.signal, cache: "no-store" });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffered = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return conn.end("stream ended");
          buffered += value;
          let nl;
          while ((nl = buffered.indexOf("\n")) >= 0) {
            const line = buffered.slice(0, nl).trim(); // an empty line is a heartbeat
            buffered = buffered.slice(nl + 1);
            if (line) client._frame(conn, line);
          }
        }
      })().catch((e) => conn.end(String(e)));
      return () => abort.abort();
    },

    longpoll: (client, conn, subs) => roomsPoll(client, conn, subs, true),
    poll: (client, conn, subs) => roomsPoll(client, conn, subs, false),
  };

  // Long and short polls of several channels: `next` is every channel's cursor (full form) and
  // `gaps` names the channels that lost messages. The first long poll uses wait=0.
  function roomsPoll(client, conn, subs, long) {
    let abort = null, stopped = false, first = true;
    (async () => {
      while (!stopped) {
        const wait = long ? (first ? 0 : client.options.longPollWaitSeconds) : null;
        const url = client._channelsUrl(subs, { mode: long ? "longpoll" : "poll", wait, since: compositeSince(subs) });
        abort = new AbortController();
        const timer = setTimeout(() => abort.abort(), (wait || 0) * 1000 + client.options.firstByteTimeoutMs);
        let body;
        try {
          const res = await fetch(url, { signal: abort.signal, cache: "no-store" });
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
          body = await res.json();
        } finally {
          clearTimeout(timer);
        }
        if (stopped) return;
        conn.open();
        const messages = Array.isArray(body.messages) ? body.messages : [];
        const next = typeof body.next === "string" ? body.next.split(",") : [];
        for (const channel of Array.isArray(body.gaps) ? body.gaps : []) {
          const i = subs.findIndex((s) => s.channel === channel);
          const m = messages.find((m) => m.channel === channel);
          const c = m ? parseCursor(m.id) : null;
          if (i >= 0) client._frame(conn, { channel, type: "gap", next: c ? `${c.epoch}:${c.offset - 1}` : next[i] });
        }
        for (const m of messages) client._frame(conn, m);
        subs.forEach((s, i) => client._advance(s, next[i]));
        first = false;
        if (!long) await sleep(client.options.pollIntervalMs);
      }
    })().catch((e) => conn.end(String(e)));
    return () => {
      stopped = true;
      if (abort) abort.abort();
    };
  }

  // One channel of a PushwireClient (returned by `subscribe`).
  class Subscription extends EventTarget {
    constructor(client, channel, handlers, options) {
      super();
      this.client = client;
      this.channel = channel;
      this.cursor = options.since || null; // the last message seen, or where it starts
      this.joins = !!options.joins; // join/leave events wanted (WebSocket only)
      this.info = options.info; // presence info (a JSON object, at most 256 bytes by default)
      this.token = options.token; // a signed token for this channel's policy
      this.active = true; // false once unsubscribed or refused
      this._ready = false; // WebSocket: its subscribe was answered `ok` on this connection
      this._own = []; // ids this client published with exceptSelf, not yet passed
      this._publishing = 0; // exceptSelf publishes whose id is not known yet
      this._held = []; // what arrived meanwhile (it may be one of them), in order
      for (const type of ["message", "gap", "join", "leave", "error"]) {
        if (typeof handlers[type] === "function") this.addEventListener(type, (e) => handlers[type](e.detail));
      }
    }

    unsubscribe() {
      if (this.active) this.client.unsubscribe(this.channel);
    }

    publish(data, options) {
      return this.client.publish(this.channel, data, options);
    }

    presence() {
      return this.client.presence(this.channel);
    }

    _emit(type, detail) {
      this.dispatchEvent(new CustomEvent(type, { detail: Object.assign({ channel: this.channel }, detail) }));
    }
  }

  class PushwireClient extends Reconnecting {
    // `base` is the server's root ("/" for the page's own server, or "https://push.example/");
    // options as in DEFAULTS (`since` and `events` are per subscription here).
    constructor(base = "/", options = {}) {
      super(options, ROOM_TRANSPORTS);
      const u = new URL(base, global.location && global.location.href);
      if (!u.pathname.endsWith("/")) u.pathname += "/";
      this.base = u.toString();
      this.subscriptions = new Map(); // channel -> Subscription
      this._ws = null; // the open command-mode WebSocket
      this._req = 0;
      this._pending = new Map(); // req -> {resolve, reject}
    }

    // Subscribes to `channel` from `options.since` (a cursor "EPOCH:OFFSET") or from now, on
    // the current connection (a command over WebSocket; a new request on the HTTP transports).
    // Options: since, joins (join/leave events), info (presence info), token.
    subscribe(channel, handlers = {}, options = {}) {
      if (this.subscriptions.has(channel)) throw new Error(`pushwire: already subscribed to ${channel}`);
      const sub = new Subscription(this, channel, handlers, options);
      this.subscriptions.set(channel, sub);
      if (this._ws) this._sendSubscribe(sub);
      else if (this.transport !== "websocket") this._restart(`subscribed to ${channel}`);
      return sub;
    }

    unsubscribe(channel) {
      const sub = this.subscriptions.get(channel);
      if (!sub) return;
      sub.active = false;
      this.subscriptions.delete(channel);
      if (this._ws) this._request({ type: "unsubscribe", channel }).catch(() => {});
      else if (this.transport !== "websocket") this._restart(`unsubscribed from ${channel}`);
    }

    // Publishes a string (text) or a Uint8Array (binary) to `channel`: a command on the open
    // WebSocket, else a POST. Resolves to the message's id. With `exceptSelf` this client's
    // subscription to the channel does not deliver it (the server leaves this connection out;
    // over HTTP, and on a later replay, the client skips the id itself). Never retried.
    async publish(channel, data, options = {}) {
      const sub = options.exceptSelf ? this.subscriptions.get(channel) : null;
      if (sub) sub._publishing += 1;
      try {
        let id;
        if (this._ws && this._ws.readyState === WebSocket.OPEN) {
          const cmd = { type: "publish", channel };
          if (typeof data === "string") cmd.data = data;
          else cmd.data_b64 = toBase64(data);
          if (options.event) cmd.event = options.event;
          if (options.exceptSelf) cmd.except_self = true;
          id = (await this._request(cmd)).id;
        } else {
          const url = new URL(`channels/${encodeURIComponent(channel)}`, this.base);
          if (options.event) url.searchParams.set("event", options.event);
          const type = typeof data === "string" ? "text/plain; charset=utf-8" : "application/octet-stream";
          const res = await fetch(url, { method: "POST", headers: { "Content-Type": type }, body: data });
          if (!res.ok) throw new Error(`pushwire: publish answered ${res.status}: ${await res.text()}`);
          id = (await res.json()).id;
        }
        if (sub && typeof id === "string" && !seen(id, sub.cursor)) sub._own.push(id);
        return id;
      } finally {
        if (sub && --sub._publishing === 0) {
          const held = sub._held;
          sub._held = [];
          for (const f of held) f();
        }
      }
    }

    // Resolves to {channel, count, members: [{id, user, info}]}: a command over WebSocket,
    // else `GET /channels/NAME/presence`.
    async presence(channel) {
      let m;
      if (this._ws && this._ws.readyState === WebSocket.OPEN) {
        m = await this._request({ type: "presence", channel });
      } else {
        const res = await fetch(new URL(`channels/${encodeURIComponent(channel)}/presence`, this.base), { cache: "no-store" });
        if (!res.ok) throw new Error(`pushwire: presence answered ${res.status}: ${await res.text()}`);
        m = await res.json();
      }
      return { channel, count: m.count, members: m.members };
    }

    _idle() {
      return this.transport !== "websocket" && this.subscriptions.size === 0;
    }

    _start(name, conn) {
      return ROOM_TRANSPORTS[name](this, conn, [...this.subscriptions.values()]);
    }

    _channelsUrl(subs, params) {
      const u = new URL("channels", this.base);
      for (const s of subs) u.searchParams.append("channel", s.channel);
      for (const [k, v] of Object.entries(params)) if (v != null) u.searchParams.set(k, v);
      return u.toString();
    }

    _request(cmd) {
      return new Promise((resolve, reject) => {
        const req = ++this._req;
        this._pending.set(req, { resolve, reject });
        this._ws.send(JSON.stringify(Object.assign({}, cmd, { req })));
      });
    }

    _failPending(reason) {
      for (const p of this._pending.values()) p.reject(new Error(`pushwire: ${reason}`));
      this._pending.clear();
    }

    _sendSubscribe(sub) {
      sub._ready = false;
      const cmd = { type: "subscribe", channel: sub.channel };
      if (sub.cursor) cmd.since = sub.cursor;
      if (sub.joins) cmd.joins = true;
      if (sub.info !== undefined) cmd.info = sub.info;
      if (sub.token) cmd.token = sub.token;
      this._request(cmd).then(
        () => {
          sub._ready = true; // before the next frame: promise callbacks run between messages
        },
        (err) => {
          if (!err.code || this.subscriptions.get(sub.channel) !== sub) return; // the connection closed
          sub.active = false;
          this.subscriptions.delete(sub.channel);
          sub._emit("error", { code: err.code, reason: err.message });
        },
      );
    }

    // One JSON object from the server: a reply to a command (it has `req`), or a channel's
    // open/gap/join/leave/message.
    _frame(conn, json) {
      let m = json;
      try {
        if (typeof json === "string") m = JSON.parse(json);
      } catch (_) {
        return conn.end("bad JSON from the server");
      }
      if (!conn.live() || m === null || typeof m !== "object") return;
      conn.open();
      if (m.req !== undefined && ["ok", "error", "presence", "presence_stats"].includes(m.type)) {
        const p = this._pending.get(m.req);
        if (!p) return;
        this._pending.delete(m.req);
        if (m.type === "error") p.reject(Object.assign(new Error(m.reason || m.code), { code: m.code }));
        else p.resolve(m);
        return;
      }
      const sub = this.subscriptions.get(m.channel);
      // Over WebSocket, what precedes the `ok` belongs to an earlier subscription of the name.
      if (!sub || (this.transport === "websocket" && !sub._ready)) return;
      if (m.type === "open") this._advance(sub, m.next);
      else if (m.type === "gap") this._hold(sub, () => this._gap(sub, m.next));
      else if (m.type === "join" || m.type === "leave") sub._emit(m.type, { member: m.member });
      else if (typeof m.id === "string") {
        const data = typeof m.data_b64 === "string" ? fromBase64(m.data_b64) : m.data;
        this._hold(sub, () => this._message(sub, m.id, m.event || "message", data));
      }
    }

    // Runs `f` now, or after the exceptSelf publishes in flight know their ids.
    _hold(sub, f) {
      if (sub._publishing) sub._held.push(f);
      else f();
    }

    // A connection's position for `sub` (an `open`, a poll's `next`), when nothing is held.
    _advance(sub, next) {
      if (sub.active && typeof next === "string" && next && !sub._publishing && !sub._held.length) sub.cursor = next;
    }

    _gap(sub, next) {
      if (!sub.active || typeof next !== "string") return;
      sub.cursor = next;
      sub._emit("gap", { next });
    }

    _message(sub, id, event, data) {
      if (!sub.active || seen(id, sub.cursor)) return; // a duplicate: skip it
      sub.cursor = id;
      const at = parseCursor(id);
      const own = sub._own.indexOf(id);
      // Forget own ids this one has passed.
      sub._own = sub._own.filter((o) => {
        const c = parseCursor(o);
        return c && at && c.epoch === at.epoch && c.offset > at.offset;
      });
      if (own < 0) sub._emit("message", { id, event, data });
    }
  }

  global.Pushwire = Pushwire;
  global.PushwireClient = PushwireClient;
})(typeof window !== "undefined" ? window : globalThis);
