"""The split-learning messages as Flower RecordDicts, generically over the message types of :mod:`.messages`.

Every message of :mod:`fedsilo.peers.vertical.messages` is a frozen dataclass whose
fields are arrays (``np.ndarray``), integers, booleans, floats or text. A message is
stored under a *slot* name of a RecordDict as two records:

- ``<slot>.arrays`` (ArrayRecord): each array field as a Flower ``Array`` (numpy
  serialization: dtype, shape, values; no names travel but the field's);
- ``<slot>.fields`` (ConfigRecord): ``type`` (the message class's name) and every scalar
  field by its name.

One RecordDict can carry several messages (the relay sends a feature party the
gradients of one batch and the request of the next in one message). The codec knows
the message types by looking at the module: every public frozen dataclass of
:mod:`.messages` with a ``to_bytes``, so a message type added there is carried without
touching this file. Decoding refuses (ProtocolError) an unknown type, a missing or extra
field and a field of the wrong kind; the content (shapes, finiteness, positions) is
checked by the receiving party, as for the byte form.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from functools import cache

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedsilo.errors import ProtocolError
from fedsilo.peers.vertical import messages

__all__ = ["decode", "decode_all", "encode", "message_types", "record_bytes", "slots"]

_SCALARS = (bool, int, float, str)


@cache
def message_types() -> dict[str, type]:
    """Every message type of :mod:`.messages` by class name: its public frozen dataclasses with a byte form."""
    found = {}
    for name, cls in inspect.getmembers(messages, inspect.isclass):
        if name.startswith("_") or cls.__module__ != messages.__name__ or not dataclasses.is_dataclass(cls):
            continue
        if cls.__dataclass_params__.frozen and hasattr(cls, "to_bytes"):
            found[name] = cls
    return found


@cache
def _fields(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    out = {}
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if kind is not np.ndarray and kind not in _SCALARS:
            raise ProtocolError(f"message type {cls.__name__}: field {field.name} of type {kind} has no record form")
        out[field.name] = kind
    return out


def encode(message: object, slot: str, into: RecordDict | None = None) -> RecordDict:
    """``message`` stored under ``slot`` of ``into`` (a new RecordDict by default); returns the RecordDict."""
    cls = type(message)
    if message_types().get(cls.__name__) is not cls:
        raise ProtocolError(f"{cls.__name__} is not a message of fedsilo.peers.vertical.messages")
    content = RecordDict() if into is None else into
    arrays, fields = ArrayRecord(), ConfigRecord({"type": cls.__name__})
    for name, kind in _fields(cls).items():
        value = getattr(message, name)
        if kind is np.ndarray:
            arrays[name] = Array(np.ascontiguousarray(value))
        else:
            fields[name] = kind(value)
    content[f"{slot}.arrays"] = arrays
    content[f"{slot}.fields"] = fields
    return content


def slots(content: RecordDict) -> list[str]:
    """The slot names of the messages ``content`` carries."""
    return sorted(key.removesuffix(".fields") for key in content if key.endswith(".fields"))


def decode(content: RecordDict, slot: str, expected: type | None = None) -> object:
    """The message stored under ``slot``; ProtocolError if it is absent, malformed or not an ``expected``."""
    fields_key, arrays_key = f"{slot}.fields", f"{slot}.arrays"
    if fields_key not in content or arrays_key not in content:
        raise ProtocolError(f"the message has no {slot!r}: refused")
    fields, arrays = content[fields_key], content[arrays_key]
    if not isinstance(fields, ConfigRecord) or not isinstance(arrays, ArrayRecord):
        raise ProtocolError(f"{slot!r} is not a (ConfigRecord, ArrayRecord) pair: refused")
    cls = message_types().get(str(fields.get("type")))
    if cls is None or (expected is not None and cls is not expected):
        want = expected.__name__ if expected is not None else "a vertical message"
        raise ProtocolError(f"{slot!r} holds a {fields.get('type')!r}, not {want}: refused")
    kinds = _fields(cls)
    given = {k for k in fields if k != "type"} | set(arrays)
    if given != set(kinds):
        raise ProtocolError(f"a {cls.__name__} has fields {sorted(kinds)}, {slot!r} has {sorted(given)}: refused")
    values = {}
    for name, kind in kinds.items():
        if kind is np.ndarray:
            if name not in arrays:
                raise ProtocolError(f"{cls.__name__}.{name} must be an array: refused")
            values[name] = arrays[name].numpy()
        else:
            value = fields.get(name)
            if name not in fields or type(value) is not kind and not (kind is float and type(value) is int):
                raise ProtocolError(f"{cls.__name__}.{name} must be {kind.__name__}, got {type(value).__name__}")
            values[name] = kind(value)
    return cls(**values)


def decode_all(content: RecordDict) -> dict[str, object]:
    """Every message ``content`` carries, by slot."""
    return {slot: decode(content, slot) for slot in slots(content)}


def record_bytes(content: RecordDict) -> int:
    """The bytes of the arrays and scalars ``content`` carries (what a transport moves, framing aside)."""
    total = 0
    for record in content.values():
        if isinstance(record, ArrayRecord):
            total += sum(len(a.data) for a in record.values())
        elif isinstance(record, ConfigRecord):
            total += sum(len(str(k)) + len(v if isinstance(v, bytes) else str(v)) for k, v in record.items())
    return total
