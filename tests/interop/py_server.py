"""Interop peer: Python `websockets` (sync API) as a server for pushwire's client.

Run by tests/interop.rs with the venv made by scripts/setup-interop.sh:

    py_server.py echo     echoes every message on any path, until killed
    py_server.py masked   after the handshake sends one MASKED text frame, which a client MUST
                          fail (RFC 6455 §5.1), then prints "client closed with CODE" for the
                          close frame the client answered with (or "no close frame: ...")

Binds 127.0.0.1 on a free port and prints "listening PORT" first. Every wait has a timeout.
"""

import struct
import sys

try:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.server import serve
except ImportError:
    sys.exit("websockets is not installed: run `bash scripts/setup-interop.sh`")

TIMEOUT_S = 10


def masked_text_frame(payload: bytes, key: bytes = b"\x11\x22\x33\x44") -> bytes:
    assert len(payload) < 126
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + key + masked


def echo(ws):
    for message in ws:
        ws.send(message)


def masked(ws):
    # Raw bytes behind the library's back: websockets itself never masks as a server.
    ws.socket.sendall(masked_text_frame(b"masked by the server"))
    try:
        ws.recv(timeout=TIMEOUT_S)
        print("no close frame: the client accepted the masked frame", flush=True)
    except ConnectionClosed as e:
        if e.rcvd is None:
            print("no close frame: connection ended without one", flush=True)
        else:
            print(f"client closed with {e.rcvd.code}", flush=True)
    except TimeoutError:
        print("no close frame: timed out", flush=True)


def main():
    handler = {"echo": echo, "masked": masked}[sys.argv[1]]
    with serve(handler, "127.0.0.1", 0, max_size=16 * 2**20, open_timeout=TIMEOUT_S,
               close_timeout=TIMEOUT_S, compression=None) as server:
        print(f"listening {server.socket.getsockname()[1]}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
