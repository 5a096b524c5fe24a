"""The OpenAPI 3.1 description of the daemon's API (served at /v1/openapi.json).

Hand-written; `tests/peers/daemon` checks that it lists exactly the routes the app serves.
"""

from __future__ import annotations

from typing import Any

_ERROR = {
    "description": 'refused: {"error": message}',
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_JSON = {"content": {"application/json": {"schema": {"type": "object"}}}}
_FRAMES = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


def _op(summary: str, ok: str = "200", body: str | None = None, params: tuple[str, ...] = ()) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            ok: {"description": "success", **_JSON},
            "400": _ERROR,
            "403": _ERROR,
            "404": _ERROR,
            "409": _ERROR,
            "413": _ERROR,
            "429": _ERROR,  # over the caller's rate limit on this route (Retry-After), or a list's quota
        },
    }
    if body:
        operation["requestBody"] = {"required": True, "description": body, **_JSON}
    if params:
        operation["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
        ]
    return operation


def _frames_op(summary: str, body: str | None) -> dict[str, Any]:
    """A PSI / query operation: binary frames (privacy/psi/wire.py) in and out."""
    operation = _op(summary, params=("name",))
    operation["responses"]["200"] = {"description": "success: frames", **_FRAMES}
    if body:
        operation["requestBody"] = {"required": True, "description": body, **_FRAMES}
    return operation


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fedsilo peer daemon",
            "version": "1",
            "description": "Every request needs a client certificate from the consortium CA (mutual TLS); the "
            "caller is the manifest member whose certificate fingerprint matches. The peer's "
            "operator reads (GET) over the admin socket state/admin.sock instead.",
        },
        "paths": {
            "/v1/health": {"get": _op("liveness")},
            "/v1/status": {
                "get": _op(
                    "peer name, consortium, job counts by state, sources, model count; the jobs you may see "
                    "with their state, the budgets left of their sources, your list quotas, and which "
                    "members this peer reaches (each asked for its health within 3 s); whether the audit chain "
                    "verifies, and its entries you are the actor of (all of them: the operator)"
                )
            },
            "/v1/status.html": {
                "get": _op(
                    "the status page: the same document as /v1/status for the same caller, as one HTML page "
                    "(no script; budgets as an inline SVG chart)"
                )
            },
            "/v1/openapi.json": {"get": _op("this description")},
            "/v1/jobs": {
                "get": _op("the jobs here that the caller owns, hosts or takes part in"),
                "post": _op(
                    "submit a signed job (model owners); this peer hosts it and proposes it",
                    "201",
                    "{job, signature, certificate}: the owner-signed job envelope",
                ),
            },
            "/v1/jobs/{job_id}": {
                "get": _op(
                    "one job the caller owns, hosts or takes part in (403 otherwise), with "
                    "participants' decisions at its host (others' reasons: owner only)",
                    params=("job_id",),
                )
            },
            "/v1/jobs/{job_id}/cancel": {
                "post": _op(
                    "cancel an active job (its owner or host); releases the budget reservation",
                    body="{}",
                    params=("job_id",),
                )
            },
            "/v1/jobs/{job_id}/start": {
                "post": _op(
                    "the host starts training: join its SuperLink",
                    body="{fleet_address: HOST:PORT}",
                    params=("job_id",),
                )
            },
            "/v1/jobs/{job_id}/report": {
                "post": _op(
                    "a participant reports what its accountant spent (at the host), "
                    "once, while the job trains, within its plan",
                    body="{spent: [mechanism], epsilon, delta, accountant}",
                    params=("job_id",),
                )
            },
            "/v1/jobs/{job_id}/score": {
                "post": _op(
                    "vertical jobs, at the label holder (its owner or itself): scores of named customers; the "
                    "feature party's codes are asked through a both-sides PSI, never by raw id",
                    body="{ids: [customer id]}",
                    params=("job_id",),
                )
            },
            "/v1/jobs/{job_id}/vertical/align": {
                "post": _op(
                    "vertical jobs, at the feature party (the host only): keep the order of the host's "
                    "both-sides PSI session; answers {party, shared, digest, k}",
                    body="{session: hex, digest: hex}",
                    params=("job_id",),
                )
            },
            "/v1/jobs/{job_id}/vertical/release": {
                "post": _op(
                    "vertical jobs, at the feature party (the host only), once: codes for the batch positions; "
                    "commits the reservation",
                    body="{requests: [base64 batch request]}",
                    params=("job_id",),
                )
            },
            "/v1/jobs/{job_id}/vertical/score": {
                "post": _op(
                    "vertical jobs, at the feature party (the host only): codes of a scoring PSI session's "
                    "customers, each drawn once, within the host's query quota",
                    body="{session: hex}",
                    params=("job_id",),
                )
            },
            "/v1/jobs/{job_id}/vertical/embed": {
                "post": _op(
                    "split vertical jobs, at the feature party (the host only): noised embeddings of a scoring PSI "
                    "session's customers, each drawn once, within the host's query quota",
                    body="{session: hex}",
                    params=("job_id",),
                )
            },
            "/v1/jobs/{job_id}/transfer/holdout": {
                "post": _op(
                    "transfer jobs with shared customers, at a participant (the host only), in name order: "
                    "split, PSI with every later participant, send it the pins; answers {peer, shared, rows, test}",
                    body="{order: [participant]}",
                    params=("job_id",),
                )
            },
            "/v1/jobs/{job_id}/transfer/pins": {
                "post": _op(
                    "transfer jobs with shared customers, from an earlier participant: the sides of the customers "
                    "of its both-sides PSI session with this peer's list; answers {peer, shared}",
                    body="{session: hex, frame: base64}",
                    params=("job_id",),
                )
            },
            "/v1/proposals": {
                "post": _op(
                    "a host proposes a job; answers {decision: accepted|declined, reason, ...}",
                    body="the owner-signed job envelope",
                )
            },
            "/v1/models": {"get": _op("models the caller may pull")},
            "/v1/models/{job_id}": {
                "get": _op(
                    "newest version of a job's model: version, host, files, and the "
                    "owner-signed job (whose host must have signed the card)",
                    params=("job_id",),
                )
            },
            "/v1/models/{job_id}/card": {"get": _op("the signed model card", params=("job_id",))},
            "/v1/models/{job_id}/files/{name}": {
                "get": _op("one file of the artefact (model, card, signature)", params=("job_id", "name"))
            },
            "/v1/models/{job_id}/replicate": {
                "post": _op(
                    "the host announces a job's model: the participant fetches and verifies a copy",
                    body="{}",
                    params=("job_id",),
                )
            },
            "/v1/audit": {
                "get": _op(
                    "the hash-chained audit log (query: since=SEQ) and whether its chain holds: "
                    "only over the admin socket state/admin.sock (the peer's operator)"
                )
            },
            "/v1/budget": {
                "get": _op(
                    "privacy budget (total, spent, reserved, remaining ε) of each data source "
                    "that a job the caller takes part in uses here"
                )
            },
            "/v1/lists": {"get": _op("the lists this peer shares with the caller: PSI modes, query quota left")},
            "/v1/lists/{name}/psi": {
                "post": _frames_op(
                    "PSI against a list: answers the caller's blinded set with EVALUATED and SET frames",
                    "BLINDED frames then BLINDED_END (the caller's identifiers, blinded)",
                )
            },
            "/v1/lists/{name}/psi/confirm": {
                "post": _frames_op(
                    "both-sides PSI, second step: the holder learns the intersection too",
                    "CONFIRM frames then CONFIRM_END",
                )
            },
            "/v1/lists/{name}/psi/ot": {
                "post": _frames_op(
                    "OT-extension PSI (KKRT16), one step of a session: HELLO opens it (answered with REPLY), "
                    "MATRIX frames continue it (MASKS after MATRIX_END), FOUND frames end a both-sides run; "
                    "frames length-prefixed (privacy/psi/otwire.py pack); 409: no such session, 503: too many open",
                    "OT-PSI frames of one session, each after its 4-byte length",
                )
            },
            "/v1/lists/{name}/table": {
                "get": _frames_op("the list's encrypted query table of the current key epoch", None)
            },
            "/v1/lists/{name}/query": {
                "post": _frames_op(
                    "anonymous query: applies the holder's key to blinded identifiers, under the caller's quota "
                    "(409: stale epoch, 429: over quota)",
                    "one QUERY frame",
                )
            },
            "/v1/seal/hello": {
                "post": _op(
                    "gm suite: open a session for end-to-end sealed payloads (every other request and "
                    "reply of a gm consortium is a sealed frame, application/x-fedsilo-sealed)",
                    body="{suite, from, to, ephemeral, time, signature}: the caller's signed ephemeral key",
                )
            },
            "/v1/manifest": {
                "get": _op(
                    "the latest CA-signed consortium manifest this peer holds, with the CA's revocation list",
                    "200",
                ),
                "post": _op(
                    "publish a newer manifest version (any member; the CA's signatures make it valid): verified, "
                    "never rolled back, acted on at once; 409 if refused",
                    "200",
                    "{manifest: the signed manifest document, crl: the CA's CRL in PEM}",
                ),
            },
            "/v1/psi-log": {
                "post": _op(
                    "the peer's own client records a PSI or query it ran at another peer "
                    "(only this peer's certificate)",
                    "201",
                    "{action, peer, list, outcome, sent, learned}: counts only",
                )
            },
        },
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}
        },
    }
