"""The binning job kind (``fedcredit coordinator binning``; protocol and leakage statement in
:mod:`fedcore.protocol.binning`).

Parameters: ``parties`` (list; roles from the registry: lenders, and at most one platform);
``method`` (``quantile``: equal-frequency bins; ``optimal``: monotone optimal bins merged from them);
``bins`` (quantile: number of bins; optimal: most bins kept); ``psi_runs`` ({lender: committed PSI run
id}; with a platform, missing ones are run here, lender x platform); ``dataset``; ``min_rows``,
``min_lenders``, ``trend``, ``min_iv`` (IV-based selection threshold), ``timeout_s``.

The result is what the coordinator may see: IV and bin count per feature per party, and the features
selected by IV. Cut points, level groups, counts and WOE stay at each feature's owner
(``fedcredit party binning show``).
"""

from __future__ import annotations

from typing import Any

from fedcore.errors import InvalidInput
from fedcore.protocol.binning.coordinator import BinningSettings, run_binning
from fedcore.protocol.messages import Role
from fedcore.protocol.psi.coordinator import run_psi
from models.woe import select_by_iv

from ..runs import JobKind, RunContext, register_job

METHODS = ("quantile", "optimal")


def _roles(rc: RunContext) -> tuple[list[str], str | None]:
    parties = rc.params.get("parties")
    if not isinstance(parties, list) or not parties or not all(isinstance(x, str) for x in parties):
        raise InvalidInput("binning: 'parties' must be a non-empty list of party names")
    known = {x.name: x for x in rc.channel.parties()}
    unknown = [x for x in parties if x not in known]
    if unknown:
        raise InvalidInput(f"binning: unknown parties: {', '.join(unknown)}")
    lenders = [x for x in parties if known[x].role == Role.LENDER]
    platforms = [x for x in parties if known[x].role == Role.PLATFORM]
    if len(platforms) > 1:
        raise InvalidInput(f"binning: at most one platform among the parties, got {', '.join(platforms)}")
    if not lenders:
        raise InvalidInput("binning: name at least one lender (the labels are theirs)")
    return sorted(lenders), (platforms[0] if platforms else None)


def settings(p: dict[str, Any] | Any) -> tuple[str, BinningSettings]:
    """The method and protocol settings of a run's parameters."""
    method = str(p.get("method") or "optimal")
    if method not in METHODS:
        raise InvalidInput(f"binning: method must be one of {', '.join(METHODS)}, not {method!r}")
    bins = p.get("bins")
    kw: dict[str, Any] = {k: p[k] for k in ("min_rows", "min_lenders", "trend", "timeout_s") if p.get(k) is not None}
    if bins is not None:
        if int(bins) < 2:
            raise InvalidInput(f"binning: bins must be at least 2, got {bins}")
        kw["n_bins" if method == "quantile" else "max_bins"] = int(bins)
    return method, BinningSettings(**kw)


def binning_job(rc: RunContext) -> dict[str, Any]:
    lenders, platform = _roles(rc)
    p = rc.params
    method, cfg = settings(p)
    psi_runs = dict(p.get("psi_runs") or {})
    if platform is not None:
        for lender in lenders:
            if lender not in psi_runs:
                psi_id = f"{rc.run_id}-psi-{lender}"
                rc.progress(f"aligning {lender} with {platform} (PSI run {psi_id})")
                run_psi(rc.channel, psi_id, [lender, platform], purpose="training", progress=rc.progress)
                psi_runs[lender] = psi_id
    rc.progress(f"binning the features of {', '.join([*lenders, *([platform] if platform else [])])} ({method})")
    data: dict[str, Any] = {"psi_runs": psi_runs, "method": method}
    if p.get("dataset"):
        data["dataset"] = str(p["dataset"])
    table = run_binning(rc.channel, lenders, platform, cfg, run_id=rc.run_id, data_params=data)
    rows: list[dict[str, Any]] = [{"party": party, "feature": f, "iv": v.iv if method == "optimal" else v.iv_fine,
             "iv_quantile": v.iv_fine, "iv_optimal": v.iv,
             "n_bins": v.n_bins if method == "optimal" else v.n_fine}
            for party, f, v in table.rows()]
    rows.sort(key=lambda r: (-float(r["iv"]), str(r["party"]), str(r["feature"])))
    min_iv = float(p.get("min_iv", 0.02))
    selected = select_by_iv({f"{r['party']}:{r['feature']}": float(r["iv"]) for r in rows}, min_iv=min_iv)
    return {"method": method, "lenders": lenders, "platform": platform, "psi_runs": psi_runs, "table": rows,
            "min_iv": min_iv, "selected": list(selected)}


register_job(JobKind("binning", binning_job))
