"""A Flower :class:`~flwr.serverapp.grid.Grid` over a :class:`~fedcore.protocol.channel.PartyChannel`.

The coordinator runs a Flower ``ServerApp`` in-process against :class:`ChannelGrid`. Each pushed
``Message`` becomes one :data:`~fedcore.protocol.horizontal.FLOWER_TASK` task to the party that owns
the destination node id; its payload is the message in Flower's protobuf serialization. Replies are
collected by one waiter thread per message; a party that is unavailable, times out or fails yields a
Flower *error reply* (``Message(Error, reply_to=...)``), which Flower's strategies already skip, so a
round carries on with the parties that answered.

Node ids are :func:`~fedcore.protocol.horizontal.node_id_for` of the party names (stable across runs
and restarts). A reply's source node id is always overwritten with the node id of the party that
answered on its own link, so a party cannot impersonate another.

What the coordinator learns from this layer: message types, sizes and timing (the content is whatever
the protocol puts in it; see :mod:`fedcore.protocol.horizontal`).

This is the ONE module that touches Flower's private internals (``Metadata``'s private fields set by
:func:`stamp_metadata`, ``flwr.supercore``'s ``Run`` and ``TaskIdentity``). They are checked by
``tests/unit/protocol/test_flower_adapter.py``, which fails loudly when a flwr upgrade changes them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from flwr.app import Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedcore.errors import FedcreditError, InvalidInput, PartyUnavailable, ProtocolError
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.horizontal import messages as hz
from fedcore.protocol.messages import Task

__all__ = ["PRIVATE_METADATA_FIELDS", "ChannelGrid", "set_task_identity", "stamp_metadata"]

# Flower's Metadata keeps these as private attributes that only a SuperLink sets; ChannelGrid plays the
# SuperLink, so it sets them here and nowhere else.
PRIVATE_METADATA_FIELDS = ("_message_id", "_run_id", "_src_node_id")


def stamp_metadata(msg: Message, msg_id: str, run_id: int) -> None:
    """Set what a SuperLink sets on a pushed message: its id, the run and the source node."""
    md = msg.metadata
    for name in PRIVATE_METADATA_FIELDS:
        if name not in md.__dict__:
            raise RuntimeError(f"flwr's Metadata has no {name!r}: this flwr version is not supported")
    md.__dict__["_message_id"] = msg_id
    md.__dict__["_run_id"] = run_id
    md.__dict__["_src_node_id"] = SUPERLINK_NODE_ID


def set_task_identity(run_id: int) -> None:
    """Flower's strategies read ``TaskIdentity``; outside a SuperLink nobody sets it, so we do."""
    try:
        TaskIdentity.run_id  # noqa: B018
    except RuntimeError:
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        TaskIdentity.task_id = 0


@dataclass
class _Pending:
    party: str
    message: Message
    reply: Message | None = None


class ChannelGrid(Grid):
    """Flower Grid whose nodes are the named parties of a :class:`PartyChannel`.

    ``parties``: the participants (node ids are derived from their names); only those the channel
    reports online are returned by :meth:`get_node_ids`. ``task_timeout_s``: per-message deadline
    at the party (the smaller of it and the message TTL is used). ``on_exchange(party, kind,
    bytes_out, bytes_in, seconds)`` is an optional observer (benchmarks, logs).
    """

    def __init__(
        self,
        channel: PartyChannel,
        parties: Sequence[str],
        run_id: str,
        *,
        task_timeout_s: float = 600.0,
        on_exchange: Callable[[str, str, int, int, float], None] | None = None,
    ) -> None:
        if not parties:
            raise InvalidInput("a training run needs at least one party")
        self.channel = channel
        self.run_name = run_id
        self.task_timeout_s = task_timeout_s
        self.on_exchange = on_exchange
        self._by_node = {hz.node_id_for(p): p for p in parties}
        if len(self._by_node) != len(set(parties)):
            raise InvalidInput("two party names map to the same node id")
        self._node_of = {p: n for n, p in self._by_node.items()}
        self._run = Run.create_empty(hz.flower_run_id(run_id))
        self._pending: dict[str, _Pending] = {}
        self._cond = threading.Condition()

    # ------------------------------------------------------------------------------------ Grid API
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        online = set(self.channel.online())
        return [n for n, p in self._by_node.items() if p in online]

    def party_of(self, node_id: int) -> str:
        return self._by_node[node_id]

    def node_of(self, party: str) -> int:
        return self._node_of[party]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids: list[str] = []
        for msg in messages:
            party = self._by_node.get(msg.metadata.dst_node_id)
            if party is None:
                raise InvalidInput(f"message to unknown node id {msg.metadata.dst_node_id}")
            msg_id = uuid.uuid4().hex
            stamp_metadata(msg, msg_id, self._run.run_id)
            pending = _Pending(party, msg)
            with self._cond:
                self._pending[msg_id] = pending
            ids.append(msg_id)
            threading.Thread(target=self._exchange, args=(msg_id, pending), name=f"grid-{party}", daemon=True).start()
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        out: list[Message] = []
        with self._cond:
            for mid in message_ids:
                p = self._pending.get(mid)
                if p is not None and p.reply is not None:
                    out.append(p.reply)
                    del self._pending[mid]
        return out

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        ids = set(self.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while ids:
            got = list(self.pull_messages(ids))
            for m in got:
                ids.discard(m.metadata.reply_to_message_id)
            replies.extend(got)
            if not ids:
                break
            with self._cond:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    break
                if not any(self._pending[i].reply is not None for i in ids if i in self._pending):
                    self._cond.wait(timeout=0.5 if left is None else min(left, 0.5))
        return replies

    # ---------------------------------------------------------------------------------- internals
    def _exchange(self, msg_id: str, pending: _Pending) -> None:
        msg = pending.message
        party = pending.party
        t0 = time.perf_counter()
        data = hz.encode_message(msg)
        reply: Message
        try:
            timeout = min(self.task_timeout_s, float(msg.metadata.ttl or self.task_timeout_s))
            handle = self.channel.submit(
                party,
                Task(
                    hz.FLOWER_TASK,
                    params={"message_type": msg.metadata.message_type, "group_id": msg.metadata.group_id},
                    run_id=self.run_name,
                    timeout_s=timeout,
                    payload=[data],
                ),
            )
            result = handle.result()
            raw = result.read_payload()
            reply = hz.decode_message(raw)
            if reply.metadata.reply_to_message_id != msg_id:
                raise ProtocolError(f"party {party!r} replied to another message")
            reply.metadata.__dict__["_src_node_id"] = self._node_of[party]
            reply.metadata.__dict__["_dst_node_id"] = SUPERLINK_NODE_ID
            if self.on_exchange is not None:
                self.on_exchange(party, msg.metadata.message_type, len(data), len(raw), time.perf_counter() - t0)
        except PartyUnavailable as exc:
            reply = Message(Error(ErrorCode.NODE_UNAVAILABLE, str(exc)), reply_to=msg)
        except FedcreditError as exc:
            reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(exc)), reply_to=msg)
        except Exception as exc:  # never let a waiter thread die silently
            reply = Message(Error(ErrorCode.UNKNOWN, f"{type(exc).__name__}: {exc}"), reply_to=msg)
        with self._cond:
            pending.reply = reply
            self._cond.notify_all()
