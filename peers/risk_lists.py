"""PSI and anonymous query against another peer's shared list, as a member (client side).

Python API (what `fedsilo psi` and `fedsilo query` call)::

    from fedsilo.peers.risk_lists import psi_with, query_at
    outcome = psi_with(Path("bank-a/identity"), "broker", ["lei:…", …], mode="to-me", protocol="auto")
    outcome.shared            # your identifiers on the broker's list (None in count mode)
    labels = query_at(Path("lender/identity"), "broker", "large-purchases", ["c-1001"])
    labels["c-1001"]          # the label, or None: not on the list

What crosses the wire: only group elements (see `fedsilo.privacy.psi`). The holder's
daemon checks its policy and quota and audits the request; this side records the
run in its own peer's audit log (`POST /v1/psi-log` to its own daemon, with counts
only) before anything is sent — so the own daemon must be running — and again
with the outcome. The identifiers' kind (their canonical form) is the one the
holder's list declares (`GET /v1/lists`).

Protocols (`protocol=`): `dh` (DH-PSI, one request, `POST .../psi`), `ot` (OT-extension
PSI, KKRT16: a HELLO request, then the MATRIX frames in requests of at most
`OT_BODY_BYTES`, then in `both` mode the FOUND frames, `POST .../psi/ot`), or `auto`:
`ot` when the holder offers it, the mode is not `count` and this side has at least
`AUTO_OT_FROM` identifiers, else `dh` (the crossover measured in docs/psi-protocols.md).
A holder that lists no protocols (an older daemon) offers `dh` only.

Crypto suite: both sides run in the group of the consortium's suite (the manifest's
`suite`): under `gm` DH-PSI and the query run on the SM2 curve, and the OT protocol is not
available (its base OTs are on ristretto255): `--protocol ot` is refused saying so and
`auto` picks `dh` (`OT_UNDER_GM` says why).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsilo.errors import ConfigError
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.shared_lists import OT_UNDER_GM
from fedsilo.peers.errors import PeerUnreachable, Refused
from fedsilo.peers.identity.consortium import Identity
from fedsilo.peers.identity.pki import check_name
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE
from fedsilo.privacy.psi import KkrtReceiver, Mode, PsiReceiver, PsiResult, Querier, otwire
from fedsilo.privacy.psi.wire import MAX_BATCH, split

MODES = {"to-me": Mode.TO_RECEIVER, "both": Mode.TO_BOTH, "count": Mode.CARDINALITY}
PROTOCOLS = ("auto", "dh", "ot")
AUTO_OT_FROM = 1000  # identifiers on this side from which `auto` picks the OT protocol
OT_BODY_BYTES = 1 << 20  # an OT-PSI request body: the default peer.max-body-bytes


@dataclass(frozen=True)
class PsiOutcome:
    """What this side learned: sizes of distinct identifiers, the count, and (unless count mode) which."""

    peer: str
    list_name: str
    mode: str
    protocol: str
    own_size: int
    peer_size: int
    cardinality: int
    shared: list[str] | None


def peer_url(identity: Identity, peer: str) -> str:
    """A member name (its manifest address) or an https:// URL."""
    if peer.startswith("https://"):
        return peer.rstrip("/")
    member = identity.manifest.member(peer)
    if member is None or not member.address:
        raise ConfigError(
            f"{peer!r} is not a peer with an address in your manifest: give a member name or https://HOST:PORT"
        )
    return member.address.rstrip("/")


async def shared_lists(client: PeerClient, url: str) -> list[dict[str, Any]]:
    """The lists the peer at `url` shares with this member."""
    return (await client.call("GET", f"{url}/v1/lists"))["lists"]


async def _pick(client: PeerClient, url: str, list_name: str | None, use: str) -> dict[str, Any]:
    """The holder's entry for the list to use; its name (it goes into request paths) checked like a list name."""
    offered = [
        entry
        for entry in await shared_lists(client, url)
        if (entry["psi_modes"] if use == "psi" else entry["query_quota"] is not None)
    ]
    for entry in offered:
        check_name(entry["name"], f"{url} offers a list whose name")
    if list_name is None:
        if len(offered) != 1:
            names = ", ".join(e["name"] for e in offered) or "none"
            raise ConfigError(
                f"{url} shares {len(offered)} lists with you for {use} ({names}); name one with --their-list"
            )
        return offered[0]
    for entry in offered:
        if entry["name"] == list_name:
            return entry
    # not offered: let the holder refuse (its refusal is authoritative and lands in its audit log)
    if use == "psi":
        await client.frames("POST", f"{url}/v1/lists/{list_name}/psi", b"")
    else:
        await client.frames("GET", f"{url}/v1/lists/{list_name}/table")
    raise Refused(f"{url} does not offer list {list_name!r} to you for {use}", 403)


async def _record(
    client: PeerClient, action: str, peer: str, list_name: str, outcome: str, sent: int, learned: int | None
) -> None:
    own = peer_url(client.identity, client.identity.name)
    try:
        await client.call(
            "POST",
            f"{own}/v1/psi-log",
            {"action": action, "peer": peer, "list": list_name, "outcome": outcome, "sent": sent, "learned": learned},
        )
    except PeerUnreachable as error:
        raise PeerUnreachable(
            f"your own daemon ({client.identity.name} at {own}) must record every PSI and query "
            f"in its audit log, and did not ({error}): start it with `fedsilo peer start`"
        ) from None


def choose_protocol(protocol: str, mode: str, offered: Sequence[str], own_size: int, suite: str = DEFAULT_SUITE) -> str:
    """The protocol to run: `protocol` if the holder offers it, or `auto`'s pick (module docstring)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"PSI protocol {protocol!r} is unknown: use one of {', '.join(PROTOCOLS)}")
    if suite != DEFAULT_SUITE:
        if protocol == "ot":
            raise ConfigError(OT_UNDER_GM)
        offered = [p for p in offered if p != "ot"]
    if protocol == "auto":
        if "ot" in offered and mode != "count" and (own_size >= AUTO_OT_FROM or "dh" not in offered):
            return "ot"
        if "dh" in offered:
            return "dh"
        raise Refused(f"the list offers PSI protocols {', '.join(offered)} only, none for mode {mode}", 403)
    if protocol == "ot" and mode == "count":
        raise ConfigError("the PSI protocol 'ot' cannot give a count only: use --protocol dh or auto for count mode")
    return protocol


async def dh_psi(
    client: PeerClient, url: str, name: str, identifiers: Sequence[str], kind: str | None, mode: str
) -> tuple[PsiResult, bytes]:
    """One DH-PSI run with list `name` at `url`: this side's result and the run's session id."""
    receiver = PsiReceiver(identifiers, kind=kind, mode=MODES[mode], suite=client.identity.manifest.suite)
    session = receiver.session
    assert session is not None
    request = b"".join(await asyncio.to_thread(lambda: list(receiver.request_frames())))
    reply = await client.frames("POST", f"{url}/v1/lists/{name}/psi", request)

    def finish() -> bytes:
        back: list[bytes] = []
        for frame in split(reply):
            back += receiver.handle(frame)
        return b"".join(back)

    confirm = await asyncio.to_thread(finish)
    if confirm:
        await client.frames("POST", f"{url}/v1/lists/{name}/psi/confirm", confirm)
    return receiver.result(), session


def _bodies(frames: list[bytes]) -> list[bytes]:
    """Frames grouped into request bodies of at most OT_BODY_BYTES (a frame alone if larger)."""
    bodies: list[list[bytes]] = [[]]
    size = 0
    for frame in frames:
        if bodies[-1] and size + 4 + len(frame) > OT_BODY_BYTES:
            bodies.append([])
            size = 0
        bodies[-1].append(frame)
        size += 4 + len(frame)
    return [otwire.pack(group) for group in bodies if group]


async def _ot(
    client: PeerClient, url: str, name: str, identifiers: Sequence[str], kind: str | None, mode: str
) -> PsiResult:
    receiver = KkrtReceiver(identifiers, kind=kind, mode=MODES[mode])
    endpoint = f"{url}/v1/lists/{name}/psi/ot"

    def handle(replies: list[bytes]) -> list[bytes]:
        back: list[bytes] = []
        for frame in replies:
            back += receiver.handle(frame)
        return back

    outgoing = await asyncio.to_thread(lambda: list(receiver.request_frames()))
    while outgoing:  # HELLO -> REPLY; MATRIX... -> MASKS; FOUND... (both-sides mode) -> nothing
        replies: list[bytes] = []
        for body in _bodies(outgoing):
            replies += otwire.unpack(await client.frames("POST", endpoint, body))
        outgoing = await asyncio.to_thread(handle, replies)
    return receiver.result()


async def run_psi(
    client: PeerClient,
    peer: str,
    identifiers: Sequence[str],
    mode: str = "to-me",
    list_name: str | None = None,
    protocol: str = "auto",
) -> PsiOutcome:
    """PSI of `identifiers` with `peer`'s list (see the module docstring)."""
    if mode not in MODES:
        raise ConfigError(f"PSI mode {mode!r} is unknown: use one of {', '.join(MODES)}")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"PSI protocol {protocol!r} is unknown: use one of {', '.join(PROTOCOLS)}")
    url = peer_url(client.identity, peer)
    suite = client.identity.manifest.suite
    if suite != DEFAULT_SUITE and protocol == "ot":
        raise ConfigError(OT_UNDER_GM)
    try:
        entry = await _pick(client, url, list_name, "psi")
    except PeerUnreachable:
        await _record(client, "psi.run", peer, list_name or "-", "refused", len(identifiers), None)
        raise
    name, kind = entry["name"], None if entry["kind"] == "typed" else entry["kind"]
    if mode not in entry["psi_modes"]:
        raise Refused(f"{peer}'s list {name!r} allows PSI modes {', '.join(entry['psi_modes'])} only", 403)
    offered = entry.get("psi_protocols") or ["dh"]
    if protocol != "auto" and protocol not in offered:
        # let the holder refuse it by name (its refusal is authoritative and lands in its audit log)
        try:
            await client.frames("POST", f"{url}/v1/lists/{name}/{'psi/ot' if protocol == 'ot' else 'psi'}", b"")
        except PeerUnreachable:
            await _record(client, "psi.run", peer, name, "refused", len(identifiers), None)
            raise
        raise Refused(f"{peer}'s list {name!r} does not offer the PSI protocol {protocol!r}", 403)
    chosen = choose_protocol(protocol, mode, offered, len(identifiers), suite)
    await _record(client, "psi.run", peer, name, "started", len(identifiers), None)
    try:
        if chosen == "ot":
            result = await _ot(client, url, name, identifiers, kind, mode)
        else:
            result, _ = await dh_psi(client, url, name, identifiers, kind, mode)
    except PeerUnreachable:
        await _record(client, "psi.run", peer, name, "refused", len(identifiers), None)
        raise
    await _record(client, "psi.run", peer, name, "ok", result.own_size, result.cardinality)
    shared = None if result.positions is None else [identifiers[int(p)] for p in result.positions]
    return PsiOutcome(peer, name, mode, chosen, result.own_size, result.peer_size, int(result.cardinality or 0), shared)


async def run_query(client: PeerClient, peer: str, list_name: str, identifiers: Sequence[str]) -> dict[str, str | None]:
    """Each identifier's label on `peer`'s list `list_name`, or None where it is not listed."""
    if not identifiers:
        raise ConfigError("give at least one identifier to query")
    url = peer_url(client.identity, peer)
    try:
        entry = await _pick(client, url, list_name, "query")
    except PeerUnreachable:
        await _record(client, "query.run", peer, list_name, "refused", len(identifiers), None)
        raise
    kind = None if entry["kind"] == "typed" else entry["kind"]
    await _record(client, "query.run", peer, list_name, "started", len(identifiers), None)
    labels: list[str | None] = []
    try:
        table = await client.frames("GET", f"{url}/v1/lists/{list_name}/table")
        querier = await asyncio.to_thread(Querier, table, kind=kind, suite=client.identity.manifest.suite)
        for start in range(0, len(identifiers), MAX_BATCH):
            pending = await asyncio.to_thread(querier.ask, list(identifiers[start : start + MAX_BATCH]))
            answer = await client.frames("POST", f"{url}/v1/lists/{list_name}/query", pending.request)
            labels += await asyncio.to_thread(pending.open, answer)
    except PeerUnreachable:
        await _record(client, "query.run", peer, list_name, "refused", len(identifiers), None)
        raise
    await _record(client, "query.run", peer, list_name, "ok", len(identifiers), sum(v is not None for v in labels))
    return dict(zip(identifiers, labels))


def psi_with(
    identity_dir: Path,
    peer: str,
    identifiers: Sequence[str],
    mode: str = "to-me",
    list_name: str | None = None,
    protocol: str = "auto",
) -> PsiOutcome:
    """Blocking `run_psi` as the member whose identity is in `identity_dir`."""

    async def main() -> PsiOutcome:
        async with PeerClient(Identity.load(identity_dir), timeout=600) as client:
            return await run_psi(client, peer, identifiers, mode, list_name, protocol)

    return asyncio.run(main())


def query_at(identity_dir: Path, peer: str, list_name: str, identifiers: Sequence[str]) -> dict[str, str | None]:
    """Blocking `run_query` as the member whose identity is in `identity_dir`."""

    async def main() -> dict[str, str | None]:
        async with PeerClient(Identity.load(identity_dir), timeout=600) as client:
            return await run_query(client, peer, list_name, identifiers)

    return asyncio.run(main())
