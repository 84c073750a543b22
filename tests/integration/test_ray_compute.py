"""A party's heavy steps on a real local Ray cluster (a head and a second node on this machine, one CPU
each): PSI blinding and re-blinding on Ray actors, and batch scoring's partial scores as Ray tasks that
read row-id ranges of the party's store, give exactly what the local backend gives; and PSI across
real processes with both parties on the Ray backend."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from fedcore.crypto.psi import ParallelBlinder, PsiSecret, blind_ids, reblind, unpack_points
from fedcore.errors import ProtocolError
from fedcore.partitions import LOCAL, node_histograms, node_histograms_u64
from fedcore.protocol.horizontal_trees.messages import quantize as hquantize
from fedcore.protocol.horizontal_trees.party import _node_part
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.protocol.trees.coordinator import HybridTreesConfig, run_hybrid_trees
from fedcore.protocol.trees.messages import bincount_u64
from fedcore.protocol.trees.party import LenderTreeParty, PlatformTreeParty
from models.gbdt import GBDTParams
from party_node.compute import RayBlinder, RayRowCompute, connect, row_compute, row_ranges
from party_node.config import ComputeSettings
from party_node.ingest import ingest_file
from party_node.pseudonym import PseudonymKey
from party_node.schema import load_schema
from party_node.scoring import StoreContributions
from party_node.store import Store
from scripts.localfed import LocalFederation
from scripts.raycluster import RayCluster, RayClusterError
from tests.unit.protocol.test_hybrid_trees import IDS, LENDER_FEATURES, SIZES, federation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    try:
        c = RayCluster(nodes=2, cpus_per_node=1).start()
    except RayClusterError as exc:
        pytest.fail(str(exc))
    ray = connect(c.address)
    yield c
    ray.shutdown()
    c.stop()


def test_cluster_has_two_nodes(cluster):
    ray = connect(cluster.address)
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert len(alive) == 2
    assert ray.cluster_resources()["CPU"] == 2


def test_ray_blinding_equals_local(cluster):
    ids = [f"id-{i}".encode() for i in range(20_000)]
    secret = PsiSecret.generate()
    with RayBlinder(secret, cluster.address, chunk_ids=2048) as rb:
        assert rb.n_workers == 2
        blinded = [p for packed in rb.blind_ids_stream(ids) for p in unpack_points(packed)]
        peer = PsiSecret.generate()
        theirs = blind_ids(peer, ids[:5000])
        chunks = [b"".join(theirs[i : i + 1000]) for i in range(0, 5000, 1000)]
        re = [p for packed in rb.reblind_stream(chunks) for p in unpack_points(packed)]
        with pytest.raises(ProtocolError):  # a small-order point is refused on the workers too
            list(rb.reblind_stream([bytes(32)]))
    with ParallelBlinder(secret, 2) as local:
        assert blinded == local.blind_ids(ids)
    assert re == reblind(secret, theirs)


SCHEMA = """
[dataset]
name = "feats"
id_column = "id"
id_kind = "opaque"
federation_columns = ["a", "b"]
[numeric]
a = { missing = "fill", fill = 0 }
b = { missing = "fill", fill = 0 }
[consent]
scoring = "ok"
"""


def test_ray_partial_scores_equal_local(cluster, tmp_path: Path):
    rng = np.random.default_rng(3)
    n = 5000
    lines = [f"p{i:06d},{rng.normal():.6f},{rng.normal():.6f},{int(rng.random() < 0.9)}" for i in range(n)]
    (tmp_path / "f.csv").write_text("id,a,b,ok\n" + "\n".join(lines) + "\n")
    (tmp_path / "f.toml").write_text(SCHEMA)
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}", pseudonym_key=PseudonymKey.generate())
    ingest_file(store, tmp_path / "f.csv", load_schema(tmp_path / "f.toml"))
    models = tmp_path / "models"
    (models / "m1").mkdir(parents=True)
    (models / "m1" / "slice.json").write_text(json.dumps({
        "model_id": "m1", "version": "v1", "party": "p", "dataset": "feats", "features": ["a", "b"],
        "weights": [0.7, -1.3], "scaler": {"mean": [0.1, -0.2], "std": [1.5, 0.5]},
    }))
    _, ps = store.all_pseudonyms()
    query = np.array([*ps, b"\x00" * 16], dtype="S16")
    local = StoreContributions(store, models).partial_logits("m1", query)
    on_ray = StoreContributions(
        store, models, compute=ComputeSettings(backend="ray", ray_address=cluster.address)
    ).partial_logits("m1", query)
    assert np.count_nonzero(local) > 0.8 * n  # consenting subjects have a score, others 0
    np.testing.assert_allclose(on_ray, local, rtol=0, atol=1e-12)
    assert row_ranges(1, 10, 3) == [(1, 4), (4, 7), (7, 11)]
    store.close()


def test_psi_across_processes_on_ray(cluster, tmp_path: Path):
    rnd = random.Random(5)
    common = [f"c{rnd.getrandbits(40):010x}" for _ in range(3000)]
    a = common + [f"a{rnd.getrandbits(40):010x}" for _ in range(2000)]
    b = common + [f"b{rnd.getrandbits(40):010x}" for _ in range(4000)]
    (tmp_path / "ids.toml").write_text(
        '[dataset]\nname = "ids"\nid_column = "id"\nid_kind = "opaque"\nconsent_all = ["training"]\n')
    (tmp_path / "a.csv").write_text("id\n" + "\n".join(a) + "\n")
    (tmp_path / "b.csv").write_text("id\n" + "\n".join(b) + "\n")
    with LocalFederation(tmp_path / "fed", {"yixin": "lender", "tiange": "platform"}, heartbeat_s=0.5) as fed:
        fed.setup()
        for party, f in (("yixin", "a.csv"), ("tiange", "b.csv")):
            fed._tune(fed.party_home(party) / "party.toml", "compute",
                      {"backend": "ray", "ray_address": cluster.address})
            fed.ingest(party, tmp_path / f, tmp_path / "ids.toml")
        fed.start()
        fed.wait_online(timeout=300)
        try:
            out = fed.cli("coordinator", "psi", "--parties", "yixin,tiange", "--home",
                          str(fed.coordinator_home)).stdout
        except Exception:
            for party in ("yixin", "tiange"):  # what the nodes said, for the failure report
                print(party, (fed.logs / f"{party}.log").read_text()[-3000:])
            raise
        assert "intersection 3000" in out
        for party in ("yixin", "tiange"):
            log = (fed.logs / f"{party}.log").read_text()
            assert "Traceback" not in log
            assert f"PSI blinding on the Ray cluster at {cluster.address}: 2 workers" in log


class CountingRayRowCompute(RayRowCompute):
    """The Ray backend, counting the partitions it ran as Ray tasks."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.calls = 0

    def map(self, fn, calls):
        self.calls += len(calls)
        return super().map(fn, calls)


def test_ray_node_histograms_equal_local(cluster):
    rng = np.random.default_rng(4)
    n, feats, slots = 300_000, [0, 2, 3], 17
    bins = rng.integers(0, slots, (4, n)).astype(np.uint8)
    g = rng.integers(0, 2**64, n, dtype=np.uint64)  # full range: the sums wrap modulo 2^64
    h = rng.integers(0, 2**64, n, dtype=np.uint64)
    rows = np.sort(rng.choice(n, 200_000, replace=False))
    on_ray = CountingRayRowCompute(cluster.address)
    assert on_ray.parts == 2  # one partition per CPU of the cluster
    got = node_histograms_u64(bins, (g, h), rows, feats, slots, on_ray)
    assert on_ray.calls == 2
    want = np.stack([[bincount_u64(bins[f, rows], w[rows], slots) for f in feats] for w in (g, h)])
    assert got.dtype == np.uint64 and np.array_equal(got, want)
    assert np.array_equal(node_histograms_u64(bins, (g, h), rows, feats, slots), want)  # the local backend


def test_compute_settings_pick_where_row_partitions_run(cluster):
    assert row_compute(ComputeSettings()) is LOCAL
    on_ray = row_compute(ComputeSettings(backend="ray", ray_address=cluster.address))
    assert isinstance(on_ray, RayRowCompute) and on_ray.parts == 2
    assert row_compute(ComputeSettings(backend="ray", ray_address=cluster.address, workers=6)).parts == 6


def test_ray_horizontal_node_histograms_equal_local(cluster):
    """Horizontal trees' histograms: quantized float gradients, whose partition sums are exact."""
    rng = np.random.default_rng(5)
    n, feats, slots = 300_000, [1, 3], 9
    bins = rng.integers(0, slots, (4, n)).astype(np.uint8)
    g, h = hquantize(rng.uniform(-1, 1, n)), hquantize(rng.uniform(0, 0.25, n))
    rows = np.sort(rng.choice(n, 250_000, replace=False))
    on_ray = CountingRayRowCompute(cluster.address)
    got = node_histograms(_node_part, bins, (g, h), rows, feats, slots, on_ray)
    assert on_ray.calls == 2
    want = np.stack([[np.bincount(bins[f][rows], w[rows], slots) for f in feats] for w in (g, h)])
    assert np.array_equal(got, want)  # bit for bit, not approximately
    assert np.array_equal(node_histograms(_node_part, bins, (g, h), rows, feats, slots), want)


def test_hybrid_trees_on_ray_grow_the_local_trees(cluster):
    """The whole hybrid tree protocol (lenders' and platform's node histograms on Ray tasks) gives the
    same trees, split tables and leaf values bit for bit as every party computing locally."""
    params = GBDTParams(n_trees=3, max_depth=3, learning_rate=0.3, max_bins=16, categorical=("segment",))

    def run(compute):
        lenders, tables = federation(1)
        channel = InMemoryChannel()
        parties = {}
        for name, (cols, y) in lenders.items():
            reg = HandlerRegistry()
            parties[name] = LenderTreeParty(name, cols, y, IDS[name], compute=compute)
            parties[name].register(reg)
            channel.add_party(name, Role.LENDER, reg)
        reg = HandlerRegistry()
        platform = PlatformTreeParty("tiange", tables, IDS["tiange"], categorical=("segment",), compute=compute)
        platform.register(reg)
        channel.add_party("tiange", Role.PLATFORM, reg)
        try:
            result = run_hybrid_trees(channel, HybridTreesConfig("run1", tuple(SIZES), "tiange", LENDER_FEATURES,
                                                                 params))
        finally:
            channel.close()
        return result, parties, platform

    on_ray = CountingRayRowCompute(cluster.address)
    ray_result, ray_lenders, ray_platform = run(on_ray)
    assert on_ray.calls > 0
    local_result, local_lenders, local_platform = run(LOCAL)
    assert ray_result.base_score == local_result.base_score
    for a, b in zip(ray_result.trees, local_result.trees, strict=True):
        for field in ("left", "right", "owner", "ref", "value"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert ray_platform.table.to_dict() == local_platform.table.to_dict()
    assert [p.table.to_dict() for p in ray_lenders.values()] == [p.table.to_dict() for p in local_lenders.values()]
