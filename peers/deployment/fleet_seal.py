"""A participant's end of the sealed Fleet traffic (gm suite): a loopback forwarder before its SuperNode.

Under the gm suite the model updates and SecAgg+ shares a SuperNode exchanges with the job's
SuperLink are sealed end to end like every other member payload
(`fedsilo.privacy.payload_seal`). The SuperNode speaks Flower's Fleet API to this forwarder on
127.0.0.1 (TLS with a throwaway local CA, `local_ca`); the forwarder seals each request body,
with its content type, in a session it opened with the job's host (the receiver named by the
owner-signed job, checked by the host's SM2 signature in the handshake), sends it to the host's
`fleet_gateway` over TLS checked against the consortium CA, and opens the sealed reply. Only the
Fleet routes and /health pass (`fleet_gateway.allowed`); SuperNode authentication headers pass
unchanged (the SuperLink checks them). A reply that is not sealed is passed on only as an error.

Assumption: local accounts on the participant's machine are trusted (they can reach 127.0.0.1,
as they can read its keys).

Run as `python -m fedsilo.peers.deployment.fleet_seal --listen 127.0.0.1:PORT --gateway HOST:PORT
--host-member NAME --identity DIR [--manifest FILE] --cert FILE --key FILE` (`join_training` does).
"""

from __future__ import annotations

import argparse
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
from aiohttp import web

from fedsilo.errors import FedsiloError
from fedsilo.peers.daemon.sealing import ClientSealer
from fedsilo.peers.deployment.fleet_gateway import _address, _forwarded, allowed, pack, serve_tls, unpack
from fedsilo.peers.identity.consortium import Identity

MAX_BODY_BYTES = 1 << 30
HTTP = web.AppKey("http", aiohttp.ClientSession)


def build_forwarder(identity: Identity, host_member: str, gateway: str) -> web.Application:
    """The forwarder app: Fleet requests in on loopback, sealed to `host_member` at `https://{gateway}`."""
    sealer = ClientSealer(identity)
    base = f"https://{gateway}"
    app = web.Application(client_max_size=MAX_BODY_BYTES)

    async def http(app: web.Application) -> AsyncIterator[None]:
        context = ssl.create_default_context(cafile=str(identity.ca_path))
        app[HTTP] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
        )
        yield
        await app[HTTP].close()

    async def forward(request: web.Request) -> web.Response:
        if not allowed(request.method, request.raw_path):
            return web.json_response({"error": f"{request.method} {request.path} is not a Fleet route"}, status=404)
        body = pack(request.headers.get("Content-Type", ""), await request.read())
        headers = {k: v for k, v in _forwarded(request.headers).items() if k.lower() != "content-type"}
        try:
            reply = await sealer.exchange(
                request.app[HTTP], request.method, base + request.raw_path, body, (host_member, base), headers
            )
        except (FedsiloError, aiohttp.ClientError) as error:
            return web.json_response({"error": f"the sealed Fleet exchange with {host_member} failed: {error}"}, 502)
        if not reply.sealed:
            return web.Response(status=reply.status, body=reply.body, content_type="application/json")
        content_type, payload = unpack(reply.body)
        out = {k: v for k, v in _forwarded(reply.headers).items() if k.lower() != "content-type"}
        if content_type:
            out["Content-Type"] = content_type
        return web.Response(status=reply.status, body=payload, headers=out)

    app.cleanup_ctx.append(http)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedsilo.peers.deployment.fleet_seal",
        description="Seal a SuperNode's Fleet traffic end to end to the job's host (gm suite).",
    )
    parser.add_argument("--listen", type=_address, required=True, help="127.0.0.1:PORT the SuperNode connects to")
    parser.add_argument("--gateway", required=True, help="the job's fleet address HOST:PORT (the host's gateway)")
    parser.add_argument("--host-member", required=True, help="the job's host, as the manifest names it")
    parser.add_argument("--identity", required=True, help="this peer's consortium identity directory")
    parser.add_argument("--manifest", help="the manifest this peer uses (default: in --identity)")
    parser.add_argument("--cert", required=True, help="loopback TLS certificate (PEM) shown to the SuperNode")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    args = parser.parse_args(argv)
    identity = Identity.load(Path(args.identity), manifest=Path(args.manifest) if args.manifest else None)
    serve_tls(build_forwarder(identity, args.host_member, args.gateway), args.listen, args.cert, args.key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
