"""Grouped joint scores: the requests that the lenders of one pre-approval make for the same viewer,
answered with one task per member instead of one per (lender, member).

A pre-approval (:mod:`fedcore.protocol.preapproval`) asks k lenders about one viewer. Each lender makes an
ordinary joint scoring request under its own key (a masked-sum key for one viewer:
:mod:`fedcore.protocol.scoring.masked`) and names the pre-approval's request id as its
``group``. Ungrouped, the coordinator sends k x (members - 1) contribution tasks; grouped, it sends each
member one :data:`~fedcore.protocol.scoring.messages.CONTRIBUTE_GROUP` task holding one *part* per other
asking lender (a fresh request id, model id and version, queries, that lender's key fingerprint). The
member answers one contribution per part, each under that part's key, and the coordinator sums each
part's contributions exactly as it sums an ungrouped request's.

**What each side learns** (against ungrouped requests):

- *Requesters*: the same sum under their own key, the same contributor count and missing names.
- *Members*: that the parts of one task belong together, and how many there are. A member could already
  tell this from five requests for one pseudonym in the same moment. No part names its lender; the
  fingerprints are the ones ungrouped tasks carry. A lender that is also asked never gets a part for its
  own request, as it never got a task for it.
- *Coordinator*: nothing new: it made the grouping from the pre-approval it relays.

Grouping is best effort and never waits past its window: the pre-approval announces the lenders it
asked (:meth:`ScoreGroups.expect`), and the group leaves when every one of them has joined or withdrawn
(its offer task ended without a scoring request: it does not offer the product, or failed), or when
``window_s`` has passed since the pre-approval started. A request arriving after its group left, or with
other pseudonyms, is scored alone.

**Standing requests** (prefetch). A lender that has scored a pre-approval for a product kind names, in
its offer reply, the request it would make for the next one (:class:`Standing`: model, version,
queries, key fingerprint). For the next pre-approval of that kind the coordinator makes that request
itself as soon as the platform's request arrives (:meth:`ScoringCoordinator.score_standing`, the same
grouped task per member, charged to the lender's rate limit) and hands the lender the sum under its
own key inside its offer task. The lender checks the sum is for its current key and model, else it
scores as usual. Members, requesters and the coordinator learn what they learn from a grouped request;
the coordinator could always send any member a task under a key it has seen, so it gains no power.
A lender that has never scored a kind is never sent a sum for it, and its reply without a standing
request (it no longer offers the kind) ends it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from fedcore.errors import InvalidInput, ProtocolError
from fedcore.protocol.messages import JSONValue
from fedcore.protocol.scoring.messages import TREE_QUERY, JointRequest, JointResponse, check_queries
from fedcore.protocol.scoring.party import ScoringKey

MAX_OPEN_GROUPS = 4096


@dataclass(frozen=True)
class Standing:
    """A lender's standing joint scoring request for one product kind (see the module's docstring)."""

    model_id: str
    model_version: str
    queries: tuple[str, ...]
    fingerprint: str

    def to_params(self) -> dict[str, JSONValue]:
        return {"model_id": self.model_id, "model_version": self.model_version, "queries": list(self.queries),
                "fingerprint": self.fingerprint}

    @classmethod
    def from_params(cls, d: object, party: str) -> Standing:
        """Parse a standing request from ``party``'s reply; malformed ones raise :class:`ProtocolError`."""
        try:
            if not isinstance(d, dict):
                raise TypeError("not an object")
            qs = d["queries"]
            if not isinstance(qs, list):
                raise TypeError("queries is not a list")
            st = cls(str(d["model_id"]), str(d["model_version"]), check_queries([str(q) for q in qs]),
                     str(d["fingerprint"]))
        except (KeyError, TypeError, InvalidInput) as exc:
            raise ProtocolError(f"party {party!r} sent a malformed standing scoring request ({exc})") from None
        if st.queries == (TREE_QUERY,) or not st.fingerprint or not st.model_id or len(repr(d)) > 1024:
            raise ProtocolError(f"party {party!r} sent a standing scoring request that cannot be prefetched")
        return st


@dataclass
class Part:
    """One lender's request inside a group; ``response`` or ``error`` is set before ``done``."""

    requester: str
    req: JointRequest
    pub: ScoringKey
    params: dict[str, JSONValue]  # the contribution task's fields for this part (request id, model, fingerprint)
    deadline: float  # monotonic
    done: threading.Event = field(default_factory=threading.Event)
    response: JointResponse | None = None
    error: BaseException | None = None


@dataclass
class _Group:
    expected: set[str]
    close_at: float
    cond: threading.Condition
    parts: dict[str, Part] = field(default_factory=dict)


class ScoreGroups:
    """The coordinator's open groups (pre-approvals in flight), shared by the pre-approval fan-out, which
    announces each, and the scoring fan-out, which joins lenders' requests to them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}

    def expect(self, group: str, requesters: Collection[str], window_s: float) -> None:
        """A pre-approval ``group`` asked ``requesters``; their scoring requests may wait for each other
        for at most ``window_s`` from now."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            if len(self._groups) >= MAX_OPEN_GROUPS or len(requesters) < 2:
                return  # nothing to group (or too many open): every request is scored alone
            self._groups[group] = _Group(set(requesters), now + window_s, threading.Condition(self._lock))

    def withdraw(self, group: str, requester: str) -> None:
        """``requester``'s offer task ended: if it did not join, the others stop waiting for it."""
        with self._lock:
            g = self._groups.get(group)
            if g is None or requester in g.parts:
                return
            g.expected.discard(requester)
            g.cond.notify_all()  # a waiting member re-checks whether everyone expected is in

    def join(self, group: str, part: Part) -> tuple[bool, list[Part] | None]:
        """Add ``part`` to its group and wait for the group to leave.

        Returns ``(False, None)`` if the request is not grouped (score it alone), ``(True, parts)`` if
        this thread runs the group's fan-out, ``(True, None)`` if another thread runs it (wait on
        ``part.done``).
        """
        with self._lock:
            self._expire(self._clock())
            g = self._groups.get(group)
            if g is None or part.requester not in g.expected or part.requester in g.parts:
                return False, None
            first = next(iter(g.parts.values()), None)
            if first is not None and first.req.pseudonyms != part.req.pseudonyms:
                return False, None
            g.parts[part.requester] = part
            while True:
                if self._groups.get(group) is not g:
                    return True, None  # another member took the group and runs it
                left = g.close_at - self._clock()
                if set(g.parts) >= g.expected or left <= 0:
                    del self._groups[group]
                    g.cond.notify_all()
                    return True, list(g.parts.values())
                g.cond.wait(left)

    def _expire(self, now: float) -> None:
        """Drop groups that nobody joined before their window ended (holding the lock)."""
        stale = [k for k, g in self._groups.items() if not g.parts and g.close_at <= now]
        for k in stale:
            del self._groups[k]
