"""PSI across real processes: two party nodes and the coordinator, ids from each party's store."""

from __future__ import annotations

import random
import threading

import pytest
import sqlalchemy as sa

from fedcore.errors import FedcreditError
from scripts.localfed import LocalFederation

pytestmark = pytest.mark.slow

SCHEMA = '[dataset]\nname = "ids"\nid_column = "id"\nid_kind = "opaque"\nconsent_all = ["training"]\n'


def write_ids(path, ids):
    path.write_text("id\n" + "".join(f"{i}\n" for i in ids))


def alignment_rows(fed: LocalFederation, party: str) -> list[tuple]:
    engine = sa.create_engine(f"sqlite:///{fed.party_home(party) / 'store.db'}")
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alignments"):
            return []
        rows = conn.execute(sa.text(
            "SELECT a.run_id, a.position, s.id_norm, a.committed FROM alignments a "
            "JOIN subjects s ON s.row_id = a.row_id ORDER BY a.run_id, a.position")).all()
    engine.dispose()
    return [tuple(r) for r in rows]


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("psi")
    rng = random.Random(9)
    common = [f"c{rng.getrandbits(48):012x}" for _ in range(30_000)]
    a = common + [f"a{rng.getrandbits(48):012x}" for _ in range(40_000)]
    b = common + [f"b{rng.getrandbits(48):012x}" for _ in range(50_000)]
    rng.shuffle(a)
    rng.shuffle(b)
    (root / "ids.toml").write_text(SCHEMA)
    write_ids(root / "a.csv", a)
    write_ids(root / "b.csv", b)
    f = LocalFederation(root / "fed", {"yixin": "lender", "tiange": "platform"}, heartbeat_s=0.5)
    f.setup()
    f.ingest("yixin", root / "a.csv", root / "ids.toml")
    f.ingest("tiange", root / "b.csv", root / "ids.toml")
    f.common = set(common)
    f.start()
    f.wait_online(timeout=300)
    yield f
    f.stop()


def test_psi_across_processes_aligns_both_stores(fed):
    out = fed.cli("coordinator", "psi", "--parties", "yixin,tiange", "--home", str(fed.coordinator_home)).stdout
    assert "intersection 30000" in out
    ya, ta = alignment_rows(fed, "yixin"), alignment_rows(fed, "tiange")
    assert len(ya) == len(ta) == 30_000
    assert [r[2] for r in ya] == [r[2] for r in ta]  # same subject at the same position
    assert {r[2] for r in ya} == fed.common
    assert all(r[3] for r in ya + ta)


def test_party_killed_mid_run_fails_it_naming_the_party_and_leaves_no_table(fed):
    before_y = alignment_rows(fed, "yixin")
    result: dict[str, object] = {}
    underway = threading.Event()

    def run() -> None:
        try:
            with fed.admin() as admin:
                events = []
                for ev in admin.start_run("psi", {"parties": ["yixin", "tiange"]}):
                    events.append(ev)
                    if "set sizes" in getattr(ev, "message", ""):
                        underway.set()  # both parties started; blinding comes next
            result["last"] = events[-1]
        except FedcreditError as exc:
            result["error"] = exc
        finally:
            underway.set()

    t = threading.Thread(target=run)
    t.start()
    assert underway.wait(120)  # the run is past its start at both parties: a state, not a fixed sleep
    fed.kill("tiange")
    t.join(timeout=60)
    last = result.get("last")
    assert last is not None and last.status == "failed", result
    assert "tiange" in last.message
    assert alignment_rows(fed, "yixin") == before_y  # nothing new, staged or committed
    fed.start_party("tiange")
    fed.wait_online(["tiange"], timeout=300)
    rows = alignment_rows(fed, "tiange")
    assert all(r[3] for r in rows)  # anything staged by the failed run was dropped at restart
    assert len(rows) == 30_000  # only the first (committed) run's table
