"""A gm consortium's daemons: a job with the owner's SM2 signature is accepted over mutual TLS; the
same job without it, or with an SM2 signature by another key, is refused with an audit entry and no
state change (the attacker: a member holding the owner's ECDSA-signed envelope). PSI, the anonymous
query and `fedsilo psi` run on the SM2 curve; OT-PSI and frames of the standard suite's Curve25519
groups are refused by name."""

import copy
from dataclasses import replace

import pytest

from fedsilo.errors import ConfigError
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.config import SharedList
from fedsilo.peers.daemon.shared_lists import SharedLists
from fedsilo.peers.errors import PeerUnreachable
from fedsilo.peers.identity.signing import sign_with_suite
from fedsilo.peers.risk_lists import choose_protocol, run_psi, run_query, shared_lists
from fedsilo.privacy.crypto_suite import get_suite
from fedsilo.privacy.psi import ListHolder, MemoryQuota, PsiReceiver, Querier, canonical
from fedsilo.privacy.psi.wire import decode, split

from ._consortium import make_consortium, run, running, signed
from .test_daemon_refusals import propose, refused_without_change
from .test_risk_list_cli import fedsilo


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("gm"), peers=("bank-a", "bank-b"), suite="gm")


def test_a_gm_signed_job_is_accepted(consortium, tmp_path):
    envelope = signed(consortium, consortium.job_toml(tmp_path / "job.toml", "gm-good-1"))
    assert "suite_signature" in envelope

    async def body():
        async with running(consortium, ["bank-b"]):
            return await propose(consortium, envelope)

    assert run(body())["decision"] == "accepted"


@pytest.mark.parametrize(
    "tamper, status, fragment",
    [
        (lambda e: e.pop("suite_signature"), "400", "carries no gm-suite signature"),
        (
            lambda e: e.__setitem__(
                "suite_signature", sign_with_suite("gm", get_suite("gm").generate_signing_key(), e["job"])
            ),
            "403",
            "its gm-suite signature does not verify",
        ),
    ],
)
def test_a_job_without_the_owners_sm2_signature_is_refused(consortium, tmp_path, tamper, status, fragment):
    envelope = copy.deepcopy(signed(consortium, consortium.job_toml(tmp_path / "job.toml", "gm-forged-1")))
    tamper(envelope)

    async def attempt():
        with pytest.raises(PeerUnreachable, match=status):
            await propose(consortium, envelope)

    refused_without_change(consortium, attempt, fragment)


# -- PSI and anonymous query on the SM2 curve -------------------------------------------------------

HOLDER = [f"C-{i:04d}" for i in range(60)]
GRADES = {c: "ABC"[i % 3] for i, c in enumerate(HOLDER)}
BANK = [f"C-{i:04d}" for i in range(40, 60)] + [f"X-{i:04d}" for i in range(20)] + [" c-0040 "]
GM_LIST_TOML = """
[lists.high-risk]
path = "high-risk.csv"
id-column = "client"
label-column = "grade"
kind = "client"
psi = ["bank-a"]
psi-modes = ["to-me", "both", "count"]
psi-protocols = ["dh", "ot"]
psi-quota = 100000
queriers = { bank-a = 10 }
"""


class _Capturing(PeerClient):
    """bank-a's client, keeping every frame body it sends and receives."""

    wire: list[bytes] = []

    async def frames(self, method, url, body=None):
        reply = await super().frames(method, url, body)
        self.wire += [body or b"", reply]
        return reply


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    consortium = make_consortium(tmp_path_factory.mktemp("gm-lists"), peers=("bank-a", "broker"), rows=50, suite="gm")
    broker = consortium.root / "broker"
    (broker / "high-risk.csv").write_text("client,grade\n" + "".join(f"{c},{GRADES[c]}\n" for c in HOLDER))
    with open(consortium.config_path("broker"), "a") as handle:
        handle.write(GM_LIST_TOML)
    return consortium


def test_psi_query_and_the_psi_command_run_on_the_sm2_curve_in_a_gm_consortium(lists, tmp_path):
    listing = tmp_path / "clients.csv"
    listing.write_text("client\n" + "".join(f'"{c}"\n' for c in BANK))
    plain = {canonical(c, "client") for c in BANK} & {canonical(c, "client") for c in HOLDER}

    async def body():
        async with running(lists, ["bank-a", "broker"]):
            async with _Capturing(lists.identity("bank-a")) as client:
                offered = await shared_lists(client, lists.addresses["broker"])
                to_me = await run_psi(client, "broker", BANK, "to-me", "high-risk")
                both = await run_psi(client, "broker", BANK, "both", "high-risk")
                count = await run_psi(client, "broker", BANK, "count", "high-risk")
                labels = await run_query(client, "broker", "high-risk", ["c-0003", "C-0004", "nobody"])
            command = await fedsilo(
                "psi", "--list", str(listing), "--id-column", "client", "--with", "broker",
                "--their-list", "high-risk", "--identity", str(lists.identity_dir("bank-a")),
            )  # fmt: skip
        return offered, to_me, both, count, labels, command

    offered, to_me, both, count, labels, command = run(body())
    assert offered[0]["psi_protocols"] == ["dh"]  # the list offers ot too, but not in a gm consortium
    assert to_me.protocol == both.protocol == "dh"
    assert {canonical(c, "client") for c in to_me.shared} == plain and to_me.cardinality == 20
    assert both.cardinality == count.cardinality == 20 and count.shared is None
    assert labels == {"c-0003": "A", "C-0004": "B", "nobody": None}
    code, out, err = command
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == (
        "PSI (to-me, protocol dh) with broker's list high-risk: 20 of your 40 distinct identifiers are on it (it holds 60)"
    )
    # every PSI and query frame that crossed is an SM2 frame (version 3, group 1, 33-byte points); the table is gm's
    frames = [frame for body in _Capturing.wire if body[:4] == b"FPSI" for frame in split(body)]
    assert len(frames) > 10 and all(frame[4] == 3 and frame[7] == 1 for frame in frames)
    assert all(decode(frame, group=1).elements.shape[1] == 33 for frame in frames)
    tables = [body for body in _Capturing.wire if body[:4] == b"FPQT"]
    assert tables and all(table[4] == 2 for table in tables)  # table format 2: SM2, SM3-KDF, SM4-GCM


def test_ot_psi_and_frames_of_the_standard_group_are_refused_by_name_in_a_gm_consortium(lists):
    url = lists.addresses["broker"]
    standard_psi = b"".join(PsiReceiver(["C-0001"], kind="client").request_frames())
    standard_query = Querier(ListHolder("high-risk", MemoryQuota(1)).publish([("C-0001", "A")])).ask(["C-0001"])

    async def body():
        async with running(lists, ["bank-a", "broker"]):
            async with PeerClient(lists.identity("bank-a")) as client:
                with pytest.raises(ConfigError, match="not available in a gm-suite consortium: its base OTs run on"):
                    await run_psi(client, "broker", BANK, "to-me", "high-risk", protocol="ot")
                errors = []
                for path, payload in (("psi/ot", b"x"), ("psi", standard_psi), ("query", standard_query.request)):
                    with pytest.raises(PeerUnreachable) as refused:
                        await client.frames("POST", f"{url}/v1/lists/high-risk/{path}", payload)
                    errors.append(str(refused.value))
        return errors

    ot, psi, query = run(body())
    assert "403" in ot and "not available in a gm-suite consortium" in ot and "ristretto255" in ot
    for error in (psi, query):
        assert "400" in error and "Curve25519 (standard suite)" in error and "SM2 curve (gm suite)" in error
        assert "disagree on the consortium's crypto suite" in error
    assert choose_protocol("auto", "to-me", ["dh", "ot"], 100_000, "gm") == "dh"
    assert choose_protocol("auto", "to-me", ["dh", "ot"], 100_000) == "ot"


def test_a_gm_daemon_refuses_a_list_that_offers_only_ot_and_serves_one_with_dh(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("client\nC-1\n")
    only_ot = SharedList("watch", path, "client", psi=("bank-a",), psi_protocols=("ot",))
    with pytest.raises(ConfigError, match=r"lists.watch.psi-protocols offers only 'ot', .*gm-suite .*add 'dh'"):
        SharedLists({"watch": only_ot}, tmp_path / "psi", suite="gm")
    SharedLists({"watch": only_ot}, tmp_path / "psi").close()  # the standard suite runs it
    both = SharedLists({"watch": replace(only_ot, psi_protocols=("dh", "ot"))}, tmp_path / "psi", suite="gm")
    assert both.shared_with("bank-a")[0]["psi_protocols"] == ["dh"]
    both.close()


def _forged_removal(consortium, suite_signature) -> bytes:
    """The next manifest version without bank-a, ECDSA-signed with the CA's ca.key: an attacker holding that
    key alone (not the CA's SM2 ca-signing.key) puts `suite_signature` beside it (None: strips it)."""
    import json

    from fedsilo.peers.identity.pki import load_private_key
    from fedsilo.peers.identity.signing import sign_document

    ca_dir = consortium.root / "consortium"
    body = json.loads((ca_dir / "manifest.json").read_text())["manifest"]
    body["members"] = [m for m in body["members"] if m["name"] != "bank-a"]
    body["version"] += 1
    document = {"manifest": body, "signature": sign_document(load_private_key(ca_dir / "ca.key"), body)}
    if suite_signature is not None:
        document["suite_signature"] = suite_signature(body)
    return json.dumps(document).encode()


def test_a_manifest_without_the_cas_sm2_signature_changes_nothing_in_a_running_gm_daemon(tmp_path):
    """The attacker holds the CA's ECDSA key only: its manifest versions (the SM2 signature stripped, or by
    another SM2 key) removing bank-a are ignored by a running daemon and stop a starting one; the CA's
    genuine removal (both signatures) takes effect."""
    from fedsilo.cli import main
    from fedsilo.peers.errors import SignatureError

    consortium = make_consortium(tmp_path / "c", peers=("bank-a", "bank-b"), rows=60, suite="gm")
    manifest = consortium.identity_dir("bank-b") / "manifest.json"
    another_key = get_suite("gm").generate_signing_key()
    forgeries = [
        _forged_removal(consortium, None),
        _forged_removal(consortium, lambda body: sign_with_suite("gm", another_key, body)),
    ]

    async def status_as(name):
        from ._consortium import member_client

        async with member_client(consortium, name) as client:
            return await client.call("GET", f"{consortium.addresses['bank-b']}/v1/status")

    async def body():
        seen = []
        async with running(consortium, ["bank-b"]):
            seen.append(await status_as("bank-a"))
            for forged in forgeries:
                manifest.write_bytes(forged)
                seen.append(await status_as("bank-a"))  # still a member: the forged version is ignored
            ca_dir = consortium.root / "consortium"
            assert main(["consortium", "remove", "bank-a", "--dir", str(ca_dir)]) == 0
            manifest.write_bytes((ca_dir / "manifest.json").read_bytes())
            with pytest.raises(PeerUnreachable) as removed:
                await status_as("bank-a")
        return seen, removed.value

    seen, removed = run(body())
    assert [s["manifest_version"] for s in seen] == [4, 4, 4] and all(s["you"] == "bank-a" for s in seen)
    assert "403" in str(removed)

    async def start_on(forged):
        manifest.write_bytes(forged)
        async with running(consortium, ["bank-b"]):
            pass

    for forged, refusal in zip(forgeries, ("has none", "its gm-suite signature does not verify"), strict=True):
        with pytest.raises(SignatureError, match=refusal):
            run(start_on(forged))
