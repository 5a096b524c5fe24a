"""PSI and anonymous query between two peer daemons over mutual TLS (issue 6, item 3).

Real daemons in-process on 127.0.0.1 with real certificates: `broker` holds a list
(`high-risk`, with a grade label), `bank-a` may run PSI against it and query it under
a quota of 5 identifiers, `bank-c` may do neither. Every body bank-a's client sends
is captured and searched for identifier bytes.
"""

import hashlib
import sqlite3
import time

import pytest

from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.config import SharedList, load_config
from fedsilo.peers.daemon.shared_lists import SharedLists
from fedsilo.peers.errors import PeerUnreachable, Refused
from fedsilo.peers.risk_lists import run_psi, run_query
from fedsilo.privacy.psi import Querier, canonical
from fedsilo.privacy.psi.identifiers import digests

from ._consortium import make_consortium, run, running

HOLDER_LIST = [f"C-{i:04d}" for i in range(200)]
GRADES = {identifier: "ABC"[i % 3] for i, identifier in enumerate(HOLDER_LIST)}
# bank-a's clients: 40 on the broker's list (two written differently), 60 not, one repeated, one non-ASCII
BANK = [f"C-{i:04d}" for i in range(160, 200)] + [f"X-{i:04d}-outside" for i in range(60)] + ["C-0160", "Zürich Ågency"]
BANK[0], BANK[1] = " c-0160 ", "c-0161"
LIST_TOML = """
[lists.high-risk]
path = "high-risk.csv"
id-column = "client"
label-column = "grade"
kind = "client"
psi = ["bank-a"]
psi-quota = 100000
queriers = { bank-a = 5 }

[lists.misconfigured]
path = "high-risk.csv"
id-column = "lei"
psi = ["bank-a"]
"""


class Capturing(PeerClient):
    """bank-a's client, keeping every request body it sends."""

    sent: list[bytes] = []

    async def frames(self, method, url, body=None):
        self.sent.append(body or b"")
        return await super().frames(method, url, body)

    async def call(self, method, url, body=None):
        self.sent.append(repr(body).encode())
        return await super().call(method, url, body)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    consortium = make_consortium(tmp_path_factory.mktemp("lists"), peers=("bank-a", "broker", "bank-c"), rows=50)
    broker = consortium.root / "broker"
    (broker / "high-risk.csv").write_text("client,grade\n" + "".join(f"{c},{GRADES[c]}\n" for c in HOLDER_LIST))
    with open(consortium.config_path("broker"), "a") as handle:
        handle.write(LIST_TOML)
    return consortium


def audit(consortium, name):
    with sqlite3.connect(consortium.root / name / "state" / "state.sqlite") as conn:
        return conn.execute(
            "SELECT actor, action, outcome, source, detail FROM audit WHERE action NOT LIKE 'budget%' ORDER BY seq"
        ).fetchall()


def test_psi_and_query_between_two_peers(consortium):
    plain = {canonical(x, "client") for x in BANK} & {canonical(y, "client") for y in HOLDER_LIST}
    broker_url = consortium.addresses["broker"]

    async def body():
        async with running(consortium, ["bank-a", "broker"]):
            async with Capturing(consortium.identity("bank-a")) as client:
                to_me = await run_psi(client, "broker", BANK, "to-me", "high-risk")
                count = await run_psi(client, broker_url, BANK, "count", "high-risk")
                both = await run_psi(client, "broker", BANK, "both", "high-risk")
                labels = await run_query(client, "broker", "high-risk", ["c-0003", "C-0004", "nobody"])
                with pytest.raises(PeerUnreachable) as over:
                    await run_query(client, "broker", "high-risk", ["C-0005", "C-0006", "C-0007"])
                table = await client.frames("GET", f"{broker_url}/v1/lists/high-risk/table")
                with pytest.raises(
                    ConfigError,
                    match=r"shares 2 lists with you for psi \(high-risk, "
                    r"misconfigured\); name one with --their-list",
                ):
                    await run_psi(client, "broker", BANK)
        return to_me, count, both, labels, over.value, table

    to_me, count, both, labels, over, table = run(body())
    # correct answers, against the plaintext intersection of canonical forms
    assert to_me.cardinality == len(plain) == 40 and to_me.own_size == 101 and to_me.peer_size == 200
    assert {canonical(x, "client") for x in to_me.shared} == plain and to_me.shared[:2] == [" c-0160 ", "c-0161"]
    assert count.cardinality == 40 and count.shared is None
    assert both.cardinality == 40
    result_files = list((consortium.root / "broker" / "state" / "psi" / "results").glob("*-high-risk-bank-a.csv"))
    assert len(result_files) == 1
    assert result_files[0].read_text().split()[1:] == HOLDER_LIST[160:]  # the holder learned them too (both)
    assert labels == {"c-0003": "A", "C-0004": "B", "nobody": None}
    # the quota: 3 used, 3 more asked of 5 -> refused, nothing consumed, persisted in the state dir
    assert "429" in str(over) and "has 2 of its 5 left" in str(over)
    quota = consortium.root / "broker" / "state" / "psi" / "high-risk.quota.sqlite"
    with sqlite3.connect(quota) as conn:
        assert conn.execute("SELECT querier, count, granted FROM query_requests ORDER BY rowid").fetchall() == [
            ("bank-a", 3, 1),
            ("bank-a", 3, 0),
        ]
    # no identifier, canonical form or hash of one in anything bank-a's client sent
    sent = b"".join(Capturing.sent)
    assert len(Capturing.sent) > 10
    for identifier in BANK + ["c-0003", "C-0004", "nobody", "C-0005"]:
        form = canonical(identifier, "client")
        for needle in (
            identifier.strip().encode(),
            form,
            hashlib.sha256(form).digest(),
            hashlib.sha512(form).digest(),
            digests([identifier], "client")[0].tobytes(),
        ):
            assert needle not in sent, identifier
    # audited at both peers: who, which list, how many; never which
    holder = audit(consortium, "broker")
    asker = audit(consortium, "bank-a")
    assert [a for a in holder if a[1] == "psi.answer"] == [
        ("bank-a", "psi.answer", "ok", "high-risk", f"PSI mode {m}: 101 identifiers asked")
        for m in ("to-me", "count", "both")
    ]
    assert ("bank-a", "psi.confirm", "ok", "high-risk") == holder[3][:4] and "40 identifiers shared" in holder[3][4]
    assert (
        "bank-a",
        "query.answer",
        "ok",
        "high-risk",
        "query: 3 identifiers answered at epoch 1; 2 left in the window",
    ) in holder
    assert any(a[0] == "bank-a" and a[2] == "refused" and "has 2 of its 5 left" in a[4] for a in holder)
    assert ("bank-a", "psi.run", "ok", "high-risk", "at broker: 101 identifiers sent, 40 learned") in asker
    assert ("bank-a", "query.run", "ok", "high-risk", "at broker: 3 identifiers sent, 2 learned") in asker
    assert ("bank-a", "query.run", "refused", "high-risk", "at broker: 3 identifiers sent") in asker  # quota
    for entry in holder + asker:
        for identifier in BANK + HOLDER_LIST:
            assert identifier.strip().lower() not in entry[4].lower()
    assert Querier(table, kind="client").table.size == 200


def test_a_restart_rotates_the_key_epoch_and_keeps_the_quota(consortium):
    broker_url = consortium.addresses["broker"]

    async def body():
        async with running(consortium, ["broker"]):
            async with PeerClient(consortium.identity("bank-a")) as client:
                old = Querier(await client.frames("GET", f"{broker_url}/v1/lists/high-risk/table"), kind="client")
        async with running(consortium, ["broker"]):
            async with PeerClient(consortium.identity("bank-a")) as client:
                with pytest.raises(PeerUnreachable) as stale:
                    await client.frames("POST", f"{broker_url}/v1/lists/high-risk/query", old.ask(["C-0001"]).request)
                listed = await client.call("GET", f"{broker_url}/v1/lists")
        return old, stale.value, listed

    old, stale, listed = run(body())
    assert "409" in str(
        stale
    ) and f"for key epoch {old.table.epoch} but the list is served at epoch {old.table.epoch + 1}" in str(stale)
    assert listed["lists"][0]["query_left"] == listed["lists"][0]["query_quota"] - sum(
        r[0]
        for r in sqlite3.connect(consortium.root / "broker" / "state" / "psi" / "high-risk.quota.sqlite").execute(
            "SELECT count FROM query_requests WHERE granted = 1"
        )
    )


def test_unauthorized_peer_and_unknown_list_are_refused_alike(consortium):
    broker_url = consortium.addresses["broker"]

    async def body():
        async with running(consortium, ["broker", "bank-c"]):
            async with PeerClient(consortium.identity("bank-c")) as client:
                listed = await client.call("GET", f"{broker_url}/v1/lists")
                errors = []
                for path in ("high-risk/psi", "no-such-list/psi", "high-risk/query", "no-such-list/query"):
                    with pytest.raises(PeerUnreachable) as refused:
                        await client.frames("POST", f"{broker_url}/v1/lists/{path}", b"\0" * 64)
                    errors.append(str(refused.value).split(": ", 1)[1])
                with pytest.raises(PeerUnreachable) as table:
                    await client.frames("GET", f"{broker_url}/v1/lists/high-risk/table")
                with pytest.raises(ConfigError):
                    await run_psi(client, "broker", ["C-0001"])
                with pytest.raises(PeerUnreachable) as foreign_log:
                    await client.call("POST", f"{broker_url}/v1/psi-log", {"action": "psi.run"})
        return listed, errors, table.value, foreign_log.value

    before = len(audit(consortium, "broker"))
    listed, errors, table, foreign_log = run(body())
    assert listed["lists"] == []
    assert errors[0].replace("high-risk", "X") == errors[1].replace("no-such-list", "X")
    assert errors[2].replace("high-risk", "X") == errors[3].replace("no-such-list", "X")
    assert "403" in str(table) and "is not shared with bank-c" in str(table)
    assert "403" in str(foreign_log)
    new = audit(consortium, "broker")[before:]
    assert [e[2] for e in new if e[0] == "bank-c"] == ["refused"] * 6


@pytest.mark.parametrize(
    "edit, fragment",
    [
        ("queriers = { bank-a = 5 }", "lists.high-risk.queriers.bank-a must be a positive number"),
        ('psi = ["bank-a"]', 'psi-modes = ["all"]'),
        ('kind = "client"', "identifier kind 'Client Id'"),
        ('label-column = "grade"', "unknown key 'label' in [lists.high-risk]"),
        ('path = "high-risk.csv"', "lists.high-risk.path"),
        ('id-column = "client"', "lists.high-risk.epoch-hours must be > 0 (got 0.0)"),
    ],
)
def test_a_bad_list_policy_is_refused_by_name(consortium, tmp_path, edit, fragment):
    replacements = {
        "queriers = { bank-a = 5 }": "queriers = { bank-a = 0 }",
        'psi = ["bank-a"]': 'psi = ["bank-a"]\npsi-modes = ["all"]',
        'kind = "client"': 'kind = "Client Id"',
        'label-column = "grade"': 'label = "grade"',
        'path = "high-risk.csv"': 'path = "missing.csv"',
        'id-column = "client"': 'id-column = "client"\nepoch-hours = 0',
    }
    config = consortium.config_path("broker")
    bad = tmp_path / "peer.toml"
    bad.write_text(
        config.read_text()
        .replace(edit, replacements[edit])
        .replace('"identity"', f'"{config.parent / "identity"}"')
        .replace('"data.csv"', f'"{config.parent / "data.csv"}"')
        .replace('"high-risk.csv"', f'"{config.parent / "high-risk.csv"}"')
    )
    with pytest.raises(FedsiloError) as error:
        load_config(bad)
    expected = (
        "'all' is unknown; valid choices are to-me, both, count" if fragment.startswith("psi-modes") else fragment
    )
    assert expected in str(error.value)


def test_query_and_psi_rights_without_a_psi_quota_are_refused(consortium, tmp_path):
    """bank-a may query 5 identifiers per window; unlimited PSI on the same list would tell it the
    membership of any number of guesses at once, so the holder's daemon does not start with that policy."""
    config = consortium.config_path("broker")
    bad = tmp_path / "peer.toml"
    bad.write_text(
        config.read_text()
        .replace("psi-quota = 100000\n", "")
        .replace('"identity"', f'"{config.parent / "identity"}"')
        .replace('"data.csv"', f'"{config.parent / "data.csv"}"')
        .replace('"high-risk.csv"', f'"{config.parent / "high-risk.csv"}"')
    )
    with pytest.raises(ConfigError) as error:
        load_config(bad)
    assert str(error.value).startswith(
        "lists.high-risk lets bank-a both query it (a quota of identifiers per "
        "window) and run PSI against it without a psi-quota"
    )
    assert "Set lists.high-risk.psi-quota, or take them out of psi or queriers" in str(error.value)
    bad.write_text(bad.read_text().replace('psi = ["bank-a"]\nqueriers', 'psi = ["bank-c"]\nqueriers'))
    assert load_config(bad).lists["high-risk"].psi_quota is None  # PSI and query by different members: allowed


def test_a_problem_with_the_holders_file_stays_in_the_holders_log(consortium):
    async def body():
        async with running(consortium, ["bank-a", "broker"]):
            async with PeerClient(consortium.identity("bank-a")) as client:
                with pytest.raises(PeerUnreachable) as failed:
                    await run_psi(client, "broker", ["C-0001"], list_name="misconfigured")
        return failed.value

    failed = run(body())
    assert "503" in str(failed) and "cannot serve list 'misconfigured'" in str(failed)
    assert "lei" not in str(failed) and "client" not in str(failed)  # nothing about the holder's file
    entry = audit(consortium, "broker")[-1]
    assert entry[:4] == ("bank-a", "psi.answer", "failed", "misconfigured") and "no column 'lei'" in entry[4]
    assert audit(consortium, "bank-a")[-1][1:4] == ("psi.run", "refused", "misconfigured")


def test_a_changed_list_or_an_old_epoch_starts_a_new_key_epoch(tmp_path):

    path = tmp_path / "list.csv"
    path.write_text("client,grade\nC-1,A\nC-2,B\n")
    shared = SharedList(
        "high-risk", path, "client", "grade", kind="client", queriers=(("bank-a", 10),), epoch_seconds=3600.0
    )
    lists = SharedLists({"high-risk": shared}, tmp_path / "psi")
    try:
        first = Querier(lists.table("bank-a", "high-risk").body, kind="client")
        assert Querier(lists.table("bank-a", "high-risk").body, kind="client").table.epoch == first.table.epoch == 1
        path.write_text("client,grade\nC-1,A\nC-2,B\nC-3,C\n")  # the holder's list changed: a new epoch
        second = Querier(lists.table("bank-a", "high-risk").body, kind="client")
        assert second.table.epoch == 2 and second.table.size == 3
        with pytest.raises(Refused, match="for key epoch 1 but the list is served at epoch 2") as stale:
            lists.query("bank-a", "high-risk", first.ask(["C-1"]).request)
        assert stale.value.status == 409
        aged = SharedLists(
            {
                "high-risk": SharedList(
                    "high-risk", path, "client", "grade", kind="client", queriers=(("bank-a", 10),), epoch_seconds=0.05
                )
            },
            tmp_path / "psi",
        )
        try:
            third = Querier(aged.table("bank-a", "high-risk").body, kind="client").table.epoch
            time.sleep(0.1)  # older than its epoch-hours: the next table is a new epoch
            assert Querier(aged.table("bank-a", "high-risk").body, kind="client").table.epoch == third + 1 == 4
        finally:
            aged.close()
        assert int((tmp_path / "psi" / "high-risk.epoch").read_text()) == 4  # persisted for the next start
    finally:
        lists.close()


def test_the_psi_quota_bounds_how_many_identifiers_a_member_compares(tmp_path):
    from fedsilo.privacy.psi import Mode, PsiReceiver

    path = tmp_path / "list.csv"
    path.write_text("client\n" + "".join(f"C-{i}\n" for i in range(20)))
    shared = SharedList("high-risk", path, "client", kind="client", psi=("bank-a",), psi_quota=15)

    def request(identifiers):
        receiver = PsiReceiver(identifiers, kind="client", mode=Mode.TO_RECEIVER)
        return receiver, b"".join(receiver.request_frames())

    lists = SharedLists({"high-risk": shared}, tmp_path / "psi")
    try:
        receiver, body = request([f"C-{i}" for i in range(10)])
        served = lists.psi("bank-a", "high-risk", body)
        assert "10 identifiers asked" in served.detail
        assert lists.shared_with("bank-a")[0]["psi_left"] == 5
        _, body = request([f"C-{i}" for i in range(10, 16)])  # 6 more: over the 15 of the window
        with pytest.raises(Refused, match="asked for 6 identifiers but has 5 of its 15 left") as refused:
            lists.psi("bank-a", "high-risk", body)
        assert refused.value.status == 429
    finally:
        lists.close()
    reopened = SharedLists({"high-risk": shared}, tmp_path / "psi")  # a restart keeps what was used
    try:
        assert reopened.shared_with("bank-a")[0]["psi_left"] == 5
    finally:
        reopened.close()
