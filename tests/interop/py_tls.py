"""Interop peer: TLS servers for pushwire's client (`wss://`, `https://`), with Python's `ssl`.

Run by tests/interop.rs with the venv made by scripts/setup-interop.sh:

    py_tls.py ws-echo CERT KEY          Python `websockets` over TLS: echoes every message
    py_tls.py proxy CERT KEY UPSTREAM   TLS terminator: each TLS connection is relayed as plain
                                        TCP to 127.0.0.1:UPSTREAM (a `pushwire serve`)

CERT is a PEM certificate chain, KEY its private key (made by the test, never committed).
Binds 127.0.0.1 on a free port and prints "listening PORT" first; runs until killed. Every
blocking wait has a timeout.
"""

import socket
import ssl
import sys
import threading

TIMEOUT_S = 10


def context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def ws_echo(cert, key):
    try:
        from websockets.sync.server import serve
    except ImportError:
        sys.exit("websockets is not installed: run `bash scripts/setup-interop.sh`")

    def echo(ws):
        for message in ws:
            ws.send(message)

    with serve(echo, "127.0.0.1", 0, ssl=context(cert, key), max_size=16 * 2**20,
               open_timeout=TIMEOUT_S, close_timeout=TIMEOUT_S, compression=None) as server:
        print(f"listening {server.socket.getsockname()[1]}", flush=True)
        server.serve_forever()


def pump(src, dst):
    """Copies src to dst until EOF or an error, then ends both directions."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except (OSError, ssl.SSLError):
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def relay(ctx, raw, upstream_port):
    try:
        raw.settimeout(TIMEOUT_S)
        tls = ctx.wrap_socket(raw, server_side=True)
        # Push streams may be quiet for long: no timeout once the handshake is done.
        tls.settimeout(None)
        plain = socket.create_connection(("127.0.0.1", upstream_port), timeout=TIMEOUT_S)
        plain.settimeout(None)
    except (OSError, ssl.SSLError) as e:
        print(f"handshake failed: {e}", file=sys.stderr, flush=True)
        raw.close()
        return
    threading.Thread(target=pump, args=(plain, tls), daemon=True).start()
    pump(tls, plain)


def proxy(cert, key, upstream_port):
    ctx = context(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"listening {listener.getsockname()[1]}", flush=True)
    while True:
        raw, _ = listener.accept()
        threading.Thread(target=relay, args=(ctx, raw, upstream_port), daemon=True).start()


def main():
    mode, cert, key = sys.argv[1:4]
    if mode == "ws-echo":
        ws_echo(cert, key)
    elif mode == "proxy":
        proxy(cert, key, int(sys.argv[4]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
