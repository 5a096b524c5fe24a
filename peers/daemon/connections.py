"""Slow and surplus connections: deadlines for the handshake, headers and body; caps per member.

aiohttp closes a connection idle between requests (`keepalive_timeout`, set to
[limits] idle-timeout) but gives a request that is still arriving all the time it
wants: a client trickling its headers a byte at a time held its connection (and its
memory) forever. `GuardedSite` serves the daemon's TLS port with every connection
wrapped in a `_Guarded` protocol that sees the decrypted bytes before aiohttp does and
aborts the connection when

* the TLS handshake takes longer than `header-timeout` (asyncio's handshake timeout);
* a request's headers (up to the blank line) are not complete `header-timeout` seconds
  after its first byte, or after the connection opened if nothing came;
* its body (Content-Length bytes, or a chunked body up to its last chunk) is not
  complete `body-timeout` seconds after the headers;
* the certificate's member already holds `connections-per-member` open connections, or
  `unidentified-connections` are open with certificates that are no member's (closed
  at once, before any byte is read).

A request whose body has arrived has no deadline here: a handler may take its time (a
PSI run). `drop` aborts every open connection of a member (one the consortium removed: its
certificate is then refused at the next handshake, and a kept-alive connection must not outlive it). The bytes are passed to aiohttp unchanged; this module only times them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from fedsilo.peers.daemon.config import Limits
from fedsilo.peers.identity.pki import certificate_fingerprint

log = logging.getLogger("fedsilo.peer")
_END_OF_HEADERS = b"\r\n\r\n"
_MAX_HEADER_BYTES = 1 << 20  # aiohttp refuses far smaller header blocks; past this, stop buffering
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,18})[ \t]*\r\n", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked", re.IGNORECASE)
_LAST_CHUNK = b"\r\n0\r\n\r\n"
UNIDENTIFIED = ""  # the count of connections whose certificate is no member's


class ConnectionGuard:
    """The open connections per member and the deadlines every connection of one site keeps."""

    def __init__(self, limits: Limits, member_of: Callable[[str], str | None]) -> None:
        self.limits = limits
        self.member_of = member_of  # certificate fingerprint -> member name (None: not a member)
        self.open: dict[str, int] = {}
        self.transports: dict[str, set[asyncio.BaseTransport]] = {}
        self.closed_slow = 0  # connections aborted for missing a deadline (for the operator and the tests)
        self.refused = 0  # connections closed at once for a cap

    def protocol_factory(self, server: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(self, server())

    def admit(self, transport: asyncio.BaseTransport) -> str | None:
        """The connection's count key if it may stay open (and count it), or None (the caller closes it)."""
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) else None
        member = self.member_of(certificate_fingerprint(der)) if der else None
        key = member if member is not None else UNIDENTIFIED
        cap = self.limits.connections_per_member if member is not None else self.limits.unidentified_connections
        if self.open.get(key, 0) >= cap:
            self.refused += 1
            return None
        self.open[key] = self.open.get(key, 0) + 1
        self.transports.setdefault(key, set()).add(transport)
        return key

    def release(self, key: str, transport: asyncio.BaseTransport) -> None:
        self.open[key] -= 1
        if not self.open[key]:
            del self.open[key]
        held = self.transports.get(key, set())
        held.discard(transport)
        if not held:
            self.transports.pop(key, None)

    def drop(self, member: str) -> int:
        """Abort every open connection of `member`; how many there were."""
        held = list(self.transports.get(member, ()))
        for transport in held:
            transport.abort()  # type: ignore[attr-defined]  # a TLS server connection is a Transport
        return len(held)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the deadlines of its `ConnectionGuard`."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard, self.inner = guard, inner
        self.transport: asyncio.Transport | None = None
        self.key: str | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.phase = "idle"  # idle (between requests), headers, body
        self.header = b""
        self.remaining = 0  # body bytes still due (Content-Length)
        self.chunked_tail = b""  # the last bytes of a chunked body, to find its end

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TLS server connection is a Transport
        self.key = self.guard.admit(transport)
        if self.key is None:
            transport.abort()  # type: ignore[attr-defined]  # over a cap: no byte is read
            return
        self.phase = "headers"  # the first request's headers are due `header-timeout` after the handshake
        self._arm(self.guard.limits.header_timeout, "its first request's headers")
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.key is None:
            return
        self._track(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.key is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.key is not None:
            self.guard.release(self.key, self.transport)  # type: ignore[arg-type]  # set in connection_made
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- the deadlines ----------------------------------------------------------------
    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._expire, what, seconds)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self, what: str, seconds: float) -> None:
        self.timer = None
        self.guard.closed_slow += 1
        log.info("closing a connection of %s: %s did not arrive within %g s", self.key or "a non-member", what, seconds)
        if self.transport is not None:
            self.transport.abort()

    def _track(self, data: bytes) -> None:
        """Follow the request boundaries in `data` (pipelined requests included) and move the deadline."""
        while data:
            if self.phase == "idle":
                self.phase, self.header = "headers", b""
                self._arm(self.guard.limits.header_timeout, "a request's headers")
            if self.phase == "headers":
                start = max(0, len(self.header) - 3)
                self.header += data
                end = self.header.find(_END_OF_HEADERS, start)
                if end < 0:
                    if len(self.header) > _MAX_HEADER_BYTES:  # aiohttp has refused it: stop buffering
                        self.header = self.header[-3:]
                    return
                head, data = self.header[: end + 2], self.header[end + 4 :]
                self.header = b""
                length = _CONTENT_LENGTH.search(head)
                if _CHUNKED.search(head):
                    self.phase, self.chunked_tail = "body", b"\r\n"
                    self.remaining = -1
                elif length and int(length.group(1)) > 0:
                    self.phase, self.remaining = "body", int(length.group(1))
                else:
                    self.phase = "idle"
                    self._disarm()
                    continue
                self._arm(self.guard.limits.body_timeout, "a request's body")
            if self.phase == "body":
                data = self._body(data)

    def _body(self, data: bytes) -> bytes:
        """Consume body bytes; returns what follows the body (the next pipelined request), if any."""
        if self.remaining >= 0:
            taken = min(len(data), self.remaining)
            self.remaining -= taken
            rest = data[taken:]
        else:
            window = self.chunked_tail + data
            end = window.find(_LAST_CHUNK)
            if end < 0:
                self.chunked_tail = window[-(len(_LAST_CHUNK) - 1) :]
                return b""
            rest = window[end + len(_LAST_CHUNK) :]
            self.remaining = 0
        if self.remaining == 0:
            self.phase = "idle"
            self._disarm()
        return rest


class GuardedSite(web.TCPSite):
    """aiohttp's TCPSite, its connections behind `guard` and its TLS handshakes timed by `header-timeout`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, ssl_context: ssl.SSLContext, guard: ConnectionGuard
    ):
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.guard = guard

    async def start(self) -> None:
        self._runner._reg_site(self)  # BaseSite.start: aiohttp's own registration
        server: Any = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.protocol_factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=self.guard.limits.header_timeout,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port
