"""The PSI job kind: ``fedcredit coordinator psi --parties yixin,tiange`` (protocol in
:mod:`fedcore.protocol.psi`)."""

from __future__ import annotations

from typing import Any

from fedcore.errors import InvalidInput
from fedcore.protocol.psi.coordinator import run_psi

from ..runs import JobKind, RunContext, register_job


def psi_job(rc: RunContext) -> dict[str, Any]:
    channel, params = rc.channel, rc.params
    parties = params.get("parties")
    if not isinstance(parties, list) or not all(isinstance(p, str) for p in parties):
        raise InvalidInput("psi: 'parties' must be a list of party names")
    known = {p.name for p in channel.parties()}
    unknown = [p for p in parties if p not in known]
    if unknown:
        raise InvalidInput(f"psi: unknown parties: {', '.join(unknown)}")
    res = run_psi(
        channel,
        rc.run_id,
        parties,
        purpose=str(params.get("purpose", "training")),
        cardinality_only=bool(params.get("cardinality_only", False)),
        timeout_s=float(params.get("timeout_s", 900.0)),
        progress=rc.progress,
    )
    return {
        "sizes": res.sizes,
        "intersection": res.intersection,
        "seconds": round(res.seconds, 3),
        "cardinality_only": res.cardinality_only,
        "parties": parties,
    }


register_job(JobKind("psi", psi_job))
