"""Flower's object tree (`flwr.supercore.inflatable`): object ids, deflated bytes, inflation.

Flower stores and moves a message as a tree of objects (the message, its RecordDict,
every record, per array an `Array` and its chunks), each named by the SHA-256 of its
deflated bytes. `fedsilo.peers.packed_content` ships a RecordDict's whole tree inside one
record and rebuilds it at the other end; the in-process ClientApp reads a stored message's
tree and stores its reply's. Flower has no public API for either: these are the functions
its own Runtime API handlers and `flwr-clientapp` call.
"""

from __future__ import annotations

from flwr.supercore.inflatable.inflatable_object import (
    InflatableObject,
    UnexpectedObjectContentError,
    get_all_nested_objects,
    get_object_id,
    get_object_tree,
    iterate_object_tree,
    no_object_id_recompute,
)
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents, validate_object_content

OBJECT_ID_CHARS = 64  # a Flower object id: SHA-256 of the deflated bytes, in hex

__all__ = [
    "OBJECT_ID_CHARS",
    "InflatableObject",
    "UnexpectedObjectContentError",
    "check_content",
    "deflated_tree",
    "get_all_nested_objects",
    "get_object_tree",
    "inflate",
    "iterate_object_tree",
    "no_object_id_recompute",
    "object_id",
]


def deflated_tree(root: InflatableObject) -> dict[str, bytes]:
    """Every object of `root`'s tree (root included) by id, as deflated bytes, children before parents."""
    return {object_id: obj.deflate() for object_id, obj in get_all_nested_objects(root).items()}


def object_id(content: bytes) -> str:
    """The id Flower gives an object whose deflated bytes are `content`."""
    return get_object_id(content)


def check_content(content: bytes) -> None:
    """Raise Flower's UnexpectedObjectContentError unless `content` is deflated bytes it accepts (head, type, body)."""
    validate_object_content(content)


def inflate(root_id: str, contents: dict[str, bytes]) -> InflatableObject:
    """The object `root_id` rebuilt from `contents` (id -> deflated bytes) as Flower rebuilds a message.

    Flower takes each object it uses out of `contents`: what is left afterwards lies
    outside the tree. Raises what Flower raises (KeyError, ValueError, ...) for a tree it
    cannot rebuild.
    """
    return inflate_object_from_contents(root_id, contents)
