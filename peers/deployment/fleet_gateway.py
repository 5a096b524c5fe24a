"""The only door into a job's SuperLink from the network: its Fleet API, over TLS.

Flower 1.41 serves all of a SuperLink's APIs on one HTTP port: the Fleet API that
SuperNodes call, and also the Control API (start and stop runs, register node keys)
and the Runtime API (hand a pending run to a SuperExec), which answer any TLS client
without credentials in the open-source release. Exposed on the job's address, anyone
who reaches the port could start a run of their own code on the host's SuperExec, or
register a node key of their own. So the host binds its SuperLink to 127.0.0.1, and
this gateway, on the job's public address with the host's consortium certificate,
forwards to it exactly:

- `POST /v1/fleet/<route>` (the Fleet API; the path exactly, no query), and
- `GET|HEAD /health`;

any other method or path (an encoded or `..` path included) is answered 404 here and never reaches the SuperLink.
SuperNode authentication is unchanged: the SuperLink checks each request's signed
headers against the accepting peers' registered keys, and the gateway forwards headers
(except hop-by-hop ones) and bodies byte for byte.

Assumption: local accounts on the host machine are trusted (they can reach the
SuperLink on 127.0.0.1, as they can read the host's key files).

Under the gm suite (`--seal-identity`: the host's consortium identity directory) the gateway is
also the host's end of the end-to-end payload seal (`fedsilo.peers.daemon.sealing`): it answers
`POST /v1/seal/hello` from a peer's forwarder (`fleet_seal`), and every Fleet request must then
be a sealed frame of such a session; the gateway opens it, forwards the body (and its content
type) to the SuperLink, and seals the SuperLink's reply back. A body that is not a sealed frame
of an open session, replayed or re-addressed, is refused and never reaches the SuperLink.

Run as `python -m peers.deployment.fleet_gateway --listen HOST:PORT --upstream
127.0.0.1:PORT --upstream-ca FILE --cert FILE --key FILE` (the host's supervisor does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from fedsilo.errors import FedsiloError

MAX_BODY_BYTES = 1 << 30  # a message object is at most one model's arrays
FLEET_ROUTE = re.compile(r"/v1/fleet/[a-z][a-z-]*")  # Flower's Fleet routes: /v1/fleet/pull-messages, ...
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
GATE = web.AppKey("seal_gate", object)  # a peers.daemon.sealing.SealGate under the gm suite


def pack(content_type: str, body: bytes) -> bytes:
    """A Fleet body with its content type, as one sealed plaintext: 2-byte length, type, body."""
    raw = content_type.encode()
    return len(raw).to_bytes(2, "big") + raw + body


def unpack(data: bytes) -> tuple[str, bytes]:
    size = int.from_bytes(data[:2], "big")
    return data[2 : 2 + size].decode(errors="replace"), data[2 + size :]


def allowed(method: str, raw_path: str) -> bool:
    """Whether a request (its path exactly as sent, query included) may pass to the SuperLink."""
    if FLEET_ROUTE.fullmatch(raw_path):
        return method == "POST"
    return raw_path == "/health" and method in ("GET", "HEAD")


def _forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


async def forward(request: web.Request) -> web.Response:
    if not allowed(request.method, request.raw_path):
        return web.json_response(
            {
                "error": f"{request.method} {request.path} is not served here: this address "
                f"serves a job's Fleet API only"
            },
            status=404,
        )
    body = await request.read()
    gate = request.app.get(GATE)
    if gate is None:
        return await _upstream(request, body, _forwarded(request.headers))
    return await _sealed(request, gate, body)


async def _upstream(request: web.Request, body: bytes, headers: dict[str, str]) -> web.Response:
    session = request.app[SESSION]
    async with session.request(
        request.method, request.app[UPSTREAM] + request.raw_path, data=body, headers=headers, allow_redirects=False
    ) as upstream:
        payload = await upstream.read()
        return web.Response(status=upstream.status, body=payload, headers=_forwarded(upstream.headers))


async def _sealed(request: web.Request, gate: Any, frame: bytes) -> web.Response:
    """Open a peer's sealed Fleet request, forward it, seal the SuperLink's reply (gm suite)."""
    from fedsilo.peers.daemon.sealing import SEAL_HEADER, SEALED, UNKNOWN_SESSION, UnknownSealSession

    try:
        session, plain, seq = gate.open(frame, None, request.method, request.raw_path)
    except UnknownSealSession as unknown:
        return web.json_response({"error": str(unknown)}, status=401, headers={SEAL_HEADER: UNKNOWN_SESSION})
    except FedsiloError as refused:
        return web.json_response({"error": str(refused)}, status=400)
    content_type, body = unpack(plain)
    headers = {k: v for k, v in _forwarded(request.headers).items() if k.lower() != "content-type"}
    if content_type:
        headers["Content-Type"] = content_type
    reply = await _upstream(request, body, headers)
    reply_type = reply.headers.pop("Content-Type", "")
    sealed = session.seal_reply(seq, request.method, request.raw_path, reply.status, pack(reply_type, reply.body))
    return web.Response(status=reply.status, body=sealed, headers={**reply.headers, "Content-Type": SEALED})


async def seal_hello(request: web.Request) -> web.Response:
    """A peer's forwarder opens a sealed session (gm suite); the hello's signature names the caller."""
    gate = request.app.get(GATE)
    if gate is None:
        return web.json_response({"error": "this job's gateway does not seal (standard suite)"}, status=404)
    try:
        hello = json.loads(await request.read())
        caller = hello.get("from") if isinstance(hello, dict) else None
        member = gate.identity.current_manifest().member(caller) if isinstance(caller, str) else None
        if member is None or not member.has("peer"):
            raise FedsiloError(f"the seal handshake names {str(caller)[:80]!r}, who is not a peer of the consortium")
        return web.json_response(gate.hello(caller, hello))
    except (ValueError, FedsiloError) as refused:
        return web.json_response({"error": str(refused)}, status=400)


def build_gateway(upstream: str, upstream_ca: str, seal_gate: Any = None) -> web.Application:
    """The gateway app forwarding to `https://{upstream}`, whose certificate `upstream_ca` signed;
    with `seal_gate` (gm suite), every Fleet request must be sealed end to end (module docstring)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[UPSTREAM] = f"https://{upstream}"
    if seal_gate is not None:
        app[GATE] = seal_gate

    async def session(app: web.Application) -> AsyncIterator[None]:
        context = ssl.create_default_context(cafile=upstream_ca)
        app[SESSION] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
        )
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session)
    app.router.add_post("/v1/seal/hello", seal_hello)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m peers.deployment.fleet_gateway",
        description="Serve a job's Fleet API (only) in front of its local SuperLink.",
    )
    parser.add_argument("--listen", type=_address, required=True, help="public HOST:PORT the SuperNodes connect to")
    parser.add_argument("--upstream", required=True, help="the SuperLink's 127.0.0.1:PORT")
    parser.add_argument("--upstream-ca", required=True, help="CA certificate of the SuperLink's loopback TLS")
    parser.add_argument("--cert", required=True, help="this host's certificate (PEM), shown to SuperNodes")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument("--seal-identity", help="gm suite: the host's identity directory, to seal Fleet payloads")
    parser.add_argument("--seal-manifest", help="with --seal-identity: the manifest it uses (default: in it)")
    args = parser.parse_args(argv)
    gate = None
    if args.seal_identity:
        from fedsilo.peers.daemon.sealing import SealGate
        from fedsilo.peers.identity.consortium import Identity

        manifest = Path(args.seal_manifest) if args.seal_manifest else None
        gate = SealGate(Identity.load(Path(args.seal_identity), manifest=manifest))
    serve_tls(build_gateway(args.upstream, args.upstream_ca, gate), args.listen, args.cert, args.key)
    return 0


def serve_tls(app: web.Application, listen: tuple[str, int], cert: str, key: str) -> None:
    """Serve `app` over TLS (server certificate `cert`, key `key`) on `listen` until SIGINT or SIGTERM."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, listen[0], listen[1], ssl_context=context).start()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())


if __name__ == "__main__":
    raise SystemExit(main())
