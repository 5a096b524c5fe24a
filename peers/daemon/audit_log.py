"""A hash-chained, append-only audit log in the peer's SQLite state.

Entry `n` stores `prev_hash` = the hash of entry `n-1` (64 zeros for the first) and
`hash` = the consortium suite's hash of the canonical JSON of all its other fields,
`prev_hash` included. Under the standard suite that is SHA-256 in bare hex (the format of
every log written before suites existed, unchanged); under gm it is SM3, stored as
``sm3:`` + hex, so each entry names its algorithm. A chain uses one algorithm from its
first entry on: `verify` names an entry hashed otherwise, and a daemon of one suite
refuses to open a log chained with another's hash (a consortium's suite never changes).
Changing, inserting or deleting an entry in the middle breaks the chain at that entry
or the one after it, which `verify` names. Assumption: the chain alone cannot show
that the newest entries were cut off; export the log (`fedsilo audit export`, GET
/v1/audit over the daemon's admin socket) to a place the peer's operator cannot
rewrite to detect that.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from fedsilo.peers.errors import IntegrityError
from fedsilo.peers.identity.signing import canonical_json
from fedsilo.privacy.crypto_suite import DEFAULT_SUITE, HASH_LABELS, get_suite

GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    job       TEXT,
    source    TEXT,
    outcome   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
"""
FIELDS = ("seq", "time", "actor", "action", "job", "source", "outcome", "detail", "prev_hash", "hash")


@dataclass(frozen=True)
class AuditEntry:
    """Who (`actor`: a member name, or 'local' for the peer itself) did `action` to `job`/`source`."""

    seq: int
    time: str
    actor: str
    action: str
    job: str | None
    source: str | None
    outcome: str
    detail: str
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def entry_hash(fields: dict[str, Any], suite: str = DEFAULT_SUITE) -> str:
    """The stored hash of an entry: bare SHA-256 hex (standard), ``label:hex`` of the suite's hash otherwise."""
    body = canonical_json({k: fields[k] for k in FIELDS if k != "hash"})
    if suite == DEFAULT_SUITE:
        return hashlib.sha256(body).hexdigest()
    chosen = get_suite(suite)
    return f"{chosen.hash_label}:{chosen.hash(body).hex()}"


def hash_suite(stored: str) -> str | None:
    """The suite whose hash `stored` is (by its ``label:`` prefix; none = standard); None if no suite's."""
    label = stored.split(":", 1)[0] if ":" in stored else HASH_LABELS[DEFAULT_SUITE]
    return next((suite for suite, known in HASH_LABELS.items() if known == label), None)


@dataclass(frozen=True)
class ChainCheck:
    entries: int
    first_broken: int | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.first_broken is None


class AuditLog:
    """Appends to and checks the `audit` table of an open SQLite connection.

    `append` must run inside the caller's write transaction, so that an audit entry and
    the state change it records are committed together or not at all.
    """

    def __init__(self, conn: sqlite3.Connection, suite: str | None = None) -> None:
        """`suite`: the consortium's (a daemon); IntegrityError if the chain in `conn` uses another's hash.
        None (a read-only reader): the chain's own, as its first entry names it."""
        self._conn = conn
        conn.executescript(SCHEMA)
        first = conn.execute("SELECT hash FROM audit ORDER BY seq LIMIT 1").fetchone()
        chained = DEFAULT_SUITE if first is None else hash_suite(first[0])
        if suite is not None and first is not None and chained != suite:
            raise IntegrityError(
                f"this audit log is hash-chained with {_label(chained)} but the consortium's {suite} suite "
                f"hashes with {HASH_LABELS[suite]}: a consortium's suite never changes, so this state "
                "directory belongs to another consortium; export its log (`fedsilo audit export`) and start "
                "the peer with a new state directory"
            )
        self.suite = suite or chained or DEFAULT_SUITE
        self.hash_label = HASH_LABELS[self.suite]

    def append(
        self, actor: str, action: str, outcome: str, detail: str = "", job: str | None = None, source: str | None = None
    ) -> AuditEntry:
        last = self._conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        fields = {
            "seq": seq,
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "actor": actor,
            "action": action,
            "job": job,
            "source": source,
            "outcome": outcome,
            "detail": detail,
            "prev_hash": prev,
        }
        fields["hash"] = entry_hash(fields, self.suite)
        self._conn.execute(
            f"INSERT INTO audit ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})",
            tuple(fields[k] for k in FIELDS),
        )
        return AuditEntry(**fields)

    def entries(self, since: int = 0, limit: int | None = None) -> list[AuditEntry]:
        query = f"SELECT {', '.join(FIELDS)} FROM audit WHERE seq > ? ORDER BY seq"
        rows = self._conn.execute(query + (" LIMIT ?" if limit else ""), (since, limit) if limit else (since,))
        return [AuditEntry(*row) for row in rows]

    def verify(self) -> ChainCheck:
        """Walk the chain from the first entry; names the first entry that does not fit (an entry hashed
        with another algorithm than the chain's included)."""
        prev, expected_seq, count = GENESIS, 1, 0
        for row in self._conn.execute(f"SELECT {', '.join(FIELDS)} FROM audit ORDER BY seq"):
            entry = dict(zip(FIELDS, row))
            count += 1
            if entry["seq"] != expected_seq:
                return ChainCheck(count, entry["seq"], f"entry {expected_seq} is missing")
            if entry["prev_hash"] != prev:
                return ChainCheck(count, entry["seq"], "its prev_hash is not the hash of the entry before it")
            if hash_suite(entry["hash"]) != self.suite:
                return ChainCheck(
                    count,
                    entry["seq"],
                    f"its hash is {_label(hash_suite(entry['hash']))}, not the {HASH_LABELS[self.suite]} of "
                    f"this chain (the {self.suite} suite)",
                )
            if entry_hash(entry, self.suite) != entry["hash"]:
                return ChainCheck(count, entry["seq"], "its content does not match its hash (it was altered)")
            prev, expected_seq = entry["hash"], expected_seq + 1
        return ChainCheck(count, None)


def _label(suite: str | None) -> str:
    return "an unknown hash" if suite is None else HASH_LABELS[suite]
