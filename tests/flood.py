"""Floods of idle or slow connections, for the HTTP layer's attack tests and
bench/webhook_server.py."""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable


class Flood:
    """Holds ``count`` connections open from a thread. With ``replace``, each
    one the server closes is opened again, as an attacker would; with
    ``dribble``, every open connection sends the next byte of it (then
    ``filler`` forever) each ``interval`` seconds."""

    def __init__(
        self,
        opener: Callable[[], socket.socket],
        count: int,
        *,
        replace: bool = False,
        dribble: bytes = b"",
        filler: bytes = b"a",
        interval: float = 0.2,
    ) -> None:
        self.opener = opener
        self.count = count
        self.replace = replace
        self.dribble = dribble
        self.filler = filler
        self.interval = interval
        self.closed_by_server = 0
        self._socks: dict[socket.socket, int] = {}
        self._sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def __enter__(self) -> Flood:
        for _ in range(self.count):
            self._open()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        for sock in list(self._socks):
            sock.close()
        self._sel.close()

    def _open(self) -> None:
        sock = self.opener()
        sock.setblocking(False)
        self._socks[sock] = 0
        self._sel.register(sock, selectors.EVENT_READ)

    def _closed(self, sock: socket.socket) -> None:
        self._sel.unregister(sock)
        del self._socks[sock]
        sock.close()
        self.closed_by_server += 1
        if self.replace and not self._stop.is_set():
            with contextlib.suppress(OSError):
                self._open()

    def _run(self) -> None:
        next_byte = time.monotonic()
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._closed(sock)
            if self.dribble and time.monotonic() >= next_byte:
                next_byte = time.monotonic() + self.interval
                for sock, sent in list(self._socks.items()):
                    byte = self.dribble[sent : sent + 1] or self.filler
                    try:
                        sock.send(byte)
                        self._socks[sock] = sent + 1
                    except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                        pass
                    except OSError as e:
                        if e.errno != errno.ENOTCONN:  # else still connecting
                            self._closed(sock)


def tcp(address: tuple[str, int]) -> Callable[[], socket.socket]:
    """Plain TCP connections that never send a byte; the connect does not
    wait (a server that stops accepting leaves them in its backlog)."""

    def opener() -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        sock.setblocking(False)
        err = sock.connect_ex(address)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(err, "connect failed")
        return sock

    return opener


def tls(address: tuple[str, int], context: ssl.SSLContext) -> Callable[[], socket.socket]:
    def opener() -> socket.socket:
        sock = socket.create_connection(address, timeout=30)
        return context.wrap_socket(sock, server_hostname="127.0.0.1")

    return opener
