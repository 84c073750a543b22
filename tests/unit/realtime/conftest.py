"""A small federation in one process for the real-time tests: a platform and three lenders with real
stores, model slices, joint scoring and pre-approval wired on an InMemoryChannel."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.preapproval.coordinator import LocalPreapprovalGateway, PreapprovalCoordinator
from fedcore.protocol.preapproval.party import PreapprovalLender
from fedcore.protocol.scoring.coordinator import ScoringCoordinator
from fedcore.protocol.scoring.groups import ScoreGroups
from fedcore.protocol.scoring.messages import ModelSlice
from fedcore.protocol.scoring.requester import LocalGateway
from fedcore.protocol.sealing import PartyIdentity, make_identities
from fedcore.protocol.tasks import HandlerRegistry
from party_node.audit import AuditLog
from party_node.ingest import ingest_file
from party_node.preapproval import JointOfferSource, PreapprovalService, PreapprovalSettings
from party_node.pricing import parse_policy
from party_node.pseudonym import PseudonymKey
from party_node.schema import parse_schema
from party_node.scoring import ScoringService, register_scoring_handlers
from party_node.scoring_batch import ScoringSettings
from party_node.store import Store

KEY = PseudonymKey(b"r" * 32)
POLICY = {
    "policy": {"decline_if_blacklisted": True, "valid_minutes": 20},
    "products": {"car_loan": {"min_amount": 5000, "bands": [
        {"max_pd": 0.10, "rate": 0.05, "max_amount": 300000},
        {"max_pd": 0.30, "rate": 0.07, "max_amount": 100000},
    ]}},
}


def phone(i: int) -> str:
    return f"139{i:08d}"


@dataclass
class Party:
    name: str
    home: Path
    store: Store
    slice: ModelSlice
    x: dict[str, np.ndarray] = field(default_factory=dict)


def make_party(root: Path, name: str, rows: range, feats: list[str], rng: np.random.Generator, *,
               intercept: float | None = None, consent_pre_every: int = 0, fraud: set[int] | None = None,
               loans: set[int] | None = None) -> Party:
    home = root / name
    home.mkdir()
    x = rng.normal(3, 2, size=(len(rows), len(feats)))
    lines = [",".join(["phone", *feats, "c_scoring", "c_blacklist", "c_pre", "c_mon", "fraud", "loan"])]
    truth = {}
    for j, i in enumerate(rows):
        pre = bool(consent_pre_every) and i % consent_pre_every == 0
        lines.append(",".join([phone(i), *(f"{v:.6f}" for v in x[j]), "true", "true", str(pre).lower(),
                               str(i % 5 != 0).lower(), str(i in (fraud or set())).lower(),
                               str(i in (loans or set())).lower()]))
        truth[phone(i)] = x[j]
    (home / "d.csv").write_text("\n".join(lines) + "\n")
    schema = parse_schema({
        "dataset": {"name": "d", "id_column": "phone", "id_kind": "phone", "federation_columns": feats},
        "numeric": {f: {"missing": "reject"} for f in feats},
        "consent": {"scoring": "c_scoring", "blacklist": "c_blacklist", "preapproval": "c_pre",
                    "monitoring": "c_mon"},
        "flags": {"fraud": "fraud", "active_loan": "loan"},
    })
    store = Store.open(f"sqlite:///{home / 'store.db'}")
    ingest_file(store, home / "d.csv", schema)
    store.install_pseudonym_key(KEY)
    sl = ModelSlice("m1", "1", name, "d", tuple(feats), rng.normal(0, 0.5, len(feats)), x.mean(axis=0),
                    x.std(axis=0), intercept)
    (home / "models" / "m1").mkdir(parents=True)
    (home / "models" / "m1" / "slice.json").write_text(json.dumps(sl.to_dict()))
    return Party(name, home, store, sl, truth)


@dataclass
class Federation:
    channel: InMemoryChannel
    platform: Party
    lenders: dict[str, Party]
    services: dict[str, ScoringService]
    preapproval: PreapprovalService
    coordinator: PreapprovalCoordinator
    identities: dict[str, PartyIdentity] = field(default_factory=dict)
    registries: dict[str, HandlerRegistry] = field(default_factory=dict)
    policy: dict = field(default_factory=lambda: POLICY)
    groups: ScoreGroups | None = None


@pytest.fixture
def fed(tmp_path: Path):
    rng = np.random.default_rng(11)
    platform = make_party(tmp_path, "platform", range(0, 300), ["spend", "tips"], rng, consent_pre_every=2)
    lenders = {
        "lender_a": make_party(tmp_path, "lender_a", range(0, 200), ["income", "ltv"], rng, intercept=-2.5,
                               loans=set(range(0, 200, 2))),  # lender_a's active book: even rows
        "lender_b": make_party(tmp_path, "lender_b", range(100, 300), ["dti"], rng, intercept=-2.0,
                               fraud={150}),
        "lender_c": make_party(tmp_path, "lender_c", range(200, 400), ["age"], rng, intercept=-1.0),
    }
    ids = make_identities(["platform", *lenders])
    ch = InMemoryChannel(record_wire=True)
    groups = ScoreGroups()  # as at a coordinator: a pre-approval's lenders' scores are grouped
    scoring = ScoringCoordinator(ch, requester_roles=frozenset({Role.LENDER}), groups=groups)
    reg = HandlerRegistry()
    register_scoring_handlers(reg, platform.store, platform.home)
    ch.add_party("platform", Role.PLATFORM, reg)
    services = {}
    registries = {"platform": reg}
    for name, p in lenders.items():
        reg = registries[name] = HandlerRegistry()
        register_scoring_handlers(reg, p.store, p.home)
        svc = ScoringService(p.store, p.home, LocalGateway(scoring, name),
                             ScoringSettings(model_id="m1", allow_partial=True, timeout_s=10.0))
        services[name] = svc
        PreapprovalLender(JointOfferSource(svc, parse_policy(POLICY)), AuditLog.for_home(p.home),
                          ids[name]).register(reg)
        ch.add_party(name, Role.LENDER, reg)
    coord = PreapprovalCoordinator(ch, groups=groups, scores=scoring)
    # a generous budget: the tests expect every lender's answer on a loaded machine (the budget test sets its own)
    svc = PreapprovalService(platform.store, platform.home, LocalPreapprovalGateway(coord, "platform"),
                             PreapprovalSettings(budget_ms=30_000), identity=ids["platform"])
    yield Federation(ch, platform, lenders, services, svc, coord, identities=ids, registries=registries,
                     groups=groups)
    for p in (platform, *lenders.values()):
        p.store.close()
    ch.close()
