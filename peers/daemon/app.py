"""The daemon's HTTP API (aiohttp) over mutual TLS, and `run_daemon` behind `fedsilo peer start`.

Every request arrives over TLS with a client certificate the consortium CA signed (the
TLS layer refuses anything else). The `identify` middleware maps the certificate's
fingerprint to a manifest member and refuses (403, audited) a certificate that is not
a member's. Bodies are JSON, at most `peer.max-body-bytes` (413 above); malformed JSON,
JSON nested too deeply or holding a non-finite or oversized number, and a malformed query
parameter are a 400 (see `inputs`); every refusal, an unknown route included, is written to
the audit log and changes nothing else. An unexpected error is logged with its traceback,
audited as failed and answered 500 without details. A member over its rate limit on a
route gets 429 before anything else runs (`rate_limit`); slow or surplus connections are
closed before aiohttp reads them (`connections`); `run_daemon` holds the state
directory's PID file (`background`). `GET`/`POST /v1/manifest` serve and take the consortium's
signed manifest and CRL (`manifest_sync`), and the outermost middleware `announce` names the
version this daemon holds on every reply.

Reads follow need-to-know: a member sees the jobs it owns, hosts or takes part in, the
budget of the sources those jobs use here, the models it may pull and the lists shared
with it; of the audit log, on the status page and in /v1/status, only whether its chain
verifies and the entries it is the actor of. The peer's own operators read everything, and alone export the audit log, over
the admin socket `state/admin.sock` (no TLS; mode 0600 in the 0700 state directory, so
whoever can open it runs as the daemon's account on its machine): GET only, of
`OPERATOR_ROUTES`. No consortium certificate, the CA's included, is an operator.

Under the gm suite the outermost middleware `seal_gate` opens every member's request from its
end-to-end sealed frame before `identify` and the handlers see it, and seals every reply
(`sealing`; the handshake route `HELLO_ROUTE` alone carries signed JSON, no payload). Handlers
read bodies through `read_json` / `read_frames`, which return the opened body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from fedsilo.errors import FedsiloError
from fedsilo.peers.daemon import rate_limit
from fedsilo.peers.daemon import status_page as status_page_html
from fedsilo.peers.daemon.background import PidFile
from fedsilo.peers.daemon.client import MANIFEST_HEADER
from fedsilo.peers.daemon.config import PeerConfig, load_config
from fedsilo.peers.daemon.connections import ConnectionGuard, GuardedSite
from fedsilo.peers.daemon.inputs import parse_json, query_count
from fedsilo.peers.daemon.model_store import CARD, SIGNATURE
from fedsilo.peers.daemon.openapi import spec
from fedsilo.peers.daemon.sealing import (
    HELLO_ROUTE,
    SEAL_HEADER,
    SEALED,
    UNKNOWN_SESSION,
    SealError,
    SealGate,
    UnknownSealSession,
    seals,
)
from fedsilo.peers.daemon.service import PeerService
from fedsilo.peers.errors import Refused
from fedsilo.peers.identity.consortium import Identity
from fedsilo.peers.identity.manifest import Member
from fedsilo.peers.identity.pki import certificate_fingerprint
from fedsilo.peers.identity.tls import server_context

log = logging.getLogger("fedsilo.peer")
SERVICE = web.AppKey("service", PeerService)
MEMBER = web.RequestKey("member", Member)
GATE = web.AppKey("seal_gate", SealGate)
OPENED = web.RequestKey("opened", bytes)  # the request body, opened from its sealed frame
OPERATOR = web.RequestKey("operator", bool)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ADMIN_SOCKET = "admin.sock"
OPERATOR_ROUTES = (
    "/v1/health",
    "/v1/status",
    "/v1/status.html",
    "/v1/openapi.json",
    "/v1/jobs",
    "/v1/jobs/{job_id}",
    "/v1/budget",
    "/v1/audit",
)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def announce(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every reply names the manifest version this daemon holds (`MANIFEST_HEADER`; see `manifest_sync`)."""
    response = await handler(request)
    response.headers[MANIFEST_HEADER] = str(request.app[SERVICE].identity.manifest.version)
    return response


@web.middleware
async def seal_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under the gm suite: open a member's sealed request, seal the reply; refuse anything else (see above)."""
    gate = request.app.get(GATE)
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    member = request.app[SERVICE].member_for(certificate_fingerprint(der)) if der else None
    if gate is None or member is None or request.path == HELLO_ROUTE:
        return await handler(request)  # the standard suite, the admin socket, or `identify` refuses the caller
    service, target = request.app[SERVICE], request.raw_path
    action = f"{request.method} {request.path}"[:MAX_ACTION]
    try:
        session, body, seq = gate.open(await request.read(), member.name, request.method, target)
    except web.HTTPRequestEntityTooLarge:
        await service.record_refusal(member.name, action, "sealed request larger than the body limit")
        return _error(413, f"the request body is larger than this peer's limit of {request.app[MAX_BODY]} bytes")
    except UnknownSealSession as unknown:
        await service.record_refusal(member.name, action, str(unknown))
        reply = _error(401, str(unknown))
        reply.headers[SEAL_HEADER] = UNKNOWN_SESSION
        return reply
    except SealError as refused:
        await service.record_refusal(member.name, action, str(refused))
        return _error(400, str(refused))
    request[OPENED] = body
    try:
        response = await handler(request)
    except web.HTTPException as http:  # no such route / method: `identify` audited it
        response = web.json_response({"error": f"{http.status} {http.reason}"}, status=http.status)
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        log.error("peer %s cannot seal its reply to %s from %s: not an in-memory body", service.name, action, member)
        return _error(500, "this peer cannot seal this reply; nothing was sent in the clear")
    sealed = session.seal_reply(seq, request.method, target, response.status, response.body)
    return web.Response(status=response.status, body=sealed, content_type=SEALED)


@web.middleware
async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the calling member; refuse unknown certificates; turn refusals into JSON errors."""
    service = request.app[SERVICE]
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and sock.family == socket.AF_UNIX:  # the admin socket: this peer's operator
        route = request.match_info.route.resource
        if request.method != "GET" or route is None or route.canonical not in OPERATOR_ROUTES:
            return _error(403, f"the admin socket answers GET {', '.join(OPERATOR_ROUTES)} only")
        request[OPERATOR], actor = True, "operator"
    else:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der:
            return _error(401, "a client certificate from the consortium CA is required")
        fingerprint = certificate_fingerprint(der)
        member = service.member_for(fingerprint)
        if member is None:
            await service.record_refusal(
                "unknown",
                f"{request.method} {request.path}",
                f"client certificate {fingerprint} is not in the consortium manifest",
            )
            return _error(403, "your certificate is not a member's in this peer's consortium manifest")
        request[MEMBER], actor = member, member.name
    action = f"{request.method} {request.path}"[:MAX_ACTION]
    try:
        return await handler(request)
    except Refused as refusal:
        if not refusal.audited:
            await service.record_refusal(actor, action, str(refusal))
        return _error(refusal.status, str(refusal))
    except FedsiloError as error:
        await service.record_refusal(actor, action, str(error))
        return _error(400, str(error))
    except web.HTTPException as http:  # aiohttp's own: no such route (404), method not allowed (405)
        if http.status >= 400:
            await service.record_refusal(actor, action, f"{http.status} {http.reason}")
        raise
    except Exception as error:  # pylint: disable=broad-exception-caught  # a bug: logged, audited, no details out
        log.exception("peer %s failed on %s from %s", service.name, action, actor)
        await service.record_refusal(actor, action, f"internal error ({error.__class__.__name__})", outcome="failed")
        return _error(500, "this peer failed on the request (recorded in its audit log); tell its operator")


def _viewer(request: web.Request) -> str | None:
    """Whose reads these are: a member's name, or None for this peer's operator (who sees everything)."""
    return None if request.get(OPERATOR) else request[MEMBER].name


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; Refused 413 if too large, 400 if not acceptable JSON (`inputs.parse_json`)."""
    if OPENED in request:
        return parse_json(request[OPENED])
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Refused(
            f"the request body is larger than this peer's limit of {request.app[MAX_BODY]} bytes", 413
        ) from None
    return parse_json(raw)


MAX_ACTION = 200  # characters of "METHOD PATH" kept in an audit entry
MAX_BODY = web.AppKey("max_body", int)
FRAMES = "application/octet-stream"


async def read_frames(request: web.Request) -> bytes:
    """The request's binary body (PSI frames); Refused 413 if larger than the peer's limit."""
    if OPENED in request:
        return request[OPENED]
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Refused(
            f"the request body is larger than this peer's limit of {request.app[MAX_BODY]} bytes; send "
            "fewer identifiers per request or ask the holder to raise peer.max-body-bytes",
            413,
        ) from None


def _service(request: web.Request) -> PeerService:
    return request.app[SERVICE]


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "peer": _service(request).name})


async def status(request: web.Request) -> web.Response:
    return web.json_response(await _status_document(request))


async def status_page(request: web.Request) -> web.Response:
    """The status page: the same document as GET /v1/status for the same caller, drawn as HTML."""
    page = status_page_html.render(await _status_document(request), operator=bool(request.get(OPERATOR)))
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers=status_page_html.HEADERS)


async def _status_document(request: web.Request) -> dict[str, Any]:
    """What GET /v1/status shows its caller (and the status page draws): see the module docstring."""
    service, viewer = _service(request), _viewer(request)
    counts: dict[str, int] = {}
    for job in service.views.visible_jobs(viewer):
        counts[job.state] = counts.get(job.state, 0) + 1
    models = [
        m
        for m in service.store.models()
        if viewer is None or service.views.may_read_model(request[MEMBER], m["job_id"])
    ]
    return {
        "peer": service.name,
        "consortium": service.identity.manifest.consortium,
        "manifest_version": service.identity.manifest.version,
        "jobs": counts,
        "sources": service.views.visible_sources(viewer),
        "models": len(models),
        "you": viewer or "operator",
        "job_list": service.views.job_list(viewer),
        "budgets": service.views.budgets(viewer),
        "lists": _list_quotas(service, viewer),
        "audit": await service.views.audit(viewer),
        "members": await service.views.reachability(),
    }


def _list_quotas(service: PeerService, viewer: str | None) -> list[dict[str, Any]]:
    """The lists `viewer` may use here with its quotas left; for the operator, every member's."""
    lists = service.list_serving.lists
    if viewer is not None:
        return lists.shared_with(viewer)
    members = [m.name for m in service.identity.current_manifest().members]
    return [{"member": name, **entry} for name in members for entry in lists.shared_with(name)]


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(spec())


async def submit_job(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(await _service(request).hosting.submit(request[MEMBER], body), status=201)


async def propose_job(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(await _service(request).participating.propose(request[MEMBER], body))


async def list_jobs(request: web.Request) -> web.Response:
    return web.json_response({"jobs": [j.summary() for j in _service(request).views.visible_jobs(_viewer(request))]})


async def get_job(request: web.Request) -> web.Response:
    job_id, viewer = request.match_info["job_id"], _viewer(request)
    view = _service(request).views.job_view(job_id, viewer)
    if view is None:  # the same answer whether the job exists or not
        if viewer is None:
            raise Refused(f"no job {job_id!r} here", 404)
        raise Refused(
            f"{viewer} takes part in no job {job_id!r} here: a peer shows a job only to its owner, its "
            "host and its participants",
            403,
        )
    return web.json_response(view)


async def cancel_job(request: web.Request) -> web.Response:
    await read_json(request)
    return web.json_response(await _service(request).cancellation.cancel(request[MEMBER], request.match_info["job_id"]))


async def start_job(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(
        await _service(request).participating.start_training(request[MEMBER], request.match_info["job_id"], body)
    )


async def report_job(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(
        await _service(request).hosting.report(request[MEMBER], request.match_info["job_id"], body)
    )


async def vertical_align(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(
        await _service(request).vertical.align(request[MEMBER], request.match_info["job_id"], body)
    )


async def vertical_release(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(
        await _service(request).vertical.release(request[MEMBER], request.match_info["job_id"], body)
    )


async def vertical_score(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(
        await _service(request).vertical.score_codes(request[MEMBER], request.match_info["job_id"], body)
    )


async def vertical_embed(request: web.Request) -> web.Response:
    body = await read_json(request)
    service = _service(request)
    assert service.vertical.split is not None
    return web.json_response(
        await service.vertical.split.score_embeddings(request[MEMBER], request.match_info["job_id"], body)
    )


async def transfer_holdout(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(
        await _service(request).transfer_holdout.step(request[MEMBER], request.match_info["job_id"], body)
    )


async def transfer_pins(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(
        await _service(request).transfer_holdout.pins(request[MEMBER], request.match_info["job_id"], body)
    )


async def score_job(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(
        await _service(request).vertical.score(request[MEMBER], request.match_info["job_id"], body)
    )


async def replicate_model(request: web.Request) -> web.Response:
    await read_json(request)
    return web.json_response(
        await _service(request).replication.replicate(request[MEMBER], request.match_info["job_id"])
    )


def _model(request: web.Request) -> tuple[str, Any]:
    service, job_id = _service(request), request.match_info["job_id"]
    found = service.store.model(job_id)
    if found is None:
        raise Refused(f"no model of job {job_id!r} here", 404)
    if not service.views.may_read_model(request[MEMBER], job_id):
        raise Refused(
            f"{request[MEMBER].name} may not pull the model of job {job_id}: only its owner, its "
            "participants and the readers in this peer's policy can",
            403,
        )
    return job_id, found


async def list_models(request: web.Request) -> web.Response:
    service = _service(request)
    visible = [m for m in service.store.models() if service.views.may_read_model(request[MEMBER], m["job_id"])]
    return web.json_response(
        {"models": [{k: m[k] for k in ("job_id", "version", "signer", "created")} for m in visible]}
    )


async def get_model(request: web.Request) -> web.Response:
    job_id, (version, directory, signer) = _model(request)
    card = json.loads((directory / CARD).read_text())
    job = _service(request).store.job(job_id)
    return web.json_response(
        {
            "job_id": job_id,
            "version": version,
            "host": signer,
            "files": sorted(card["artifacts"]),
            "job": job.envelope if job else None,
        }
    )


async def model_card(request: web.Request) -> web.Response:
    _, (_, directory, _) = _model(request)
    return web.json_response(json.loads((directory / CARD).read_text()))


async def model_file(request: web.Request) -> web.StreamResponse:
    job_id, (_, directory, _) = _model(request)
    name = request.match_info["name"]
    card = json.loads((directory / CARD).read_text())
    if name not in (CARD, SIGNATURE, *card["artifacts"]):
        raise Refused(f"the model of job {job_id} has no file {name!r}", 404)
    if GATE in request.app:  # the seal gate seals an in-memory body
        return web.Response(body=(directory / name).read_bytes(), content_type="application/octet-stream")
    return web.FileResponse(directory / name, chunk_size=1 << 20)


async def audit_export(request: web.Request) -> web.Response:
    if not request.get(OPERATOR):
        raise Refused(
            f"the audit log of {_service(request).name} is for its own operators, not for consortium "
            "members: on its machine, run `fedsilo audit export --config peer.toml`",
            403,
        )
    since = query_count(request.query, "since")
    service = _service(request)
    check = service.store.audit.verify()
    return web.json_response(
        {
            "peer": service.name,
            "chain_ok": check.ok,
            "first_broken": check.first_broken,
            "chain_hash": service.store.audit.hash_label,
            "entries": [e.to_dict() for e in service.store.audit.entries(since)],
        }
    )


async def budget(request: web.Request) -> web.Response:
    return web.json_response(
        {"peer": _service(request).name, "sources": _service(request).views.budgets(_viewer(request))}
    )


async def lists(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "peer": _service(request).name,
            "lists": _service(request).list_serving.lists.shared_with(request[MEMBER].name),
        }
    )


async def _serve_list(request: web.Request, action: str, work: str, binary_body: bool = True) -> web.Response:
    service, member, name = _service(request), request[MEMBER], request.match_info["name"]
    body = await read_frames(request) if binary_body else b""
    method = getattr(service.list_serving.lists, work)
    args = (member.name, name, body) if binary_body else (member.name, name)
    reply = await service.list_serving.serve(member, action, name, lambda: method(*args))
    return web.Response(body=reply, content_type=FRAMES)


async def psi_run(request: web.Request) -> web.Response:
    return await _serve_list(request, "psi.answer", "psi")


async def psi_ot(request: web.Request) -> web.Response:
    return await _serve_list(request, "psi.answer", "ot")


async def psi_confirm(request: web.Request) -> web.Response:
    return await _serve_list(request, "psi.confirm", "confirm")


async def query_table(request: web.Request) -> web.Response:
    return await _serve_list(request, "query.table", "table", binary_body=False)


async def query_answer(request: web.Request) -> web.Response:
    return await _serve_list(request, "query.answer", "query")


async def record_own(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(await _service(request).list_serving.record_own(request[MEMBER], body), status=201)


async def get_manifest(request: web.Request) -> web.Response:
    return web.json_response(_service(request).manifest_sync.publication())


async def publish_manifest(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response(await _service(request).manifest_sync.receive(request[MEMBER].name, body))


async def seal_hello(request: web.Request) -> web.Response:
    gate = request.app.get(GATE)
    if gate is None:
        raise Refused("this consortium uses the standard crypto suite: its peers do not seal payloads", 404)
    return web.json_response(gate.hello(request[MEMBER].name, await read_json(request)))


ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/v1/health", health),
    ("GET", "/v1/status", status),
    ("GET", "/v1/status.html", status_page),
    ("GET", "/v1/openapi.json", openapi),
    ("POST", "/v1/jobs", submit_job),
    ("GET", "/v1/jobs", list_jobs),
    ("GET", "/v1/jobs/{job_id}", get_job),
    ("POST", "/v1/jobs/{job_id}/cancel", cancel_job),
    ("POST", "/v1/jobs/{job_id}/start", start_job),
    ("POST", "/v1/jobs/{job_id}/report", report_job),
    ("POST", "/v1/jobs/{job_id}/score", score_job),
    ("POST", "/v1/jobs/{job_id}/vertical/align", vertical_align),
    ("POST", "/v1/jobs/{job_id}/vertical/release", vertical_release),
    ("POST", "/v1/jobs/{job_id}/vertical/score", vertical_score),
    ("POST", "/v1/jobs/{job_id}/vertical/embed", vertical_embed),
    ("POST", "/v1/jobs/{job_id}/transfer/holdout", transfer_holdout),
    ("POST", "/v1/jobs/{job_id}/transfer/pins", transfer_pins),
    ("POST", "/v1/proposals", propose_job),
    ("GET", "/v1/models", list_models),
    ("GET", "/v1/models/{job_id}", get_model),
    ("GET", "/v1/models/{job_id}/card", model_card),
    ("GET", "/v1/models/{job_id}/files/{name}", model_file),
    ("POST", "/v1/models/{job_id}/replicate", replicate_model),
    ("GET", "/v1/audit", audit_export),
    ("GET", "/v1/budget", budget),
    ("GET", "/v1/lists", lists),
    ("POST", "/v1/lists/{name}/psi", psi_run),
    ("POST", "/v1/lists/{name}/psi/confirm", psi_confirm),
    ("POST", "/v1/lists/{name}/psi/ot", psi_ot),
    ("GET", "/v1/lists/{name}/table", query_table),
    ("POST", "/v1/lists/{name}/query", query_answer),
    ("POST", "/v1/psi-log", record_own),
    ("GET", "/v1/manifest", get_manifest),
    ("POST", "/v1/manifest", publish_manifest),
    ("POST", HELLO_ROUTE, seal_hello),
]


def build_app(service: PeerService, max_body: int) -> web.Application:
    limiter = rate_limit.RateLimiter(service.context.config.limits)
    # outermost first: announce the manifest version, open a sealed body (gm), name the caller, then its rate
    app = web.Application(
        middlewares=[announce, seal_gate, identify, rate_limit.middleware(limiter, _viewer)], client_max_size=max_body
    )
    app[SERVICE] = service
    if seals(service.identity):
        app[GATE] = SealGate(service.identity)
    app[MAX_BODY] = max_body
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)

    async def lifecycle(app: web.Application) -> Any:
        await service.start()
        yield
        await service.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


def listen_address(identity: Identity) -> tuple[str, int]:
    member = identity.manifest.member(identity.name)
    if member is None or not member.address:
        raise FedsiloError(f"{identity.name} has no address in the manifest: admit it with --address")
    parts = urlsplit(member.address)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def start_daemon(config: PeerConfig, port: int | None = None) -> tuple[web.AppRunner, PeerService, int]:
    """Start the daemon in the running loop (port from the manifest, or `port`; 0 = any free)."""
    identity = Identity.load(config.identity_dir)
    admin = admin_socket(config.state_dir)
    if identity.crl is None:
        log.warning(
            "peer %s: %s does not exist, so this daemon checks no certificate revocation at the TLS layer until the "
            "consortium publishes its manifest with a CRL (`fedsilo consortium publish`); removed members are still "
            "refused (403)",
            identity.name,
            identity.crl_path,
        )
    crl = identity.crl_path if identity.crl is not None else None
    tls = server_context(identity.ca_path, identity.cert_path, identity.key_path, crl)
    service: PeerService  # the guard asks it who a certificate is, once connections arrive
    guard = ConnectionGuard(config.limits, lambda fingerprint: getattr(service.member_for(fingerprint), "name", None))
    service = PeerService(config, identity, tls, guard.drop)
    host, manifest_port = listen_address(identity)
    runner = web.AppRunner(
        build_app(service, config.max_body_bytes), access_log=None, keepalive_timeout=config.limits.idle_timeout
    )
    await runner.setup()
    site = GuardedSite(
        runner,
        host,
        manifest_port if port is None else port,
        tls,
        guard,
    )
    await site.start()
    # aiohttp keeps the listening server private; with port 0 only it knows the port the OS chose.
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # a started site has a server
    await web.UnixSite(runner, str(admin)).start()
    admin.chmod(0o600)
    return runner, service, bound


def admin_socket(state_dir: Path) -> Path:
    """The operator's socket in the state directory; FedsiloError if its path is too long for a Unix socket."""
    path = state_dir / ADMIN_SOCKET
    if len(str(path).encode()) > 107:
        raise FedsiloError(
            f"the admin socket {path} is longer than a Unix socket path may be (107 bytes): give "
            "[peer] state a shorter path"
        )
    return path


def run_daemon(config_path: str) -> int:
    """`fedsilo peer start`: serve until SIGINT or SIGTERM, holding the state directory's PID file."""
    config = load_config(config_path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pid_file = PidFile(config.state_dir)
    pid_file.check_free()

    async def main() -> None:
        runner, service, port = await start_daemon(config)
        pid_file.write(Path(config_path).resolve())
        print(
            f"peer {service.name} listening on https://{listen_address(service.identity)[0]}:{port} "
            f"(state: {config.state_dir})",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await runner.cleanup()
        print(f"peer {service.name} stopped", flush=True)

    try:
        asyncio.run(main())
    finally:
        pid_file.remove()
    return 0
