"""Packed ArrayRecords: a message's arrays travel as one Flower object, not one per array.

Flower 1.41 stores every `Array` of a message as its own object, plus one chunk
object per array, and the Deployment Engine moves each object with its own HTTP
request at every hop (ServerApp -> SuperLink -> SuperNode -> ClientApp, and back for
the reply). A model of k layers therefore costs about 2k requests per hop and per
peer. `pack` replaces each ArrayRecord of more than one array by an ArrayRecord of
one `uint8` array holding the arrays' serialized bytes one after the other, and adds
a ConfigRecord (`PACKED_PREFIX` + the record's name) stating the layout: names,
dtypes, shapes, serialization types and byte lengths, in order. `unpack` rebuilds the
identical Arrays (the same bytes, so the same values and the same object ids) and
drops the layout records.

Nothing else in the message changes; a message with no ArrayRecord of two or more
arrays is returned as it is. The job host packs what it sends to deployed peers
(`peers.server.polling_grid.PromptGrid`) and unpacks their replies; the ClientApp's
`packed_arrays_mod` unpacks what it receives and packs its reply only if what it
received was packed, so a simulation (never packed) sees no difference.
"""

from __future__ import annotations

import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from privacy.errors import ProtocolError

PACKED_PREFIX = "fedsilo.packed."
PACKED_ARRAY_KEY = "packed"


def is_packed(content: RecordDict) -> bool:
    """True if `content` holds a packed ArrayRecord (`pack` was applied and found arrays to pack)."""
    return any(name.startswith(PACKED_PREFIX) for name in content.config_records)


def pack(content: RecordDict) -> RecordDict:
    """`content` with each ArrayRecord of two or more arrays packed into one array (see the module docstring)."""
    if not any(isinstance(r, ArrayRecord) and len(r) > 1 for r in content.values()):
        return content
    out = RecordDict()
    for name, record in content.items():
        if not isinstance(record, ArrayRecord) or len(record) < 2:
            out[name] = record
            continue
        arrays = list(record.items())
        blob = b"".join(array.data for _, array in arrays)
        out[name] = ArrayRecord({PACKED_ARRAY_KEY: Array(np.frombuffer(blob, dtype=np.uint8))})
        out[PACKED_PREFIX + name] = ConfigRecord({
            "names": [key for key, _ in arrays],
            "dtypes": [array.dtype for _, array in arrays],
            "stypes": [array.stype for _, array in arrays],
            "shapes": json.dumps([list(array.shape) for _, array in arrays]),
            "sizes": [len(array.data) for _, array in arrays],
        })
    return out


def unpack(content: RecordDict) -> RecordDict:
    """The RecordDict `pack` was given; ProtocolError if a layout does not match its packed array."""
    if not is_packed(content):
        return content
    out = RecordDict()
    layouts = {name[len(PACKED_PREFIX):]: record for name, record in content.config_records.items()
               if name.startswith(PACKED_PREFIX)}
    for name, record in content.items():
        if name.startswith(PACKED_PREFIX):
            continue
        if name not in layouts:
            out[name] = record
            continue
        out[name] = _unpack_record(name, record, layouts[name])
    return out


def _unpack_record(name: str, record: object, layout: ConfigRecord) -> ArrayRecord:
    if not isinstance(record, ArrayRecord) or list(record.keys()) != [PACKED_ARRAY_KEY]:
        raise ProtocolError(f"packed record {name!r} is not one packed array")
    try:
        names, dtypes, stypes = list(layout["names"]), list(layout["dtypes"]), list(layout["stypes"])
        shapes, sizes = json.loads(str(layout["shapes"])), [int(s) for s in layout["sizes"]]
    except (KeyError, TypeError, ValueError) as error:
        raise ProtocolError(f"packed record {name!r} has a malformed layout ({error})") from None
    blob = record[PACKED_ARRAY_KEY].numpy().tobytes()
    if not len(names) == len(dtypes) == len(stypes) == len(shapes) == len(sizes) or sum(sizes) != len(blob):
        raise ProtocolError(f"packed record {name!r}: its layout does not match its {len(blob)} bytes")
    arrays, offset = {}, 0
    for key, dtype, stype, shape, size in zip(names, dtypes, stypes, shapes, sizes):
        arrays[str(key)] = Array(dtype=str(dtype), shape=tuple(int(d) for d in shape), stype=str(stype),
                                 data=blob[offset:offset + size])
        offset += size
    return ArrayRecord(arrays)


def pack_message(message: Message) -> Message:
    """`message` with its content packed (the same object if there is nothing to pack)."""
    if message.has_error() or not message.has_content():
        return message
    packed = pack(message.content)
    if packed is message.content:
        return message
    message.content = packed
    return message


def unpack_message(message: Message) -> Message:
    """`message` with its content unpacked (the same object if it was not packed)."""
    if not message.has_error() and message.has_content() and is_packed(message.content):
        message.content = unpack(message.content)
    return message


def unpack_reply(message: Message) -> Message:
    """`unpack_message` for a peer's reply: a malformed packed reply becomes an error reply, never an exception.

    The strategy then treats that peer as one that failed to answer (a dropout).
    """
    try:
        return unpack_message(message)
    except ProtocolError as error:
        return Message(metadata=message.metadata,
                       error=Error(code=ErrorCode.MESSAGE_UNAVAILABLE, reason=f"malformed packed reply: {error}"))


def packed_arrays_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Client mod: unpack a packed message for the app; pack the reply to a packed message."""
    if msg.has_error() or not is_packed(msg.content):
        return call_next(msg, context)
    reply = call_next(unpack_message(msg), context)
    return pack_message(reply)
