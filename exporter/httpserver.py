"""The asynchronous HTTP/1.1 server shared by the webhook and the metrics endpoint.

aiohttp's low-level server (its parser is llhttp, in C) on an asyncio event
loop, one loop thread per listener, so a flood on one port never slows the
other. A connection is a few kilobytes of state, not a thread: thousands of
idle or slow clients cost memory, never service. What an exporter facing
hostile clients needs and aiohttp alone does not do, this module adds around
it (each :class:`Connection` sits between the transport and aiohttp's
protocol):

- TLS (1.2 or later) done per connection with ``loop.start_tls`` and the
  current :class:`~exporter.tlsreload.ReloadingTLSContext`, so certificates
  are reloaded from disk, and a failed or slow handshake is seen and counted;
- one deadline at a time per connection: the TLS handshake, the request head
  (counted from the connection's start for its first request, from the first
  byte for later ones), the whole request (the endpoint reads the body under
  :attr:`Connection.deadline`), the response write, the keep-alive idle time;
- a connection is only an accepted socket until its client sends a byte: no
  transport, no TLS state (asyncio's TLS layer alone takes 256 KiB a
  connection), no slot, and the handshake deadline already running; over
  ``max_connections`` (at least 1024) such sockets the oldest is cut
  (``too_many``);
- a connection limit that makes room: a connection that has spoken takes a
  slot; when none is free, the oldest connection that has been in its TLS
  handshake, or waiting for its request, for a second or more is cut
  (``too_many``), so clients that connect and stall cannot shut out one that
  sends a request; when none has, the new connection waits, still without
  TLS state, for a free slot (a queue as long as the limit or the listen
  backlog; over it its oldest is cut);
- limits on the request line and header fields (aiohttp's parser) and answers
  for what the parser refuses (400, 431), built by the endpoint so each
  listener answers in its own format;
- every connection the server cuts counted in
  ``kube_audit_http_connections_closed_total{listener,reason}`` and logged at
  a bounded rate, without a traceback;
- the GIL's switch interval lowered to 1 ms, so the loop thread gets the
  GIL back quickly from the pipeline's worker threads each time it wakes for
  I/O (with the default 5 ms, webhook throughput fell below the threaded
  server's; see bench/webhook_server.py);
- a graceful shutdown: stop accepting, close connections not in a request,
  let requests in flight finish (answered with ``Connection: close``) up to a
  timeout, then cut the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from . import __version__
from .httpconn import Connection, RequestProtocol, peek
from .logs import RateLimitedLog
from .metrics import HTTPMetrics
from .tlsreload import ReloadingTLSContext

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024
# Connections accepted per wake-up, so that the readiness of those already
# accepted is seen between bursts.
ACCEPT_BURST = 64
READ_BUFFER = 1 << 20
SWITCH_INTERVAL = 0.001
SERVER = f"kube-audit-exporter/{__version__}"
# When a response closes the connection before the request body was read, the
# client may still be sending it; closing at once would answer it with a TCP
# reset that can destroy the response before the client reads it. aiohttp
# reads (and discards) for a little while first, as Go's net/http does.
LINGER_SECONDS = 2.0
# Cuts that are routine (a keep-alive connection the client left idle) are
# counted but logged at debug level only.
ROUTINE_CUTS = frozenset({"idle"})
# At the connection limit, a connection still in its TLS handshake, or waiting
# for its request, for this long is cut to make room for a new one. A client
# that means to send a request does so well within it; one that holds
# connections open without speaking cannot shut out the others.
EVICT_AFTER = 1.0


@dataclass(frozen=True)
class Limits:
    """Deadlines (seconds) and sizes of one listener."""

    max_connections: int = 4096
    handshake_timeout: float = 5.0
    header_timeout: float = 10.0
    # The whole request, head and body, from its first byte; also bounds the
    # time a client may take to read its response.
    read_timeout: float = 30.0
    idle_timeout: float = 90.0
    # One request line or header field (name or value); 431 above.
    max_header_bytes: int = 8190
    max_headers: int = 100

    def problems(self, prefix: str) -> list[str]:
        """What is wrong, each as ``prefix.field: reason``."""
        out = []
        for name in ("max_connections", "max_header_bytes", "max_headers"):
            if getattr(self, name) < 1:
                out.append(f"{prefix}.{name}: must be >= 1")
        for name in ("handshake_timeout", "header_timeout", "read_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                out.append(f"{prefix}.{name}: must be > 0")
        return out


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port``, ``:port`` (all interfaces) or ``[ipv6]:port`` to (host, port).

    The host is ``""`` for all interfaces. Raises ValueError with a message
    that can be shown as is.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ValueError(f"listen address {value!r}: expected host:port, :port or [ipv6]:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise ValueError(f"listen address {value!r}: empty IPv6 address")
    elif ":" in host:
        raise ValueError(f"listen address {value!r}: put an IPv6 address in brackets, [::1]:8443")
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"listen address {value!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"listen address {value!r}: port {port} is out of range")
    return host, port


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind(listen_address: str) -> socket.socket:
    """A listening socket for ``listen_address`` (dual-stack for ``:port``).
    In a worker of ``run --workers`` (exporter/workers.py sets the variable)
    with SO_REUSEPORT, so that every worker listens on the same port."""
    host, port = parse_listen_address(listen_address)
    reuse = os.environ.get("KUBE_AUDIT_INTERNAL_REUSE_PORT") == "1"
    if not host:
        if socket.has_dualstack_ipv6():
            return socket.create_server(
                ("::", port),
                family=socket.AF_INET6,
                backlog=LISTEN_BACKLOG,
                dualstack_ipv6=True,
                reuse_port=reuse,
            )
        host = "0.0.0.0"
    try:
        infos = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise ValueError(f"listen address {host!r}: cannot resolve: {e.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return socket.create_server(
        (str(sockaddr[0]), int(sockaddr[1])),
        family=family,
        backlog=LISTEN_BACKLOG,
        reuse_port=reuse,
    )


class Endpoint(Protocol):
    """What a listener serves: answers for requests and for parser refusals."""

    async def handle(self, request: web.BaseRequest, conn: Connection) -> web.StreamResponse:
        """The answer to a request whose head was parsed; reads the body (if
        any) before :attr:`Connection.deadline`."""

    def refuse(self, status: int, reason: str, message: str, peer: str) -> web.StreamResponse:
        """The answer to a request the parser refused (400, 431) or that failed
        unexpectedly (500), logged at a bounded rate; the connection is closed
        after it."""


class HTTPServer:
    """One listener (see the module doc).

    Binds in the constructor (so a busy port fails at start-up), serves after
    :meth:`start`, stops with :meth:`shutdown`.
    """

    def __init__(
        self,
        listen_address: str,
        endpoint: Endpoint,
        *,
        name: str,
        metrics: HTTPMetrics,
        tls: ReloadingTLSContext | None = None,
        limits: Limits | None = None,
        on_handshake_failure: Callable[[str], None] | None = None,
    ) -> None:
        """``on_handshake_failure`` gets the OpenSSL reason of each failed TLS
        handshake (a missing or untrusted client certificate, ...)."""
        self.limits = limits or Limits()
        problems = self.limits.problems(name)
        if problems:
            raise ValueError("; ".join(problems))
        self.name = name
        self.endpoint = endpoint
        self.metrics = metrics
        self.tls = tls
        self._on_handshake_failure = on_handshake_failure
        self._sock = _bind(listen_address)
        bound = self._sock.getsockname()
        self._address = (str(bound[0]), int(bound[1]))
        self.loop = asyncio.new_event_loop()
        self.stopping = False
        self._conns: dict[Connection, None] = {}
        # Connections that may be cut to make room, oldest first.
        self._handshaking: dict[Connection, None] = {}
        self._waiting: dict[Connection, None] = {}
        # Connections accepted over the limit, waiting for a slot.
        self._queue: dict[Connection, None] = {}
        # Accepted connections that have not sent a byte yet: no slot.
        self._silent: dict[Connection, None] = {}
        self._eviction: asyncio.TimerHandle | None = None
        self._starting: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._emptied: asyncio.Event | None = None
        self._aio: web.Server | None = None
        self._accepting = False
        self._accept_log = RateLimitedLog(log)
        self._thread: threading.Thread | None = None
        self._cut_log = RateLimitedLog(log)
        self._error_log = RateLimitedLog(log)
        metrics.add_listener(name, lambda: len(self._conns) + len(self._queue) + len(self._silent))

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the real port when listening on port 0."""
        return self._address

    # --- life cycle -----------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} server already started")
        # The loop thread shares the GIL with the pipeline's workers: let it
        # have the GIL back within a millisecond, not the default 5 ms, each
        # time it wakes for I/O.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name=f"{self.name}-http", daemon=True
        )
        self._thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        finally:
            started.set()
        loop.run_forever()
        # aiohttp's tasks of the connections cut at shutdown: let them end.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()

    async def _open(self) -> None:
        self._emptied = asyncio.Event()
        self._aio = web.Server(self._dispatch, loop=self.loop)
        self._sock.setblocking(False)
        self._resume_accepting()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting, close connections not in a request, wait up to
        ``timeout`` seconds for requests in flight, then cut the rest."""
        thread = self._thread
        if self.stopping:
            return
        if thread is None:  # never started
            self.stopping = True
            self._sock.close()
            self.loop.close()
            return
        future = asyncio.run_coroutine_threadsafe(self._drain(timeout), self.loop)
        with contextlib.suppress(Exception):
            future.result(timeout + 5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        thread.join(timeout + 5)

    async def _drain(self, timeout: float) -> None:
        self.stopping = True
        assert self._emptied is not None
        self._pause_accepting()
        self._sock.close()
        for conn in list(self._silent) + list(self._queue) + list(self._conns):
            if not conn.busy:
                conn.close()
        if self._conns:
            try:
                await asyncio.wait_for(self._emptied.wait(), timeout)
            except TimeoutError:
                log.warning(
                    "closing connections still busy at the shutdown timeout",
                    extra={"server": self.name, "connections": len(self._conns)},
                )
                for conn in list(self._conns):
                    conn.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)

    # --- used by Connection ---------------------------------------------------

    @property
    def waiting_room(self) -> int:
        """How many silent connections, and how many queued ones, are kept."""
        return max(self.limits.max_connections, LISTEN_BACKLOG)

    def _resume_accepting(self) -> None:
        if not self.stopping and not self._accepting:
            self._accepting = True
            self.loop.add_reader(self._sock.fileno(), self._accept)

    def _pause_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            self.loop.remove_reader(self._sock.fileno())

    def _accept(self) -> None:
        """Accept what the backlog holds; each new connection is watched for
        its first byte. Over :attr:`waiting_room` silent ones, the oldest
        silent one is cut."""
        for _ in range(ACCEPT_BURST):
            try:
                sock, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # Out of descriptors (EMFILE) and the like: pause instead of
                # spinning on a listening socket that stays readable.
                self._accept_log.log(logging.ERROR, "accept failed", server=self.name, error=str(e))
                self._pause_accepting()
                self.loop.call_later(0.1, self._resume_accepting)
                return
            sock.setblocking(False)
            if len(self._silent) >= self.waiting_room:
                next(iter(self._silent)).cut("too_many")
            conn = Connection(self, sock, format_address((str(addr[0]), int(addr[1]))))
            self._silent[conn] = None
            conn.watch()
            if peek(sock):  # spoke already (a ClientHello sent with the connect)
                conn.spoke()

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = self.loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def admit(self, conn: Connection) -> bool:
        """Give a new connection a slot, making room when at the limit by
        cutting the oldest connection that has waited for its handshake or
        its request for :data:`EVICT_AFTER` seconds. False when no slot is
        free: the connection is queued (when the queue is full, its oldest
        is cut)."""
        self._silent.pop(conn, None)
        if self.stopping:
            conn.close()
            return False
        full = len(self._conns) >= self.limits.max_connections
        if not self._queue and not (full and not self._evict()):
            self._take(conn)
            return True
        if len(self._queue) >= self.waiting_room:
            next(iter(self._queue)).cut("too_many")
        self._queue[conn] = None
        self._schedule_eviction()
        return False

    def _take(self, conn: Connection) -> None:
        self._conns[conn] = None
        if self._emptied is not None:
            self._emptied.clear()
        if self.tls is not None:
            self._handshaking[conn] = None

    def _evict(self) -> bool:
        """Cut the oldest connection waiting for its handshake (else for its
        request) if it has waited long enough; True when one was cut."""
        now = self.loop.time()
        for victims in (self._handshaking, self._waiting):
            for conn in victims:
                if now - conn.since >= EVICT_AFTER:
                    conn.cut("too_many")
                    return True
                break
        return False

    def _schedule_eviction(self) -> None:
        """Make room for the queue when the oldest waiting connection has
        waited :data:`EVICT_AFTER` seconds."""
        if self._eviction is not None:
            return
        oldest = [next(iter(v)).since for v in (self._handshaking, self._waiting) if v]
        when = min(oldest) + EVICT_AFTER if oldest else self.loop.time() + EVICT_AFTER
        self._eviction = self.loop.call_at(when, self._evict_for_queue)

    def _evict_for_queue(self) -> None:
        self._eviction = None
        while self._queue and len(self._conns) >= self.limits.max_connections:
            if not self._evict():
                break
        self._start_queued()
        if self._queue:
            self._schedule_eviction()

    def _start_queued(self) -> None:
        """Give the free slots to the oldest queued connections."""
        self._starting = None
        while self._queue and len(self._conns) < self.limits.max_connections:
            conn = next(iter(self._queue))
            del self._queue[conn]
            self._take(conn)
            conn.start()

    def waiting(self, conn: Connection, waiting: bool) -> None:
        """Mark ``conn`` as waiting for a request (may be cut to make room) or not."""
        self._handshaking.pop(conn, None)
        self._waiting.pop(conn, None)
        if waiting and not conn.closed:
            self._waiting[conn] = None

    def forget(self, conn: Connection) -> None:
        self._handshaking.pop(conn, None)
        self._waiting.pop(conn, None)
        self._queue.pop(conn, None)
        self._silent.pop(conn, None)
        if self._conns.pop(conn, False) is None and self._queue and self._starting is None:
            # Once per loop iteration, however many connections close in it.
            self._starting = self.loop.call_soon(self._start_queued)
        if not self._conns and self._emptied is not None:
            self._emptied.set()

    def new_protocol(self, conn: Connection) -> RequestProtocol:
        assert self._aio is not None
        limits = self.limits
        return RequestProtocol(
            self._aio,
            conn,
            loop=self.loop,
            # The connection's own idle deadline cuts first; this is a backstop.
            keepalive_timeout=limits.idle_timeout + 60,
            max_line_size=limits.max_header_bytes,
            max_field_size=limits.max_header_bytes,
            max_headers=limits.max_headers,
            lingering_time=LINGER_SECONDS,
            # Bodies of a few MiB arrive without pausing the transport.
            read_bufsize=READ_BUFFER,
            access_log=None,
        )

    def handshake_failed(self, reason: str) -> None:
        if self._on_handshake_failure is not None:
            self._on_handshake_failure(reason)

    def count_cut(self, reason: str, peer: str, fields: dict[str, Any]) -> None:
        self.metrics.cut(self.name, reason)
        level = logging.DEBUG if reason in ROUTINE_CUTS else logging.INFO
        if log.isEnabledFor(level):
            self._cut_log.log(
                level,
                "connection closed by the server",
                server=self.name,
                reason=reason,
                peer=peer,
                **fields,
            )

    def refusal(
        self,
        conn: Connection,
        status: int,
        exc: BaseException | None,
        message: str | None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp could not parse or serve. The
        parser's own message quotes the request, which may hold a token: the
        answer and the log say only what kind of problem it was."""
        limit = self.limits.max_header_bytes
        if isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and "too many headers" in exc.message.lower()
        ):
            cut, status, reason = "header_too_large", 431, "header_too_large"
            detail = f"a request line or header field over {limit} bytes, or too many fields"
        elif isinstance(exc, BadHttpMessage) or status == 400:
            text = (message or "").lower()
            if "content-length" in text or "transfer-encoding" in text or "chunk" in text:
                cut, status, reason = "bad_request", 400, "bad_framing"
                detail = "invalid Content-Length, Transfer-Encoding or chunk"
            else:
                cut, status, reason = "bad_request", 400, "bad_request"
                detail = f"the request could not be parsed ({type(exc).__name__})"
        else:
            cut, status, reason = "", 500, "internal_error"
            detail = "the request could not be served"
            self._error_log.log(
                logging.ERROR,
                "unexpected error serving a request",
                server=self.name,
                peer=conn.peer,
                error=type(exc).__name__,
            )
        if cut:  # counted here, logged by the endpoint with its answer
            self.metrics.cut(self.name, cut)
        conn.request_started()
        response = self.endpoint.refuse(status, reason, detail, conn.peer)
        response.headers.setdefault("Server", SERVER)
        response.force_close()
        return response

    # --- requests -------------------------------------------------------------

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        protocol = request.protocol
        assert isinstance(protocol, RequestProtocol)
        conn = protocol.conn
        conn.request_started()
        response = await self.endpoint.handle(request, conn)
        response.headers.setdefault("Server", SERVER)
        if self.stopping:
            response.force_close()
        conn.writing()
        await response.prepare(request)
        await response.write_eof()
        conn.answered(response.keep_alive is not False)
        return response
