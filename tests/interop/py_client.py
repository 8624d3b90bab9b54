"""Interop peer: Python `websockets` (sync API) as a client of `pushwire serve`.

Run by tests/interop.rs with the venv made by scripts/setup-interop.sh:

    py_client.py echo HOST:PORT [CA_PEM]    text, binary, 1 MiB of each, ping, close on /echo;
                                            with CA_PEM over wss:// trusting that CA
    py_client.py channel HOST:PORT CHANNEL  subscribe (plain and pushwire.v1), publish over HTTP
    py_client.py deflate HOST:PORT CHANNEL  permessage-deflate negotiated; 1 KiB echoed and broadcast;
                                            offers naming the server's window (15, 10) accepted

Prints one line per check and "ok" at the end; any failure raises (non-zero exit). Every wait
has a timeout and only loopback addresses are used.
"""

import http.client
import json
import os
import sys

try:
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    from websockets.sync.client import connect
except ImportError:
    sys.exit("websockets is not installed: run `bash scripts/setup-interop.sh`")

TIMEOUT_S = 10


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("passed:", what, flush=True)


def ws_connect(url, **kwargs):
    # proxy=None: never route loopback tests through a proxy from the environment.
    return connect(url, open_timeout=TIMEOUT_S, close_timeout=TIMEOUT_S, proxy=None, **kwargs)


def http_request(addr, method, target, body=None, content_type="text/plain"):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    headers = {"Content-Type": content_type} if body is not None else {}
    conn.request(method, target, body=body, headers=headers)
    res = conn.getresponse()
    data = res.read()
    conn.close()
    return res.status, data


def echo(addr, ca_pem=None):
    kwargs = {}
    scheme = "ws"
    if ca_pem is not None:
        import ssl

        context = ssl.create_default_context(cafile=ca_pem)
        context.set_alpn_protocols(["http/1.1"])
        kwargs["ssl"] = context
        scheme = "wss"
    with ws_connect(f"{scheme}://{addr}/echo", max_size=4 * 2**20, **kwargs) as ws:
        if ca_pem is not None:
            tls = ws.socket
            check(tls.version() in ("TLSv1.3", "TLSv1.2"), f"TLS handshake ({tls.version()})")
            check(tls.selected_alpn_protocol() == "http/1.1", "ALPN http/1.1")
        for msg in ["héllo ✓", "", bytes(range(256)), b""]:
            ws.send(msg)
            check(ws.recv(timeout=TIMEOUT_S) == msg, f"echo of {type(msg).__name__} {msg[:12]!r}")
        big_binary = os.urandom(2**20)
        ws.send(big_binary)
        check(ws.recv(timeout=TIMEOUT_S) == big_binary, "echo of a 1 MiB binary message")
        big_text = "abcdefghijklmné" * 2**16  # 16 bytes of UTF-8 each: 1 MiB
        assert len(big_text.encode()) == 2**20
        ws.send(big_text)
        check(ws.recv(timeout=TIMEOUT_S) == big_text, "echo of a 1 MiB text message")
        pong = ws.ping(b"interop")
        check(pong.wait(TIMEOUT_S), "pong for a ping")
        ws.close(1000, "done")
        check(ws.close_code == 1000, f"closing handshake answered with 1000 (got {ws.close_code})")


def channel(addr, name):
    status, body = http_request(addr, "GET", f"/channels/{name}")
    check(status == 200, "short poll for the current cursor")
    since = json.loads(body)["next"].replace(":", "%3A")
    url = f"ws://{addr}/channels/{name}?since={since}"
    with ws_connect(url) as plain, ws_connect(url, subprotocols=["pushwire.v1"]) as v1:
        check(plain.subprotocol is None, "no subprotocol when none is offered")
        check(v1.subprotocol == "pushwire.v1", "pushwire.v1 selected")
        opened = json.loads(v1.recv(timeout=TIMEOUT_S))
        check(opened == {"type": "open", "next": json.loads(body)["next"]}, "subscription opens with its cursor")
        status, body = http_request(addr, "POST", f"/channels/{name}", "from python")
        check(status == 201, "publish over HTTP")
        msg_id = json.loads(body)["id"]
        check(plain.recv(timeout=TIMEOUT_S) == "from python", "plain subscriber gets a text frame")
        envelope = json.loads(v1.recv(timeout=TIMEOUT_S))
        check(envelope.get("data") == "from python", "pushwire.v1 envelope carries the data")
        check(envelope.get("id") == msg_id, "pushwire.v1 envelope carries the message id")
        status, _ = http_request(addr, "POST", f"/channels/{name}", bytes([0, 1, 2]), "application/octet-stream")
        check(status == 201, "publish binary over HTTP")
        check(plain.recv(timeout=TIMEOUT_S) == bytes([0, 1, 2]), "plain subscriber gets a binary frame")


def deflate(addr, name):
    doc = json.dumps({"items": [{"id": i, "symbol": "ABC", "price": 101.25} for i in range(25)]})
    with ws_connect(f"ws://{addr}/echo") as ws:
        answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        check(answer.startswith("permessage-deflate"), "permessage-deflate negotiated")
        check("server_no_context_takeover" in answer and "client_no_context_takeover" in answer,
              "both no_context_takeover parameters in the answer")
        # websockets compresses what it sends: pushwire inflates it and compresses the echo.
        ws.send(doc)
        check(ws.recv(timeout=TIMEOUT_S) == doc, "compressed 1 KiB echoed")
    with ws_connect(f"ws://{addr}/channels/{name}") as sub:
        check(sub.response.headers.get("Sec-WebSocket-Extensions", "").startswith("permessage-deflate"),
              "subscriber negotiated permessage-deflate")
        status, _ = http_request(addr, "POST", f"/channels/{name}", doc)
        check(status == 201, "publish 1 KiB over HTTP")
        check(sub.recv(timeout=TIMEOUT_S) == doc, "compressed broadcast inflated")
    # An offer naming server_max_window_bits is accepted only by an answer naming it (RFC 7692
    # §7.1.2.1); websockets fails the handshake otherwise, even at 15.
    for bits in (15, 10):
        offer = ClientPerMessageDeflateFactory(server_max_window_bits=bits, client_max_window_bits=True)
        with ws_connect(f"ws://{addr}/echo", extensions=[offer], compression=None) as ws:
            answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            check(f"server_max_window_bits={bits}" in answer, f"server_max_window_bits={bits} offered and answered")
            ws.send(doc)
            check(ws.recv(timeout=TIMEOUT_S) == doc, f"echoed within a {bits}-bit window")


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    {"echo": echo, "channel": channel, "deflate": deflate}[mode](*args)
    print("ok", flush=True)


if __name__ == "__main__":
    main()
