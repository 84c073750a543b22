"""The PSI driver: relays blinded sets between parties and checks the outcome."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fedcore.errors import CorruptResult, InvalidInput, PartyTaskError, ProtocolError
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.messages import JSONValue, Task, TaskResult
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
    VERIFY,
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
            reblinded = _relayed(channel, f, task(REBLIND, payload=blinded.chunks(), peer=leader,
                                                  shuffle=cardinality_only, n=sizes[leader]), blinded)
            _relayed(channel, leader, task(LEARN, payload=reblinded.chunks(), peer=f), reblinded)
            say(f"{f}: re-blinded {sizes[leader]} of {leader}'s ids")
            theirs = channel.run(f, task(BLIND, peer=leader))
            m = _relayed(channel, leader, task(MATCH, payload=theirs.chunks(), peer=f, n=sizes[f]), theirs)
            say(f"{f}: compared {m.params['peer_count']} of {f}'s ids")
        final = channel.run(leader, task(FINALIZE, cardinality_only=cardinality_only))
        size = int(final.params["intersection"])
        if not cardinality_only:
            for f in followers:
                # Both sides verify (count + digest of the positions) before anyone commits: the follower
                # checks what it received against the leader's claim, the leader what the follower staged.
                pos = channel.run(leader, task(POSITIONS, peer=f))
                staged = _relayed(channel, f, task(STAGE, payload=pos.chunks(), count=pos.params.get("count"),
                                                   digest=pos.params.get("digest")), pos)
                verify = task(VERIFY, peer=f, count=staged.params.get("staged"), digest=staged.params.get("digest"))
                _relayed(channel, leader, verify, staged)
            channel.run_all({p: task(COMMIT) for p in parties})
        else:
            channel.run_all({p: task(ABORT) for p in parties})
        say(f"intersection: {size}")
    except BaseException:
        _abort_all(channel, run_id, parties)
        raise
    return PsiResult(run_id, sizes, size, cardinality_only, time.monotonic() - t0)


def _relayed(channel: PartyChannel, party: str, t: Task, source: TaskResult) -> TaskResult:
    """Run ``t`` at ``party`` on a result that came from ``source.party``; if the receiver finds that
    result corrupt (a protocol error), the error names the party it came from."""
    try:
        return channel.run(party, t)
    except PartyTaskError as exc:
        if exc.kind != ProtocolError.code:
            raise
        err = CorruptResult(source.party, source.kind, f"refused by {party!r} in {t.kind!r}: {exc.detail}")
        log.warning("PSI run %s: %s", t.run_id, err)
        raise err from None


def _abort_all(channel: PartyChannel, run_id: str, parties: list[str]) -> None:
    for p in parties:
        try:
            channel.run(p, Task(ABORT, {}, run_id=run_id, timeout_s=30))
        except Exception as exc:  # the party may be the one that failed; it drops staged tables on restart
            log.warning("could not abort PSI run %s at %s: %s", run_id, p, exc)
