"""How a boosting job's session messages travel inside Flower messages (``query.gbdt``).

Each call of `fedsilo.strategies.gbdt.SecureSession` on a bank (``session_keys`` ...
``session_unmask``) is one Flower message: a ConfigRecord under `CALL_KEY` with the
method name and its arguments as JSON bytes (`fedsilo.strategies.secagg.wire`'s
encoding: bytes as hex, ints of any size). A ``session_mask`` call also carries what
the bank needs to compute the release: its kind (the release's purpose), the tree
being grown (`tree_state`) and the trees the host has finished so far (the model file's
form, `Tree.to_dict`). The answer travels back the same way under `ANSWER_KEY`; a
masked vector travels as an array (`masked_array_record`).

Decoding never trusts the sender: a message that is not what this module writes raises
`ProtocolError`, which the receiving side turns into a refusal naming the peer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from fedsilo.errors import ProtocolError
from fedsilo.privacy.secagg import ConsistencyRequest, MaskedInput, SurvivorSignature, UnmaskRequest, UnmaskShares
from fedsilo.privacy.secagg.messages import encrypted_shares_from_dict, encrypted_shares_to_dict
from fedsilo.privacy.secagg.session import ReleaseRequest, SessionKeys, SessionSetup
from fedsilo.strategies.gbdt.layout import BinLayout
from fedsilo.strategies.gbdt.tree import ABSENT, LEAF, OPEN, SPLIT, Tree
from fedsilo.strategies.secagg.wire import (
    MASKED_ARRAY_KEY,
    masked_array_record,
    payload_bytes,
    read_masked_array,
    read_payload,
)

MESSAGE_TYPE = "query.gbdt"
CALL_KEY = "fedsilo.gbdt.call"
ANSWER_KEY = "fedsilo.gbdt.answer"
METHODS = ("session_keys", "session_share", "session_accept", "session_mask", "session_sign", "session_unmask")


def _keys_to_dict(k: SessionKeys) -> dict[str, Any]:
    return {
        "session_round": k.session_round,
        "node_id": k.node_id,
        "enc": k.enc_public_key,
        "mask": k.mask_public_key,
        "commitments": list(k.seed_commitments),
        "signature": k.signature,
        "credential": k.credential,
    }


def _keys_from_dict(d: Any) -> SessionKeys:
    keys = SessionKeys(
        int(d["session_round"]),
        int(d["node_id"]),
        d["enc"],
        d["mask"],
        tuple(d["commitments"]),
        d["signature"],
        d["credential"],
    )
    if not all(isinstance(b, bytes) for b in (keys.enc_public_key, keys.mask_public_key, *keys.seed_commitments)):
        raise TypeError("session keys must be bytes")
    return keys


# ---------------------------------------------------------------------- trees
def tree_state(tree: Tree) -> dict[str, Any]:
    """A tree being grown (open nodes included), as JSON-ready values."""
    return {
        "depth": tree.depth,
        "features": None if tree.features is None else list(tree.features),
        "state": tree.state.tolist(),
        "group": tree.group.tolist(),
        "threshold": tree.threshold.tolist(),
        "value": tree.value.tolist(),
    }


def tree_from_state(d: Any, layout: BinLayout) -> Tree:
    """The tree of `tree_state`, checked against ``layout`` (a bad one raises ProtocolError)."""
    try:
        features = d["features"]
        tree = Tree(int(d["depth"]), None if features is None else tuple(int(j) for j in features))
        size = tree.state.shape[0]
        state = np.asarray(d["state"], dtype=np.int64)
        group = np.asarray(d["group"], dtype=np.int64)
        threshold = np.asarray(d["threshold"], dtype=np.int64)
        value = np.asarray(d["value"], dtype=np.float64)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"malformed tree in a release request ({exc})") from None
    n_groups = len(layout.groups)
    if any(a.shape != (size,) for a in (state, group, threshold, value)):
        raise ProtocolError(f"a release request's tree of depth {tree.depth} has arrays of the wrong length")
    if not np.isin(state, (ABSENT, OPEN, SPLIT, LEAF)).all() or not np.isfinite(value).all():
        raise ProtocolError("a release request's tree has an unknown node state or a non-finite value")
    splits = state == SPLIT
    if (tree.features is not None and not all(0 <= j < n_groups for j in tree.features)) or not (
        (group[splits] >= 0) & (group[splits] < n_groups) & (threshold[splits] >= 0)
    ).all():
        raise ProtocolError("a release request's tree splits on a feature group outside the job's layout")
    if splits[(size - 1) // 2 :].any():
        raise ProtocolError("a release request's tree splits at its last level")
    tree.state[:], tree.group[:], tree.threshold[:], tree.value[:] = state, group, threshold, value
    return tree


# ---------------------------------------------------------------------- calls (host -> bank)
def call_content(method: str, args: tuple[Any, ...], extra: Mapping[str, Any] | None = None) -> RecordDict:
    """The message content of ``method(*args)``; ``extra``: the mask call's kind, tree and model."""
    if method == "session_keys":
        (setup,) = args
        body: dict[str, Any] = {
            "session_round": setup.session_round,
            "participants": list(setup.participants),
            "round_seed": setup.round_seed,
            "releases": setup.releases,
        }
    elif method == "session_share":
        r, keys = args
        body = {"round": r, "keys": {str(v): _keys_to_dict(k) for v, k in keys.items()}}
    elif method == "session_accept":
        r, received = args
        body = {"round": r, "shares": encrypted_shares_to_dict(received, key_by="src")}
    elif method == "session_mask":
        (q,) = args
        body = {
            "request": {
                "session_round": q.session_round,
                "release": q.release,
                "purpose": q.purpose,
                "participants": list(q.participants),
            },
            **(extra or {}),
        }
    elif method == "session_sign":
        s, r, check = args
        body = {"round": s, "release": r, "check": check.to_dict()}
    elif method == "session_unmask":
        s, r, unmask = args
        body = {"round": s, "release": r, "unmask": unmask.to_dict()}
    else:
        raise ValueError(f"unknown session method {method!r}")
    return RecordDict({CALL_KEY: ConfigRecord({"method": method, "payload": payload_bytes(body)})})


def read_call(content: RecordDict) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """(method, args, body) of a call message; the body keeps the mask call's extras."""
    record = content.config_records.get(CALL_KEY)
    if record is None or record.get("method") not in METHODS:
        raise ProtocolError("a boosting message without a known session call")
    method = str(record["method"])
    body = read_payload(record.get("payload"), f"{method} call")
    try:
        if method == "session_keys":
            args: tuple[Any, ...] = (
                SessionSetup(
                    int(body["session_round"]),
                    tuple(int(v) for v in body["participants"]),
                    body["round_seed"],
                    int(body["releases"]),
                ),
            )
        elif method == "session_share":
            args = (int(body["round"]), {int(v): _keys_from_dict(k) for v, k in body["keys"].items()})
        elif method == "session_accept":
            args = (int(body["round"]), encrypted_shares_from_dict(body["shares"]))
        elif method == "session_mask":
            q = body["request"]
            parts = tuple(int(v) for v in q["participants"])
            args = (ReleaseRequest(int(q["session_round"]), int(q["release"]), str(q["purpose"]), parts),)
        elif method == "session_sign":
            args = (int(body["round"]), int(body["release"]), ConsistencyRequest.from_dict(body["check"]))
        else:
            args = (int(body["round"]), int(body["release"]), UnmaskRequest.from_dict(body["unmask"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"malformed {method} call ({exc.__class__.__name__}: {exc})") from None
    return method, args, body


# ---------------------------------------------------------------------- answers (bank -> host)
def answer_content(method: str, answer: Any) -> RecordDict:
    content = RecordDict()
    if method == "session_keys":
        body: Any = _keys_to_dict(answer)
    elif method == "session_share":
        body = encrypted_shares_to_dict(answer, key_by="dst")
    elif method == "session_accept":
        body = {str(v): why for v, why in answer.items()}
    elif method == "session_mask":
        body = {k: v for k, v in answer.to_dict().items() if k != "masked"}
        content.array_records[MASKED_ARRAY_KEY] = masked_array_record(answer.masked)
    else:  # sign, unmask
        body = answer.to_dict()
    content.config_records[ANSWER_KEY] = ConfigRecord({"method": method, "payload": payload_bytes(body)})
    return content


_DECODE: dict[str, Callable[[Any], Any]] = {
    "session_keys": _keys_from_dict,
    "session_share": encrypted_shares_from_dict,
    "session_accept": lambda body: {int(v): str(why) for v, why in body.items()},
    "session_sign": SurvivorSignature.from_dict,
    "session_unmask": UnmaskShares.from_dict,
}


def read_answer(method: str, content: RecordDict) -> Any:
    """A bank's answer to ``method``; anything malformed raises ProtocolError."""
    record = content.config_records.get(ANSWER_KEY)
    if record is None or record.get("method") != method:
        raise ProtocolError(f"the reply to {method} is not its answer")
    body = read_payload(record.get("payload"), f"{method} answer")
    try:
        if method == "session_mask":
            return MaskedInput.from_dict({**body, "masked": read_masked_array(content)})
        return _DECODE[method](body)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"malformed {method} answer ({exc.__class__.__name__}: {exc})") from None
