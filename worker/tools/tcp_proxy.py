"""A small TCP proxy on 127.0.0.1 that injects network faults: latency and dropped links.

Fault tests and the soak put it between the worker and Redis (or any TCP server): every
chunk passed in either direction waits ``delay_s`` first, so a slow server is slow in the
way a congested link or an overloaded Redis is, and ``cut()`` resets every open
connection at once, as a failover or a network partition does to its clients.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; ``delay_s`` and ``cut()`` inject faults.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, target: tuple[str, int], delay_s: float = 0.0) -> None:
        self.target, self.delay_s = target, delay_s
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._links: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cut(self) -> int:
        """Reset every open connection (new ones are still accepted); how many were cut."""
        with self._lock:
            links, self._links = self._links, set()
        for sock in links:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                sock.close()  # linger 0: an RST, as a dead peer would send
        return len(links) // 2

    def close(self) -> None:
        """Stop accepting and cut everything."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._links |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.delay_s > 0:
                    time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._links -= {src, dst}
