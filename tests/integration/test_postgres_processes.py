"""A federation on PostgreSQL: both parties' stores and the coordinator's registry on a real PostgreSQL
server (a throw-away one, Debian's package). Ingest (through COPY), PSI, vertical training and joint
scoring run across real processes exactly as they do on SQLite."""

from __future__ import annotations

import csv
import json

import pytest
import sqlalchemy as sa

from coordinator.state import StateStore
from scripts.fate_data import fate_data_dir, write_fate_federations
from scripts.localfed import LocalFederation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fed(tmp_path_factory, pg_server):
    root = tmp_path_factory.mktemp("pgfed")
    files = write_fate_federations(root / "fate")["hetero"]
    registry = pg_server.create_database("registry")
    f = LocalFederation(root / "fed", {"yixin": "lender", "tiange": "platform"}, heartbeat_s=0.5,
                        state_url=registry)
    f.setup()
    f.urls = {}
    for party in ("yixin", "tiange"):
        f.urls[party] = pg_server.create_database(f"store_{party}")
        f._tune(f.party_home(party) / "party.toml", "store", {"url": f.urls[party]})
    f.registry = registry
    try:
        f.ingest("yixin", *files["guest"])
        f.ingest("tiange", *files["host"])
        f.start()
        f.wait_online(timeout=300)
        yield f
    finally:  # also when setup fails: no process outlives the test
        f.stop()


def test_registry_lives_in_postgres(fed):
    names = {p.name for p in StateStore(fed.registry, create=False).principals()}
    assert {"yixin", "tiange"} <= names
    assert not (fed.coordinator_home / "state.db").exists()


def test_ingest_wrote_the_stores_in_postgres(fed):
    for party, rows in (("yixin", 30_000), ("tiange", 30_000)):
        engine = sa.create_engine(fed.urls[party])
        with engine.connect() as conn:
            assert conn.dialect.name == "postgresql"
            assert conn.execute(sa.text("SELECT count(*) FROM subjects")).scalar() == rows
        engine.dispose()
        assert not (fed.party_home(party) / "store.db").exists()


def test_psi_training_and_scoring_on_postgres(fed):
    coord = ["--home", str(fed.coordinator_home)]
    fed.cli("coordinator", "distribute-key", *coord)
    out = fed.cli("coordinator", "train", "--kind", "vertical", "--parties", "yixin,tiange", "--rounds", "3",
                  *coord).stdout
    model_line = next(ln for ln in out.splitlines() if ln.startswith("model "))
    run_id = model_line.split("(run ", 1)[1].split(")")[0]
    assert float(model_line.split("validation AUC ", 1)[1].split()[0]) > 0.70
    for party in ("yixin", "tiange"):  # the PSI alignment the training used sits in each party's database
        engine = sa.create_engine(fed.urls[party])
        with engine.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM alignments WHERE committed")).scalar()
        engine.dispose()
        assert n == 30_000
    with open(fate_data_dir() / "default_credit_hetero_guest.csv", newline="") as f:
        ids = [row["id"] for _, row in zip(range(3), csv.DictReader(f), strict=False)]
    home = str(fed.party_home("yixin"))
    for i in ids:
        r = json.loads(fed.cli("party", "score", "--id", i, "--kind", "opaque", "--model", run_id,
                               "--home", home).stdout)
        assert 0.0 < r["prob_default"] < 1.0
        consortium = [x for x in r["reasons"] if x["feature"] == "consortium_data"]
        assert len(consortium) == 1 and consortium[0]["logit_impact"] != 0.0  # the platform's part, from PostgreSQL
