"""How SecAgg+ stage messages travel inside Flower messages.

Every stage is a Flower `train` message carrying a ConfigRecord under
`SECAGG_CONFIG_KEY` with the stage name, the server round and the stage payload as
JSON bytes (ints of any size, bytes as hex: Flower's config records hold at most
64-bit signed ints, and node ids are unsigned 64-bit). The masked vector itself
travels as a uint64 array in an ArrayRecord under `MASKED_ARRAY_KEY`.

Decoding never trusts the sender: a payload that is not the JSON this module writes
raises `ProtocolError`, which the receiving side turns into a refusal naming the peer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedsilo.errors import ProtocolError

SECAGG_CONFIG_KEY = "fedsilo.secagg"
MASKED_ARRAY_KEY = "fedsilo.secagg.masked"
STAGES = ("advertise", "share", "mask", "check", "unmask")
_BYTES_TAG = "$hex"


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {_BYTES_TAG: value.hex()}
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_BYTES_TAG}:
            try:
                return bytes.fromhex(value[_BYTES_TAG])
            except (TypeError, ValueError):
                raise ProtocolError("malformed secure-aggregation payload: bad hex bytes") from None
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def payload_bytes(payload: Any) -> bytes:
    """``payload`` as this module's JSON (bytes as hex, ints of any size)."""
    return json.dumps(_to_json(payload), separators=(",", ":")).encode()


def read_payload(body: object, what: str) -> Any:
    """The value `payload_bytes` wrote; anything else raises `ProtocolError` naming ``what``."""
    if not isinstance(body, bytes):
        raise ProtocolError(f"malformed {what}: no payload bytes")
    try:
        return _from_json(json.loads(body))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ProtocolError(f"malformed {what}: the payload is not JSON") from None


def stage_record(stage: str, server_round: int, payload: Mapping[str, Any]) -> ConfigRecord:
    """The ConfigRecord that carries one stage's payload."""
    if stage not in STAGES:
        raise ValueError(f"unknown secure-aggregation stage {stage!r}")
    body = json.dumps(_to_json(payload), separators=(",", ":")).encode()
    return ConfigRecord({"stage": stage, "round": int(server_round), "payload": body})


def read_stage(content: RecordDict) -> tuple[str, int, dict[str, Any]]:
    """(stage, server round, payload) of a message's secure-aggregation record."""
    record = content.config_records.get(SECAGG_CONFIG_KEY)
    if record is None:
        raise ProtocolError("message carries no secure-aggregation record")
    stage, server_round, body = record.get("stage"), record.get("round"), record.get("payload")
    if stage not in STAGES or not isinstance(server_round, int) or not isinstance(body, bytes):
        raise ProtocolError(f"malformed secure-aggregation record (stage {stage!r}, round {server_round!r})")
    try:
        payload = _from_json(json.loads(body))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError(f"malformed secure-aggregation payload at stage {stage}") from None
    if not isinstance(payload, dict):
        raise ProtocolError(f"malformed secure-aggregation payload at stage {stage}")
    return stage, server_round, payload


def masked_array_record(vector: np.ndarray) -> ArrayRecord:
    """The masked vector, as uint32 when every value fits (lossless, half the bytes), else uint64."""
    fits = vector.size > 0 and int(vector.max()) < 1 << 32
    wire = vector.astype(np.uint32) if fits else np.ascontiguousarray(vector)
    return ArrayRecord({"masked": Array(wire)})


def read_masked_array(content: RecordDict) -> np.ndarray:
    """The masked vector, widened to uint64; any other dtype is left for the protocol to refuse."""
    record = content.array_records.get(MASKED_ARRAY_KEY)
    if record is None or "masked" not in record:
        raise ProtocolError("masked-input reply carries no masked vector")
    vector = record["masked"].numpy()
    return vector.astype(np.uint64) if vector.dtype == np.uint32 else vector


def flatten(arrays: ArrayRecord) -> np.ndarray:
    """All arrays of a record, in record order, as one float64 vector."""
    return np.concatenate([arrays[name].numpy().astype(np.float64, copy=False).ravel() for name in arrays.keys()])


def unflatten(vector: np.ndarray, template: ArrayRecord) -> ArrayRecord:
    """Cut `vector` back into arrays with the names, shapes and dtypes of `template`."""
    out, offset = {}, 0
    for name in template.keys():
        like = template[name].numpy()
        size = like.size
        out[name] = Array(vector[offset : offset + size].reshape(like.shape).astype(like.dtype))
        offset += size
    if offset != vector.size:
        raise ProtocolError(f"aggregate has {vector.size} values, the model has {offset}")
    return ArrayRecord(out)
