"""The Fleet traffic of a gm job (model updates, SecAgg+ shares) sealed end to end between a participant's
loopback forwarder (`fleet_seal`) and the host's `fleet_gateway`, from the attacker's side.

Real TLS sockets on 127.0.0.1: a SuperNode stand-in posts a Fleet body to bank-b's forwarder, which
seals it to the host bank-a; a relay holding bank-a's TLS key sits between the forwarder and the
gateway and records every byte; a SuperLink stand-in behind the gateway answers. The relay sees
only SM4 ciphertext; an unsealed or replayed body, and a handshake by a non-peer, never reach the
SuperLink."""

import asyncio
import contextlib
import json
import ssl

import aiohttp
import pytest
from aiohttp import web

from fedsilo.peers.daemon.sealing import SEALED, SealGate
from fedsilo.peers.deployment.fleet_gateway import build_gateway
from fedsilo.peers.deployment.fleet_seal import build_forwarder
from fedsilo.peers.deployment.local_ca import make_local_tls
from fedsilo.privacy.crypto_suite import get_suite
from fedsilo.privacy.payload_seal import ClientHandshake

from ._consortium import OWNER, free_port, make_consortium, run
from .test_sealed_payloads import pipe

ROUTE = "/v1/fleet/push-messages"
UPDATE = b"MODEL-UPDATE:" + bytes(range(256)) * 4


@pytest.fixture(scope="module")
def gm(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("fleet"), peers=("bank-a", "bank-b"), suite="gm")


def _server_context(cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


@contextlib.asynccontextmanager
async def serving(app, port, context):
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def relay(port, front, back_port, back):
    """Terminates TLS as the host, forwards to the gateway, records both directions."""
    up, down = bytearray(), bytearray()

    async def serve(reader, writer):
        r2, w2 = await asyncio.open_connection("127.0.0.1", back_port, ssl=back, server_hostname="127.0.0.1")
        await asyncio.gather(pipe(reader, w2, up), pipe(r2, writer, down))

    server = await asyncio.start_server(serve, "127.0.0.1", port, ssl=front)
    try:
        yield up, down
    finally:
        server.close()


def _request_body(stream: bytes) -> bytes:
    """The body of the first POST to ROUTE in a recorded HTTP/1.1 stream."""
    start = stream.index(b"POST " + ROUTE.encode())
    head_end = stream.index(b"\r\n\r\n", start)
    head = stream[start:head_end].decode()
    length = next(
        int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.lower().startswith("content-length")
    )
    return stream[head_end + 4 : head_end + 4 + length]


def test_fleet_payloads_cross_a_relay_as_sm4_ciphertext_and_attacks_never_reach_the_superlink(gm, tmp_path):
    host, peer = gm.identity("bank-a"), gm.identity("bank-b")
    link_tls, seal_tls = make_local_tls(tmp_path / "link"), make_local_tls(tmp_path / "seal")
    link_port, gateway_port, relay_port, forwarder_port = (free_port() for _ in range(4))
    seen = []

    async def superlink(request):
        seen.append((await request.read(), request.headers.get("X-Node-Auth"), request.content_type))
        return web.Response(body=seen[-1][0][::-1], content_type="application/protobuf")

    link_app = web.Application(client_max_size=1 << 24)
    link_app.router.add_post(ROUTE, superlink)
    host_tls = _server_context(host.cert_path, host.key_path)
    to_gateway = ssl.create_default_context(cafile=str(host.ca_path))

    async def body():
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(serving(link_app, link_port, _server_context(link_tls.cert, link_tls.key)))
            gateway = build_gateway(f"127.0.0.1:{link_port}", str(link_tls.ca_cert), SealGate(host))
            await stack.enter_async_context(serving(gateway, gateway_port, host_tls))
            up, down = await stack.enter_async_context(relay(relay_port, host_tls, gateway_port, to_gateway))
            forwarder = build_forwarder(peer, "bank-a", f"127.0.0.1:{relay_port}")
            await stack.enter_async_context(
                serving(forwarder, forwarder_port, _server_context(seal_tls.cert, seal_tls.key))
            )
            supernode = ssl.create_default_context(cafile=str(seal_tls.ca_cert))
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=supernode)) as http:
                headers = {"Content-Type": "application/protobuf", "X-Node-Auth": "node-signature"}
                async with http.post(f"https://127.0.0.1:{forwarder_port}{ROUTE}", data=UPDATE, headers=headers) as r:
                    answer = (r.status, await r.read(), r.content_type)
            frame = _request_body(bytes(up))
            attacks = {}
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=to_gateway)) as http:
                gateway_url = f"https://127.0.0.1:{gateway_port}"
                for name, data in (("replayed", frame), ("unsealed", UPDATE)):
                    async with http.post(gateway_url + ROUTE, data=data, headers={"Content-Type": SEALED}) as r:
                        attacks[name] = (r.status, json.loads(await r.read())["error"])
                owner = gm.identity(OWNER)
                hello = ClientHandshake(get_suite("gm"), owner.signing_key, OWNER, "bank-a").hello()
                async with http.post(gateway_url + "/v1/seal/hello", json=hello) as r:
                    attacks["owner hello"] = (r.status, json.loads(await r.read())["error"])
            return answer, bytes(up), bytes(down), attacks

    answer, up, down, attacks = run(body())
    assert answer == (200, UPDATE[::-1], "application/protobuf")
    assert seen == [(UPDATE, "node-signature", "application/protobuf")]  # only the one sealed request got through
    assert b"POST " + ROUTE.encode() in up and b"X-Node-Auth: node-signature" in up
    assert b"Content-Type: " + SEALED.encode() in up and b"Content-Type: " + SEALED.encode() in down
    for stream in (up, down):
        assert b"MODEL-UPDATE" not in stream and b"ETADPU-LEDOM" not in stream and bytes(range(64)) not in stream
        assert b"application/protobuf" not in stream
    assert attacks["replayed"][0] == 400 and "replayed sealed frame" in attacks["replayed"][1]
    assert attacks["unsealed"][0] == 400 and "the body is not a sealed frame" in attacks["unsealed"][1]
    assert attacks["owner hello"][0] == 400 and "'risk-dept', who is not a peer" in attacks["owner hello"][1]
