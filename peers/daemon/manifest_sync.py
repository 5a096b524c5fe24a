"""The consortium's manifest, published by its daemons: served, pushed, polled, verified, acted on.

Every daemon serves the latest signed manifest it holds, with the CA's CRL, at
`GET /v1/manifest` (to members, over mutual TLS) and takes a new one at `POST /v1/manifest`
from any member (the CA operator's `fedsilo consortium publish`, or another daemon): the CA's
signatures make a publication valid, never its sender. Every `manifest-poll-seconds`
([peer] in peer.toml, default 60) the daemon asks each other member with an address for its
publication, so a version handed to one daemon reaches all of them by themselves. Every reply
of a daemon also announces the version it holds (`Fedsilo-Manifest-Version`); a daemon whose
client sees a newer one fetches it from that member at once, without waiting for the next poll.

`Identity.accept` verifies a publication and writes it; a refused push (a forged signature, an
older version, the same version with other content, a CRL that does not match) is answered
409 and audited (`manifest.publish`, refused), and what is held stays. Polling a member that holds an
older version (it has not caught up) is normal and ignored; anything else refused while polling
is audited. An accepted version is audited (`manifest.update`) and acted on at once:

* its CRL is loaded into the daemon's server and client TLS contexts, so a removed member's
  certificate fails the next handshake, in and out;
* the removed members' open connections are aborted (a kept-alive connection would outlive
  the handshake check), and the daemon's own client starts new connections, so none it kept
  alive to a removed member's daemon is used again (the old ones close once the requests under
  way on them had the client's timeout);
* every active job whose owner, host or participant was removed is cancelled by this peer
  (`Cancellation.cancel`: its engine processes stop, its budget is settled).

A manifest copied into the identity directory by hand is still picked up (`Identity.current_manifest`);
the next poll acts on it in the same way.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from fedsilo.errors import FedsiloError
from fedsilo.peers.daemon.context import PeerContext
from fedsilo.peers.daemon.store import ACTIVE_STATES
from fedsilo.peers.errors import PeerUnreachable, Refused
from fedsilo.peers.identity.manifest import Manifest, Member
from fedsilo.peers.identity.tls import add_crl

log = logging.getLogger("fedsilo.peer")
ROUTE = "/v1/manifest"


class ManifestSync:
    """See the module docstring. `contexts` are the TLS contexts that check the CRL (server, client)."""

    def __init__(
        self,
        context: PeerContext,
        cancel: Callable[[Member, str], Awaitable[Any]],
        contexts: list[ssl.SSLContext],
        drop: Callable[[str], int],
    ) -> None:
        self.ctx = context
        self._cancel = cancel
        self._contexts = contexts
        self._drop = drop
        self._acted = context.identity.manifest  # the version whose removals were acted on
        self._crl_loaded = context.identity.crl  # the CRL last loaded into the TLS contexts
        self._fetching: set[str] = set()  # members asked now because they announced a newer version
        context.client.on_newer_manifest = self._announced

    def publication(self) -> dict[str, Any]:
        return self.ctx.identity.publication()

    async def receive(self, sender: str, published: Any, pushed: bool = True) -> dict[str, Any]:
        """Take a publication from `sender`; act on a newer version. Refused 409 (audited) if it is refused."""
        identity = self.ctx.identity

        async def work() -> bool:
            before = identity.current_manifest().version
            try:
                changed = identity.accept(published, sender)
            except FedsiloError as refused:
                if not pushed and _is_behind(published, before):
                    return False  # a member that has not caught up yet
                raise Refused(str(refused), 409) from None
            if changed:
                with self.ctx.store.transaction():
                    self.ctx.store.audit.append(
                        sender,
                        "manifest.update",
                        "ok",
                        f"manifest version {before} -> {identity.manifest.version} "
                        f"({len(identity.manifest.members)} members), with the CA's revocation list",
                    )
            return changed

        changed = await self.ctx.run(sender, "manifest.publish" if pushed else "manifest.poll", work)
        if changed:
            await self.act()
        return {"version": identity.manifest.version, "updated": changed}

    async def act(self) -> None:
        """Act on a manifest or CRL newer than the last acted on: load the CRL, drop and cancel the removed."""
        identity = self.ctx.identity
        manifest = identity.current_manifest()
        if identity.crl is not None and identity.crl is not self._crl_loaded:
            for context in self._contexts:
                add_crl(context, identity.crl_path)
            self._crl_loaded = identity.crl
        if manifest.version <= self._acted.version:
            return
        removed = _removed(self._acted, manifest)
        me = self._acted.member(self.ctx.name)  # this peer as it was a member (even if it was just removed)
        self._acted = manifest
        if not removed:
            return
        for name in removed:
            dropped = self._drop(name)
            log.warning(
                "peer %s: %s was removed from the consortium; %d connection(s) closed", self.ctx.name, name, dropped
            )
        old = self.ctx.client.renew()
        if old is not None:
            self.ctx.spawn(_close_later(old, self.ctx.client.timeout))
        assert me is not None, "a daemon runs only as a member of the manifest it started with"
        for job in self.ctx.store.jobs(ACTIVE_STATES):
            involved = {job.owner, job.host, *job.envelope["job"].get("participants", [])}
            gone = sorted(involved & set(removed))
            if gone:
                log.warning("peer %s: cancelling job %s: %s left the consortium", self.ctx.name, job.job_id, gone)
                try:
                    await self._cancel(me, job.job_id)
                except Refused as refusal:  # it ended meanwhile
                    log.info("job %s was not cancelled: %s", job.job_id, refusal)

    def _announced(self, url: str) -> None:
        """A reply from `url` announced a newer version: fetch it from that member (once at a time)."""
        member = next(
            (m for m in self.ctx.identity.manifest.members if m.address and url.startswith(m.address + "/")), None
        )
        if member is None or member.name == self.ctx.name or member.name in self._fetching:
            return
        self._fetching.add(member.name)
        self.ctx.spawn(self._fetch(member))

    async def _fetch(self, member: Member) -> None:
        try:
            await self._poll_member(member)
        finally:
            self._fetching.discard(member.name)

    async def poll_forever(self) -> None:
        """Every `manifest-poll-seconds`, ask each other member for its publication (see the module docstring)."""
        while True:
            await asyncio.sleep(self.ctx.config.manifest_poll_seconds)
            await self.poll_once()

    async def poll_once(self) -> None:
        await self.act()  # a manifest or CRL copied in by hand
        for member in list(self.ctx.identity.manifest.members):
            if member.name != self.ctx.name and member.address:
                await self._poll_member(member)

    async def _poll_member(self, member: Member) -> None:
        """Ask `member` for its publication and take it if newer (see `receive`); never raises."""
        try:
            published = await self.ctx.client.call("GET", f"{member.address}{ROUTE}")
        except PeerUnreachable as unreachable:
            log.debug("peer %s: no manifest from %s: %s", self.ctx.name, member.name, unreachable)
            return
        try:
            await self.receive(member.name, published, pushed=False)
        except Refused as refused:
            log.warning("peer %s: refused the manifest %s serves: %s", self.ctx.name, member.name, refused)


async def _close_later(session: aiohttp.ClientSession, seconds: float) -> None:
    try:
        await asyncio.sleep(seconds)
    finally:
        await session.close()


def _removed(old: Manifest, new: Manifest) -> list[str]:
    """Members of `old` whose certificate is not in `new` (removed, or re-admitted with another certificate)."""
    return [m.name for m in old.members if new.by_fingerprint(m.fingerprint) is None]


def _is_behind(published: Any, version: int) -> bool:
    """Whether a publication names a version below `version` (a member that has not caught up)."""
    try:
        return int(published["manifest"]["manifest"]["version"]) < version
    except (TypeError, KeyError, ValueError):
        return False
