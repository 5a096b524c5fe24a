"""A small message's objects carried inside its PushMessages and PullMessages, instead of one request each.

Flower 1.42 moves a message as a content-less message proto plus its object tree, then
one PushObject (or PullObject) request per object of the tree. A packed fedsilo message
(`fedsilo.peers.packed_content`) is three objects, so every hop was four or five HTTPS
requests, and one deployed exchange (the ServerApp's message to a node, the node's
reply) about eighteen, each signed, checked, routed and answered. Profiled on the 2-core
host of `bench/deployed_vertical.py --scheme split` (/proc CPU times over a deployed split
job's steady batches), the job's processes spent about 120 ms of CPU per exchange where the
simulation spends 17 ms of wall time.

Here the objects travel in the message proto's `content` field, which Flower's object
protocol leaves empty: one RecordDict holding one ConfigRecord (`CARRIER`) with the
objects' ids and deflated bytes, every object of the tree, the root included (the
"carrier"). The receiving end keeps an object only if it belongs to the message's
tree and its bytes hash to its id (Flower's object id, SHA-256), then empties the field,
so Flower's own code sees the content-less message it expects:

- pushing (the ServerApp's `HttpGrid`, a SuperNode's loop): `carrying` builds the
  message proto's carrier when the whole tree is at most `INLINE_LIMIT` bytes;
- the SuperLink's push handlers (Fleet and Runtime API, `carried_push`): take the carrier
  out of the request before Flower's handler runs, then store the carried objects the
  handler asked for (`LinkState.store_object`, which checks the push session and the
  hash again) and leave only the others in `objects_to_push`, which the pusher then
  pushes one by one as before;
- the SuperLink's pull handlers (`carried_pull`): attach a carrier to each message whose
  objects are all stored, at most `INLINE_LIMIT` bytes, and then let go of those objects,
  as the message's receipt (`ConfirmMessageReceived`) would, which the puller then skips
  (`Arrived.whole`): Flower's own semantics, since a pulled message is never handed out again;
- pulling (`FleetHttpClient`, `RuntimeHttpClient`): `keep_arrived` takes each carrier out
  of the response into this process's `ARRIVED`; Flower's `pull_objects` then
  takes what it needs from there first (`serve_arrived_first`) and asks the SuperLink
  only for the rest.

Every end falls back to Flower's path for what it cannot use: a bigger message, an
object not stored yet, a carrier that fails a check. No end ever needs the other to
carry. Nothing here widens what anyone receives: a SuperNode is carried the objects of
the messages addressed to it, which it would pull anyway, and the SuperLink checks
every carried object against the push session as it checks a pushed one. A job's
SuperLink only ever talks to fedsilo's SuperNodes and ServerApp (the job host registers
their keys), so a stock Flower SuperNode, which would read a carrier as content, never
receives one. Flower has no option for any of it (a batch object API would replace it).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.message import make_message
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto

from fedsilo.peers.flower_compat.objects import deflated_tree, iterate_object_tree, object_id

CARRIER = "fedsilo.inline"  # the carrier's one record
INLINE_LIMIT = 1 << 20  # bytes of deflated objects a message may carry; bigger ones take Flower's path

__all__ = [
    "ARRIVED",
    "CARRIER",
    "INLINE_LIMIT",
    "carried_pull",
    "carried_push",
    "carrier",
    "carrying",
    "install_pulling",
    "is_carrier",
    "keep_arrived",
    "serve_arrived_first",
    "take_carrier",
]


def carrier(objects: dict[str, bytes]) -> RecordDict:
    """The RecordDict a message proto's `content` carries `objects` (id -> deflated bytes) in."""
    return RecordDict({CARRIER: ConfigRecord({"ids": list(objects), "objects": list(objects.values())})})


def _within_limit(objects: dict[str, bytes]) -> bool:
    return sum(len(content) for content in objects.values()) <= INLINE_LIMIT


def carrying(message: Message, objects: dict[str, bytes] | None = None) -> Message | None:
    """`message` without its content and with its tree's objects as a carrier, or None if it should not carry.

    `objects`: the tree's deflated objects when the caller has them (a SuperNode's object
    store); default: deflated from `message` itself. None (not carried) for an error
    message, or a tree above `INLINE_LIMIT`.
    """
    if message.has_error():
        return None
    objects = deflated_tree(message) if objects is None else objects
    if not _within_limit(objects):
        return None
    return make_message(metadata=message.metadata, content=carrier(objects))


def is_carrier(content: RecordDict) -> bool:
    return list(content.keys()) == [CARRIER] and isinstance(content[CARRIER], ConfigRecord)


def take_carrier(message_proto: Any, object_tree: Any) -> dict[str, bytes]:
    """The objects `message_proto` carries that belong to `object_tree` and hash to their ids; empties its `content`.

    Anything else in the field (no carrier, a malformed one, objects outside the tree or
    with the wrong bytes) is dropped: those objects then take Flower's path.
    """
    if not message_proto.HasField("content"):
        return {}
    try:
        content = recorddict_from_proto(message_proto.content)
        record = content[CARRIER] if is_carrier(content) else None
        ids, blobs = (record["ids"], record["objects"]) if record is not None else ([], [])
    except Exception:  # pylint: disable=broad-exception-caught  # a malformed field is not a carrier
        ids, blobs = [], []
    finally:  # left present and empty, as Flower sends a message whose objects travel apart
        message_proto.ClearField("content")
        message_proto.content.SetInParent()
    if not isinstance(ids, list) or not isinstance(blobs, list) or len(ids) != len(blobs):
        return {}
    in_tree = {tree.object_id for tree in iterate_object_tree(object_tree)}
    return {
        oid: blob
        for oid, blob in zip(ids, blobs, strict=True)
        if isinstance(oid, str) and isinstance(blob, bytes) and oid in in_tree and object_id(blob) == oid
    }


def _request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return kwargs["request"] if "request" in kwargs else args[0]


def _state(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return kwargs["state"] if "state" in kwargs else args[1]


def carried_push(handler: Callable[..., Any], record_traffic: bool = False) -> Callable[..., Any]:
    """A SuperLink push handler (Fleet or Runtime `push_messages`) that stores the objects the messages carry.

    `record_traffic`: count stored objects as received bytes, as the Fleet API's
    `push_object` handler does for a pushed object.
    """

    @functools.wraps(handler)
    def push(*args: Any, **kwargs: Any) -> Any:
        request = _request(args, kwargs)
        carried: dict[str, tuple[int, bytes]] = {}
        for proto, tree in zip(request.messages_list, request.message_object_trees, strict=False):
            run_id = proto.metadata.run_id
            carried.update((oid, (run_id, blob)) for oid, blob in take_carrier(proto, tree).items())
        response = handler(*args, **kwargs)
        if not carried or not response.objects_to_push:
            return response
        state = _state(args, kwargs)
        left = []
        for oid in response.objects_to_push:
            run_id, blob = carried.get(oid, (0, b""))
            if blob and state.store_object(run_id, response.session_id, oid, blob):
                if record_traffic:
                    state.store_traffic(run_id, bytes_sent=0, bytes_recv=len(blob))
            else:
                left.append(oid)
        del response.objects_to_push[:]
        response.objects_to_push.extend(left)
        return response

    return push


def carried_pull(handler: Callable[..., Any], record_traffic: bool = False) -> Callable[..., Any]:
    """A SuperLink pull handler (Fleet or Runtime `pull_messages`) that attaches each message's stored objects.

    A message is carried only if every object of its tree is stored (available) and they
    add up to at most `INLINE_LIMIT` bytes; otherwise it goes as Flower sends it.
    `record_traffic`: count carried objects as sent bytes, as the Fleet API's
    `pull_object` handler does for a pulled object.
    """

    @functools.wraps(handler)
    def pull(*args: Any, **kwargs: Any) -> Any:
        response = handler(*args, **kwargs)
        state = _state(args, kwargs)
        for proto, tree in zip(response.messages_list, response.message_object_trees, strict=False):
            run_id = proto.metadata.run_id
            objects: dict[str, bytes] = {}
            for node in iterate_object_tree(tree):
                content = state.get_object(run_id, node.object_id)
                if not content:
                    break
                objects[node.object_id] = content
            else:
                if _within_limit(objects):
                    proto.content.CopyFrom(recorddict_to_proto(carrier(objects)))
                    if record_traffic:
                        state.store_traffic(run_id, bytes_sent=sum(map(len, objects.values())), bytes_recv=0)
                    state.object_store.delete(tree.object_id)  # what the receipt would do: they left with the message
        return response

    return pull


class Arrived:
    """The objects the last pulled messages carried, for `pull_objects` to take (one process's pulls).

    `whole` also names the messages whose every object was carried: the SuperLink let go of
    their objects when it sent them, so their receipt (`ConfirmMessageReceived`) need not be sent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, bytes] = {}
        self._whole: frozenset[str] = frozenset()

    def replace(self, objects: dict[str, bytes], whole: Iterable[str] = ()) -> None:
        """Keep `objects` instead of what the previous pull left (its messages were handled before this pull)."""
        with self._lock:
            self._objects, self._whole = objects, frozenset(whole)

    def whole(self, message_id: str) -> bool:
        with self._lock:
            return message_id in self._whole

    def take(self, ids: Iterable[str]) -> dict[str, bytes]:
        """The carried objects among `ids`; they stay for the other messages of the same pull (an object the
        trees of two replies share came once, and the SuperLink may have let go of it)."""
        with self._lock:
            return {oid: self._objects[oid] for oid in ids if oid in self._objects}


ARRIVED = Arrived()


def keep_arrived(pull_messages: Callable[..., Any]) -> Callable[..., Any]:
    """A client's `PullMessages` call that takes the carriers out of its response into `ARRIVED`."""

    @functools.wraps(pull_messages)
    def pull(*args: Any, **kwargs: Any) -> Any:
        response = pull_messages(*args, **kwargs)
        objects: dict[str, bytes] = {}
        whole = []
        for proto, tree in zip(response.messages_list, response.message_object_trees, strict=False):
            carried = take_carrier(proto, tree)
            if carried and all(node.object_id in carried for node in iterate_object_tree(tree)):
                whole.append(tree.object_id)
            objects.update(carried)
        ARRIVED.replace(objects, whole)
        return response

    pull.fedsilo_keeps_arrived = True  # type: ignore[attr-defined]  # installed once per class
    return pull


def serve_arrived_first(pull_objects: Callable[..., dict[str, bytes]]) -> Callable[..., dict[str, bytes]]:
    """Flower's `pull_objects(object_ids, pull_object_fn, ...)`, taking carried objects from `ARRIVED` first."""

    @functools.wraps(pull_objects)
    def pull(object_ids: list[str], pull_object_fn: Callable[[str], bytes], **kwargs: Any) -> dict[str, bytes]:
        object_ids = list(object_ids)
        found = ARRIVED.take(object_ids)
        rest = [oid for oid in object_ids if oid not in found]
        if rest:
            found.update(pull_objects(rest, pull_object_fn, **kwargs))
        return found

    pull.fedsilo_serves_arrived = True  # type: ignore[attr-defined]  # installed once per module
    return pull


def install_pulling(module: Any, client_class: type) -> None:
    """In this process: `client_class.PullMessages` keeps carriers, `module.pull_objects` serves them (idempotent)."""
    if not getattr(module.pull_objects, "fedsilo_serves_arrived", False):
        module.pull_objects = serve_arrived_first(module.pull_objects)
    if not getattr(client_class.PullMessages, "fedsilo_keeps_arrived", False):
        client_class.PullMessages = keep_arrived(client_class.PullMessages)
