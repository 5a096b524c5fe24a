"""End-to-end sealing of member-to-member payloads under the gm suite, from the attacker's side.

The attackers: a TLS-terminating relay in front of bank-b that holds bank-b's TLS key and bank-a's
client TLS key (so it reads the whole HTTP stream of both directions), but neither member's SM2
key; and a member or relay that replays, re-addresses or forwards a sealed frame, or sends one
sealed under the standard suite. Real daemons, real mutual TLS, real bytes on the wire.
"""

import asyncio
import contextlib
import json
import os
import ssl

import aiohttp
import numpy as np
import pytest
from safetensors.numpy import save_file

from fedsilo.peers.daemon.app import start_daemon
from fedsilo.peers.daemon.client import PeerClient
from fedsilo.peers.daemon.config import load_config
from fedsilo.peers.daemon.model_pull import pull_model
from fedsilo.peers.daemon.sealing import HELLO_ROUTE, SEALED, ClientSealer
from fedsilo.peers.daemon.store import PeerStore
from fedsilo.peers.identity.tls import client_context, server_context
from fedsilo.peers.risk_lists import run_psi, run_query
from fedsilo.privacy.crypto_suite import get_suite
from fedsilo.privacy.payload_seal import Session

from ._consortium import OWNER, free_port, make_consortium, member_client, run, signed

WEIGHTS = np.linspace(-3.0, 3.0, 64, dtype=np.float32).reshape(1, 64)  # a recognisable byte pattern


@pytest.fixture(scope="module")
def gm(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("sealed"), peers=("bank-a", "bank-b", "bank-c"), suite="gm")


@contextlib.asynccontextmanager
async def daemons(consortium, names, ports=None):
    runners, services = [], {}
    try:
        for name in names:
            port = (ports or {}).get(name)
            runner, services[name], _ = await start_daemon(load_config(consortium.config_path(name)), port=port)
            runners.append(runner)
        yield services
    finally:
        for runner in runners:
            await runner.cleanup()


async def pipe(reader, writer, record):
    """Forward `reader` to `writer` until EOF, appending every byte to `record`."""
    try:
        while data := await reader.read(1 << 16):
            record += data
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


class Relay:
    """A TLS-terminating relay: accepts as bank-b (its TLS key), connects on to bank-b's daemon with the
    caller's client TLS key, and records every byte of HTTP it forwards, both ways."""

    def __init__(self, consortium, front_port, back_port, client_name):
        b, a = consortium.identity("bank-b"), consortium.identity(client_name)
        self.front = server_context(b.ca_path, b.cert_path, b.key_path)
        self.back = client_context(a.ca_path, a.cert_path, a.key_path)
        self.front_port, self.back_port = front_port, back_port
        self.upstream, self.downstream = bytearray(), bytearray()

    async def _serve(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.back_port, ssl=self.back, server_hostname="127.0.0.1"
        )
        await asyncio.gather(pipe(reader, up_writer, self.upstream), pipe(up_reader, writer, self.downstream))

    @contextlib.asynccontextmanager
    async def running(self):
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.front_port, ssl=self.front)
        try:
            yield self
        finally:
            server.close()


def _hosted_model(consortium, tmp_path, job_id):
    """A finished job hosted by bank-b, with its model published there."""
    envelope = signed(consortium, consortium.job_toml(tmp_path / f"{job_id}.toml", job_id, host="bank-b"))
    store = PeerStore(consortium.root / "bank-b" / "state", "gm")
    with store.transaction():
        store.insert_job(job_id, OWNER, "bank-b", True, "credit-card", "finished", envelope, envelope["job"]["nonce"])
    store.close()
    save_file({"head.weight": WEIGHTS}, str(tmp_path / "model.safetensors"))
    (tmp_path / "encoder.json").write_text('{"label": "Y", "secret-column": "annual-income"}')
    return {"model.safetensors": tmp_path / "model.safetensors", "encoder.json": tmp_path / "encoder.json"}


def test_a_terminating_relay_sees_only_sm4_ciphertext(gm, tmp_path):
    """bank-b's published address is the relay's; its daemon listens behind it. A job proposal from
    bank-a and a model pull by the owner go through: the relay's plaintext holds no payload byte."""
    files = _hosted_model(gm, tmp_path, "sealed-pull-1")
    relay_port, daemon_port = int(gm.addresses["bank-b"].rsplit(":", 1)[1]), free_port()
    envelope = signed(gm, gm.job_toml(tmp_path / "job.toml", "sealed-job-1", host="bank-a"))

    async def body():
        async with daemons(gm, ["bank-b"], {"bank-b": daemon_port}) as services:
            relay = Relay(gm, relay_port, daemon_port, "bank-a")
            async with relay.running():
                async with member_client(gm, "bank-a") as client:
                    reply = await client.call("POST", f"{gm.addresses['bank-b']}/v1/proposals", envelope)
                proposal_up, proposal_down = bytes(relay.upstream), bytes(relay.downstream)
            owner_relay = Relay(gm, relay_port, daemon_port, OWNER)
            await services["bank-b"].hosting.publish_model("sealed-pull-1", files, {"metrics": {}})
            async with owner_relay.running():
                async with member_client(gm, OWNER) as owner:
                    card = await pull_model(owner, gm.addresses["bank-b"], "sealed-pull-1", tmp_path / "pulled")
            return reply, proposal_up, proposal_down, card, bytes(owner_relay.upstream), bytes(owner_relay.downstream)

    reply, up, down, card, pull_up, pull_down = run(body())
    assert reply["decision"] == "accepted" and card["job_id"] == "sealed-pull-1"
    # the relay saw real HTTP (it is the TLS plaintext), every body sealed
    assert b"POST /v1/proposals HTTP/1.1" in up and b"POST " + HELLO_ROUTE.encode() in up
    assert up.count(b"Content-Type: " + SEALED.encode()) >= 1 and down.count(b"Content-Type: " + SEALED.encode()) >= 1
    for secret in (b"suite_signature", b"risk-dept", b"credit-card", json.dumps(envelope["signature"]).encode()):
        assert secret not in up, secret
    assert b"accepted" not in down
    # the model files, card included, never crossed in the clear
    for secret in (WEIGHTS.tobytes()[:32], b"annual-income", b"model.safetensors", b'"artifacts"'):
        assert secret not in pull_down, secret
    assert b"GET /v1/models/sealed-pull-1/files/model.safetensors" in pull_up  # the route stays visible
    assert (tmp_path / "pulled" / "model.safetensors").read_bytes() == files["model.safetensors"].read_bytes()


async def _raw(consortium, name, method, url, data, content_type=SEALED):
    identity = consortium.identity(name)
    context = client_context(identity.ca_path, identity.cert_path, identity.key_path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        async with http.request(method, url, data=data, headers={"Content-Type": content_type}) as reply:
            return reply.status, await reply.read(), reply.content_type


def _error(raw: bytes) -> str:
    return json.loads(raw)["error"]


def test_replayed_readdressed_forwarded_and_unsealed_frames_are_refused_by_name(gm):
    a = gm.identity("bank-a")
    base_b, base_c = gm.addresses["bank-b"], gm.addresses["bank-c"]

    async def body():
        async with daemons(gm, ["bank-b", "bank-c"]):
            sealer = ClientSealer(a)
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=client_context(a.ca_path, a.cert_path, a.key_path))
            ) as http:
                session = await sealer._session(http, "bank-b", base_b)  # pylint: disable=protected-access
            out = {}
            frame, _ = session.seal_request("GET", "/v1/jobs", b"")
            out["first"] = await _raw(gm, "bank-a", "GET", f"{base_b}/v1/jobs", frame)
            out["replayed"] = await _raw(gm, "bank-a", "GET", f"{base_b}/v1/jobs", frame)
            frame, _ = session.seal_request("GET", "/v1/jobs", b"")
            out["other route"] = await _raw(gm, "bank-a", "GET", f"{base_b}/v1/budget", frame)
            out["other peer"] = await _raw(gm, "bank-a", "GET", f"{base_c}/v1/jobs", frame)
            out["forwarded by bank-c"] = await _raw(gm, "bank-c", "GET", f"{base_b}/v1/jobs", frame)
            out["unsealed"] = await _raw(gm, "bank-a", "GET", f"{base_b}/v1/jobs", b"", "application/json")
            standard = get_suite("standard")
            forged = Session(standard, session.session_id, "bank-a", "bank-b", os.urandom(32), os.urandom(32))
            frame, _ = forged.seal_request("GET", "/v1/jobs", b"")
            out["standard suite"] = await _raw(gm, "bank-a", "GET", f"{base_b}/v1/jobs", frame)
            frame, seq = session.seal_request("GET", "/v1/jobs", b"")
            out["after"] = (seq, await _raw(gm, "bank-a", "GET", f"{base_b}/v1/jobs", frame))
            return session, out

    session, out = run(body())
    status, data, kind = out["first"]
    assert status == 200 and kind == SEALED
    assert isinstance(json.loads(session.open_reply(data, 1, "GET", "/v1/jobs", 200))["jobs"], list)
    expected = {
        "replayed": (400, "replayed sealed frame: session"),
        "other route": (400, "does not authenticate for GET /v1/budget from bank-a to bank-b"),
        "other peer": (401, "which this peer does not hold for bank-a"),
        "forwarded by bank-c": (401, "which this peer does not hold for bank-c"),
        "unsealed": (400, "the body is not a sealed frame"),
        "standard suite": (400, "sealed with the 'standard' suite, but this consortium seals with the gm suite"),
    }
    for case, (code, fragment) in expected.items():
        status, data, kind = out[case]
        assert (status, kind) == (code, "application/json") and fragment in _error(data), (case, _error(data))
    seq, (status, data, _) = out["after"]
    assert status == 200 and "jobs" in json.loads(session.open_reply(data, seq, "GET", "/v1/jobs", 200))
    audit = PeerStore(gm.root / "bank-b" / "state", "gm")
    refusals = [e.detail for e in audit.audit.entries() if e.outcome == "refused"]
    audit.close()
    assert any("replayed sealed frame" in r for r in refusals)
    assert any("sealed with the 'standard' suite" in r for r in refusals)


def test_a_relay_cannot_answer_the_handshake_for_the_peer(gm, tmp_path):
    """A relay that answers the hello with its own ephemeral key (signed by any SM2 key but bank-b's) is refused."""
    a = gm.identity("bank-a")
    rogue_port = free_port()
    b = gm.identity("bank-b")
    rogue_key = get_suite("gm").generate_signing_key()

    async def hello(request):
        from fedsilo.privacy.payload_seal import accept_hello

        answer, _ = accept_hello(
            get_suite("gm"), rogue_key, "bank-b", "bank-a", await request.json(), bytes.fromhex(_key(gm, "bank-a"))
        )
        return aiohttp.web.json_response(answer)

    async def body():
        app = aiohttp.web.Application()
        app.router.add_post(HELLO_ROUTE, hello)
        runner = aiohttp.web.AppRunner(app)
        await runner.setup()
        site = aiohttp.web.TCPSite(
            runner, "127.0.0.1", rogue_port, ssl_context=server_context(b.ca_path, b.cert_path, b.key_path)
        )
        await site.start()
        try:
            sealer = ClientSealer(a)
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=client_context(a.ca_path, a.cert_path, a.key_path))
            ) as http:
                with pytest.raises(Exception, match="not signed by bank-b's gm-suite key"):
                    await sealer._session(http, "bank-b", f"https://127.0.0.1:{rogue_port}")  # pylint: disable=protected-access
        finally:
            await runner.cleanup()

    run(body())


def _key(consortium, name):
    return consortium.identity(name).manifest.member(name).signing_key


def test_a_member_address_not_in_the_manifest_is_not_sealed_to(gm):
    with pytest.raises(Exception, match="is not the address of a member in the manifest"):
        ClientSealer(gm.identity("bank-a")).receiver("https://127.0.0.1:1/v1/jobs")


def test_a_client_reopens_its_session_when_the_peer_restarted(gm):
    """The restarted daemon holds no session: it refuses the old one by name, the client opens a new one."""
    url = f"{gm.addresses['bank-b']}/v1/jobs"

    async def body():
        async with member_client(gm, "bank-a") as client:
            async with daemons(gm, ["bank-b"]):
                first = await client.call("GET", url)
            async with daemons(gm, ["bank-b"]):
                second = await client.call("GET", url)
        return first, second

    first, second = run(body())
    assert "jobs" in first and "jobs" in second
    audit = PeerStore(gm.root / "bank-b" / "state", "gm")
    refusals = [e.detail for e in audit.audit.entries() if e.outcome == "refused"]
    audit.close()
    assert any("which this peer does not hold for bank-a" in r and "restarted" in r for r in refusals)


class Capturing(PeerClient):
    """bank-a's client, keeping every PSI / query frame it sends and receives (in the clear, before sealing)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frames_seen: list[bytes] = []

    async def frames(self, method, url, body=None):
        reply = await super().frames(method, url, body)
        self.frames_seen += [body or b"", reply]
        return reply


def test_psi_frames_and_query_labels_cross_a_relay_sealed(tmp_path_factory):
    """A gm consortium where bank-b holds a graded list: bank-a runs PSI and a labelled query through a
    relay holding both TLS keys. No PSI frame and no label crosses it in the clear."""
    consortium = make_consortium(tmp_path_factory.mktemp("sealed-psi"), peers=("bank-a", "bank-b"), suite="gm")
    holder = [f"C-{i:04d}" for i in range(100)]
    (consortium.root / "bank-b" / "high-risk.csv").write_text(
        "client,grade\n" + "".join(f"{c},grade-{'XYZ'[i % 3]}-secret\n" for i, c in enumerate(holder))
    )
    with open(consortium.config_path("bank-b"), "a") as handle:
        handle.write(
            '\n[lists.high-risk]\npath = "high-risk.csv"\nid-column = "client"\nlabel-column = "grade"\n'
            'kind = "client"\npsi = ["bank-a"]\npsi-quota = 100000\nqueriers = { bank-a = 5 }\n'
        )
    relay_port, daemon_port = int(consortium.addresses["bank-b"].rsplit(":", 1)[1]), free_port()
    mine = [f"C-{i:04d}" for i in range(80, 120)]

    async def body():
        async with daemons(consortium, ["bank-a", "bank-b"], {"bank-b": daemon_port}):
            relay = Relay(consortium, relay_port, daemon_port, "bank-a")
            async with relay.running():
                async with Capturing(consortium.identity("bank-a"), timeout=120) as client:
                    shared = await run_psi(client, "bank-b", mine, "to-me", "high-risk")
                    labels = await run_query(client, "bank-b", "high-risk", ["C-0001", "C-0002"])
            return shared, labels, client.frames_seen, bytes(relay.upstream), bytes(relay.downstream)

    shared, labels, frames, up, down = run(body())
    assert shared.cardinality == 20 and labels == {"C-0001": "grade-Y-secret", "C-0002": "grade-Z-secret"}
    assert b"/v1/lists/high-risk/psi" in up  # the route is visible, nothing else
    assert b"grade-" not in down and b"C-00" not in up
    chunks = [frame[i : i + 32] for frame in frames if len(frame) >= 32 for i in range(0, len(frame) - 31, 256)]
    assert len(chunks) > 20
    for chunk in chunks:
        assert chunk not in up and chunk not in down
