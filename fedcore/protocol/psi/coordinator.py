"""The PSI driver: relays blinded sets between parties and checks the outcome."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fedcore.errors import InvalidInput
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.messages import JSONValue, Task
from fedcore.protocol.psi.messages import (
    ABORT,
    BLIND,
    COMMIT,
    FINALIZE,
    LEARN,
    MATCH,
    POSITIONS,
    PURPOSES,
    REBLIND,
    STAGE,
    START,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PsiResult:
    run_id: str
    sizes: dict[str, int]
    intersection: int
    cardinality_only: bool
    seconds: float


Progress = Callable[[str], None]


def run_psi(
    channel: PartyChannel,
    run_id: str,
    parties: list[str],
    *,
    purpose: str = "training",
    cardinality_only: bool = False,
    timeout_s: float = 900.0,
    progress: Progress | None = None,
) -> PsiResult:
    """Align ``parties`` (the first is the leader). Commits at every party or at none."""
    say = progress or (lambda msg: None)
    if len(parties) < 2 or len(set(parties)) != len(parties):
        raise InvalidInput("PSI needs at least two distinct parties")
    if purpose not in PURPOSES:
        raise InvalidInput(f"PSI purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
    leader, followers = parties[0], parties[1:]
    t0 = time.monotonic()

    def task(kind: str, payload: Iterable[bytes] | None = None, **params: JSONValue) -> Task:
        return Task(kind, params, run_id=run_id, timeout_s=timeout_s, payload=payload)

    try:
        starts = channel.run_all(
            {leader: task(START, purpose=purpose, peers=followers)}
            | {f: task(START, purpose=purpose, peers=[leader]) for f in followers}
        )
        sizes = {p: int(r.params["count"]) for p, r in starts.items()}
        say(f"set sizes: {', '.join(f'{p} {n}' for p, n in sizes.items())}")
        for f in followers:
            blinded = channel.run(leader, task(BLIND, peer=f))
            reblinded = channel.run(f, task(REBLIND, payload=blinded.chunks(), peer=leader,
                                            shuffle=cardinality_only, n=sizes[leader]))
            channel.run(leader, task(LEARN, payload=reblinded.chunks(), peer=f))
            say(f"{f}: re-blinded {sizes[leader]} of {leader}'s ids")
            theirs = channel.run(f, task(BLIND, peer=leader))
            m = channel.run(leader, task(MATCH, payload=theirs.chunks(), peer=f, n=sizes[f]))
            say(f"{f}: compared {m.params['peer_count']} of {f}'s ids")
        final = channel.run(leader, task(FINALIZE, cardinality_only=cardinality_only))
        size = int(final.params["intersection"])
        if not cardinality_only:
            for f in followers:
                pos = channel.run(leader, task(POSITIONS, peer=f))
                channel.run(f, task(STAGE, payload=pos.chunks()))
            channel.run_all({p: task(COMMIT) for p in parties})
        else:
            channel.run_all({p: task(ABORT) for p in parties})
        say(f"intersection: {size}")
    except BaseException:
        _abort_all(channel, run_id, parties)
        raise
    return PsiResult(run_id, sizes, size, cardinality_only, time.monotonic() - t0)


def _abort_all(channel: PartyChannel, run_id: str, parties: list[str]) -> None:
    for p in parties:
        try:
            channel.run(p, Task(ABORT, {}, run_id=run_id, timeout_s=30))
        except Exception as exc:  # the party may be the one that failed; it drops staged tables on restart
            log.warning("could not abort PSI run %s at %s: %s", run_id, p, exc)
