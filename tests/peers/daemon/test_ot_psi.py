"""OT-extension PSI (KKRT16) between two peer daemons over mutual TLS, and the protocol choice.

Real daemons in-process on 127.0.0.1 with real certificates: `broker` holds `high-risk`
(3,000 clients, both protocols, a PSI quota) and `dh-only` (the same file, `psi-protocols
= ["dh"]`); `bank-a` may run PSI against both. The OT run goes through the holder's
`POST /v1/lists/NAME/psi/ot` in a session; the tests check its answers against the
plaintext intersection and the DH protocol's, the audit logs and quota at both ends, the
refusal of a protocol a list does not offer, malformed and oversized frames (4xx, nothing
kept), and the bounds on sessions (number, idle expiry).
"""

import asyncio
import contextlib
import io
import time

import pytest

from fedsilo.cli import main
from fedsilo.errors import ConfigError
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.config import load_config
from fedsilo.peers.daemon.shared_lists import MAX_OT_ITEMS
from fedsilo.peers.errors import PeerUnreachable
from fedsilo.peers.risk_lists import AUTO_OT_FROM, run_psi
from fedsilo.privacy.psi import KkrtReceiver, Mode, canonical, cuckoo, otwire

from ._consortium import make_consortium, run, running
from .test_risk_lists import audit

HOLDER = [f"C-{i:05d}" for i in range(3000)]
# bank-a: 700 on the list (one written differently), 800 not, one repeated
BANK = [f"C-{i:05d}" for i in range(2300, 3000)] + [f"X-{i:05d}" for i in range(800)] + ["C-02300"]
BANK[0] = " c-02300 "
PSI_QUOTA = 100_000
LIST_TOML = f"""
[lists.high-risk]
path = "high-risk.csv"
id-column = "client"
kind = "client"
psi = ["bank-a", "bank-c"]
psi-quota = {PSI_QUOTA}

[lists.dh-only]
path = "high-risk.csv"
id-column = "client"
kind = "client"
psi = ["bank-a"]
psi-protocols = ["dh"]
"""
LIMIT = 1048576  # the daemon's default peer.max-body-bytes


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    consortium = make_consortium(tmp_path_factory.mktemp("otpsi"), peers=("bank-a", "broker", "bank-c"), rows=50)
    broker = consortium.root / "broker"
    (broker / "high-risk.csv").write_text("client\n" + "".join(f"{c}\n" for c in HOLDER))
    with open(consortium.config_path("broker"), "a") as handle:
        handle.write(LIST_TOML)
    return consortium


def plaintext(ids):
    holder = {canonical(h, "client") for h in HOLDER}
    return {canonical(x, "client") for x in ids} & holder


async def psi_left(client, url, name="high-risk"):
    listed = await client.call("GET", f"{url}/v1/lists")
    return next(e for e in listed["lists"] if e["name"] == name)["psi_left"]


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


def hello(items=None):
    """A receiver's HELLO body (as `fedsilo psi` sends it) and the receiver."""
    receiver = KkrtReceiver([f"Q-{i}" for i in range(len(BANK) if items is None else items)], kind="client")
    return receiver, otwire.pack(list(receiver.request_frames()))


def test_ot_psi_between_two_daemons_equals_the_plaintext_and_the_dh_answer(consortium):
    url = consortium.addresses["broker"]
    small = BANK[:10] + ["nobody"]

    async def body():
        async with running(consortium, ["bank-a", "broker"]) as services:
            async with PeerClient(consortium.identity("bank-a")) as client:
                before = await psi_left(client, url)
                ot = await run_psi(client, "broker", BANK, "to-me", "high-risk", protocol="ot")
                after_ot = await psi_left(client, url)
                dh = await run_psi(client, "broker", BANK, "to-me", "high-risk", protocol="dh")
                auto = await run_psi(client, "broker", BANK, "to-me", "high-risk")
                auto_small = await run_psi(client, "broker", small, "to-me", "high-risk")
                auto_count = await run_psi(client, "broker", BANK, "count", "high-risk")
                both = await run_psi(client, "broker", BANK, "both", "high-risk", protocol="ot")
                listed = await client.call("GET", f"{url}/v1/lists")
            sessions = services["broker"].list_serving.lists.open_sessions
        return before, ot, after_ot, dh, auto, auto_small, auto_count, both, listed, sessions

    before, ot, after_ot, dh, auto, auto_small, auto_count, both, listed, sessions = run(body())
    expected = plaintext(BANK)
    assert len(expected) == 700 and len(BANK) >= AUTO_OT_FROM
    assert (ot.protocol, dh.protocol, auto.protocol, auto_small.protocol, auto_count.protocol, both.protocol) == (
        "ot",
        "dh",
        "ot",
        "dh",
        "dh",
        "ot",
    )
    for outcome in (ot, dh, auto, both):
        assert (outcome.cardinality, outcome.own_size, outcome.peer_size) == (700, 1500, 3000)
        assert {canonical(x, "client") for x in outcome.shared} == expected
    assert ot.shared == dh.shared and ot.shared[0] == " c-02300 "  # as written, in the asker's order
    assert auto_small.cardinality == 10 and auto_count.cardinality == 700 and auto_count.shared is None
    # the holder learned the intersection too in both-sides mode, over OT
    results = sorted((consortium.root / "broker" / "state" / "psi" / "results").glob("*-high-risk-bank-a.csv"))
    assert len(results) == 1 and results[0].read_text().split()[1:] == HOLDER[2300:]
    # the PSI quota counts the identifiers an OT run compares, like a DH run
    assert before - after_ot == 1500
    entry = next(e for e in listed["lists"] if e["name"] == "high-risk")
    assert entry["psi_protocols"] == ["dh", "ot"] and entry["psi_left"] == PSI_QUOTA - 5 * 1500 - 11
    assert next(e for e in listed["lists"] if e["name"] == "dh-only")["psi_protocols"] == ["dh"]
    assert sessions == 0  # every finished run released its session
    # audited at both ends: who, which list, how many, which protocol; never which identifiers
    holder = [e for e in audit(consortium, "broker") if e[0] == "bank-a" and e[1].startswith("psi.")]
    assert [(e[1], e[4]) for e in holder if e[1] == "psi.answer"] == [
        ("psi.answer", "PSI mode to-me (protocol ot): 1500 identifiers asked"),
        ("psi.answer", "PSI mode to-me: 1500 identifiers asked"),
        ("psi.answer", "PSI mode to-me (protocol ot): 1500 identifiers asked"),
        ("psi.answer", "PSI mode to-me: 11 identifiers asked"),
        ("psi.answer", "PSI mode count: 1500 identifiers asked"),
        ("psi.answer", "PSI mode both (protocol ot): 1500 identifiers asked"),
    ]
    confirm = holder[-1]
    assert confirm[:4] == ("bank-a", "psi.confirm", "ok", "high-risk")
    assert confirm[4].startswith("PSI mode both (protocol ot): 700 identifiers shared, written to ")
    asker = audit(consortium, "bank-a")
    assert asker.count(("bank-a", "psi.run", "ok", "high-risk", "at broker: 1500 identifiers sent, 700 learned")) == 5
    for entry in holder + asker:
        for identifier in BANK + HOLDER:
            assert identifier.strip().lower() not in entry[4].lower()


def test_a_list_that_offers_only_dh_refuses_ot_by_name(consortium, tmp_path):
    url = consortium.addresses["broker"]
    listing = tmp_path / "clients.txt"
    listing.write_text("\n".join(BANK) + "\n")
    bank_a = str(consortium.identity_dir("bank-a"))
    common = ("psi", "--list", str(listing), "--with", "broker", "--identity", bank_a)

    async def body():
        async with running(consortium, ["bank-a", "broker"]):
            refused = await fedsilo(*common, "--their-list", "dh-only", "--protocol", "ot")
            auto = await fedsilo(*common, "--their-list", "dh-only")
            ot = await fedsilo(*common, "--their-list", "high-risk", "--protocol", "ot")
            count_ot = await fedsilo(*common, "--their-list", "high-risk", "--protocol", "ot", "--mode", "count")
            async with PeerClient(consortium.identity("bank-a")) as client:
                with pytest.raises(PeerUnreachable) as raw:  # the holder refuses a HELLO too, not only the client
                    await client.frames("POST", f"{url}/v1/lists/dh-only/psi/ot", hello()[1])
        return refused, auto, ot, count_ot, raw.value

    refused, auto, ot, count_ot, raw = run(body())
    assert refused == (
        2,
        "",
        f"fedsilo: error: {url}/v1/lists/dh-only/psi/ot answered 403: list 'dh-only' does not offer the PSI "
        "protocol 'ot' (it offers dh); run with --protocol auto or one it offers\n",
    )
    assert auto[0] == 0 and auto[1].splitlines()[0] == (
        "PSI (to-me, protocol dh) with broker's list dh-only: 700 of your 1500 distinct identifiers are on it "
        "(it holds 3000)"
    )
    assert ot[0] == 0 and ot[1].splitlines()[0] == (
        "PSI (to-me, protocol ot) with broker's list high-risk: 700 of your 1500 distinct identifiers are on it "
        "(it holds 3000)"
    )
    assert ot[1].splitlines()[1:] == [x.strip() for x in BANK[:700]]  # the file, read line by line
    assert count_ot == (
        2,
        "",
        "fedsilo: error: the PSI protocol 'ot' cannot give a count only: use --protocol dh or auto for count mode\n",
    )
    assert "403" in str(raw) and "does not offer the PSI protocol 'ot'" in str(raw)
    holder = audit(consortium, "broker")
    refusals = [e for e in holder if e[2] == "refused" and "dh-only/psi/ot" in e[1]]
    assert len(refusals) == 2 and all("does not offer the PSI protocol 'ot'" in e[4] for e in refusals)
    assert ("bank-a", "psi.run", "refused", "dh-only", "at broker: 1501 identifiers sent") in audit(
        consortium, "bank-a"
    )


def test_malformed_and_oversized_ot_frames_are_refused_and_change_nothing(consortium):
    url = consortium.addresses["broker"]
    endpoint = f"{url}/v1/lists/high-risk/psi/ot"

    async def body():
        async with running(consortium, ["bank-a", "broker"]) as services:
            lists = services["broker"].list_serving.lists
            errors = {}
            async with PeerClient(consortium.identity("bank-a")) as client:
                left = await psi_left(client, url)
                receiver, start = hello()
                too_many = KkrtReceiver([], kind="client").session  # any session id
                big = otwire.encode(
                    otwire.FrameType.HELLO,
                    Mode.TO_RECEIVER,
                    too_many,
                    0,
                    1,
                    bytes(32)
                    + bytes(16)
                    + (MAX_OT_ITEMS + 1).to_bytes(8, "big")
                    + cuckoo.bins_for(MAX_OT_ITEMS + 1).to_bytes(8, "big"),
                )
                cases = {
                    "cut length": b"\0\0",
                    "cut frame": otwire.pack([start[4:]])[:-5],
                    "huge length": (1 << 30).to_bytes(4, "big") + bytes(64),
                    "DH frame": otwire.pack([b"FPSI" + bytes(60)]),
                    "bad HELLO size": otwire.pack([start[4:-1]]),  # a HELLO one byte short
                    "too many items": otwire.pack([big]),
                    "oversized body": b"\0" * (LIMIT + 1),
                }
                for name, data in cases.items():
                    with pytest.raises(PeerUnreachable) as refused:
                        await client.frames("POST", endpoint, data)
                    errors[name] = str(refused.value)
                no_state = (lists.open_sessions, await psi_left(client, url))
                # a session that gets a malformed MATRIX frame is aborted and forgotten
                replies = otwire.unpack(await client.frames("POST", endpoint, start))
                matrix = receiver.handle(replies[0])
                opened = lists.open_sessions
                bad = bytearray(matrix[0])
                bad[24:28] = (7).to_bytes(4, "big")  # out of order
                with pytest.raises(PeerUnreachable) as out_of_order:
                    await client.frames("POST", endpoint, otwire.pack([bytes(bad)]))
                with pytest.raises(PeerUnreachable) as gone:
                    await client.frames("POST", endpoint, otwire.pack(matrix[:1]))
                after = (lists.open_sessions, await psi_left(client, url))
        return errors, left, no_state, opened, out_of_order.value, gone.value, after

    errors, left, no_state, opened, out_of_order, gone, after = run(body())
    for name in ("cut length", "cut frame", "huge length", "DH frame", "bad HELLO size"):
        assert " answered 400: " in errors[name], name
    assert "ends inside a frame length" in errors["cut length"]
    assert "ends inside a frame;" in errors["cut frame"]
    assert "announces a frame of 1073741824 bytes" in errors["huge length"]
    assert "it is a DH-PSI frame" in errors["DH frame"]
    assert f"answered 413: an OT-PSI run here compares at most {MAX_OT_ITEMS}" in errors["too many items"]
    assert "answered 413" in errors["oversized body"] and "max-body-bytes" in errors["oversized body"]
    assert no_state == (0, left)  # no session kept, no quota counted
    assert opened == 1 and " answered 400: " in str(out_of_order) and "out of order" in str(out_of_order)
    assert " answered 409: no OT-PSI session of yours" in str(gone)
    assert after == (0, left - len(BANK))  # the aborted run counted its HELLO only


def test_abandoned_sessions_are_bounded_and_expire(consortium):
    url = consortium.addresses["broker"]
    endpoint = f"{url}/v1/lists/high-risk/psi/ot"

    async def body():
        async with running(consortium, ["bank-a", "broker"]) as services:
            lists = services["broker"].list_serving.lists
            lists.max_sessions_per_member = 2
            async with PeerClient(consortium.identity("bank-a")) as client:
                receivers = []
                for _ in range(2):  # started, never finished
                    receiver, start = hello(10)
                    receivers.append((receiver, otwire.unpack(await client.frames("POST", endpoint, start))))
                with pytest.raises(PeerUnreachable) as full:
                    await client.frames("POST", endpoint, hello(10)[1])
                held = lists.open_sessions
                lists.session_seconds = 0.2
                await asyncio.sleep(0.3)
                expired = lists.open_sessions
                receiver, replies = receivers[0]
                with pytest.raises(PeerUnreachable) as late:
                    await client.frames("POST", endpoint, otwire.pack(receiver.handle(replies[0])))
                lists.session_seconds = 120.0
                fresh = await run_psi(client, "broker", BANK[:20], "to-me", "high-risk", protocol="ot")
        return full.value, held, expired, late.value, fresh

    started = time.monotonic()
    full, held, expired, late, fresh = run(body())
    assert time.monotonic() - started < 60
    assert " answered 503: 2 OT-PSI sessions are open here (2 of yours; at most 8, 2 per member)" in str(full)
    assert held == 2 and expired == 0
    assert " answered 409: no OT-PSI session of yours" in str(late)
    assert fresh.cardinality == 20 and fresh.protocol == "ot"


@pytest.mark.parametrize(
    "value, fragment",
    [
        ('["vole"]', "lists.dh-only.psi-protocols: 'vole' is unknown; valid choices are dh, ot"),
        ("[]", "lists.dh-only.psi-protocols must name each protocol at most once and at least one of dh, ot"),
        ('["ot", "ot"]', "lists.dh-only.psi-protocols must name each protocol at most once"),
        ('"dh"', "lists.dh-only.psi-protocols"),
    ],
)
def test_a_bad_psi_protocols_setting_is_refused_by_name(consortium, tmp_path, value, fragment):
    config = consortium.config_path("broker")
    bad = tmp_path / "peer.toml"
    bad.write_text(
        config.read_text()
        .replace('psi-protocols = ["dh"]', f"psi-protocols = {value}")
        .replace('"identity"', f'"{config.parent / "identity"}"')
        .replace('"data.csv"', f'"{config.parent / "data.csv"}"')
        .replace('"high-risk.csv"', f'"{config.parent / "high-risk.csv"}"')
    )
    with pytest.raises(ConfigError) as error:
        load_config(bad)
    assert fragment in str(error.value)
    assert load_config(config).lists["high-risk"].psi_protocols == ("dh", "ot")  # the default: both


def test_another_member_cannot_continue_or_end_a_session(consortium):
    """bank-c, also allowed PSI on the list, has bank-a's session id and MATRIX frames (say, a
    leaked log): it cannot feed the holder's session of bank-a, nor learn its MASKS, nor end it."""
    url = consortium.addresses["broker"]
    endpoint = f"{url}/v1/lists/high-risk/psi/ot"

    async def body():
        async with running(consortium, ["bank-a", "broker", "bank-c"]) as services:
            lists = services["broker"].list_serving.lists
            async with (
                PeerClient(consortium.identity("bank-a")) as bank_a,
                PeerClient(consortium.identity("bank-c")) as bank_c,
            ):
                receiver = KkrtReceiver(BANK, kind="client")
                replies = otwire.unpack(
                    await bank_a.frames("POST", endpoint, otwire.pack(list(receiver.request_frames())))
                )
                matrix = receiver.handle(replies[0])
                stolen = []
                for frame in matrix[:2]:
                    with pytest.raises(PeerUnreachable) as refused:
                        await bank_c.frames("POST", endpoint, otwire.pack([frame]))
                    stolen.append(str(refused.value))
                kept = lists.open_sessions
                masks = []
                for frame in matrix:  # bank-a's own run is unharmed
                    masks += otwire.unpack(await bank_a.frames("POST", endpoint, otwire.pack([frame])))
                for frame in masks:
                    receiver.handle(frame)
        return stolen, kept, receiver.result()

    stolen, kept, result = run(body())
    assert all(" answered 409: no OT-PSI session of yours on this list" in e for e in stolen)
    assert kept == 1
    assert result.cardinality == 700 and result.peer_size == 3000
