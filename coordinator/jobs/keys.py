"""The pseudonym-key job kind: every named party ends up holding the same federation pseudonym key
(protocol in :mod:`fedcore.protocol.keys`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedcore.errors import InvalidInput
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.keys import distribute_pseudonym_key

from ..runs import JobKind, Progress, register_job


def pseudonym_key_job(
    channel: PartyChannel, run_id: str, params: Mapping[str, Any], progress: Progress
) -> dict[str, Any]:
    parties = params.get("parties") or channel.online()
    if not isinstance(parties, list) or not all(isinstance(p, str) for p in parties):
        raise InvalidInput("pseudonym-key: 'parties' must be a list of party names")
    return distribute_pseudonym_key(channel, run_id, parties, progress)


register_job(JobKind("pseudonym-key", pseudonym_key_job))
