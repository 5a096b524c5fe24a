"""Packed content: a message's whole RecordDict travels as one Flower record.

Flower 1.42 stores a message as a tree of objects (the message, its RecordDict, every
record, and per array an `Array` and its chunks), and the Deployment Engine moves
every object with its own HTTP request at every hop (ServerApp -> SuperLink ->
SuperNode -> ClientApp, and back for the reply), plus a retry whenever an object is
asked for before it arrived. A SecAgg+ `mask` message (model, config, layout, stage
record) was 8 objects, its reply 7.

`pack` replaces a RecordDict by one holding a single ConfigRecord (`PACKED_KEY`) whose
`objects` value is the RecordDict's own object tree as Flower deflates it (each
object's id and bytes, one after the other) and whose `root` is the RecordDict's
object id: every message then travels as three objects (message, RecordDict, that
record), the fewest Flower allows. `unpack` checks every object's id against the
SHA-256 of its bytes and Flower's content rules, inflates the tree with Flower's own
`inflate_object_from_contents` and returns the identical RecordDict (same records,
same bytes, same object ids); anything else raises `ProtocolError`.

The price: objects that several messages share (the model sent to every peer) are no
longer pushed once for all of them; each message carries its own copy. For
cross-silo jobs (a few peers, models of kilobytes to a few megabytes) a request costs
more than those bytes.

The job host packs what it sends to deployed peers (`fedsilo.peers.server.polling_grid.PromptGrid`)
and unpacks their replies; the ClientApp's `packed_content_mod` unpacks what it
receives and packs its reply only if what it received was packed, so a simulation
(never packed) sees no difference.
"""

from __future__ import annotations

import struct

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from fedsilo.errors import ProtocolError
from fedsilo.peers.flower_compat.messages import ErrorCode
from fedsilo.peers.flower_compat.objects import OBJECT_ID_CHARS, check_content, deflated_tree, inflate, object_id

PACKED_KEY = "fedsilo.packed"
_ID_BYTES = OBJECT_ID_CHARS  # ASCII
_LENGTH = struct.Struct(">Q")


def is_packed(content: RecordDict) -> bool:
    """True if `content` is what `pack` makes: one ConfigRecord under `PACKED_KEY`."""
    return list(content.keys()) == [PACKED_KEY] and isinstance(content[PACKED_KEY], ConfigRecord)


def pack(content: RecordDict) -> RecordDict:
    """`content` as one record holding its deflated object tree (see the module docstring)."""
    frames = []
    for oid, body in deflated_tree(content).items():
        frames += [oid.encode("ascii"), _LENGTH.pack(len(body)), body]
    return RecordDict({PACKED_KEY: ConfigRecord({"root": content.object_id, "objects": b"".join(frames)})})


def _contents(blob: bytes) -> dict[str, bytes]:
    contents, offset = {}, 0
    while offset < len(blob):
        header_end = offset + _ID_BYTES + _LENGTH.size
        if header_end > len(blob):
            raise ProtocolError("packed content is truncated")
        oid = blob[offset : offset + _ID_BYTES].decode("ascii", errors="replace")
        (size,) = _LENGTH.unpack_from(blob, offset + _ID_BYTES)
        body = blob[header_end : header_end + size]
        if len(body) != size:
            raise ProtocolError("packed content is truncated")
        if object_id(body) != oid:
            raise ProtocolError(f"packed object {oid[:16]}… does not match its id")
        contents[oid] = body
        offset = header_end + size
    return contents


def unpack(content: RecordDict) -> RecordDict:
    """The RecordDict `pack` was given; ProtocolError if the packed tree is not a valid RecordDict."""
    if not is_packed(content):
        return content
    record = content[PACKED_KEY]
    root, blob = record.get("root"), record.get("objects")
    if not isinstance(root, str) or not isinstance(blob, bytes):
        raise ProtocolError("packed content lacks its root id or its objects")
    contents = _contents(blob)
    try:
        for body in contents.values():
            check_content(body)
        restored = inflate(root, contents)
    except ProtocolError:
        raise
    except Exception as error:  # Flower raises KeyError/ValueError/... for a tree it cannot inflate
        raise ProtocolError(
            f"packed content is not a valid object tree ({error.__class__.__name__}: {error})"
        ) from None
    if not isinstance(restored, RecordDict):
        raise ProtocolError(f"packed content holds a {type(restored).__name__}, not a RecordDict")
    if contents:
        raise ProtocolError(f"packed content holds {len(contents)} object(s) outside its tree")
    return restored


def pack_message(message: Message) -> Message:
    """`message` with its content packed (the same object for an error message)."""
    if message.has_error() or not message.has_content():
        return message
    message.content = pack(message.content)
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
        return Message(
            metadata=message.metadata,
            error=Error(code=ErrorCode.MESSAGE_UNAVAILABLE, reason=f"malformed packed reply: {error}"),
        )


def packed_content_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Client mod: unpack a packed message for the app; pack the reply to a packed message."""
    if msg.has_error() or not is_packed(msg.content):
        return call_next(msg, context)
    reply = call_next(unpack_message(msg), context)
    return pack_message(reply)
