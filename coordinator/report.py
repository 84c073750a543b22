"""Model evaluation reports: ``fedcredit coordinator report MODEL_RUN_ID --out DIR``.

The ``report`` run kind (registered here with :func:`~coordinator.runs.register_job`) asks every
party that trained the model for score histograms by label on its own training and validation splits
(:data:`~models.histograms.REPORT_TASK`; counts per score bin, never a subject's data), optionally
runs contribution accounting (:mod:`coordinator.contribution`), and stores the counts as the run's
result. :func:`render_report` turns that result into PNG charts (matplotlib, Agg backend) and one
HTML page: ROC curve, KS curve, score distribution, bad rate by score band, population stability
between the training scores and recent scoring traffic (or a note that there is none yet), the
contribution of each party and, for tree models, each lender's gain importance of its own features.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from fedcore.errors import InvalidInput
from models import histograms as hm

from .contribution import PartyHists, collect_histograms, leave_one_out
from .report_tables import band_table, calibration_by_decile, confidence_intervals
from .runs import JobKind, RunContext, register_job

__all__ = ["render_report", "report_command", "report_job"]


# ------------------------------------------------------------------------------------ the run kind


def report_job(rc: RunContext) -> dict[str, Any]:
    p = rc.params
    model_run = p.get("model_run")
    if not isinstance(model_run, str) or not model_run:
        raise InvalidInput("report: 'model_run' (a training run id) is required")
    bins = int(p.get("bins", hm.DEFAULT_BINS))
    train = rc.state.run(model_run)
    if train.kind not in ("train", "vertical") or train.status != "succeeded":
        raise InvalidInput(f"run {model_run} is a {train.status} {train.kind} run, not a succeeded training run")
    record = train.result
    parties = list(record.get("parties", []))
    version = str(record.get("version", "1"))
    if train.kind == "vertical":  # the lenders hold the joint model's validation scores
        parties = sorted(str(x) for x in record.get("metrics", {}))
        bins = hm.DEFAULT_BINS
        if p.get("contribution"):
            raise InvalidInput("contribution accounting retrains horizontal models only")
    rc.progress(f"collecting score histograms of model {model_run} v{version} from {len(parties)} parties")
    full = collect_histograms(rc.channel, parties, model_run, version, run_id=rc.run_id, bins=bins)
    contribution = None
    if p.get("contribution"):
        contribution = [c.to_dict() for c in leave_one_out(
            rc.channel, rc.workdir, model_run, train.params, parties, full, bins=bins, progress=rc.progress)]
    return {
        "model_run": model_run, "version": version, "model": record.get("model", ""),
        "parties": parties, "metrics": record.get("metrics", {}), "history": record.get("history", []),
        "bins": bins, "per_party": {k: v.to_params() for k, v in full.items()},
        "contribution": contribution, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


register_job(JobKind("report", report_job))


# ------------------------------------------------------------------------------------- rendering


def summarize(result: Mapping[str, Any]) -> dict[str, Any]:
    """Every number the report shows, computed from the histograms in a ``report`` run result."""
    per = {k: PartyHists.from_params(v) for k, v in result["per_party"].items()}
    if not per:
        raise InvalidInput("the report holds no party histograms")
    val = hm.merge(h.val for h in per.values())
    trains = [h.train for h in per.values() if h.train is not None]
    train = hm.merge(trains) if trains else None
    scoring = [h.scoring for h in per.values() if h.scoring is not None]
    _, _, _, ks, ks_thr = hm.ks_curve(val)
    out: dict[str, Any] = {
        "auc": hm.auc(val), "ks": ks, "ks_threshold": ks_thr,
        "bad_rate_at_80": hm.bad_rate_at_approval(val, 0.8),
        "n_val": val.n, "n_train": train.n if train else 0.0, "default_rate_val": val.n_bad / val.n,
        "bands": band_table(val, 10),
        "ci": confidence_intervals(val),
        "calibration": calibration_by_decile(val),
        "stability_train_vs_val": hm.population_stability(train.total, val.total) if train else None,
        "stability_train_vs_scoring": (hm.population_stability(train.total, hm.merge(scoring).total)
                                       if scoring and train else None),
        "stability_val_vs_scoring": (hm.population_stability(val.total, hm.merge(scoring).total)
                                     if scoring else None),
        "scoring_rows": float(hm.merge(scoring).n) if scoring else 0.0,
        "parties": {k: {"auc": hm.auc(h.val), "n_val": h.n_val, "n_train": h.n_train,
                        "bad_rate_at_80": hm.bad_rate_at_approval(h.val, 0.8)}
                    for k, h in per.items() if h.val.n_bad and h.val.n_good},
        # tree models: the gain importance each party reported of its own features (none of another's)
        "importance": {k: dict(sorted(h.importance.items(), key=lambda kv: -kv[1]))
                       for k, h in per.items() if h.importance is not None},
    }
    return out


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path.name


def render_report(result: Mapping[str, Any], out: Path) -> Path:
    """Write the PNG charts, ``report.json`` and ``report.html`` into ``out``; returns the HTML path."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    s = summarize(result)
    per = {k: PartyHists.from_params(v) for k, v in result["per_party"].items()}
    val = hm.merge(h.val for h in per.values())
    trains = [h.train for h in per.values() if h.train is not None]
    train = hm.merge(trains) if trains else hm.Hist(np.zeros(val.bins), np.zeros(val.bins))
    images: dict[str, str] = {}

    fig, ax = plt.subplots(figsize=(5, 5))
    fpr, tpr = hm.roc_curve(val)
    ax.plot(fpr, tpr, label=f"federated validation (AUC {s['auc']:.3f})")
    for name, h in sorted(per.items()):
        if h.val.n_bad and h.val.n_good:
            f, t = hm.roc_curve(h.val)
            ax.plot(f, t, lw=0.8, alpha=0.6, label=f"{name} ({hm.auc(h.val):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate (goods flagged)", ylabel="true positive rate (bads flagged)", title="ROC")
    ax.legend(fontsize=7, loc="lower right")
    images["roc"] = _save(fig, out / "roc.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    thr, cb, cg, ks, ks_thr = hm.ks_curve(val)
    ax.plot(thr, cb, label="bads (cumulative)")
    ax.plot(thr, cg, label="goods (cumulative)")
    i = int(np.argmax(np.abs(cb - cg)))
    ax.vlines(thr[i], cg[i], cb[i], colors="r", label=f"KS {ks:.3f} at PD {ks_thr:.3f}")
    ax.set(xlabel="probability of default cut-off (flag at or above)", ylabel="share flagged", title="KS")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    images["ks"] = _save(fig, out / "ks.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    c = val.centers()
    hi = max(0.05, float(c[np.flatnonzero(val.total + train.total)[-1]]) + 1.0 / val.bins)
    edges = np.linspace(0, hi, 41)
    series = ((val.good, "goods (validation)"), (val.bad, "bads (validation)"), (train.total, "all (training)"))
    for counts, label in series[:3 if trains else 2]:
        w, _ = np.histogram(c, bins=edges, weights=counts)
        ax.stairs(w / max(w.sum(), 1), edges, label=label)
    ax.set(xlabel="probability of default", ylabel="share of rows", title="Score distribution")
    ax.legend(fontsize=8)
    images["scores"] = _save(fig, out / "score_distribution.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    b = s["bands"]
    ax.bar([str(x["band"]) for x in b], [100 * x["bad_rate"] for x in b])
    ax.set(xlabel="score band (1 = lowest risk, equal population)", ylabel="bad rate %", title="Bad rate by score band")
    images["bands"] = _save(fig, out / "bad_rate_by_band.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    cal = s["calibration"]["rows"]
    pr, ob = [100 * r["predicted"] for r in cal], [100 * r["observed"] for r in cal]
    ax.plot(pr, ob, "o-", label="deciles of the validation population")
    hi = max(pr + ob + [1.0]) * 1.05
    ax.plot([0, hi], [0, hi], "k:", lw=0.8, label="perfect calibration")
    ax.set(xlabel="predicted default rate %", ylabel="observed default rate %", title="Calibration by decile")
    ax.legend(fontsize=8)
    images["calibration"] = _save(fig, out / "calibration.png")

    contribution = result.get("contribution") or []
    if contribution:
        fig, ax = plt.subplots(figsize=(6, 4))
        names = [x["party"] for x in contribution]
        ax.bar(names, [x["auc_lift"] for x in contribution])
        ax.axhline(0, color="k", lw=0.8)
        ax.set(ylabel="AUC lift for the other members", title="Contribution (leave one party out)")
        images["contribution"] = _save(fig, out / "contribution.png")

    (out / "report.json").write_text(json.dumps({"summary": s, "result": dict(result)}, indent=1, default=float))
    page = out / "report.html"
    page.write_text(_html(result, s, images, contribution))
    return page


def _html(result: Mapping[str, Any], s: Mapping[str, Any], images: Mapping[str, str], contribution: list[Any]) -> str:
    e = html.escape

    def img(key: str, alt: str) -> str:
        return f'<figure><img src="{e(images[key])}" alt="{e(alt)}"><figcaption>{e(alt)}</figcaption></figure>'

    rows = "".join(
        f"<tr><td>{e(k)}</td><td>{v['n_train'] or '-'}</td><td>{v['n_val']}</td><td>{v['auc']:.4f}</td>"
        f"<td>{100 * v['bad_rate_at_80']:.2f}%</td></tr>" for k, v in sorted(s["parties"].items()))
    bands = "".join(
        f"<tr{' class=flag' if b['non_monotone'] else ''}><td>{b['band']}</td>"
        f"<td>{b['score_from']:.3f} - {b['score_to']:.3f}</td><td>{int(b['count'])}</td>"
        f"<td>{int(b['bads'])}</td><td>{100 * b['bad_rate']:.2f}%</td><td>{100 * b['approval_rate']:.1f}%</td>"
        f"<td>{100 * b['bad_rate_approved']:.2f}%</td><td>{'not monotone' if b['non_monotone'] else ''}</td></tr>"
        for b in s["bands"])
    ci = s["ci"]
    cis = "".join(f"<tr><td>{k.upper()}</td><td>{v['estimate']:.4f}</td><td>{v['low']:.4f} - {v['high']:.4f}</td></tr>"
                  for k, v in ci.items())
    cal = s["calibration"]
    cal_rows = "".join(f"<tr><td>{r['decile']}</td><td>{int(r['n'])}</td><td>{100 * r['predicted']:.2f}%</td>"
                       f"<td>{100 * r['observed']:.2f}%</td></tr>" for r in cal["rows"])
    if s["stability_train_vs_val"] is None and s.get("stability_val_vs_scoring") is not None:
        stability = ("<p>Population stability between validation scores and the scores served with this model "
                     f"({int(s['scoring_rows'])} scores): <b>{s['stability_val_vs_scoring']:.4f}</b> "
                     "(&lt; 0.1 stable, 0.1-0.25 some shift, &gt; 0.25 major shift).</p>")
    elif s["stability_train_vs_val"] is None:
        stability = ("<p class='note'>A joint (vertical) model keeps only its validation scores at the lenders, "
                     "and no scores have been served with it yet, so population stability is not available.</p>")
    elif s["stability_train_vs_scoring"] is None:
        stability = ("<p class='note'>No scoring traffic has been recorded for this model yet, so population "
                     "stability against recent scoring cannot be computed. For reference, population stability "
                     f"between the training and validation scores is {s['stability_train_vs_val']:.4f}.</p>")
    else:
        stability = ("<p>Population stability between training scores and recent scoring traffic "
                     f"({int(s['scoring_rows'])} scores): <b>{s['stability_train_vs_scoring']:.4f}</b> "
                     "(&lt; 0.1 stable, 0.1-0.25 some shift, &gt; 0.25 major shift)."
                     f" Training vs validation: {s['stability_train_vs_val']:.4f}.</p>")
    contrib = "<p class='note'>Contribution accounting was not requested (run with --contribution).</p>"
    if contribution:
        contrib = (
            "<p>Leave-one-party-out federated retraining; both models evaluated on the other members' validation "
            "splits. Lift = what the party's data adds (AUC up; bad rate at 80% approval down).</p><table><tr>"
            "<th>party</th><th>AUC with</th><th>AUC without</th><th>AUC lift</th><th>bad rate with</th>"
            "<th>bad rate without</th><th>bad-rate lift</th><th>eval rows</th></tr>" + "".join(
                f"<tr><td>{e(c['party'])}</td><td>{c['auc_full']:.4f}</td><td>{c['auc_without']:.4f}</td>"
                f"<td>{c['auc_lift']:+.4f}</td><td>{100 * c['bad_rate_full']:.2f}%</td>"
                f"<td>{100 * c['bad_rate_without']:.2f}%</td><td>{100 * c['bad_rate_lift']:+.2f} pp</td>"
                f"<td>{c['eval_rows']}</td></tr>" for c in contribution)
            + "</table>" + img("contribution", "AUC lift by party"))
    importance = "".join(
        f"<h3>{e(k)}</h3><table><tr><th>feature</th><th>gain</th><th>share</th></tr>" + "".join(
            f"<tr><td>{e(f)}</td><td>{g:.2f}</td><td>{100 * g / max(sum(imp.values()), 1e-300):.1f}%</td></tr>"
            for f, g in imp.items()) + "</table>" for k, imp in sorted(s["importance"].items()))
    if importance:
        importance = ("<h2>Feature importance (gain)</h2><p>Each party's own features, as that party reported them;"
                      " the platform's importance and every split threshold stay with their owner.</p>" + importance)
    splits = "training and validation splits" if s["n_train"] else "validation split (joint model: its best epoch)"
    title = f"{e(str(result['model_run']))} (version {e(str(result['version']))}, {e(str(result.get('model', '')))})"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Model report {title}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}figure{{display:inline-block;margin:.5em}}
.note{{color:#8a5a00}}tr.flag td{{background:#fde2e2}}</style></head><body>
<h1>Model report: {title}</h1>
<p>Computed from score histograms of each party's own {splits} ({result['bins']} bins);
no subject data left any party. Generated {e(str(result.get('created', '')))}.</p>
<h2>Summary</h2><table><tr><th>AUC</th><th>KS</th><th>bad rate at 80% approval</th><th>validation rows</th>
<th>default rate</th></tr><tr><td>{s['auc']:.4f}</td><td>{s['ks']:.4f}</td><td>{100 * s['bad_rate_at_80']:.2f}%</td>
<td>{int(s['n_val'])}</td><td>{100 * s['default_rate_val']:.2f}%</td></tr></table>
<h2>Confidence intervals (95%, bootstrap of the validation histogram)</h2><table><tr><th>metric</th>
<th>estimate</th><th>interval</th></tr>{cis}</table>
<h2>Parties</h2><table><tr><th>party</th><th>training rows</th><th>validation rows</th><th>AUC</th>
<th>bad rate at 80%</th></tr>{rows}</table>
<h2>Curves</h2>{img('roc', 'ROC curve')}{img('ks', 'KS curve')}{img('scores', 'Score distribution')}
<h2>Bad rate by score band</h2>{img('bands', 'Bad rate by score band')}<table><tr><th>band</th><th>PD range</th>
<th>rows</th><th>bads</th><th>bad rate</th><th>approval rate (this band and safer)</th>
<th>bad rate of the approved</th><th>flag</th></tr>{bands}</table>
<h2>Calibration</h2>{img('calibration', 'Predicted vs observed default rate by decile')}<table><tr><th>decile</th>
<th>rows</th><th>predicted</th><th>observed</th></tr>{cal_rows}</table>
<p>Hosmer-Lemeshow statistic {cal['hl_statistic']:.2f} on {cal['hl_df']} degrees of freedom
(p = {cal['hl_pvalue']:.3f}; a small p says predicted and observed rates differ).</p>
{importance}
<h2>Population stability</h2>{stability}
<h2>Contribution by party</h2>{contrib}
</body></html>"""


# ------------------------------------------------------------------------------------------ CLI


def report_command(
    model_run: Annotated[str, typer.Argument(help="The training run whose model to report on.")],
    out: Annotated[Path, typer.Option(help="Folder for the PNG charts and report.html.")] = Path("report"),
    home: Annotated[Path, typer.Option("--home", envvar="FEDCREDIT_COORDINATOR_HOME",
                                       help="The coordinator's home folder.")] = Path("."),
    contribution: Annotated[bool, typer.Option(help="Also run leave-one-party-out contribution accounting.")] = False,
    bins: Annotated[int, typer.Option(min=10, max=hm.MAX_BINS, help="Score bins of the histograms.")] = hm.DEFAULT_BINS,
) -> None:
    """Evaluation report of a model: ROC, KS, score distribution, bad rate by band, population stability,
    contribution."""
    from .admin_client import AdminClient
    from .cli import follow_run
    from .config import load_coordinator_config

    with AdminClient(load_coordinator_config(home)) as client:
        result = follow_run(client.start_run(
            "report", {"model_run": model_run, "bins": bins, "contribution": contribution}))
    page = render_report(result, out)
    typer.echo(f"report of {model_run}: {page}")


def evaluation_text(result: Mapping[str, Any]) -> str:
    """``coordinator evaluate``: the pooled held-out metrics of a report run, as text (the same numbers
    the report shows: every lender's validation split, pooled from its coarsened histograms)."""
    s = summarize(result)
    lines = [f"held-out rows {int(s['n_val'])}, default rate {100 * s['default_rate_val']:.2f}%"]
    for k, v in s["ci"].items():
        lines.append(f"{k.upper():5} {v['estimate']:.4f}  (95% CI {v['low']:.4f} - {v['high']:.4f})")
    lines.append(f"bad rate at 80% approval {100 * s['bad_rate_at_80']:.2f}%")
    lines += [f"  {name}: AUC {p['auc']:.4f} on {int(p['n_val'])} rows" for name, p in sorted(s["parties"].items())]
    return "\n".join(lines)


def evaluate_command(
    model_run: Annotated[str, typer.Argument(help="The training run whose model to evaluate.")],
    home: Annotated[Path, typer.Option("--home", envvar="FEDCREDIT_COORDINATOR_HOME",
                                       help="The coordinator's home folder.")] = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print every pooled number as JSON.")] = False,
) -> None:
    """Evaluate a model on every lender's held-out split: AUC, KS and Gini with bootstrap intervals,
    pooled from histograms (the report's numbers, without the charts)."""
    from .admin_client import AdminClient
    from .cli import follow_run
    from .config import load_coordinator_config

    with AdminClient(load_coordinator_config(home)) as client:
        result = follow_run(client.start_run("report", {"model_run": model_run, "bins": hm.DEFAULT_BINS}))
    typer.echo(json.dumps(summarize(result), default=float) if as_json else evaluation_text(result))
