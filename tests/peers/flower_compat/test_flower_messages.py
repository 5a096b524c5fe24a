"""Contract of `fedsilo.peers.flower_compat.messages` with Flower's `Message` and `Metadata`."""

from flwr.app import ConfigRecord, Message, Metadata, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedsilo.peers.flower_compat.messages import ErrorCode, remove_content_from_message, set_message_id


def _message() -> Message:
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1  # what a Message needs
    return Message(RecordDict({"c": ConfigRecord({"x": 1})}), dst_node_id=5, message_type="train")


def test_metadata_has_still_no_public_setter_for_the_message_id():
    """When this fails, Flower offers a setter: use it in `set_message_id` and delete the `__dict__` write."""
    assert Metadata.message_id.fset is None


def test_set_message_id_is_what_the_metadata_reports():
    message = _message()
    assert message.metadata.message_id == ""
    set_message_id(message, message.object_id)
    assert message.metadata.message_id == message.object_id


def test_the_message_id_is_not_part_of_the_deflated_message():
    message = _message()
    before = message.object_id
    set_message_id(message, "x" * 64)
    assert message.object_id == before


def test_a_content_free_copy_has_an_empty_record_dict_and_the_same_metadata():
    message = _message()
    set_message_id(message, message.object_id)
    bare = remove_content_from_message(message)
    assert len(bare.content) == 0 and bare.metadata.message_id == message.metadata.message_id
    assert len(message.content) == 1  # the original keeps its content


def test_the_error_codes_fedsilo_sends_exist():
    codes = {ErrorCode.LOAD_CLIENT_APP_EXCEPTION, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, ErrorCode.MESSAGE_UNAVAILABLE}
    assert len(codes) == 3 and all(isinstance(code, int) for code in codes)
