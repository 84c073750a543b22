"""The handlers a party runs in pseudonym key distribution."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from fedcore.errors import InvalidInput
from fedcore.protocol.keys.messages import ANNOUNCE, INSTALL, SEAL, purpose
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.sealing import PartyIdentity, open_from_peer, seal_to_peers
from fedcore.protocol.tasks import HandlerRegistry, TaskContext

log = logging.getLogger(__name__)


class PseudonymKeyHolder(Protocol):
    """Where a party keeps its pseudonym key (the store recomputes pseudonyms on install)."""

    def current_key_raw(self) -> bytes | None: ...

    def install_key_raw(self, raw: bytes) -> tuple[str, int]:
        """Install the key; return (fingerprint, subjects re-pseudonymized)."""
        ...

    def fingerprint(self) -> str | None: ...


class KeyParty:
    def __init__(self, identity: PartyIdentity, holder: PseudonymKeyHolder,
                 new_key: Callable[[], bytes]) -> None:
        self._id = identity
        self._holder = holder
        self._new_key = new_key

    def register(self, registry: HandlerRegistry) -> None:
        registry.register(ANNOUNCE, self._announce)
        registry.register(SEAL, self._seal)
        registry.register(INSTALL, self._install)

    def _announce(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        return TaskReply({**self._id.announcement(), "key_fingerprint": self._holder.fingerprint() or ""})

    def _seal(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        recipients = params.get("recipients")
        if not isinstance(recipients, Mapping):
            raise InvalidInput("pseudonym.seal needs a map of recipients")
        anns = {str(k): v for k, v in recipients.items() if isinstance(v, Mapping)}
        if len(anns) != len(recipients):
            raise InvalidInput("pseudonym.seal: every recipient needs an announcement")
        raw = self._holder.current_key_raw()
        if raw is None:
            raw = self._new_key()
            fp, n = self._holder.install_key_raw(raw)
            log.info("created the federation pseudonym key %s (%d subjects)", fp[:16], n)
        envelopes: dict[str, JSONValue] = dict(seal_to_peers(self._id, anns, raw, purpose(ctx.run_id)))
        return TaskReply({"envelopes": envelopes, "key_fingerprint": self._holder.fingerprint() or ""})

    def _install(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        sender = str(params.get("sender", ""))
        envelope = params.get("envelope")
        if not sender or not isinstance(envelope, Mapping):
            raise InvalidInput("pseudonym.install needs the sender's name and its envelope")
        raw = open_from_peer(self._id, envelope, sender, purpose(ctx.run_id))
        fp, n = self._holder.install_key_raw(raw)
        return TaskReply({"key_fingerprint": fp, "subjects": n})
