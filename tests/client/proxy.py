"""A loopback TCP proxy that cuts stream connections mid-answer, to test reconnection.

Every connection is forwarded to the daemon. The first `cuts` connections whose request
opens a task stream are closed, both ways, once `limit` bytes of the answer went
through, as a network failure would: the client sees its stream break mid-frame.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

STREAM_MARKER = b"/stream"
CHUNK = 4096


class CuttingProxy:
    def __init__(self, upstream_port: int, *, cuts: int, limit: int) -> None:
        self.upstream_port = upstream_port
        self.limit = limit
        self.cuts_left = cuts
        self.cuts_done = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [downstream, upstream]
            threading.Thread(target=self._serve, args=(downstream, upstream), daemon=True).start()

    def _serve(self, downstream: socket.socket, upstream: socket.socket) -> None:
        request = downstream.recv(CHUNK)
        if not request:
            return
        upstream.sendall(request)
        limit = None
        if STREAM_MARKER in request.split(b"\r\n", 1)[0]:
            with self._lock:
                if self.cuts_left > 0:
                    self.cuts_left -= 1
                    limit = self.limit
        threading.Thread(target=self._pump, args=(downstream, upstream, None), daemon=True).start()
        self._pump(upstream, downstream, limit)

    def _pump(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    sink.sendall(data[: limit - sent])
                    with self._lock:
                        self.cuts_done += 1
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def cutting_proxy(upstream_port: int, *, cuts: int, limit: int) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(upstream_port, cuts=cuts, limit=limit)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
