"""Calling a peer's API over mutual TLS (aiohttp client), for peers and for the CLI.

Under the gm suite every request and reply is also sealed end to end with the suite
(`sealing.ClientSealer`); the methods here are the same under both suites.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from fedsilo.peers.daemon.sealing import ClientSealer, SealError, seals
from fedsilo.peers.errors import PeerUnreachable, Refused
from fedsilo.peers.identity.consortium import Identity
from fedsilo.peers.identity.tls import client_context

CHUNK = 1 << 20
MANIFEST_HEADER = "Fedsilo-Manifest-Version"  # every daemon's replies announce the manifest version it holds
RETRIES = 3  # a rate-limited request is tried at most this many more times
# A daemon refusing a client certificate in the TLS 1.3 handshake (one the consortium revoked) just closes
# the connection: the client sees it only when it reads the reply.
_REFUSED_HINT = " (a peer that refuses your certificate, revoked when you left the consortium, closes like this)"
RETRY_AFTER_MAX = 10  # seconds: a longer Retry-After is the peer saying no, reported at once


def closed_by_peer(exc: aiohttp.ClientError) -> bool:
    """Whether `exc` is a connection the peer closed after accepting it: disconnected, or reset.

    A daemon that refuses a client certificate (revoked) ends the TLS connection after the
    handshake; the client then sees either a disconnection or a reset (ECONNRESET), whichever
    comes first. A refused or failed connect (`ClientConnectorError`) is not that."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True
    return (
        isinstance(exc, aiohttp.ClientOSError)
        and not isinstance(exc, aiohttp.ClientConnectorError)
        and exc.errno == errno.ECONNRESET
    )


class PeerClient:
    """An aiohttp session presenting `identity`'s certificate; use `async with`."""

    def __init__(self, identity: Identity, timeout: float = 30.0, connections: int = 100) -> None:
        self.identity = identity
        crl = identity.crl_path if identity.crl is not None else None
        self.ssl_context = client_context(identity.ca_path, identity.cert_path, identity.key_path, crl)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._sealer = ClientSealer(identity) if seals(identity) else None
        # called with a reply's URL when its MANIFEST_HEADER names a version newer than this identity's
        self.on_newer_manifest: Callable[[str], None] | None = None

    async def __aenter__(self) -> PeerClient:
        self._session = self._new_session()
        return self

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl_context, limit=self._connections), timeout=self._timeout
        )

    def renew(self) -> aiohttp.ClientSession | None:
        """Send the next requests over new connections (new handshakes, which check the current CRL).

        Returns the old session, whose kept-alive connections (to a member just removed, say) are no
        longer used: the caller closes it once the requests still under way on it had their time."""
        old, self._session = self._session, self._new_session()
        return old

    @property
    def timeout(self) -> float:
        return self._timeout.total or 0.0

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _send(self, method: str, url: str, body: bytes | None, content_type: str) -> bytes:
        """The reply body of one exchange (sealed under the gm suite); PeerUnreachable on any failure.

        A 429 that names a short wait (``Retry-After`` at most RETRY_AFTER_MAX seconds: the peer's
        rate limit, not a spent quota) is retried after that wait, up to RETRIES times.
        """
        assert self._session is not None, "use PeerClient in `async with`"
        for attempt in range(RETRIES + 1):
            status, data, headers = await self._exchange(method, url, body, content_type)
            self._notice(url, headers)
            wait = _retry_after(headers) if status == 429 else None
            if wait is None or attempt == RETRIES:
                break
            await asyncio.sleep(wait)
        if status >= 400:
            raise PeerUnreachable(f"{url} answered {status}: {_error_text(data.decode(errors='replace'))}")
        return data

    def _notice(self, url: str, headers: Mapping[str, str]) -> None:
        """Tell `on_newer_manifest` if the reply announces a manifest version newer than the one held here."""
        announced = headers.get(MANIFEST_HEADER, "")
        if self.on_newer_manifest is not None and announced.isdigit() and len(announced) <= 18:
            if int(announced) > self.identity.manifest.version:
                self.on_newer_manifest(url)

    async def _exchange(
        self, method: str, url: str, body: bytes | None, content_type: str
    ) -> tuple[int, bytes, Mapping[str, str]]:
        assert self._session is not None, "use PeerClient in `async with`"
        try:
            if self._sealer is not None:
                status, data, _, headers = await self._sealer.exchange(self._session, method, url, body or b"")
                return status, data, headers
            request_headers = {"Content-Type": content_type} if body is not None else None
            async with self._session.request(method, url, data=body, headers=request_headers) as reply:
                return reply.status, await reply.read(), reply.headers
        except aiohttp.ClientError as exc:
            hint = _REFUSED_HINT if closed_by_peer(exc) else ""
            raise PeerUnreachable(f"cannot reach {url}: {exc.__class__.__name__}: {exc}{hint}") from None
        except TimeoutError:
            raise PeerUnreachable(f"{url} did not answer within {self._timeout.total:g} s") from None
        except SealError as exc:
            raise PeerUnreachable(f"{url}: the sealed exchange failed: {exc}") from None

    async def call(self, method: str, url: str, body: Any = None) -> Any:
        """The JSON reply; PeerUnreachable with the peer's error message on any failure."""
        raw = None if body is None else json.dumps(body).encode()
        text = (await self._send(method, url, raw, "application/json")).decode(errors="replace")
        return json.loads(text) if text else None

    async def frames(self, method: str, url: str, body: bytes | None = None) -> bytes:
        """A binary exchange (PSI / query frames); PeerUnreachable with the peer's error message."""
        return await self._send(method, url, body, "application/octet-stream")

    async def download(self, url: str, destination: Path, limit: int | None = None) -> int:
        """Stream `url` into `destination` (a new file); returns the bytes written.

        With a `limit`, reading stops once more than `limit` bytes came: the return value is
        then above `limit` and the file is incomplete (the caller refuses and removes it).
        """
        assert self._session is not None, "use PeerClient in `async with`"
        if self._sealer is not None:  # a sealed reply is opened whole, then written
            data = await self._send("GET", url, None, "")
            with destination.open("xb") as handle:
                handle.write(data if limit is None else data[: limit + 1])
            return len(data)
        try:
            attempt = 0
            while True:
                async with self._session.get(url) as reply:
                    wait = _retry_after(reply.headers) if reply.status == 429 and attempt < RETRIES else None
                    if wait is None:
                        return await _stream(reply, url, destination, limit)
                attempt += 1
                await asyncio.sleep(wait)
        except aiohttp.ClientError as exc:
            raise PeerUnreachable(f"cannot download {url}: {exc.__class__.__name__}: {exc}") from None


async def both_sides_list_kind(client: PeerClient, url: str, peer: str, name: str | None) -> str | None:
    """The identifier kind of `peer`'s shared list `name` when it offers this peer both-sides PSI on it
    (None for a typed list); Refused (409) if it does not (a job that aligns on that list cannot run)."""
    reply = await client.call("GET", f"{url}/v1/lists")
    for entry in reply.get("lists", []) if isinstance(reply, dict) else []:
        if isinstance(entry, dict) and entry.get("name") == name and "both" in entry.get("psi_modes", []):
            return None if entry.get("kind") == "typed" else entry.get("kind")
    raise Refused(f"{peer} does not offer this peer both-sides PSI on its list {name!r} (lists.{name})", 409)


async def _stream(reply: aiohttp.ClientResponse, url: str, destination: Path, limit: int | None) -> int:
    """Write `reply`'s body into `destination` (a new file), stopping past `limit`; the bytes read."""
    if reply.status >= 400:
        raise PeerUnreachable(f"{url} answered {reply.status}: {_error_text(await reply.text())}")
    written = 0
    with destination.open("xb") as handle:
        async for chunk in reply.content.iter_chunked(CHUNK):
            written += len(chunk)
            if limit is not None and written > limit:
                break
            handle.write(chunk)
    return written


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a 429 asks for, if it is a short whole number of seconds; None otherwise."""
    try:
        seconds = int(headers.get("Retry-After", ""))
    except ValueError:
        return None
    return float(seconds) if 0 <= seconds <= RETRY_AFTER_MAX else None


def _error_text(text: str) -> str:
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return text[:300]


async def admin_call(socket_path: Path, path: str) -> Any:
    """GET `path` from the daemon's admin socket (the peer's operator, on its machine); the JSON reply.

    PeerUnreachable if the daemon does not listen there, the account may not open the
    socket, or the daemon answers with an error.
    """
    if not socket_path.exists():
        raise PeerUnreachable(
            f"{socket_path} does not exist: the peer's daemon is not running (start it with `fedsilo peer start`)"
        )
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path))) as session:
            async with session.get(f"http://operator{path}") as reply:
                text = await reply.text()
                if reply.status >= 400:
                    raise PeerUnreachable(f"the daemon's admin socket answered {reply.status}: {_error_text(text)}")
                return json.loads(text)
    except aiohttp.ClientError as exc:
        raise PeerUnreachable(
            f"cannot reach the daemon's admin socket {socket_path} ({exc}): is the daemon running, "
            "and is this its account?"
        ) from None
