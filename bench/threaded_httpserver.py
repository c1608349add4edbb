"""The naive baseline for bench/webhook_server.py: the threaded HTTP/1.1 server
the exporter used before its asynchronous one (a copy of the old
exporter/httpserver.py, imports made absolute; the listen address parsing and
the reloading TLS context, unchanged, are imported from the exporter). Not
used by the exporter.

A small threaded HTTP/1.1 server shared by the webhook and the metrics endpoint.

Built on the standard library (:mod:`socketserver`, :mod:`http.server`,
:mod:`ssl`) with what a long-running exporter needs and the stdlib servers
lack:

- a bounded number of connections: the accept loop takes a connection only
  when a worker slot is free, so excess clients wait in the kernel's listen
  backlog instead of each getting a thread;
- a read deadline per request (headers and body, as Go's
  ``http.Server.ReadTimeout``), which also bounds the time an idle keep-alive
  connection may hold a worker: a slow or silent client is cut off;
- optional TLS (1.2 or later) whose certificate, key and client CA are
  re-read when they change on disk; the handshake runs in the worker thread,
  so a client that connects and never speaks cannot stall accepting;
- a graceful shutdown: stop accepting, close idle keep-alive connections,
  let requests in flight finish up to a timeout, then cut the rest.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import logging
import math
import selectors
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from exporter import __version__
from exporter.httpserver import format_address, parse_listen_address
from exporter.logs import RateLimitedLog
from exporter.tlsreload import ReloadingTLSContext, ssl_reason

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

log = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_TLS_RELOAD_INTERVAL = 5.0
LISTEN_BACKLOG = 128

# When a response closes the connection before the request body was read, the
# client may still be sending it; closing at once would answer it with a TCP
# reset that can destroy our response before the client reads it. Drain (and
# discard) for a little while first, as Go's net/http does.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 16 << 20


def _resolve(host: str, port: int) -> tuple[int, tuple[str, int]]:
    """Address family and socket address to bind ``host:port`` to."""
    if not host:
        if socket.has_dualstack_ipv6():
            return socket.AF_INET6, ("::", port)
        return socket.AF_INET, ("0.0.0.0", port)
    try:
        infos = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise ValueError(f"listen address {host!r}: cannot resolve: {e.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return int(family), (str(sockaddr[0]), int(sockaddr[1]))


_ssl_reason = ssl_reason


# --- connections -------------------------------------------------------------


class _DeadlineReader(io.RawIOBase):
    """Socket reads that fail with TimeoutError once ``deadline`` has passed.

    A per-``recv`` timeout alone lets a client that sends one byte at a time
    keep a worker forever; the deadline bounds the whole request."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = math.inf

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("read deadline exceeded")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _SocketWriter(io.BufferedIOBase):
    """Unbuffered writes with a timeout, so a client that does not read its
    response cannot hold a worker either."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        super().__init__()
        self._sock = sock
        self._timeout = timeout

    def writable(self) -> bool:
        return True

    def write(self, b: ReadableBuffer, /) -> int:
        self._sock.settimeout(self._timeout)
        self._sock.sendall(b)
        with memoryview(b) as view:
            return view.nbytes


class _Connection:
    __slots__ = ("busy", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        # True while a request is being read or answered; an idle connection
        # (TLS handshake, or waiting for the next request) is closed at once
        # on shutdown.
        self.busy = False

    def abort(self) -> None:
        """Wake up whatever the worker is blocked on; it then closes the socket.

        ``socket.socket.shutdown`` acts on the descriptor and leaves an
        SSLSocket's TLS state (owned by the worker thread) alone."""
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


class RequestHandler(http.server.BaseHTTPRequestHandler):
    """Base for the servers' handlers: every standard method goes to :meth:`route`.

    Subclasses answer with :meth:`respond` and set :attr:`linger` when they
    close the connection without reading a request body the client may still
    be sending.
    """

    protocol_version = "HTTP/1.1"
    server_version = f"kube-audit-exporter/{__version__}"
    sys_version = ""
    rbufsize = 64 << 10
    server: HTTPServer

    def __init__(self, request: socket.socket, client_address: Any, server: HTTPServer) -> None:
        self.conn = server.connection(request)
        self.peer = self.conn.peer
        self.linger = False
        super().__init__(request, client_address, server)

    def route(self) -> None:
        raise NotImplementedError

    def version_string(self) -> str:
        return self.server_version

    def do_POST(self) -> None:
        self.route()

    do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = do_POST

    # --- plumbing --------------------------------------------------------------

    def setup(self) -> None:
        self.connection = self.request
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader, self.rbufsize)
        self.wfile = _SocketWriter(self.connection, self.server.read_timeout)

    def handle_one_request(self) -> None:
        # Between requests the connection is idle: shutdown may close it.
        if not self.server.set_busy(self.conn, False):
            self.close_connection = True
            return
        self._reader.deadline = time.monotonic() + self.server.read_timeout
        self.linger = False
        super().handle_one_request()

    def parse_request(self) -> bool:
        # The request line has arrived: the request is in flight from here on.
        if not self.server.set_busy(self.conn, True):
            self.close_connection = True
            return False
        return super().parse_request()

    def end_headers(self) -> None:
        if self.server.stopping and not self.close_connection:
            self.send_header("Connection", "close")
        super().end_headers()

    def finish(self) -> None:
        super().finish()
        if self.linger:
            self._linger()

    def _linger(self) -> None:
        sock = self.connection
        try:
            socket.socket.shutdown(sock, socket.SHUT_WR)
            deadline = time.monotonic() + min(LINGER_SECONDS, self.server.read_timeout)
            buf = bytearray(64 << 10)
            drained = 0
            while drained < LINGER_MAX_BYTES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                n = sock.recv_into(buf)
                if not n:
                    break
                drained += n
        except OSError:
            pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Called once for every response sent (send_response), errors included.
        if isinstance(code, int):
            self.on_response(int(code))

    def on_response(self, code: int) -> None:
        """Hook: a response with status ``code`` is being sent."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args, extra={"peer": self.peer})

    # --- answers ---------------------------------------------------------------

    def respond(
        self,
        code: int,
        body: bytes,
        content_type: str,
        *,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


HandlerFactory = Callable[[socket.socket, Any, "HTTPServer"], RequestHandler]


class HTTPServer(socketserver.TCPServer):
    """A threaded HTTP/1.1 server with bounded connections (see the module doc).

    Binds in the constructor (so a busy port fails at start-up), serves after
    :meth:`start`, stops with :meth:`shutdown`.
    """

    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        listen_address: str,
        handler: HandlerFactory,
        *,
        name: str,
        tls: ReloadingTLSContext | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        on_handshake_failure: Callable[[str], None] | None = None,
    ) -> None:
        """``on_handshake_failure`` gets the OpenSSL reason of each failed TLS
        handshake (a missing or untrusted client certificate, ...)."""
        if max_connections < 1:
            raise ValueError(f"{name}: max_connections must be >= 1")
        if not read_timeout > 0:
            raise ValueError(f"{name}: read_timeout must be > 0")
        host, port = parse_listen_address(listen_address)
        family, sockaddr = _resolve(host, port)
        self.address_family = family
        self._dualstack = not host and family == socket.AF_INET6
        self.name = name
        self.handler = handler
        self.tls = tls
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self._cond = threading.Condition()
        self._conns: dict[socket.socket, _Connection] = {}
        self._stopping = False
        self._serial = 0
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._handshake_log = RateLimitedLog(log)
        self._on_handshake_failure = on_handshake_failure
        try:
            super().__init__(sockaddr, handler, bind_and_activate=True)
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise
        self.socket.setblocking(False)
        bound = self.socket.getsockname()
        self._address = (str(bound[0]), int(bound[1]))

    def server_bind(self) -> None:
        if self._dualstack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the real port when listening on port 0."""
        return self._address

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} server already started")
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"{self.name}-accept", daemon=True
        )
        self._thread.start()

    # --- accept loop -----------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept connections while a worker slot is free, until shutdown."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.socket, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                with self._cond:
                    while len(self._conns) >= self.max_connections and not self._stopping:
                        self._cond.wait()
                    if self._stopping:
                        return
                sel.select()
                if self._stopping:
                    return
                try:
                    sock, addr = self.socket.accept()
                except (BlockingIOError, InterruptedError):
                    continue  # woken without a connection, or the client left
                except OSError as e:
                    # Out of file descriptors (EMFILE) and the like: back off
                    # instead of spinning on a listen socket that stays readable.
                    log.error("accept failed", extra={"server": self.name, "error": str(e)})
                    with self._cond:
                        self._cond.wait(0.1)
                    continue
                self.process_request(sock, addr)

    def process_request(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        conn = _Connection(sock, format_address((str(client_address[0]), client_address[1])))
        with self._cond:
            self._conns[sock] = conn
            self._serial += 1
            serial = self._serial
        worker = threading.Thread(
            target=self._serve_connection,
            args=(conn, client_address),
            name=f"{self.name}-conn-{serial}",
            daemon=True,
        )
        try:
            worker.start()
        except RuntimeError:  # cannot start a new thread
            log.error(
                "cannot start a worker thread", extra={"server": self.name, "peer": conn.peer}
            )
            self._forget(conn)
            sock.close()

    def _serve_connection(self, conn: _Connection, client_address: Any) -> None:
        try:
            conn.sock.settimeout(self.read_timeout)
            with contextlib.suppress(OSError):
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None and not self._handshake(conn):
                return
            self.handler(conn.sock, client_address, self)
        except OSError as e:
            # The client went away or timed out mid-response: nothing to answer.
            log.debug(
                "connection error", extra={"server": self.name, "peer": conn.peer, "error": str(e)}
            )
        except Exception:
            log.exception("unexpected error serving a connection", extra={"server": self.name})
        finally:
            self._forget(conn)
            conn.sock.close()

    def _handshake(self, conn: _Connection) -> bool:
        assert self.tls is not None
        ctx = self.tls.current()
        try:
            tls_sock = ctx.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
        except OSError as e:
            log.debug("TLS wrap failed", extra={"peer": conn.peer, "error": str(e)})
            return False
        with self._cond:
            del self._conns[conn.sock]
            conn.sock = tls_sock
            self._conns[tls_sock] = conn
            if self._stopping:
                return False
        try:
            # The socket timeout bounds the whole handshake (CPython applies it
            # as one deadline), so a client that never speaks is dropped.
            tls_sock.do_handshake()
        except ssl.SSLError as e:
            if isinstance(e, ssl.SSLEOFError):
                log.debug("TLS handshake: client went away", extra={"peer": conn.peer})
            else:
                reason = _ssl_reason(e)
                if self._on_handshake_failure is not None:
                    self._on_handshake_failure(reason)
                self._handshake_log.warning(
                    "TLS handshake failed", server=self.name, peer=conn.peer, error=reason
                )
            return False
        except OSError as e:
            log.debug("TLS handshake aborted", extra={"peer": conn.peer, "error": str(e)})
            return False
        return True

    def _forget(self, conn: _Connection) -> None:
        with self._cond:
            self._conns.pop(conn.sock, None)
            self._cond.notify_all()

    # --- used by RequestHandler ---------------------------------------------

    def connection(self, sock: socket.socket) -> _Connection:
        with self._cond:
            return self._conns[sock]

    def set_busy(self, conn: _Connection, busy: bool) -> bool:
        """Mark ``conn`` busy (a request is in flight) or idle; False when the
        server is stopping and the connection must not take a new request."""
        with self._cond:
            if self._stopping:
                return False
            conn.busy = busy
            return True

    # --- shutdown --------------------------------------------------------------

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting, close idle connections, wait up to ``timeout``
        seconds for requests in flight, then close whatever is left."""
        deadline = time.monotonic() + timeout
        with self._cond:
            already = self._stopping
            self._stopping = True
            self._cond.notify_all()
        if already:
            return
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self.server_close()
        self._wake_r.close()
        self._wake_w.close()
        with self._cond:
            for conn in self._conns.values():
                if not conn.busy:
                    conn.abort()
            drained = self._cond.wait_for(
                lambda: not self._conns, max(0.0, deadline - time.monotonic())
            )
            if not drained:
                log.warning(
                    "closing connections still busy at the shutdown timeout",
                    extra={"server": self.name, "connections": len(self._conns)},
                )
                for conn in self._conns.values():
                    conn.abort()
                # The workers exit as soon as their sockets fail; wait briefly.
                self._cond.wait_for(lambda: not self._conns, 1.0)
