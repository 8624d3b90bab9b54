#!/usr/bin/env python3
"""Server memory per idle WebSocket subscription, over wss:// or ws://, measured the way
`pushwire bench idle` does it (VmRSS of the server before and after, divided by the count):
`pushwire bench idle` has no TLS mode, so benches/compare.sh runs this for both schemes and
reports them side by side.

    idle_tls.py URL PID COUNT HOLD_SECONDS [CA_FILE]

URL is ws://HOST:PORT/PATH or wss://NAME:PORT/PATH (connects to 127.0.0.1, checks the
certificate for NAME against CA_FILE). Opens COUNT WebSocket subscriptions (TLS handshake,
opening handshake, the 101 read), holds them HOLD_SECONDS (answering nothing: the server's
ping interval must be longer), reads the server's VmRSS again and prints one JSON line:
{"mode":"idle","scheme":...,"connections":...,"rss_before_bytes":...,"rss_after_bytes":...,
"bytes_per_connection":...}. Needs an open-file limit above COUNT.
"""
import asyncio
import base64
import json
import os
import ssl
import sys
from urllib.parse import urlsplit


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise SystemExit(f"no VmRSS for pid {pid}")


async def subscribe(url, context):
    port = url.port
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=url.hostname if context else None)
    key = base64.b64encode(os.urandom(16)).decode()
    path = url.path + (f"?{url.query}" if url.query else "")
    writer.write((f"GET {path} HTTP/1.1\r\nHost: {url.hostname}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    if not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"not upgraded: {head[:100]!r}")
    return writer


async def main():
    raw_url, pid, count, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    url = urlsplit(raw_url)
    context = None
    if url.scheme == "wss":
        context = ssl.create_default_context(cafile=sys.argv[5])
    before = rss_bytes(pid)
    writers = []
    batch = 32  # below the server's default bound on TLS handshakes in progress
    for start in range(0, count, batch):
        writers += await asyncio.gather(*(subscribe(url, context) for _ in range(start, min(count, start + batch))))
    await asyncio.sleep(hold)
    after = rss_bytes(pid)
    print(json.dumps({"mode": "idle", "scheme": url.scheme, "connections": count, "rss_before_bytes": before,
                      "rss_after_bytes": after, "bytes_per_connection": (after - before) // count}), flush=True)
    for w in writers:
        w.close()


asyncio.run(main())
