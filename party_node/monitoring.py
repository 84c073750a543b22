"""Post-loan monitoring at a lender: its active book re-scored jointly, alerts kept at the lender.

The **book** is the lender's own active borrowers who consented to ``monitoring`` (its store's
active-loan flags and consent; :meth:`Monitor.register_book`); it is a table in the lender's store and
never leaves the node, nor does the last pass's state (``HOME/monitoring/state.npz``). A **pass**
(:meth:`Monitor.run`, ``fedcredit party monitor run``, every ``interval_s`` on a running node, and on a
running node after each new platform snapshot: :class:`party_node.monitoring_cli.SnapshotPasses`)
scores the book with the joint model through the ordinary joint scoring request (chunks of
pseudonyms, queries score/blacklist/loans): to the coordinator and the other members it is
indistinguishable from any batch scoring request, and they learn exactly what they learn
from one (:mod:`fedcore.protocol.scoring`). The pass compares each borrower with the previous pass and
raises alerts:

- ``pd_above``: joint PD crossed ``pd_threshold`` (from below, or on the first pass). Unset (0), the
  threshold comes from the model (:func:`threshold_from_model`): the PD above which the riskiest
  ``alert_share`` (5%) of the model's validation applicants lie, from its validation histogram
  (``validation_hist.json``, the one the model's decision bands come from) or its validation scores;
  0.2 for a model with neither;
- ``pd_up``: joint PD at least ``pd_factor`` times the previous pass's;
- ``loans_up``: more active loans at other members than before (multi-lending);
- ``fraud_hit``: on a member's fraud list now, not before;
- ``contribution``: the consortium's summed partial logit moved by ``contribution_delta`` or more;
- ``score_drift`` (one per pass, no borrower): population stability of this pass's PDs against the
  model's validation scores (``HOME/models/<model>/validation_scores.json``, a JSON list; else the
  first pass) above ``drift_psi`` (0.25).

Alerts are stored in the lender's store (:meth:`Monitor.alerts`; CLI ``fedcredit party monitor
alerts``; HTTP ``GET /v1/alerts``), counted in Prometheus (``fedcredit_monitoring_alerts``) and POSTed
as JSON to ``webhook`` when one is configured. Nothing about an alert is sent to the coordinator or the
other members. Settings: ``HOME/monitoring.toml`` (:class:`MonitorSettings`).
"""

from __future__ import annotations

import json
import logging
import math
import time
import tomllib
import urllib.request
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from fedcore import telemetry
from fedcore.errors import ConfigError, InvalidInput
from fedcore.protocol.scoring.messages import QUERIES
from fedcore.protocol.scoring.requester import sigmoid
from models.metrics import population_stability

from .scoring import ScoringService
from .store import Store

log = logging.getLogger(__name__)
SETTINGS_FILE = "monitoring.toml"
KINDS = ("pd_above", "pd_up", "loans_up", "fraud_hit", "contribution", "score_drift")

_MD = sa.MetaData()
BOOK = sa.Table("monitoring_book", _MD,
                sa.Column("row_id", sa.BigInteger, primary_key=True, autoincrement=False),
                sa.Column("pseudonym", sa.LargeBinary(16), nullable=False),
                sa.Column("added_at", sa.Float, nullable=False))
ALERTS = sa.Table("monitoring_alerts", _MD,
                  sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                  sa.Column("at", sa.Float, nullable=False), sa.Column("pass_at", sa.Float, nullable=False),
                  sa.Column("row_id", sa.BigInteger, nullable=True), sa.Column("kind", sa.String(16), nullable=False),
                  sa.Column("value", sa.Float, nullable=False), sa.Column("previous", sa.Float, nullable=True),
                  sa.Column("delivered", sa.Boolean, nullable=False, default=False))


@dataclass(frozen=True)
class MonitorSettings:
    model_id: str = ""  # empty: scoring.json's model
    pd_threshold: float = 0.0  # 0: from the model's validation distribution (threshold_from_model)
    alert_share: float = 0.05  # ... the riskiest share of validation applicants the threshold leaves above it
    pd_factor: float = 2.0
    contribution_delta: float = 1.0
    drift_psi: float = 0.25
    webhook: str = ""  # http(s) URL receiving {"alerts": [...]} after each pass with alerts
    chunk: int = 16_384
    timeout_s: float = 120.0
    interval_s: float = 0.0  # a running node passes every interval_s seconds (0: only when asked)
    http_listen: str = ""  # GET /v1/alerts on a running node (loopback; empty: off)

    @classmethod
    def load(cls, home: Path) -> MonitorSettings:
        path = home / SETTINGS_FILE
        if not path.is_file():
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        return cls.from_mapping(data, str(path))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], src: str = SETTINGS_FILE) -> MonitorSettings:
        known = {f.name: f for f in fields(cls)}
        for k, v in data.items():
            if k not in known:
                raise ConfigError(f"{src}: {k} is not a monitoring setting (known: {', '.join(sorted(known))})")
            want = str if known[k].type == "str" else (int if known[k].type == "int" else float)
            if isinstance(v, bool) or not isinstance(v, want if want is not float else (int, float)):
                raise ConfigError(f"{src}: {k} must be a {want.__name__}, got {v!r}")
        st = cls(**data)
        checks = {"pd_threshold": 0 <= st.pd_threshold < 1, "alert_share": 0 < st.alert_share < 0.5,
                  "pd_factor": st.pd_factor > 1,
                  "contribution_delta": st.contribution_delta > 0, "drift_psi": st.drift_psi > 0,
                  "chunk": st.chunk >= 1, "timeout_s": st.timeout_s > 0, "interval_s": st.interval_s >= 0,
                  "webhook": not st.webhook or st.webhook.startswith(("http://", "https://"))}
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"{src}: {name} = {getattr(st, name)!r} is out of range")
        return st


FALLBACK_THRESHOLD = 0.2


def threshold_from_model(model_dir: Path, share: float) -> tuple[float, str]:
    """The PD above which the riskiest ``share`` of the model's validation applicants lie, and where it
    came from: the validation histogram (the upper edge of the bin where the safest ``1 - share`` are
    reached, as :func:`party_node.model_bands.bands_from_histogram` cuts the decision bands), else the
    validation scores' quantile, else :data:`FALLBACK_THRESHOLD`."""
    from fedcore.protocol.vertical.party import VALIDATION_HIST
    from models import histograms as hm
    from models.bands import cutoff_for_approval

    hist = model_dir / VALIDATION_HIST
    if hist.is_file():
        try:
            h = hm.Hist.from_params(json.loads(hist.read_text())["val"])
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidInput(f"{hist}: not a validation histogram ({exc})") from None
        if h.n > 0:
            k = cutoff_for_approval(h.total, 1.0 - share)
            if k >= h.bins:  # more than `share` of the validation PDs sit in the top bin: no usable cut
                log.warning("%s: %.1f%% of the model's validation PDs are >= %.3f (an over-confident model);"
                            " the pd_above threshold cannot leave only the riskiest %.0f%% above it",
                            hist, 100 * h.total[-1] / h.n, 1 - 1 / h.bins, 100 * share)
            return min(k / h.bins, 0.999), VALIDATION_HIST
    scores = model_dir / "validation_scores.json"
    if scores.is_file():
        try:
            v = np.asarray(json.loads(scores.read_text()), dtype=np.float64)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{scores}: not a JSON list of scores ({exc})") from None
        if len(v):
            return float(np.clip(np.quantile(v, 1.0 - share), 1e-6, 0.999)), scores.name
    return FALLBACK_THRESHOLD, "default"


@dataclass(frozen=True)
class Alert:
    kind: str
    row_id: int | None
    value: float
    previous: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "row_id": self.row_id, "value": self.value, "previous": self.previous}


def evaluate(prev: dict[str, float] | None, cur: dict[str, float], st: MonitorSettings, row_id: int) -> list[Alert]:
    """The alert rules for one borrower (``prev``: the last pass's state, ``None`` on the first)."""
    out: list[Alert] = []
    pd_ = cur["pd"]
    if pd_ > st.pd_threshold and (prev is None or prev["pd"] <= st.pd_threshold):
        out.append(Alert("pd_above", row_id, pd_, None if prev is None else prev["pd"]))
    if prev is None:
        if cur["blacklist"] > 0:
            out.append(Alert("fraud_hit", row_id, cur["blacklist"], None))
        return out
    if prev["pd"] > 0 and pd_ >= st.pd_factor * prev["pd"]:
        out.append(Alert("pd_up", row_id, pd_, prev["pd"]))
    if cur["loans"] > prev["loans"]:
        out.append(Alert("loans_up", row_id, cur["loans"], prev["loans"]))
    if cur["blacklist"] > 0 and prev["blacklist"] == 0:
        out.append(Alert("fraud_hit", row_id, cur["blacklist"], prev["blacklist"]))
    if abs(cur["external"] - prev["external"]) >= st.contribution_delta:
        out.append(Alert("contribution", row_id, cur["external"], prev["external"]))
    return out


FIELDS = ("pd", "loans", "blacklist", "external")


def evaluate_arrays(prev: dict[str, np.ndarray] | None, known: np.ndarray, cur: dict[str, np.ndarray],
                    st: MonitorSettings, rows: np.ndarray) -> list[Alert]:
    """:func:`evaluate` for a whole pass at once (``known``: the rows that have a previous state)."""
    n = len(rows)
    p = prev or {k: np.zeros(n) for k in FIELDS}
    out: list[Alert] = []

    def emit(kind: str, mask: np.ndarray, value: np.ndarray, previous: np.ndarray | None) -> None:
        for i in np.flatnonzero(mask):
            prior = None if previous is None or not known[i] else float(previous[i])
            out.append(Alert(kind, int(rows[i]), float(value[i]), prior))

    emit("pd_above", (cur["pd"] > st.pd_threshold) & (~known | (p["pd"] <= st.pd_threshold)), cur["pd"], p["pd"])
    emit("pd_up", known & (p["pd"] > 0) & (cur["pd"] >= st.pd_factor * p["pd"]), cur["pd"], p["pd"])
    emit("loans_up", known & (cur["loans"] > p["loans"]), cur["loans"], p["loans"])
    emit("fraud_hit", (cur["blacklist"] > 0) & (~known | (p["blacklist"] == 0)), cur["blacklist"], p["blacklist"])
    emit("contribution", known & (np.abs(cur["external"] - p["external"]) >= st.contribution_delta),
         cur["external"], p["external"])
    return out


@dataclass(frozen=True)
class PassReport:
    book: int
    scored: int
    alerts: list[Alert]
    psi: float | None
    delivered: bool | None  # None: no webhook or no alerts
    pd_threshold: float | None = None  # the threshold in force (None: empty book)


class Monitor:
    """One lender's monitoring: its book, passes, alerts (tables in its store)."""

    def __init__(self, service: ScoringService, settings: MonitorSettings | None = None) -> None:
        self.service = service
        self.store: Store = service.store
        self.settings = settings or MonitorSettings()
        _MD.create_all(self.store.engine)

    def register_book(self) -> int:
        """The book := active borrowers with monitoring consent (replaces the previous book)."""
        rows = np.intersect1d(self.store.active_loan_ids(), self.store.ids_with_consent("monitoring"))
        ps = self.store.pseudonyms(rows)
        now = time.time()
        items = [{"row_id": int(r), "pseudonym": p, "added_at": now} for r, p in zip(rows, ps, strict=True) if p]
        with self.store.write_transaction() as conn:
            conn.execute(BOOK.delete())
            for i in range(0, len(items), 20_000):
                conn.execute(BOOK.insert(), items[i : i + 20_000])
        return len(items)

    def book(self) -> tuple[np.ndarray, list[bytes]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(BOOK.c.row_id, BOOK.c.pseudonym).order_by(BOOK.c.row_id)).all()
        return np.array([r[0] for r in rows], dtype=np.int64), [bytes(r[1]) for r in rows]

    def _reference(self, model_id: str) -> np.ndarray | None:
        path = self.service.home / "models" / model_id / "validation_scores.json"
        if path.is_file():
            try:
                return np.asarray(json.loads(path.read_text()), dtype=np.float64)
            except (OSError, ValueError) as exc:
                raise InvalidInput(f"{path}: not a JSON list of scores ({exc})") from None
        ref = self.service.home / "monitoring" / f"reference_{model_id}.npy"
        return np.load(ref, allow_pickle=False) if ref.is_file() else None

    def score_book(self, rows: np.ndarray, pseudos: list[bytes]) -> dict[str, np.ndarray]:
        """Joint PD, loans, fraud-list count and the consortium's contribution per book row."""
        sl = self.service.model(self.settings.model_id or None)
        rids, mat = self.service._own_matrix(sl)
        x = np.tile(sl.neutral(), (len(rows), 1))  # store columns (one-hot levels are encoded later)
        if len(rids):
            pos = np.minimum(np.searchsorted(rids, rows), len(rids) - 1)
            hit = rids[pos] == rows
            x[hit] = mat[pos[hit]]
        own = float(sl.intercept or 0.0) + sl.contributions(x).sum(axis=1)
        ext, bl, loans = np.zeros(len(rows)), np.zeros(len(rows)), np.zeros(len(rows))
        for s in range(0, len(rows), self.settings.chunk):
            e = min(len(rows), s + self.settings.chunk)
            out = self.service.requester.query(b"".join(pseudos[s:e]), model_id=sl.model_id, model_version=sl.version,
                                               queries=QUERIES, allow_partial=True, timeout_s=self.settings.timeout_s)
            if out.external_logit is not None:
                ext[s:e] = out.external_logit
            if out.blacklist_hits is not None:
                bl[s:e] = out.blacklist_hits
            if out.active_loans is not None:
                loans[s:e] = out.active_loans
        return {"pd": sigmoid(own + ext), "loans": loans, "blacklist": bl, "external": ext}

    def threshold(self, model_id: str | None = None) -> tuple[float, str]:
        """The ``pd_above`` threshold in force and its source (``settings``, or the model's)."""
        if self.settings.pd_threshold > 0:
            return self.settings.pd_threshold, "settings"
        mid = model_id or self.service.model(self.settings.model_id or None).model_id
        return threshold_from_model(self.service.home / "models" / mid, self.settings.alert_share)

    def run(self, trigger: str = "") -> PassReport:
        """One pass; ``trigger`` (audited) says why: empty for a scheduled or CLI pass, ``snapshot <date>``
        after the platform announced a new snapshot."""
        rows, pseudos = self.book()
        started = time.time()
        alerts: list[Alert] = []
        psi = None
        threshold = None
        if len(rows):
            cur = self.score_book(rows, pseudos)
            prev, known = self._load_state(rows)
            model_id = self.service.model(self.settings.model_id or None).model_id
            threshold, _src = self.threshold(model_id)
            rules = replace(self.settings, pd_threshold=threshold)
            alerts += evaluate_arrays(prev, known, cur, rules, rows)
            ref = self._reference(model_id)
            if ref is None:
                path = self.service.home / "monitoring" / f"reference_{model_id}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, cur["pd"], allow_pickle=False)
            else:
                psi = population_stability(ref, cur["pd"])
                if psi > self.settings.drift_psi:
                    alerts.append(Alert("score_drift", None, psi, self.settings.drift_psi))
            self._save_state(rows, cur)
            with self.store.write_transaction() as conn:
                if alerts:
                    conn.execute(ALERTS.insert(), [{**a.to_dict(), "at": time.time(), "pass_at": started,
                                                    "delivered": False} for a in alerts])
        for a in alerts:
            telemetry.ALERTS.labels(a.kind).inc()
        delivered = self._deliver(started) if alerts and self.settings.webhook else None
        self.service.audit.append("monitoring_pass", {"book": len(rows), "alerts": len(alerts),
                                                      "psi": psi if psi is None or math.isfinite(psi) else None,
                                                      "pd_threshold": threshold,
                                                      **({"trigger": trigger} if trigger else {})})
        return PassReport(len(rows), len(rows), alerts, psi, delivered, threshold)

    def _state_path(self) -> Path:
        return self.service.home / "monitoring" / "state.npz"

    def _load_state(self, rows: np.ndarray) -> tuple[dict[str, np.ndarray] | None, np.ndarray]:
        """The previous pass's values aligned to ``rows`` (and which rows had one)."""
        path = self._state_path()
        if not path.is_file():
            return None, np.zeros(len(rows), dtype=bool)
        with np.load(path, allow_pickle=False) as z:
            old_rows = z["row_id"]
            old = {k: z[k] for k in FIELDS}
        pos = np.minimum(np.searchsorted(old_rows, rows), max(len(old_rows) - 1, 0))
        known = (old_rows[pos] == rows) if len(old_rows) else np.zeros(len(rows), dtype=bool)
        if not len(old_rows):
            return {k: np.zeros(len(rows)) for k in old}, known
        return {k: np.where(known, v[pos], 0.0) for k, v in old.items()}, known

    def _save_state(self, rows: np.ndarray, cur: dict[str, np.ndarray]) -> None:
        path = self._state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        arrays: dict[str, Any] = {k: np.asarray(cur[k], dtype=np.float64) for k in FIELDS}
        np.savez(tmp, row_id=rows, **arrays)
        tmp.replace(path)

    def _deliver(self, pass_at: float) -> bool:
        pending = self.alerts(pass_at=pass_at)
        body = json.dumps({"alerts": pending}).encode()
        headers = {"Content-Type": "application/json"}
        req = urllib.request.Request(self.settings.webhook, body, headers)  # noqa: S310 (scheme checked at load)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (the scheme is checked at load)
                ok = 200 <= r.status < 300
        except OSError as exc:
            log.warning("monitoring webhook %s failed: %s", self.settings.webhook, exc)
            ok = False
        if ok:
            with self.store.write_transaction() as conn:
                conn.execute(ALERTS.update().where(ALERTS.c.pass_at == pass_at).values(delivered=True))
        return ok

    def alerts(
        self, *, pass_at: float | None = None, kind: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Stored alerts, newest first, with the lender's own id of the borrower (local only)."""
        s = self.store.t["subjects"]
        q = sa.select(ALERTS, s.c.id_norm).join(s, s.c.row_id == ALERTS.c.row_id, isouter=True)
        if pass_at is not None:
            q = q.where(ALERTS.c.pass_at == pass_at)
        if kind is not None:
            if kind not in KINDS:
                raise InvalidInput(f"alert kind {kind!r} is not one of {', '.join(KINDS)}")
            q = q.where(ALERTS.c.kind == kind)
        q = q.order_by(ALERTS.c.id.desc()).limit(limit)
        with self.store.engine.connect() as conn:
            return [{"id": r.id, "at": r.at, "kind": r.kind, "borrower": r.id_norm, "value": r.value,
                     "previous": r.previous, "delivered": bool(r.delivered)} for r in conn.execute(q)]
