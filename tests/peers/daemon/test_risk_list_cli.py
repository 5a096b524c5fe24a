"""`fedsilo psi` and `fedsilo query` run as a user runs them, against real daemons over mTLS.

The CLI's `main(argv)` runs in a worker thread (it starts its own event loop, as the
console script does) while the daemons serve in the test's loop; output and exit codes
are the user's. The consortium is `test_risk_lists.py`'s (broker holds `high-risk`,
bank-a may run PSI and query under a quota of 5, bank-c may do neither). Also here:
an oversized PSI or query body is refused with 413 and changes nothing but the audit log.
"""

import asyncio
import contextlib
import io
import sqlite3

import pytest

from fedsilo.cli import main
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.errors import PeerUnreachable
from fedsilo.peers.risk_lists import run_psi
from fedsilo.privacy.psi import canonical

from ._consortium import run, running
from .test_risk_lists import (
    BANK,
    HOLDER_LIST,
    audit,
    consortium,  # noqa: F401  (a module-scoped fixture, used by name)
)

LIMIT = 1048576  # the daemon's default peer.max-body-bytes


async def fedsilo(*argv: str) -> tuple[int, str, str]:
    """Run `fedsilo ARGV...` in a thread: (exit code, stdout, stderr)."""

    def call() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exit_:  # argparse
                code = int(exit_.code or 0)
        return code, out.getvalue(), err.getvalue()

    return await asyncio.to_thread(call)


def identity(consortium, name):
    return str(consortium.identity_dir(name))


def psi_state(consortium, name="broker"):
    """Everything a PSI or query can change at the holder, besides its audit log."""
    directory = consortium.root / name / "state" / "psi"
    files = {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in directory.rglob("*")
        if p.is_file() and not p.name.endswith(("-wal", "-shm", "-journal", ".sqlite"))
    }
    quota = directory / "high-risk.quota.sqlite"
    rows = []
    if quota.is_file():
        with sqlite3.connect(quota) as conn:
            rows = conn.execute("SELECT querier, count, granted FROM query_requests ORDER BY rowid").fetchall()
    return files, rows


def test_psi_command_prints_the_shared_identifiers_and_refuses_an_ambiguous_list(consortium, tmp_path):
    listing = tmp_path / "clients.csv"
    listing.write_text("client,segment\n" + "".join(f'"{c}",x\n' for c in BANK))
    plain = [c for c in BANK if canonical(c, "client") in {canonical(h, "client") for h in HOLDER_LIST}]
    bank_a = identity(consortium, "bank-a")

    async def body():
        async with running(consortium, ["bank-a", "broker"]):
            ambiguous = await fedsilo(
                "psi", "--list", str(listing), "--id-column", "client", "--with", "broker", "--identity", bank_a
            )
            to_me = await fedsilo(
                "psi",
                "--list",
                str(listing),
                "--id-column",
                "client",
                "--with",
                "broker",
                "--their-list",
                "high-risk",
                "--identity",
                bank_a,
            )
            count = await fedsilo(
                "psi",
                "--list",
                str(listing),
                "--id-column",
                "client",
                "--with",
                "broker",
                "--their-list",
                "high-risk",
                "--mode",
                "count",
                "--identity",
                bank_a,
            )
            missing = await fedsilo(
                "psi", "--list", str(tmp_path / "nope.csv"), "--with", "broker", "--identity", bank_a
            )
            bad_mode = await fedsilo(
                "psi", "--list", str(listing), "--with", "broker", "--mode", "all", "--identity", bank_a
            )
        async with running(consortium, ["broker"]):  # bank-a's own daemon is down: nothing is sent
            unrecorded = await fedsilo(
                "psi",
                "--list",
                str(listing),
                "--id-column",
                "client",
                "--with",
                "broker",
                "--their-list",
                "high-risk",
                "--identity",
                bank_a,
            )
        return ambiguous, to_me, count, missing, bad_mode, unrecorded

    ambiguous, to_me, count, missing, bad_mode, unrecorded = run(body())
    url = consortium.addresses["broker"]
    assert ambiguous == (
        2,
        "",
        f"fedsilo: error: {url} shares 2 lists with you for psi (high-risk, misconfigured);"
        f" name one with --their-list\n",
    )
    code, out, err = to_me
    lines = out.splitlines()
    assert (code, err) == (0, "")
    assert lines[0] == (
        "PSI (to-me, protocol dh) with broker's list high-risk: 40 of your 101 distinct identifiers are on it (it holds 200)"
    )
    assert lines[1:] == plain[:40] and lines[1] == " c-0160 "  # as written in your file, in your order
    assert count == (
        0,
        "PSI (count, protocol dh) with broker's list high-risk: 40 of your 101 distinct identifiers are on it (it holds 200)\n",
        "",
    )
    assert missing[0] == 2 and missing[1] == "" and f"{tmp_path / 'nope.csv'} does not exist" in missing[2]
    assert bad_mode[0] == 2 and "invalid choice: 'all'" in bad_mode[2]
    own = consortium.addresses["bank-a"]
    assert unrecorded[:2] == (2, "") and unrecorded[2].startswith(
        f"fedsilo: error: your own daemon (bank-a at {own}) must record every PSI and query in its audit log, and "
        f"did not (cannot reach {own}/v1/psi-log"
    )
    assert unrecorded[2].endswith("): start it with `fedsilo peer start`\n")
    assert [e[1] for e in audit(consortium, "broker")].count("psi.answer") == 2  # the third PSI never reached it
    asker = audit(consortium, "bank-a")
    assert asker.count(("bank-a", "psi.run", "ok", "high-risk", "at broker: 101 identifiers sent, 40 learned")) == 2


def test_query_command_answers_labels_and_refuses_over_quota_and_outside_the_policy(consortium, tmp_path):
    more = tmp_path / "more.txt"
    more.write_text("C-0010\n\n  nobody-else  \n")
    bank_a, bank_c = identity(consortium, "bank-a"), identity(consortium, "bank-c")
    quota_before = psi_state(consortium)[1]

    async def body():
        async with running(consortium, ["bank-a", "broker", "bank-c"]):
            args = ("--list", "high-risk", "--at", "broker")
            labels = await fedsilo("query", "c-0003", "C-0004", "nobody", *args, "--identity", bank_a)
            from_file = await fedsilo("query", "--file", str(more), *args, "--identity", bank_a)
            over = await fedsilo("query", "C-0005", *args, "--identity", bank_a)
            outsider = await fedsilo("query", "C-0005", *args, "--identity", bank_c)
            nothing = await fedsilo("query", *args, "--identity", bank_a)
        return labels, from_file, over, outsider, nothing

    labels, from_file, over, outsider, nothing = run(body())
    url = consortium.addresses["broker"]
    assert labels == (0, "2 of 3 identifiers are on broker's list high-risk\nc-0003\tA\nC-0004\tB\nnobody\t-\n", "")
    assert from_file == (0, "1 of 2 identifiers are on broker's list high-risk\nC-0010\tB\nnobody-else\t-\n", "")
    code, out, err = over
    assert (code, out) == (2, "") and err.startswith(f"fedsilo: error: {url}/v1/lists/high-risk/query answered 429:")
    assert "has 0 of its 5 left" in err
    assert outsider == (
        2,
        "",
        f"fedsilo: error: {url}/v1/lists/high-risk/table answered 403: list 'high-risk' is "
        "not shared with bank-c for query here; ask its holder to add you to its policy\n",
    )
    assert nothing == (2, "", "fedsilo: error: give identifiers to look up: ID... or --file FILE\n")
    assert psi_state(consortium)[1] == quota_before + [("bank-a", 3, 1), ("bank-a", 2, 1), ("bank-a", 1, 0)]
    assert audit(consortium, "bank-c")[-1][:4] == ("bank-c", "query.run", "refused", "high-risk")


def test_an_oversized_psi_or_query_body_is_refused_with_413_and_changes_nothing(consortium):
    """The route limit (peer.max-body-bytes) holds for the binary PSI and query bodies too."""
    url = consortium.addresses["broker"]
    oversized = b"\0" * (LIMIT + 1)

    async def body():
        async with running(consortium, ["bank-a", "broker"]):
            before = psi_state(consortium), len(audit(consortium, "broker"))
            errors = []
            async with PeerClient(consortium.identity("bank-a")) as client:
                for path in ("psi", "psi/confirm", "query"):
                    with pytest.raises(PeerUnreachable) as refused:
                        await client.frames("POST", f"{url}/v1/lists/high-risk/{path}", oversized)
                    errors.append(str(refused.value))
                # what a user gets from the client when its list is too large for one request
                with pytest.raises(PeerUnreachable) as too_many:
                    await run_psi(
                        client,
                        "broker",
                        [f"Z-{i:06d}" for i in range(LIMIT // 32 + 1)],
                        list_name="high-risk",
                        protocol="dh",
                    )
            after = psi_state(consortium), audit(consortium, "broker")
        return before, errors, too_many.value, after

    (state_before, seen), errors, too_many, (state_after, entries) = run(body())
    message = (
        f"answered 413: the request body is larger than this peer's limit of {LIMIT} bytes; send fewer "
        "identifiers per request or ask the holder to raise peer.max-body-bytes"
    )
    for path, error in zip(("psi", "psi/confirm", "query"), errors):
        assert error == f"{url}/v1/lists/high-risk/{path} {message}"
    assert str(too_many) == f"{url}/v1/lists/high-risk/psi {message}"
    assert state_after == state_before  # no quota consumed, no epoch published, no result written
    new = entries[seen:]
    assert [(e[0], e[1], e[2]) for e in new] == [
        ("bank-a", f"POST /v1/lists/high-risk/{p}", "refused") for p in ("psi", "psi/confirm", "query", "psi")
    ]
    assert all(f"limit of {LIMIT} bytes" in e[4] for e in new)
    assert audit(consortium, "bank-a")[-1][:4] == ("bank-a", "psi.run", "refused", "high-risk")
