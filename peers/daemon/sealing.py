"""End-to-end payload sealing between members over HTTP (the gm suite): one layer, on every route.

The construction (handshake, keys, frames, replay window, what binds a frame to its route,
sender and receiver) is `fedsilo.privacy.payload_seal`'s; this module puts it on the wire:

* `ClientSealer` (inside `PeerClient`): every request a member's client sends under the gm suite,
  to any route, goes out as a sealed frame (``Content-Type: application/x-fedsilo-sealed``), its
  reply is opened and checked. The receiver is the manifest member whose address the URL names;
  the session with it is opened on first use (POST `HELLO_ROUTE`, signed JSON, no payload) and
  reopened once if the receiver answers that it does not hold it (`SEAL_HEADER`: restarted or
  expired). A reply that is not sealed is read only as an error message (the receiver could not
  seal to an unauthenticated frame), never as data.
* `SealGate` (the daemon's outermost middleware `seal_gate`): under the gm suite, a request from a
  member over TLS must be a sealed frame of an open session of that member (every route but the
  handshake); it is opened before any handler runs (handlers read it through `body_of`) and the
  handler's reply, errors included, is sealed back. A request that is not a sealed frame of this
  suite, replayed or re-addressed, is refused (audited, plain JSON error naming why) and reaches
  no handler. A reply the gate cannot seal (not an in-memory body) is answered 500: the gate
  never sends a payload in the clear.

The admin socket (the peer's own operator, no TLS, on its machine) is not sealed. Under the
standard suite nothing here runs: TLS alone protects the payloads, as before.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from fedsilo.peers.errors import PeerUnreachable
from fedsilo.peers.identity.consortium import Identity
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE, get_suite
from fedsilo.privacy.payload_seal import (
    ClientHandshake,
    SealError,
    Session,
    SessionTable,
    UnknownSealSession,
    accept_hello,
)

SEALED = "application/x-fedsilo-sealed"
HELLO_ROUTE = "/v1/seal/hello"
SEAL_HEADER = "X-Fedsilo-Seal"
UNKNOWN_SESSION = "unknown-session"
RENEW_BEFORE = 60.0  # seconds before a session expires at which the client opens a new one


def seals(identity: Identity) -> bool:
    """Whether this consortium seals payloads end to end (the gm suite)."""
    return identity.manifest.suite != DEFAULT_SUITE


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _member_key(identity: Identity, name: str) -> bytes:
    member = identity.current_manifest().member(name)
    if member is None or member.signing_key is None:
        raise SealError(f"{name} holds no {identity.manifest.suite}-suite key in the manifest: it cannot seal")
    return bytes.fromhex(member.signing_key)


class Exchanged(NamedTuple):
    """A reply to a sealed request: `sealed` False for a plain error (status >= 400), read only as an error."""

    status: int
    body: bytes
    sealed: bool
    headers: Mapping[str, str]


class ClientSealer:
    """A member's client end: one session per receiving member, opened on first use."""

    def __init__(self, identity: Identity) -> None:
        if identity.signing_key is None:
            raise SealError(f"{identity.name} holds no {identity.manifest.suite}-suite signing key: it cannot seal")
        self.identity = identity
        self.suite = get_suite(identity.manifest.suite)
        self._sessions: dict[tuple[str, str], Session] = {}  # by (receiver, the address it answers at)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def receiver(self, url: str) -> tuple[str, str]:
        """(member name, its base address) that `url` addresses; SealError if no member listens there."""
        origin = _origin(url)
        for member in self.identity.current_manifest().members:
            if member.address and _origin(member.address) == origin:
                return member.name, member.address.rstrip("/")
        raise SealError(
            f"{url} is not the address of a member in the manifest: under the {self.suite.name} suite a payload is "
            "sealed to a named member, so only members' addresses can be called"
        )

    async def _session(self, http: aiohttp.ClientSession, receiver: str, base: str) -> Session:
        async with self._locks.setdefault((receiver, base), asyncio.Lock()):
            session = self._sessions.get((receiver, base))
            if session is not None and not session.expires_within(RENEW_BEFORE):
                return session
            handshake = ClientHandshake(self.suite, self.identity.signing_key or b"", self.identity.name, receiver)
            async with http.post(f"{base}{HELLO_ROUTE}", json=handshake.hello()) as reply:
                text = await reply.text()
                if reply.status >= 400:
                    raise PeerUnreachable(f"{receiver} refused to open a sealed session: {reply.status} {text[:300]}")
            try:
                answer = json.loads(text)
            except ValueError:
                raise SealError(f"{receiver} answered the seal handshake with something that is not JSON") from None
            session = handshake.finish(answer, _member_key(self.identity, receiver))
            self._sessions[(receiver, base)] = session
            return session

    async def exchange(
        self,
        http: aiohttp.ClientSession,
        method: str,
        url: str,
        body: bytes,
        to: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Exchanged:
        """The reply to a sealed request. `to`: (member, base address) when the URL is not the member's
        manifest address (a job's Fleet gateway); `headers`: sent as they are (besides the frame's type)."""
        receiver, base = to or self.receiver(url)
        target = URL(url).raw_path_qs
        for attempt in (1, 2):
            session = await self._session(http, receiver, base)
            frame, seq = session.seal_request(method, target, body)
            sent = {**(headers or {}), "Content-Type": SEALED}
            async with http.request(method, url, data=frame, headers=sent, allow_redirects=False) as reply:
                data = await reply.read()
                if reply.content_type == SEALED:
                    opened = session.open_reply(data, seq, method, target, reply.status)
                    return Exchanged(reply.status, opened, True, reply.headers)
                if reply.status == 401 and reply.headers.get(SEAL_HEADER) == UNKNOWN_SESSION and attempt == 1:
                    self._sessions.pop((receiver, base), None)
                    continue
                if reply.status >= 400:
                    return Exchanged(reply.status, data, False, reply.headers)
                raise SealError(
                    f"{url} answered {reply.status} with an unsealed body: under the {self.suite.name} suite every "
                    "reply is sealed, so this one did not come from the peer unaltered: refused"
                )
        raise AssertionError("unreachable")  # pragma: no cover


class SealGate:
    """The daemon's end: open sessions, open requests, seal replies (see the module docstring)."""

    def __init__(self, identity: Identity) -> None:
        if identity.signing_key is None:
            raise SealError(f"{identity.name} holds no {identity.manifest.suite}-suite signing key: it cannot seal")
        self.identity = identity
        self.suite = get_suite(identity.manifest.suite)
        self.sessions = SessionTable()

    def hello(self, caller: str, hello: Any) -> dict[str, Any]:
        """The signed answer to `caller`'s handshake; SealError naming what is wrong."""
        answer, session = accept_hello(
            self.suite,
            self.identity.signing_key or b"",
            self.identity.name,
            caller,
            hello,
            _member_key(self.identity, caller),
        )
        self.sessions.add(session)
        return answer

    def open(self, frame: bytes, caller: str | None, method: str, target: str) -> tuple[Session, bytes, int]:
        """(session, body, seq) of `caller`'s sealed request (None: whoever opened the session, which the
        frame's authentication binds); UnknownSealSession / SealError otherwise."""
        session = self.sessions.find(frame, self.suite.name, caller)
        body, seq = session.open_request(frame, method, target)
        return session, body, seq


__all__ = [
    "HELLO_ROUTE",
    "SEALED",
    "SEAL_HEADER",
    "UNKNOWN_SESSION",
    "ClientSealer",
    "SealError",
    "SealGate",
    "UnknownSealSession",
    "seals",
]
