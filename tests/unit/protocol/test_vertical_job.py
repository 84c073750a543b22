"""The ``vertical`` job kind at the coordinator: registration, parameters, the registered result."""

from __future__ import annotations

import numpy as np

from coordinator.jobs import vertical as vjob  # noqa: F401  (registers the job kind)
from coordinator.runs import JOB_KINDS, RunContext
from coordinator.state import StateStore
from fedcore.crypto.pki import CertificateAuthority
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.sealing import make_identities
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.protocol.vertical.party import VerticalParty
from fedcore.protocol.vertical.session import Table

CA = CertificateAuthority.create()  # the federation's CA: binds the parties' session keys


class _Src:
    def __init__(self, tables):
        self.tables = tables

    def vertical_table(self, psi_run, dataset, *, labels):
        return self.tables[psi_run]


def test_vertical_job_registers_one_joint_model_version(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    xl, xp = rng.normal(size=(n, 3)), rng.normal(size=(n, 4))
    y = (rng.random(n) < 1 / (1 + np.exp(-(xl[:, 0] + xp[:, 1])))).astype(np.int8)
    ch = InMemoryChannel()
    srcs = {
        "yixin": _Src({"p1": Table(xl[:300], ["age", "income", "ltv"], "applications", y[:300])}),
        "meili": _Src({"p2": Table(xl[300:], ["age", "income", "ltv"], "applications", y[300:])}),
        "tiange": _Src({"p1": Table(xp[:300], ["spend", "tips", "freq", "social"], "behaviour"),
                        "p2": Table(xp[300:], ["spend", "tips", "freq", "social"], "behaviour")}),
    }
    for name, src in srcs.items():
        reg = HandlerRegistry()
        VerticalParty(name, src, tmp_path / name / "v", tmp_path / name / "models",
                      identity=make_identities([name], CA)[name]).register(reg)
        ch.add_party(name, Role.PLATFORM if name == "tiange" else Role.LENDER, reg)
    state = StateStore(tmp_path / "coord" / "state.db")
    msgs: list[str] = []
    rc = RunContext(ch, "vertical-1", {"parties": ["yixin", "meili", "tiange"], "psi_runs": {"yixin": "p1",
                    "meili": "p2"}, "epochs": 2, "batch_size": 128}, msgs.append, tmp_path / "coord", state)
    job = JOB_KINDS["vertical"]
    assert job.resume is not None
    out = job.run(rc)
    assert out["kind"] == "joint-logistic" and out["model_id"] == "vertical-1" and out["version"] == "1"
    assert out["parties"]["tiange"]["features"] == ["spend", "tips", "freq", "social"]
    assert out["parties"]["yixin"]["role"] == "lender" and len(out["parties"]["meili"]["data_hash"]) == 64
    assert set(out["metrics"]) == {"yixin", "meili"} and len(out["history"]) == 2
    assert any("epoch 2/2" in m for m in msgs)
    for name in srcs:
        assert (tmp_path / name / "models" / "vertical-1" / "slice.json").exists()


class _WoeSrc(_Src):
    """Records the encoding options the party's setup passes to its source."""

    def __init__(self, tables):
        super().__init__(tables)
        self.opts: list[dict] = []

    def vertical_table(self, psi_run, dataset, *, labels, **opts):
        self.opts.append(opts)
        return self.tables[psi_run]


def test_vertical_job_with_woe_takes_the_newest_binning_run_of_its_parties_and_records_it(tmp_path):
    import pytest

    from fedcore.errors import InvalidInput

    rng = np.random.default_rng(1)
    n = 300
    xl, xp = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    y = (rng.random(n) < 1 / (1 + np.exp(-(xl[:, 0] + xp[:, 1])))).astype(np.int8)
    srcs = {"yixin": _WoeSrc({"p1": Table(xl, ["age", "income"], "applications", y)}),
            "tiange": _WoeSrc({"p1": Table(xp, ["spend", "tips"], "behaviour")})}
    ch = InMemoryChannel()
    for name, src in srcs.items():
        reg = HandlerRegistry()
        VerticalParty(name, src, tmp_path / name / "v", tmp_path / name / "models",
                      identity=make_identities([name], CA)[name]).register(reg)
        ch.add_party(name, Role.PLATFORM if name == "tiange" else Role.LENDER, reg)
    state = StateStore(tmp_path / "coord" / "state.db")
    params = {"parties": ["yixin", "tiange"], "psi_runs": {"yixin": "p1"}, "epochs": 1, "batch_size": 64,
              "encoding": "woe"}
    job = JOB_KINDS["vertical"]
    with pytest.raises(InvalidInput, match=r"needs a binning run of these parties \(yixin, tiange\)"):
        job.run(RunContext(ch, "v-1", params, lambda _m: None, tmp_path / "coord", state))
    for run_id, parties in (("bin-1", {"lenders": ["yixin"], "platform": "tiange"}),
                            ("bin-2", {"lenders": ["yixin"], "platform": "tiange"}),
                            ("bin-3", {"lenders": ["yixin"], "platform": None})):  # newest, but no platform
        state.create_run(run_id, "binning", {}, "admin")
        state.update_run(run_id, "succeeded", parties)
    out = job.run(RunContext(ch, "v-2", params, lambda _m: None, tmp_path / "coord", state))
    assert out["encoding"] == {"kind": "woe", "binning_run": "bin-2"}
    assert srcs["yixin"].opts[-1] == {"encoding": "woe", "binning_run": "bin-2"} == srcs["tiange"].opts[-1]
    with pytest.raises(InvalidInput, match="'bin-3' did not bin every party of yixin, tiange"):
        job.run(RunContext(ch, "v-3", {**params, "binning_run": "bin-3"}, lambda _m: None, tmp_path / "coord", state))
    with pytest.raises(InvalidInput, match="applies to the logistic model"):
        job.run(RunContext(ch, "v-4", {**params, "model": "gbdt"}, lambda _m: None, tmp_path / "coord", state))
    plain = job.run(RunContext(ch, "v-5", {k: v for k, v in params.items() if k != "encoding"}, lambda _m: None,
                               tmp_path / "coord", state))
    assert plain["encoding"] == {"kind": "onehot", "binning_run": None} and srcs["yixin"].opts[-1] == {}
