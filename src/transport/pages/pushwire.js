// pushwire.js: a browser client for pushwire channels (served at /pushwire.js).
//
// Implements: one subscription to one channel over WebSocket (subprotocol pushwire.v1),
// Server-Sent Events (EventSource), an NDJSON stream (fetch), long polling or short polling;
// falling back to the next transport in `transports` when one fails; carrying the cursor
// EPOCH:OFFSET across reconnects and switches, so nothing is lost or repeated while the
// server's history covers the outage; reconnecting with exponential backoff and full jitter.
//
// Does not: publish (POST to the channel URL for that); switch back to an earlier transport
// once a later one works; read the SSE `retry:` field or the opening `id:` line (EventSource
// hides both: the hint is the `sseRetryMs` option, and an SSE connection opened without a
// cursor first reads one with a short poll); receive named SSE events not listed in `events`
// (EventSource only dispatches types that have a listener).
//
//   const client = new Pushwire("/channels/news", { transports: ["websocket", "sse", "longpoll"] });
//   client.addEventListener("message", (e) => console.log(e.detail.id, e.detail.event, e.detail.data));
//   client.addEventListener("gap", (e) => console.log("lost messages before", e.detail.next));
//   client.addEventListener("transport", (e) => console.log(e.detail.from, "->", e.detail.to));
//   client.close();
//
// Events (CustomEvent, fields in `detail`): message {id, event, data} where data is a string,
// or a Uint8Array for a binary message; gap {next}: messages before `next` are gone;
// open {transport}: a connection delivers (its first byte arrived); close {transport, reason}:
// an open connection ended (the client reconnects unless close() was called);
// transport {from, to, reason}: the client switches transports.
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

  class Pushwire extends EventTarget {
    // `url` is "/channels/NAME" (relative to the page) or absolute; options as in DEFAULTS.
    constructor(url, options = {}) {
      super();
      this.url = new URL(url, global.location && global.location.href).toString();
      this.options = Object.assign({}, DEFAULTS, options);
      for (const name of this.options.transports) {
        if (!TRANSPORTS.hasOwnProperty(name)) throw new Error(`pushwire: unknown transport ${name}`);
      }
      if (!this.options.transports.length) throw new Error("pushwire: no transports");
      this.cursor = this.options.since; // the last message seen, or where the subscription starts
      this.transport = null; // the transport in use or being tried
      this._index = 0; // into options.transports
      this._failures = 0; // consecutive failures of the current transport
      this._streak = 0; // consecutive failures of any transport: the backoff exponent
      this._worked = new Set(); // transports that have opened at least once
      this._stop = null; // stops the current connection
      this._timer = setTimeout(() => this._connect(), 0); // after the caller adds listeners
      this._closed = false;
    }

    // Stops for good: no more events but a last `close` if a connection was open.
    close() {
      this._closed = true;
      clearTimeout(this._timer);
      if (this._stop) this._stop("closed by the client");
    }

    _emit(type, detail) {
      this.dispatchEvent(new CustomEvent(type, { detail }));
    }

    _connect() {
      const name = this.options.transports[this._index];
      this.transport = name;
      let live = true, opened = false, stop = null;
      const end = (reason) => {
        if (!live) return;
        live = false;
        clearTimeout(deadline);
        if (stop) stop();
        if (opened) this._emit("close", { transport: name, reason });
        this._ended(name, reason);
      };
      // No first byte in time: refused silently, or a proxy that buffers the response.
      const deadline = setTimeout(() => end("no first byte in time"), this.options.firstByteTimeoutMs);
      const sink = {
        open: () => {
          if (!live || opened) return;
          opened = true;
          clearTimeout(deadline);
          this._failures = this._streak = 0;
          this._worked.add(name);
          this._emit("open", { transport: name });
        },
        cursor: (next) => {
          if (live && typeof next === "string") this.cursor = next;
        },
        gap: (next) => {
          if (!live) return;
          sink.open();
          this.cursor = next;
          this._emit("gap", { next });
        },
        message: (id, event, data) => {
          if (!live || seen(id, this.cursor)) return; // a duplicate: skip it
          if (id) this.cursor = id;
          this._emit("message", { id, event, data });
        },
        // A pushwire JSON object: {"type":"open"|"gap","next":C} or {"id":C,"data"|"data_b64":…}.
        envelope: (json) => {
          let m = json;
          try {
            if (typeof json === "string") m = JSON.parse(json);
          } catch (_) {
            return end("bad JSON from the server");
          }
          if (m.type === "open") {
            sink.open();
            sink.cursor(m.next);
          } else if (m.type === "gap") sink.gap(m.next);
          else if (typeof m.id === "string") {
            sink.open();
            const data = typeof m.data_b64 === "string" ? fromBase64(m.data_b64) : m.data;
            sink.message(m.id, m.event || "message", data);
          }
        },
        end,
      };
      this._stop = end;
      try {
        stop = TRANSPORTS[name](this, sink);
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

  global.Pushwire = Pushwire;
})(typeof window !== "undefined" ? window : globalThis);
