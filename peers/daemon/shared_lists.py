"""The list holder's side of PSI and anonymous query at a peer daemon.

`SharedLists` serves the `[lists.NAME]` of peer.toml to the members its policy names:
PSI (`psi`, in the `psi-modes` allowed) and anonymous query (`queriers`, each with its
quota of identifiers per `quota-window`). It only sees group elements; it reads the
list file on this machine for each run. Contracts:

* A member that may not use a list, and a list that does not exist, get the same
  refusal (403), so a refusal says nothing about which lists this peer holds.
* Every request is audited (who, when, which list, how many identifiers); nothing in
  the log, the quota store or a reply names an identifier.
* Query key epochs: a `ListHolder` is created (new secret key, epoch = last epoch
  this peer served + 1, kept in `state/psi/NAME.epoch`) when the list's table is
  asked for and there is no current epoch: after a start, once the epoch is older
  than the list's `epoch-hours`, or once the list file changed (size or modification
  time). A restart therefore rotates the key too. Answers for an older epoch are
  refused (409) until the querier fetches the new table.
* Quotas live in `state/psi/NAME.quota.sqlite` (`fedsilo.privacy.psi.SQLiteQuota`), so a
  restart does not reset them. A refused query consumes nothing. A list's optional
  `psi-quota` limits, the same way, the identifiers each member may compare with it
  by PSI per window (`NAME.psi-quota.sqlite`): without it, a member could learn the
  list by running PSI with candidate sets again and again.
* In `both` mode the holder learns the intersection too: it is written to
  `state/psi/results/` (a CSV of its own identifiers) for the peer's operator.
* Protocols: a list offers the DH protocol (`psi`, one round trip) and/or the OT-extension
  one (`ot`, KKRT16, `fedsilo.privacy.psi.kkrt`), as its `psi-protocols` say; a request in a
  protocol the list does not offer is refused (403) naming it. An OT run takes several
  requests (HELLO; the MATRIX frames, in as many requests as the body limit needs; in `both`
  mode the FOUND frames), tied by the 16-byte session id of the frames' header. A session
  lives in memory only: at most `max_sessions` at once (`max_sessions_per_member` each),
  dropped `session_seconds` after its last request, and at once on any malformed frame
  (the run is aborted; the caller starts again). The HELLO is audited and counted against
  `psi-quota` (its announced number of identifiers, at most `MAX_OT_ITEMS`).

Crypto suite: the lists are served in the group of the consortium's suite (the signed
manifest's `suite`, `fedsilo.privacy.psi.groups`): X25519 PSI and ristretto255 queries under
`standard`, the SM2 curve for both under `gm`, where a gm peer never touches Curve25519.
A frame of the other suite's group is refused (400) naming both groups. Under gm the
OT-extension protocol is not offered: its base OTs run on ristretto255 and its PRG,
hashes and code on AES and SHA-256, so a gm list offers `dh` only (`shared_with` lists
it so), an OT request is refused (403) saying why (`OT_UNDER_GM`), and a gm daemon with a
list that offers only `ot` does not start (ConfigError naming the list).

The methods are blocking (group operations, file reads): the service runs them in a
thread, inside its actor, so quota, epoch and audit changes never interleave. The group
operations run on one `fedsilo.privacy.psi.Workers` for the daemon's life (a process per core,
started at the first PSI or table, about a second): the holder hashes and blinds its
whole list on every PSI run and every new key epoch.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fedsilo.errors import ConfigError, DataError, FedsiloError, ProtocolError, QuotaExceeded, StaleEpoch
from fedsilo.peers.daemon.config import SharedList
from fedsilo.peers.errors import Refused
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE
from fedsilo.privacy.psi import (
    KkrtSender,
    ListHolder,
    Mode,
    PsiResult,
    PsiSender,
    QueryQuota,
    SQLiteQuota,
    Workers,
    otwire,
)
from fedsilo.privacy.psi.groups import psi_group, query_group
from fedsilo.privacy.psi.kkrt import HELLO_BYTES, hello_items
from fedsilo.privacy.psi.wire import FrameType, decode, split

MODE_NAMES = {Mode.TO_RECEIVER: "to-me", Mode.TO_BOTH: "both", Mode.CARDINALITY: "count"}
PENDING_SECONDS = 600.0
OT_SESSION_SECONDS = 120.0  # an OT-PSI session is dropped this long after its last request
OT_MAX_SESSIONS = 8  # OT-PSI sessions held at once, all members
OT_MAX_SESSIONS_PER_MEMBER = 2
MAX_OT_ITEMS = 10_000_000  # identifiers a receiver may announce in one OT-PSI run (bounds a session's memory)
OT_UNDER_GM = (
    "the OT-extension PSI protocol is not available in a gm-suite consortium: its base OTs run on "
    "ristretto255 (Curve25519) and its PRG and hashes on AES and SHA-256, which the gm suite does not allow; "
    "run DH-PSI on the SM2 curve (--protocol dh, or auto)"
)


def read_column(path: Path, column: str) -> Iterator[str]:
    """The values of one column of a CSV file with a header, streamed."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if column not in header:
            raise DataError(f"{path} has no column {column!r} (columns: {', '.join(header)})")
        index = header.index(column)
        for row in reader:
            if row:
                yield row[index]


class _PerQuerier(QueryQuota):
    """Each member's own limit from the policy, all in one SQLite file."""

    def __init__(self, path: Path, limits: tuple[tuple[str, int], ...], window: float) -> None:
        super().__init__(0, window)
        self._by = {member: SQLiteQuota(path, limit, window) for member, limit in limits}

    def _consume(self, querier: str, count: int, now: float) -> int:
        return self._by[querier]._consume(querier, count, now)

    def _used(self, querier: str, now: float) -> int:
        return self._by[querier]._used(querier, now)

    def records(self, querier: str | None = None) -> list:
        return next(iter(self._by.values())).records(querier) if self._by else []

    def left(self, querier: str) -> int:
        quota = self._by[querier]
        return quota.limit - quota.used(querier)

    def close(self) -> None:
        for quota in self._by.values():
            quota.close()


@dataclass
class _Pending:
    """A both-sides PSI waiting for the receiver's CONFIRM frames."""

    sender: PsiSender
    member: str
    list_name: str
    started: float


@dataclass
class _OtSession:
    """An OT-PSI run between its requests (see the module docstring)."""

    sender: KkrtSender
    member: str
    list_name: str
    mode: Mode
    last: float


@dataclass(frozen=True)
class Served:
    """A reply body and the audit detail of the request it answers (counts only).

    `detail` None: a middle step of a run, not audited (its start and end are);
    `action`: the audited action when it is not the route's own.
    """

    body: bytes
    detail: str | None
    action: str | None = None


class SharedLists:
    """See the module docstring. `directory` is the peer's `state/psi`; `suite` the consortium's crypto suite."""

    def __init__(
        self,
        lists: dict[str, SharedList],
        directory: Path,
        workers: Workers | None = None,
        suite: str = DEFAULT_SUITE,
    ) -> None:
        self.lists = lists
        self.directory = directory
        self.suite = suite
        self._psi_wire, self._query_wire = psi_group(suite).wire, query_group(suite).wire
        for shared in lists.values():
            if suite != DEFAULT_SUITE and shared.psi and "dh" not in shared.psi_protocols:
                raise ConfigError(
                    f"lists.{shared.name}.psi-protocols offers only 'ot', which a {suite}-suite consortium cannot "
                    "run (its base OTs are on ristretto255): add 'dh' (DH-PSI on the SM2 curve)"
                )
        self._workers = workers or Workers()
        self._epochs: dict[str, _Epoch] = {}
        self._quotas: dict[str, _PerQuerier] = {}
        self._psi_quotas: dict[str, _PerQuerier] = {}
        self._pending: dict[bytes, _Pending] = {}
        self._confirmed: dict[tuple[str, str, bytes], tuple[PsiResult, float]] = {}
        self._sessions: dict[bytes, _OtSession] = {}
        self.max_sessions = OT_MAX_SESSIONS
        self.max_sessions_per_member = OT_MAX_SESSIONS_PER_MEMBER
        self.session_seconds = OT_SESSION_SECONDS

    def close(self) -> None:
        for quota in [*self._quotas.values(), *self._psi_quotas.values()]:
            quota.close()
        self._workers.close()

    # -- policy ---------------------------------------------------------------------
    def shared_with(self, member: str) -> list[dict[str, object]]:
        """What `member` may do with each list it may use (names, modes, quota left)."""
        out = []
        for shared in self.lists.values():
            quota = shared.quota_of(member)
            if member not in shared.psi and quota is None:
                continue
            psi_left = (
                self._psi_quota(shared).left(member) if member in shared.psi and shared.psi_quota is not None else None
            )
            out.append(
                {
                    "name": shared.name,
                    "kind": shared.kind or "typed",
                    "psi_modes": list(shared.psi_modes) if member in shared.psi else [],
                    "psi_protocols": self._protocols(shared) if member in shared.psi else [],
                    "psi_quota": shared.psi_quota if member in shared.psi else None,
                    "psi_left": psi_left,
                    "query_quota": quota,
                    "query_left": None if quota is None else self._quota(shared).left(member),
                    "quota_window": shared.quota_window,
                    "labels": shared.label_column is not None,
                }
            )
        return out

    def _protocols(self, shared: SharedList) -> list[str]:
        """The PSI protocols `shared` offers under this consortium's suite (no `ot` under gm)."""
        return [p for p in shared.psi_protocols if p != "ot" or self.suite == DEFAULT_SUITE]

    def _allowed(self, member: str, name: str, use: str) -> SharedList:
        shared = self.lists.get(name)
        if shared is None or (member not in shared.psi if use == "psi" else shared.quota_of(member) is None):
            raise Refused(
                f"list {name!r} is not shared with {member} for {use} here; ask its holder to add you to its policy",
                403,
            )
        return shared

    # -- PSI --------------------------------------------------------------------------
    def psi(self, member: str, name: str, body: bytes) -> Served:
        """Answer a receiver's BLINDED frames with EVALUATED and SET frames."""
        shared = self._allowed(member, name, "psi")
        _offers(shared, "dh")
        frames = split(body)
        if not frames:
            raise ProtocolError("the PSI request carries no frame")
        first = decode(frames[0], {FrameType.BLINDED, FrameType.BLINDED_END}, self._psi_wire)
        mode = Mode(first.mode) if first.mode in {m.value for m in Mode} else None
        if mode is None or MODE_NAMES[mode] not in shared.psi_modes:
            raise Refused(f"list {name!r} allows PSI modes {', '.join(shared.psi_modes)} only", 403)
        compared = sum(
            frame.count
            for frame in (decode(f, group=self._psi_wire) for f in frames)
            if frame.type is FrameType.BLINDED
        )
        if shared.psi_quota is not None and compared:
            try:
                self._psi_quota(shared).consume(member, compared)
            except QuotaExceeded as error:
                raise Refused(f"PSI on list {name!r}: {error}", 429) from None
        self._expire()
        sender = PsiSender(
            read_column(shared.path, shared.id_column),
            kind=shared.kind,
            mode=mode,
            workers=self._workers,
            suite=self.suite,
        )
        replies: list[bytes] = []
        for frame in frames:
            replies += sender.handle(frame)
        if not replies:
            raise ProtocolError("the PSI request ended before its BLINDED_END frame")
        asked = decode(frames[-1], group=self._psi_wire).count
        if mode is Mode.TO_BOTH:
            self._pending[first.session] = _Pending(sender, member, name, time.monotonic())
        return Served(b"".join(replies), f"PSI mode {MODE_NAMES[mode]}: {asked} identifiers asked")

    def confirm(self, member: str, name: str, body: bytes) -> Served:
        """Finish a both-sides PSI: learn the intersection and write it to `state/psi/results`."""
        shared = self._allowed(member, name, "psi")
        frames = split(body)
        session = decode(frames[0], group=self._psi_wire).session if frames else b""
        pending = self._pending.get(session)
        if pending is None or pending.member != member or pending.list_name != name:
            raise Refused(
                "no both-sides PSI of yours on this list is waiting for confirmation (it expired after "
                f"{PENDING_SECONDS:g} s or never started); run it again",
                409,
            )
        del self._pending[session]
        for frame in frames:
            pending.sender.handle(frame)
        result = pending.sender.result()
        out = self._write_result(shared, member, result)
        self._confirmed[(member, name, session)] = (result, time.monotonic())
        return Served(b"", f"PSI mode both: {result.cardinality} identifiers shared, written to {out.name}")

    def take_confirmed(self, member: str, name: str, session: bytes) -> PsiResult:
        """The holder's result of `member`'s confirmed both-sides DH-PSI `session` on list `name`, once
        (a vertical job aligns on it); Refused (409) if there is none (expired after PENDING_SECONDS, or taken)."""
        self._expire()
        entry = self._confirmed.pop((member, name, session), None)
        if entry is None:
            raise Refused(
                f"no confirmed both-sides PSI of {member} on list {name!r} has this session (it expired after "
                f"{PENDING_SECONDS:g} s, was used already, or never ran); run the alignment again",
                409,
            )
        return entry[0]

    def _write_result(self, shared: SharedList, member: str, result: PsiResult) -> Path:
        """Write the holder's side of a both-sides PSI (its own identifiers) to `state/psi/results`."""
        wanted = set(int(p) for p in (result.positions if result.positions is not None else ()))
        shared_ids = [v for i, v in enumerate(read_column(shared.path, shared.id_column)) if i in wanted]
        results = self.directory / "results"
        results.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        out = results / f"{stamp}-{shared.name}-{member}.csv"
        with open(out, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([shared.id_column])
            writer.writerows([v] for v in shared_ids)
        return out

    # -- OT-extension PSI ---------------------------------------------------------------
    def ot(self, member: str, name: str, body: bytes) -> Served:
        """One request of an OT-PSI run: a HELLO opens a session, later frames continue it."""
        shared = self._allowed(member, name, "psi")
        if self.suite != DEFAULT_SUITE:
            raise Refused(OT_UNDER_GM, 403)
        _offers(shared, "ot")
        frames = otwire.unpack(body)
        if not frames:
            raise ProtocolError("the OT-PSI request carries no frame")
        self._expire_sessions()
        first = frames[0]
        session = bytes(first[8:24]) if len(first) >= otwire.HEADER else b""
        current = self._sessions.get(session)
        if current is None:
            if first[:4] == otwire.MAGIC and first[5] != otwire.FrameType.HELLO:
                raise Refused(_NO_SESSION.format(seconds=self.session_seconds), 409)
            return self._open(shared, member, frames)
        if current.member != member or current.list_name != name:
            raise Refused(_NO_SESSION.format(seconds=self.session_seconds), 409)
        replies: list[bytes] = []
        try:
            for frame in frames:
                replies += current.sender.handle(frame)
        except FedsiloError:
            del self._sessions[session]  # a malformed frame aborts the run: nothing of it stays
            raise
        current.last = time.monotonic()
        if not current.sender.done:
            return Served(otwire.pack(replies), None)
        del self._sessions[session]
        result = current.sender.result()
        if current.mode is not Mode.TO_BOTH:
            return Served(otwire.pack(replies), None)
        out = self._write_result(shared, member, result)
        return Served(
            b"",
            f"PSI mode both (protocol ot): {result.cardinality} identifiers shared, written to {out.name}",
            "psi.confirm",
        )

    def _open(self, shared: SharedList, member: str, frames: list[bytes]) -> Served:
        """A HELLO: check mode, size, room and quota; answer with the REPLY and keep the session."""
        hello = otwire.decode(frames[0], {otwire.FrameType.HELLO: HELLO_BYTES})
        if len(frames) != 1:
            raise ProtocolError("an OT-PSI run starts with a request of one HELLO frame")
        mode = Mode(hello.mode) if hello.mode in {m.value for m in Mode} else None
        if mode is None or MODE_NAMES[mode] not in shared.psi_modes:
            raise Refused(f"list {shared.name!r} allows PSI modes {', '.join(shared.psi_modes)} only", 403)
        if mode is Mode.CARDINALITY:
            raise Refused("the PSI protocol 'ot' cannot give a count only: run count mode with --protocol dh", 403)
        items = hello_items(hello)
        if items > MAX_OT_ITEMS:
            raise Refused(
                f"an OT-PSI run here compares at most {MAX_OT_ITEMS} identifiers (asked: {items}); split your set",
                413,
            )
        mine = sum(s.member == member for s in self._sessions.values())
        if len(self._sessions) >= self.max_sessions or mine >= self.max_sessions_per_member:
            raise Refused(
                f"{len(self._sessions)} OT-PSI sessions are open here ({mine} of yours; at most "
                f"{self.max_sessions}, {self.max_sessions_per_member} per member); retry within "
                f"{self.session_seconds:g} s, when idle ones expire",
                503,
            )
        sender = KkrtSender(read_column(shared.path, shared.id_column), kind=shared.kind, mode=mode)
        replies = sender.handle(frames[0])  # checks the HELLO whole before anything is counted or kept
        if shared.psi_quota is not None and items:
            try:
                self._psi_quota(shared).consume(member, items)
            except QuotaExceeded as error:
                raise Refused(f"PSI on list {shared.name!r}: {error}", 429) from None
        self._sessions[hello.session] = _OtSession(sender, member, shared.name, mode, time.monotonic())
        return Served(otwire.pack(replies), f"PSI mode {MODE_NAMES[mode]} (protocol ot): {items} identifiers asked")

    def _expire_sessions(self) -> None:
        now = time.monotonic()
        for session in [s for s, o in self._sessions.items() if now - o.last > self.session_seconds]:
            del self._sessions[session]

    @property
    def open_sessions(self) -> int:
        """OT-PSI sessions held now (expired ones dropped first)."""
        self._expire_sessions()
        return len(self._sessions)

    def _expire(self) -> None:
        now = time.monotonic()
        for session in [s for s, p in self._pending.items() if now - p.started > PENDING_SECONDS]:
            del self._pending[session]
        for key in [k for k, (_, at) in self._confirmed.items() if now - at > PENDING_SECONDS]:
            del self._confirmed[key]

    # -- anonymous query ------------------------------------------------------------------
    def table(self, member: str, name: str) -> Served:
        """The encrypted table of the current epoch (published on first use after a start)."""
        shared = self._allowed(member, name, "query")
        holder, table = self._holder(shared)
        return Served(table, f"query table of epoch {holder.epoch} fetched")

    def query(self, member: str, name: str, body: bytes) -> Served:
        """Answer a QUERY frame under the member's quota; StaleEpoch → 409, over quota → 429."""
        shared = self._allowed(member, name, "query")
        holder, _ = self._holder(shared)
        try:
            answer = holder.answer(member, body)
        except StaleEpoch as error:
            raise Refused(str(error), 409) from None
        except QuotaExceeded as error:
            raise Refused(str(error), 429) from None
        count = decode(body, group=self._query_wire).count
        left = self._quota(shared).left(member)
        return Served(answer, f"query: {count} identifiers answered at epoch {holder.epoch}; {left} left in the window")

    def charge_query(self, shared: SharedList, member: str, count: int) -> int:
        """Count `count` identifiers answered to `member` against its query quota on `shared` (what a vertical
        job's scoring consumes); QuotaExceeded (nothing counted) over it. Returns what is left in the window."""
        quota = self._quota(shared)
        if count:
            quota.consume(member, count)
        return quota.left(member)

    def _quota(self, shared: SharedList) -> _PerQuerier:
        if shared.name not in self._quotas:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._quotas[shared.name] = _PerQuerier(
                self.directory / f"{shared.name}.quota.sqlite", shared.queriers, shared.quota_window
            )
        return self._quotas[shared.name]

    def _psi_quota(self, shared: SharedList) -> _PerQuerier:
        if shared.name not in self._psi_quotas:
            assert shared.psi_quota is not None
            self.directory.mkdir(parents=True, exist_ok=True)
            self._psi_quotas[shared.name] = _PerQuerier(
                self.directory / f"{shared.name}.psi-quota.sqlite",
                tuple((m, shared.psi_quota) for m in shared.psi),
                shared.quota_window,
            )
        return self._psi_quotas[shared.name]

    def _holder(self, shared: SharedList) -> tuple[ListHolder, bytes]:
        current = self._epochs.get(shared.name)
        stamp = _file_stamp(shared.path)
        if current is None or current.stamp != stamp or time.monotonic() - current.started >= shared.epoch_seconds:
            epoch_file = self.directory / f"{shared.name}.epoch"
            epoch = int(epoch_file.read_text()) + 1 if epoch_file.is_file() else 1
            holder = ListHolder(
                shared.name,
                self._quota(shared),
                kind=shared.kind,
                label_width=shared.label_width,
                epoch=epoch,
                workers=self._workers,
                suite=self.suite,
            )
            ids = read_column(shared.path, shared.id_column)
            labels = read_column(shared.path, shared.label_column) if shared.label_column else None
            table = holder.publish(zip(ids, labels) if labels is not None else ((i, "listed") for i in ids))
            temporary = epoch_file.with_suffix(".tmp")
            temporary.write_text(str(epoch))
            os.replace(temporary, epoch_file)
            current = self._epochs[shared.name] = _Epoch(holder, table.to_bytes(), time.monotonic(), stamp)
        return current.holder, current.table


_NO_SESSION = (
    "no OT-PSI session of yours on this list has this id (sessions expire {seconds:g} s after their last "
    "request, and end on a malformed frame); start the run again with a HELLO"
)


def _offers(shared: SharedList, protocol: str) -> None:
    """Refuse (403), naming it, a PSI protocol the list does not offer."""
    if protocol not in shared.psi_protocols:
        raise Refused(
            f"list {shared.name!r} does not offer the PSI protocol {protocol!r} (it offers "
            f"{', '.join(shared.psi_protocols)}); run with --protocol auto or one it offers",
            403,
        )


@dataclass(frozen=True)
class _Epoch:
    """A list's current query key epoch: its holder, its published table, when, and of which file."""

    holder: ListHolder
    table: bytes
    started: float
    stamp: tuple[int, int]


def _file_stamp(path: Path) -> tuple[int, int]:
    """(size, modification time in ns) of a list file: a change starts a new epoch."""
    try:
        info = path.stat()
    except OSError as error:
        raise DataError(f"list file {path} cannot be read ({error.strerror})") from None
    return info.st_size, info.st_mtime_ns
