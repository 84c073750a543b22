"""The quick start's real-time steps: one pre-approval with offers from several lenders, one monitoring
pass at yixin (called by :func:`scripts.localfed.demo_command`)."""

from __future__ import annotations

import csv
import json
import urllib.request
from pathlib import Path
from typing import Any

from scripts.localfed import free_port

LENDERS = ("yixin", "meili", "cango", "uxin", "guazi")
PRICING = """[policy]
decline_if_blacklisted = true
model_id = "{model}"

[products.car_loan]
min_amount = 10000
[[products.car_loan.bands]]
max_pd = {low}
rate = 0.05
max_amount = 300000
[[products.car_loan.bands]]
max_pd = {high}
rate = 0.07
max_amount = 150000
"""


def prepare_platform(fed: Any) -> int:
    """Before the nodes start: the platform's local pre-approval API on a free port."""
    port = free_port()
    (fed.party_home("tiange") / "preapproval.json").write_text(
        json.dumps({"http_listen": f"127.0.0.1:{port}", "budget_ms": 10000}))
    return port


def realtime_examples(fed: Any, root: Path, model: str, port: int) -> list[str]:
    for i, lender in enumerate(LENDERS):  # each lender its own appetite
        low, high = 0.03 + 0.01 * i, 0.12 + 0.02 * i
        (fed.party_home(lender) / "pricing.toml").write_text(PRICING.format(model=model, low=low, high=high))
    with open(root / "data" / "tiange" / "behaviour.csv", newline="") as f:
        viewers = [r["user_id"] for _, r in zip(range(200), csv.DictReader(f), strict=False)
                   if r.get("consent_preapproval") == "1"]
    token = (fed.party_home("tiange") / "preapproval_api.token").read_text().strip()
    lines = []
    for vid in viewers[:20]:
        body = json.dumps({"viewer_id": vid, "product": {"kind": "car_loan", "amount": 150000},
                           "lenders": list(LENDERS)}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/preapprove", body,
                                     {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 (loopback)
            offers = json.loads(r.read())["offers"]
        if len(offers) >= 2:
            lines.append(f"viewer {vid[:3]}****{vid[-4:]} taps 'apply now' for a 150,000 car loan: "
                         f"{len(offers)} offers (the platform sees terms only)")
            lines += [f"  {o['lender']}: {o['amount']:,.0f} at {o['rate']:.0%} over {o['term_months']} months"
                      for o in offers]
            break
    home = fed.party_home("yixin")
    (home / "monitoring.toml").write_text(f'model_id = "{model}"\n')  # PD threshold from the model
    book = fed.cli("party", "monitor", "register", "--home", str(home)).stdout.strip()
    report = json.loads(fed.cli("party", "monitor", "run", "--home", str(home)).stdout)
    lines.append(f"monitoring at yixin: {book}; one joint pass raised {report['alerts']} alerts "
                 f"{report['by_kind']} at PD > {report['pd_threshold']:.3f} (the riskiest 5% of the model's "
                 "validation applicants; kept at yixin; `fedcredit party monitor alerts`)")
    return lines
