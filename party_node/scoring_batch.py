"""The scoring pipeline's data at a lender: settings and bands, applicants, a scored batch and its rows."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedcore.errors import InvalidInput
from fedcore.protocol.messages import JSONValue
from fedcore.protocol.scoring.masked import MASKED_MAX_VALUES
from fedcore.protocol.scoring.messages import ModelSlice

from .schema import IdKind

log = logging.getLogger(__name__)


# ---- requester side: the scoring service --------------------------------------------------------------


EXTERNAL_REASON = "consortium_data"  # the one reason line for the other members' combined contribution


@dataclass(frozen=True)
class Band:
    """Scores of at least ``min_points`` get ``decision`` at ``rate_tier`` (bands checked high to low)."""

    min_points: float
    decision: str  # approve | review | decline
    rate_tier: str


DEFAULT_BANDS = (
    Band(680.0, "approve", "A"),
    Band(640.0, "approve", "B"),
    Band(600.0, "review", "C"),
    Band(-math.inf, "decline", "-"),
)


@dataclass
class ScoringSettings:
    """The requester's knobs (configurable per node)."""

    model_id: str = "joint"
    id_kind: str = IdKind.PHONE.value
    base_score: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0
    bands: tuple[Band, ...] = DEFAULT_BANDS
    # No fixed "bands" in scoring.json: bands from the model's validation scores (party_node.model_bands)
    # at these cumulative approval targets [[rate, decision, tier], ...], approve tiers capped at max_bad_rate.
    bands_from_model: bool = True
    band_targets: tuple[tuple[float, str, str], ...] = ((0.5, "approve", "A"), (0.8, "approve", "B"),
                                                        (0.9, "review", "C"))
    max_bad_rate: float | None = None
    decline_if_blacklisted: bool = True
    max_request: int = 10_000  # applicants per API call (the batch file path chunks without limit)
    chunk: int = 16_384  # applicants per coordinator request in a batch
    batch_parallel: int = 2  # coordinator requests in flight during a batch
    coalesce: bool = True  # merge concurrent small API requests into one coordinator request
    # Coordinator requests in flight from coalesced API calls. One is fastest here: while it runs, the
    # next calls pile up into one bigger request (measured on 2 cores: 240 req/s with 1, 176 with 2).
    coalesce_inflight: int = 1
    timeout_s: float = 30.0
    allow_partial: bool = False
    reason_top_k: int = 4
    key_rotate_s: float = 3600.0
    # requests of at most this many values (applicants x queries) are masked sums, not CKKS (0: always CKKS;
    # fedcore.protocol.scoring.masked)
    masked_max_values: int = MASKED_MAX_VALUES
    grpc_listen: str = "127.0.0.1:7601"  # the local API (empty: off)
    http_listen: str = "127.0.0.1:7602"  # JSON over HTTP (empty: off)

    def __post_init__(self) -> None:
        decisions = {"approve", "review", "decline"}
        if not self.bands or any(b.decision not in decisions for b in self.bands):
            raise InvalidInput(f"score bands need decisions among {sorted(decisions)}")
        self.bands = tuple(sorted(self.bands, key=lambda b: -b.min_points))
        if self.bands[-1].min_points != -math.inf:
            self.bands = (*self.bands, Band(-math.inf, "decline", "-"))
        if self.max_request < 1 or self.chunk < 1 or self.coalesce_inflight < 1:
            raise InvalidInput("max_request, chunk and coalesce_inflight must be positive")
        if not isinstance(self.masked_max_values, int) or isinstance(self.masked_max_values, bool) \
                or self.masked_max_values < 0:
            raise InvalidInput(f"masked_max_values must be a whole number >= 0, got {self.masked_max_values!r}")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> ScoringSettings:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = set(d) - set(known)
        if unknown:
            raise InvalidInput(f"unknown scoring settings {sorted(unknown)}")
        if "band_targets" in known:
            known["band_targets"] = tuple((float(t[0]), str(t[1]), str(t[2])) for t in known["band_targets"])
        if "bands" in known:
            known.setdefault("bands_from_model", False)  # fixed bands, as configured
            known["bands"] = tuple(
                Band(float(b.get("min_points", -math.inf)), str(b["decision"]), str(b.get("rate_tier", "-")))
                for b in known["bands"]
            )
        return cls(**known)


@dataclass(frozen=True)
class Applicant:
    id: str
    id_kind: str = ""
    features: Mapping[str, float | str] | None = None  # strings: raw category levels (party_node.categories)


@dataclass(frozen=True)
class ApplicantTable:
    """Applicants column-wise (batch files): one id kind, the lender's features as a matrix in the model
    slice's feature order (``None``: look every applicant up in the store)."""

    ids: list[str]
    id_kind: str = ""
    x: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, size: int) -> Iterator[ApplicantTable]:
        for i in range(0, len(self.ids), size):
            yield ApplicantTable(self.ids[i : i + size], self.id_kind, None if self.x is None else self.x[i : i + size])


@dataclass
class ScoredBatch:
    """Results of a batch, column-wise (cheap for millions); :meth:`row` gives one applicant as a dict."""

    ids: list[str]
    status: np.ndarray  # "ok" | "invalid_id"
    prob_default: np.ndarray
    points: np.ndarray
    external_logit: np.ndarray
    own_data: np.ndarray
    reason_index: np.ndarray  # n x k indices into features (-1: none)
    reason_impact: np.ndarray  # n x k
    decision: np.ndarray
    rate_tier: np.ndarray
    blacklist_hits: np.ndarray  # -1 when not asked
    active_loans: np.ndarray  # -1 when not asked
    features: tuple[str, ...]
    model_id: str
    model_version: str
    request_ids: list[str] = field(default_factory=list)
    missing: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, i: int) -> dict[str, JSONValue]:
        ok = self.status[i] == "ok"
        reasons: list[dict[str, JSONValue]] = []
        if ok:
            for j, v in zip(self.reason_index[i], self.reason_impact[i], strict=True):
                if j >= 0:
                    reasons.append({"feature": self.features[int(j)], "logit_impact": round(float(v), 6)})
            reasons.append({"feature": EXTERNAL_REASON, "logit_impact": round(float(self.external_logit[i]), 6)})
            # most adverse first; the consortium's line sits where its size puts it
            reasons.sort(key=lambda r: -float(r["logit_impact"]))  # type: ignore[arg-type]
        return {
            "id": self.ids[i],
            "status": str(self.status[i]),
            "prob_default": float(self.prob_default[i]) if ok else None,
            "points": round(float(self.points[i]), 2) if ok else None,
            "external_logit": float(self.external_logit[i]) if ok else None,
            "own_data": bool(self.own_data[i]),
            "reasons": reasons,
            "decision": str(self.decision[i]) if ok else None,
            "rate_tier": str(self.rate_tier[i]) if ok else None,
            "blacklist_hits": int(self.blacklist_hits[i]),
            "active_loans_elsewhere": int(self.active_loans[i]),
            "partial": bool(self.missing),
            "missing_parties": list(self.missing),
            "model_id": self.model_id,
            "model_version": self.model_version,
            "request_id": ",".join(self.request_ids),
        }

    def rows(self) -> Iterator[dict[str, JSONValue]]:
        return (self.row(i) for i in range(len(self)))

    def slice(self, a: int, b: int) -> ScoredBatch:
        """Applicants ``a:b`` (a caller's share of a coalesced request)."""
        return ScoredBatch(
            self.ids[a:b],
            self.status[a:b],
            self.prob_default[a:b],
            self.points[a:b],
            self.external_logit[a:b],
            self.own_data[a:b],
            self.reason_index[a:b],
            self.reason_impact[a:b],
            self.decision[a:b],
            self.rate_tier[a:b],
            self.blacklist_hits[a:b],
            self.active_loans[a:b],
            self.features,
            self.model_id,
            self.model_version,
            list(self.request_ids),
            self.missing,
        )


def check_features(sl: ModelSlice, apps: Sequence[Applicant]) -> None:
    """Reject unknown feature names and non-finite values, naming the applicant (0-based) and feature."""
    names = set(sl.features)
    for i, a in enumerate(apps):
        if not a.features:
            continue
        unknown = set(a.features) - names
        if unknown:
            raise InvalidInput(f"applicant {i}: unknown features {sorted(unknown)} for model {sl.model_id!r}")
        for f, v in a.features.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
                raise InvalidInput(f"applicant {i}: feature {f!r} is not a finite number")


COALESCE_MAX_APPLICANTS = 64  # API calls up to this size may be merged with concurrent ones
COALESCE_MAX_MERGED = 4096


def _cut_batch(res: ScoredBatch, start: int, stop: int) -> ScoredBatch:
    """One caller's part of a coalesced batch; a malformed id fails only its own caller."""
    part = res.slice(start, stop)
    bad = [i for i, st in enumerate(part.status) if st != "ok"]
    if bad:
        shown = ", ".join(f"#{i}" for i in bad[:5])
        raise InvalidInput(f"{len(bad)} malformed applicant id(s): {shown}")
    return part


