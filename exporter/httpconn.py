"""One connection of exporter/httpserver.py's listeners: its phases, its one
deadline at a time, its TLS handshake, and aiohttp's protocol behind it.

The listener (:class:`~exporter.httpserver.HTTPServer`) accepts, admits,
evicts and counts; a :class:`Connection` moves through its phases and tells
the listener when it waits (and may be cut to make room), when it is busy,
and when it is gone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .tlsreload import ReloadingTLSContext, ssl_reason

if TYPE_CHECKING:
    from .httpserver import HTTPServer

log = logging.getLogger(__name__)


def peek(sock: socket.socket) -> bool | None:
    """True when bytes wait on a non-blocking socket (left unread), False when
    none do yet, None when the client closed it (or it failed)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK)) or None
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return None


# Phases of a connection; each has at most one deadline.
SILENT, QUEUED, HANDSHAKE, HEAD, REQUEST, WRITING, IDLE = (
    "silent", "queued", "handshake", "head", "request", "writing", "idle"
)  # fmt: skip
_TIMEOUT_REASON = {
    QUEUED: "too_many",
    HANDSHAKE: "handshake_timeout",
    HEAD: "header_timeout",
    WRITING: "write_timeout",
    IDLE: "idle",
}


class Connection(asyncio.Protocol):
    """One client connection: TLS, deadlines and the connection limit, in
    front of aiohttp's protocol (see the module doc).

    Until the client sends its first byte the connection is only an accepted
    socket watched for readability (``silent``): no transport, no TLS state,
    no slot. Then it takes a slot (or waits for one, ``queued``), becomes an
    asyncio transport, and TLS starts."""

    def __init__(self, server: HTTPServer, sock: socket.socket, peer: str) -> None:
        self.server = server
        self.loop = server.loop
        self.peer = peer
        self.phase = SILENT
        # When the connection entered its current waiting phase (loop time).
        self.since = self.loop.time()
        # The loop time by which the current request must have arrived.
        self.deadline = math.inf
        self.closed = False
        self._sock: socket.socket | None = sock
        self._raw: asyncio.Transport | None = None
        self._transport: asyncio.Transport | None = None
        self._protocol: RequestProtocol | None = None
        self._pending: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    # --- before the first byte ------------------------------------------------

    def watch(self) -> None:
        """Wait for the client's first byte, until the handshake (or, without
        TLS, the header) deadline."""
        assert self._sock is not None
        self.loop.add_reader(self._sock.fileno(), self.spoke)
        limits = self.server.limits
        if self.server.tls is None:
            self._arm(min(limits.header_timeout, limits.read_timeout))
        else:
            self._arm(limits.handshake_timeout)

    def _unwatch(self) -> None:
        if self.phase == SILENT and self._sock is not None:
            self.loop.remove_reader(self._sock.fileno())

    def spoke(self) -> None:
        """The socket is readable: the client spoke, or left."""
        assert self._sock is not None
        ready = peek(self._sock)
        if ready is None:  # gone without a word: nothing to set up
            self._abort()
            return
        if not ready:
            return
        self._unwatch()
        self.phase = QUEUED
        self.since = self.loop.time()
        if self.server.admit(self):
            self.start()
        else:  # waits for a slot, for at most the handshake timeout
            self._arm(self.server.limits.handshake_timeout)

    def start(self) -> None:
        """Serve the connection (it holds one of the listener's slots)."""
        self.phase = HANDSHAKE
        self.since = self.loop.time()
        if self.server.tls is not None:
            self._arm(self.server.limits.handshake_timeout)
        self.server.spawn(self._attach())

    async def _attach(self) -> None:
        sock = self._sock
        if sock is None or self.closed:
            return
        try:
            await self.loop.connect_accepted_socket(lambda: self, sock)
        except OSError as e:
            log.debug("cannot serve a connection", extra={"peer": self.peer, "error": str(e)})
            self._abort()

    # --- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        self._sock = None  # the transport owns it now
        if self.closed:
            transport.abort()
        elif self.server.tls is None:
            self._ready(transport)
        else:
            transport.pause_reading()  # start_tls reads from here
            self.server.spawn(self._handshake(self.server.tls))

    def data_received(self, data: bytes) -> None:
        if self._protocol is None:
            self._pending.append(data)
            return
        if self.phase == IDLE:
            self._enter_head(self.loop.time())
        self._protocol.data_received(data)

    def eof_received(self) -> bool | None:
        if self._protocol is not None:
            self._protocol.eof_received()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()
        if self._protocol is not None:
            self._protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._protocol is not None:
            self._protocol.pause_writing()

    def resume_writing(self) -> None:
        if self._protocol is not None:
            self._protocol.resume_writing()

    # --- TLS ------------------------------------------------------------------

    async def _handshake(self, tls: ReloadingTLSContext) -> None:
        assert self._raw is not None
        try:
            transport = await self.loop.start_tls(
                self._raw,
                self,
                tls.current(),
                server_side=True,
                # A backstop only: the connection's own deadline cuts first.
                ssl_handshake_timeout=self.server.limits.handshake_timeout + 60,
            )
        except ssl.SSLError as e:
            if self.closed:
                return
            reason = ssl_reason(e)
            self.server.handshake_failed(reason)
            cert = "CERTIFICATE" in reason.upper() or "CERT" in reason.upper()
            self.cut("client_cert" if cert else "tls_error", error=reason)
        except Exception as e:  # the client went away, or this side cut it
            if not self.closed:
                log.debug("TLS handshake ended", extra={"peer": self.peer, "error": repr(e)})
                self._abort()
        else:
            if transport is None or self.closed:  # closed as the handshake ended
                if transport is not None:
                    transport.abort()
                self._abort()
            else:
                tls.client_presented(transport.get_extra_info("peercert"))
                self._ready(transport)

    # --- phases ---------------------------------------------------------------

    def _ready(self, transport: asyncio.Transport) -> None:
        """TLS is done (or not used): hand the connection to aiohttp."""
        self._transport = transport
        self._protocol = self.server.new_protocol(self)
        self._protocol.connection_made(transport)
        # The first request's head is due from the connection's start.
        self._enter_head(self.loop.time())
        pending, self._pending = self._pending, []
        for data in pending:
            self.data_received(data)

    def _enter_head(self, now: float) -> None:
        self.phase = HEAD
        self.since = now
        self.server.waiting(self, True)
        limits = self.server.limits
        self.deadline = now + limits.read_timeout
        self._arm(min(limits.header_timeout, limits.read_timeout))

    def request_started(self) -> None:
        """The head was parsed; the endpoint now reads the body by :attr:`deadline`."""
        if self.phase != HEAD:  # a pipelined request, read while the last was served
            self.deadline = self.loop.time() + self.server.limits.read_timeout
        self.phase = REQUEST
        self.server.waiting(self, False)
        self._disarm()

    def writing(self) -> None:
        self.phase = WRITING
        self._arm(self.server.limits.read_timeout)

    def answered(self, keep_alive: bool) -> None:
        if self.closed:
            return
        if not keep_alive or self.server.stopping:
            self._disarm()  # aiohttp closes the connection
            return
        self.phase = IDLE
        self.since = self.loop.time()
        self.deadline = math.inf
        self.server.waiting(self, True)
        self._arm(self.server.limits.idle_timeout)

    @property
    def busy(self) -> bool:
        """A request is being read or answered."""
        return self.phase in (REQUEST, WRITING)

    # --- deadlines and closing ------------------------------------------------

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.phase == SILENT:
            reason: str | None = (
                "header_timeout" if self.server.tls is None else "handshake_timeout"
            )
        else:
            reason = _TIMEOUT_REASON.get(self.phase)
        if reason is not None:
            self.cut(reason)

    def cut(self, reason: str, **fields: Any) -> None:
        """Close the connection now, counted and logged under ``reason``."""
        if self.closed:
            return
        self.server.count_cut(reason, self.peer, fields)
        self._abort()

    def count(self, reason: str, **fields: Any) -> None:
        """Count and log a cut the endpoint makes with its answer (the
        connection closes after it)."""
        self.server.count_cut(reason, self.peer, fields)

    def close(self) -> None:
        """Close the connection now, quietly (shutdown)."""
        if not self.closed:
            self._abort()

    def _abort(self) -> None:
        self._unwatch()
        self._finish()
        transport = self._transport or self._raw
        if transport is not None:
            transport.abort()
        elif self._sock is not None:
            self._sock.close()
            self._sock = None

    def _finish(self) -> None:
        if not self.closed:
            self.closed = True
            self._disarm()
            self.server.forget(self)


class RequestProtocol(web.RequestHandler):
    """aiohttp's protocol, answering parser refusals through the endpoint."""

    def __init__(self, manager: web.Server, conn: Connection, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.conn = conn

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: too late for an answer
            raise ConnectionError("the response was already started")
        return self.conn.server.refusal(self.conn, status, exc, message)
