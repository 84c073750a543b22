"""The pseudonym key distribution driver: the coordinator relays announcements and envelopes only."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fedcore.errors import InvalidInput, ProtocolError
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.keys.messages import ANNOUNCE, INSTALL, SEAL
from fedcore.protocol.messages import Task


def distribute_pseudonym_key(channel: PartyChannel, run_id: str, parties: list[str],
                             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Make sure every party in ``parties`` holds the same pseudonym key."""
    say = progress or (lambda m: None)
    if len(set(parties)) != len(parties) or len(parties) < 2:
        raise InvalidInput("pseudonym key distribution needs at least two distinct parties")
    anns = {p: dict(r.params) for p, r in
            channel.run_all({p: Task(ANNOUNCE, {}, run_id=run_id, timeout_s=30) for p in parties}).items()}
    held = {p: str(a.pop("key_fingerprint", "")) for p, a in anns.items()}
    fingerprints = {fp for fp in held.values() if fp}
    if len(fingerprints) > 1:
        raise InvalidInput("parties hold different pseudonym keys: "
                           + ", ".join(f"{p} {fp[:12]}" for p, fp in held.items() if fp))
    creator = next((p for p in parties if held[p]), parties[0])
    others = [p for p in parties if p != creator]
    say(f"{creator} seals the pseudonym key for {', '.join(others)}")
    sealed = channel.run(creator, Task(SEAL, {"recipients": {p: anns[p] for p in others}},
                                       run_id=run_id, timeout_s=120))
    envelopes = sealed.params.get("envelopes")
    if not isinstance(envelopes, Mapping) or set(envelopes) != set(others):
        raise ProtocolError(f"{creator} did not seal an envelope for every party")
    fp = str(sealed.params.get("key_fingerprint", ""))
    results = channel.run_all({p: Task(INSTALL, {"sender": creator, "envelope": envelopes[p]},
                                       run_id=run_id, timeout_s=600) for p in others})
    for p, r in results.items():
        if r.params.get("key_fingerprint") != fp:
            raise ProtocolError(f"{p} installed a key with another fingerprint")
    say(f"all {len(parties)} parties hold pseudonym key {fp[:16]}")
    return {"creator": creator, "parties": parties, "key_fingerprint": fp}
