"""A real Python SSE reader (sseclient from PyPI, which reconnects by itself and sends
Last-Event-ID) against pushwire, through a proxy that cuts the connection mid-stream.

    py_sse.py HOST:PORT CHANNEL

Prints one line per passed check and `ok` at the end; exits non-zero on the first failure.
"""

import http.client
import socket
import sys
import threading

import sseclient

TIMEOUT_S = 10


def check(ok, what):
    if not ok:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"passed: {what}", flush=True)


class CuttingProxy:
    """Forwards loopback connections to the server; `cut()` ends every open one, and the
    request heads that went through are kept for inspection."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = []
        self.heads = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(self.upstream, timeout=TIMEOUT_S)
            with self.lock:
                self.open += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src, dst, request):
        first = True
        try:
            while data := src.recv(65536):
                if request and first:
                    with self.lock:
                        self.heads.append(data.decode("latin-1"))
                    first = False
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.open = []


def publish(addr, channel, text):
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    conn.request("POST", f"/channels/{channel}", text.encode(), {"Content-Type": "text/plain"})
    status = conn.getresponse().status
    conn.close()
    check(status == 201, f"publish {text!r}")


def main():
    addr, channel = sys.argv[1], sys.argv[2]
    host, port = addr.split(":")
    proxy = CuttingProxy((host, int(port)))
    client = sseclient.SSEClient(f"http://127.0.0.1:{proxy.port}/channels/{channel}?mode=sse",
                                 retry=100, timeout=TIMEOUT_S)
    events = iter(client)

    def next_data():
        # Blocks without data (the opening cursor, the retry hint) are not messages.
        for event in events:
            if event.data:
                return event
        return None

    first = next(events)  # the retry hint or the opening cursor: the subscription exists
    check(first is not None, "stream opened")
    publish(addr, channel, "m1")
    publish(addr, channel, "m2")
    got = [next_data(), next_data()]
    check([e.data for e in got] == ["m1", "m2"], "first two messages")
    last_seen = got[1].id
    proxy.cut()
    publish(addr, channel, "m3")
    publish(addr, channel, "m4")
    got = [next_data(), next_data()]
    check([e.data for e in got] == ["m3", "m4"], "exactly the missed messages after the cut, in order")
    with proxy.lock:
        heads = list(proxy.heads)
    check(len(heads) >= 2, "the reader reconnected")
    check(f"last-event-id: {last_seen}\r\n".lower() in heads[-1].lower(), "reconnect carried Last-Event-ID of m2")
    print("ok", flush=True)


main()
