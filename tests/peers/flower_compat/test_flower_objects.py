"""Contract of `fedsilo.peers.flower_compat.objects` with Flower's object tree (`flwr.supercore.inflatable`)."""

import hashlib

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedsilo.peers.flower_compat.objects import (
    OBJECT_ID_CHARS,
    UnexpectedObjectContentError,
    check_content,
    deflated_tree,
    inflate,
    object_id,
)


def _content() -> RecordDict:
    return RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.arange(6, dtype=np.float32).reshape(2, 3))}),
            "config": ConfigRecord({"stage": "mask", "blob": b"\x00\x01"}),
        }
    )


def test_an_object_id_is_the_sha256_of_its_deflated_bytes_in_hex():
    tree = deflated_tree(_content())
    for oid, body in tree.items():
        assert oid == object_id(body) == hashlib.sha256(body).hexdigest()
        assert len(oid) == OBJECT_ID_CHARS


def test_the_deflated_tree_holds_the_root_and_inflates_to_an_equal_record_dict():
    content = _content()
    tree = deflated_tree(content)
    assert content.object_id in tree
    contents = dict(tree)
    restored = inflate(content.object_id, contents)
    assert isinstance(restored, RecordDict) and restored.object_id == content.object_id
    assert np.array_equal(restored["arrays"]["w"].numpy(), content["arrays"]["w"].numpy())
    assert restored["config"]["blob"] == b"\x00\x01"
    assert contents == {}  # Flower took every object it used: nothing was outside the tree


def test_inflation_leaves_what_lies_outside_the_tree():
    content, other = _content(), RecordDict({"x": ConfigRecord({"a": 1})})
    contents = {**deflated_tree(content), **deflated_tree(other)}
    inflate(content.object_id, contents)
    assert set(contents) == set(deflated_tree(other))


def test_bytes_that_are_not_an_object_are_refused():
    check_content(next(iter(deflated_tree(_content()).values())))
    with pytest.raises(UnexpectedObjectContentError):
        check_content(b"not a Flower object")


def test_a_tree_missing_a_child_cannot_be_inflated():
    content = _content()
    contents = deflated_tree(content)
    child = next(oid for oid in contents if oid != content.object_id)
    del contents[child]
    with pytest.raises(Exception):  # noqa: B017  # Flower's own KeyError/ValueError: any refusal is the contract
        inflate(content.object_id, contents)
