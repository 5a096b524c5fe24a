"""What Flower keeps private about a message: its id once it is stored, error codes, the content-free copy.

`Metadata.message_id` is a read-only property over `metadata.__dict__["_message_id"]`
(Flower 1.42 has no setter): Flower's own SuperNode, SuperLink and grids write that
slot directly when a message is stored, and so must anything that stores a message
the way they do (the in-process ClientApp, `fedsilo.peers.flower_compat.in_process_clientapp`).
"""

from __future__ import annotations

from flwr.app import Message
from flwr.app.message import remove_content_from_message
from flwr.common.constant import ErrorCode

__all__ = ["ErrorCode", "remove_content_from_message", "set_message_id"]


def set_message_id(message: Message, message_id: str) -> None:
    """Give `message` the id Flower gives a stored message (the id is not part of its deflated bytes)."""
    message.metadata.__dict__["_message_id"] = message_id
