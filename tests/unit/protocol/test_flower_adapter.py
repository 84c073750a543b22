"""Flower's private internals that fedcore/protocol/horizontal/flower.py relies on. If a flwr upgrade
changes them, this fails here, loudly, instead of horizontal training failing in a run."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedcore.protocol.horizontal.flower import PRIVATE_METADATA_FIELDS, set_task_identity, stamp_metadata


def _message() -> Message:
    set_task_identity(1)  # outside a SuperLink, Flower needs it to build a Message
    return Message(RecordDict({"config": ConfigRecord({"a": 1})}), 7, "query.test")


def test_metadata_keeps_the_private_fields_the_grid_sets() -> None:
    md = _message().metadata
    missing = [f for f in PRIVATE_METADATA_FIELDS if f not in md.__dict__]
    assert not missing, f"flwr's Metadata no longer has {missing}: update horizontal/flower.py"


def test_stamping_shows_through_the_public_properties() -> None:
    msg = _message()
    stamp_metadata(msg, "abc123", 42)
    assert msg.metadata.message_id == "abc123"
    assert msg.metadata.run_id == 42
    assert msg.metadata.src_node_id != 7  # the SuperLink's node id, as a real SuperLink would set


def test_a_missing_private_field_fails_loudly() -> None:
    msg = _message()
    del msg.metadata.__dict__["_message_id"]
    with pytest.raises(RuntimeError, match="not supported"):
        stamp_metadata(msg, "x", 1)


def test_run_and_task_identity_have_what_the_grid_uses() -> None:
    assert Run.create_empty(5).run_id == 5
    set_task_identity(9)
    for name in ("run_id", "node_id", "task_id"):
        assert hasattr(TaskIdentity, name)
