"""The pseudonym-key job kind: every named party ends up holding the same federation pseudonym key
(protocol in :mod:`fedcore.protocol.keys`)."""

from __future__ import annotations

from typing import Any

from fedcore.errors import InvalidInput
from fedcore.protocol.keys.coordinator import distribute_pseudonym_key

from ..runs import JobKind, RunContext, register_job


def pseudonym_key_job(rc: RunContext) -> dict[str, Any]:
    parties = rc.params.get("parties") or rc.channel.online()
    if not isinstance(parties, list) or not all(isinstance(p, str) for p in parties):
        raise InvalidInput("pseudonym-key: 'parties' must be a list of party names")
    return distribute_pseudonym_key(rc.channel, rc.run_id, parties, rc.progress)


register_job(JobKind("pseudonym-key", pseudonym_key_job))
