"""Where a party's heavy steps run: ``compute.backend = "local"`` (a process pool on the node's machine)
or ``"ray"`` (the party's own Ray cluster at ``compute.ray_address``).

With Ray:

* **PSI blinding and re-blinding** run as Ray tasks, one chunk of ids each, spread over the
  cluster's nodes, with at most two per CPU the cluster offers (or per ``compute.workers``) in
  flight, so memory stays bounded and adding nodes adds throughput. The run's PSI scalar is put in
  the party's Ray object store once; it travels inside the party's own Ray cluster (the party's
  machines and network) and nowhere else, and is dropped when the run ends.
* **Batch scoring's partial scores** (the contributor's ``x . w`` over every consenting subject)
  run as Ray tasks over row-id ranges of the party's store: each task opens the store at its URL,
  reads its range (features and pseudonyms) and returns the pseudonyms as one ``S16`` array and the
  partial logits as float64. The store must be reachable from the workers (PostgreSQL; a SQLite file
  only when every Ray node is this machine).

Nothing about the federation changes: the same messages cross the same link; Ray only moves work
between the party's own machines. Ray's own transport uses pickle between the party's processes;
nothing pickled ever reaches another party.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

import numpy as np
import sqlalchemy as sa

from fedcore.crypto.psi import DEFAULT_CHUNK_IDS, PsiSecret, iter_chunks
from fedcore.errors import FedcreditError, InvalidInput, PermissionDenied, Unavailable
from fedcore.partitions import LOCAL, RowCompute
from fedcore.protocol.scoring.messages import ModelSlice

log = logging.getLogger(__name__)
RAY_CHUNK_IDS = 4 * DEFAULT_CHUNK_IDS  # fewer, larger tasks: Ray's per-call cost is ~1 ms


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise Unavailable("compute.backend = 'ray' needs Ray: pip install 'fedcredit[ray]'") from None
    return ray


def connect(address: str) -> Any:
    """Join the party's Ray cluster at ``address`` (once per process); returns the ``ray`` module."""
    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address or None, log_to_driver=False, configure_logging=False,
                     include_dashboard=False if not address else None)
        except (ConnectionError, RuntimeError) as exc:
            raise Unavailable(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
    return ray


def _blind_task(scalar: bytes, ids: list[bytes]) -> bytes:
    """One chunk of ``scalar * H(id)`` on a Ray worker (the same function the local pool runs)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from fedcore.crypto.psi import _blind_hashed

    try:
        return b"".join(_blind_hashed(X25519PrivateKey.from_private_bytes(scalar).exchange, ids))
    except ValueError as exc:
        raise InvalidInput("an id hashes to a small-order point; it cannot take part in PSI") from exc


def _reblind_task(scalar: bytes, packed: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from fedcore.crypto.psi import _reblind_points, unpack_points

    return b"".join(_reblind_points(X25519PrivateKey.from_private_bytes(scalar).exchange, unpack_points(packed)))


class RayBlinder:
    """:class:`fedcore.crypto.psi.ParallelBlinder`'s interface on Ray tasks (see the module doc).

    The run's scalar is put in the party's Ray object store once and every task reads it from there;
    :meth:`close` drops it. Tasks (not actors) so that CPUs are held only while a chunk is computed.
    """

    def __init__(
        self, secret: PsiSecret, address: str = "", n_workers: int | None = None, chunk_ids: int = RAY_CHUNK_IDS
    ) -> None:
        ray = connect(address)
        self._ray = ray
        n = n_workers or int(ray.cluster_resources().get("CPU", 1))
        if n <= 0:
            raise InvalidInput("the Ray cluster offers no CPUs")
        self.n_workers, self.chunk_ids = n, chunk_ids
        self._tasks = {
            "blind": ray.remote(num_cpus=1)(_blind_task).options(scheduling_strategy="SPREAD"),
            "reblind": ray.remote(num_cpus=1)(_reblind_task).options(scheduling_strategy="SPREAD"),
        }
        self._scalar: Any = ray.put(secret.export_scalar_for_local_workers())
        log.info("PSI blinding on the Ray cluster at %s: %d workers", address or "(in-process)", n)

    def __enter__(self) -> RayBlinder:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._scalar = None  # the last reference: Ray frees the object

    def _run(self, method: str, tasks: Iterable[Any]) -> Iterator[bytes]:
        if self._scalar is None:
            raise InvalidInput("RayBlinder is closed")
        pending: deque[Any] = deque()
        limit = 2 * self.n_workers
        fn = self._tasks[method]
        for task in tasks:
            pending.append(fn.remote(self._scalar, task))
            if len(pending) >= limit:
                yield self._get(pending.popleft())
        while pending:
            yield self._get(pending.popleft())

    def _get(self, ref: Any) -> bytes:
        try:
            return bytes(self._ray.get(ref))
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, FedcreditError):  # the worker's typed error, as the local pool raises it
                raise cause from None
            raise

    def blind_ids_stream(self, ids: Iterable[bytes]) -> Iterator[bytes]:
        return self._run("blind", iter_chunks(ids, self.chunk_ids))

    def reblind_stream(self, packed_chunks: Iterable[bytes]) -> Iterator[bytes]:
        return self._run("reblind", packed_chunks)


# ---- batch scoring's partial scores over row-id ranges of the store ---------------------------------------


def _score_range(url: str, sl: ModelSlice, lo: int, hi: int) -> tuple[bytes, np.ndarray]:
    """One partition: (pseudonyms packed 16 bytes each, partial logits) of the consenting rows in [lo, hi)."""
    from party_node.store import Store, feature_table

    store = Store.open(url)
    try:
        info = store.dataset_info(sl.dataset)
        for c in sl.features:  # the same rule as Store.feature_matrix: only whitelisted columns
            if c not in info.federation_columns:
                raise PermissionDenied(f"feature {c!r} of dataset {sl.dataset!r} is not whitelisted for the federation")
        ds = feature_table(info.name, info.features)
        s = store.t["subjects"]
        stmt = (
            sa.select(s.c.pseudonym, *[ds.c[c] for c in sl.features])
            .join_from(ds, s, s.c.row_id == ds.c.row_id)
            .where(ds.c.row_id >= lo, ds.c.row_id < hi, s.c.pseudonym.is_not(None))
            .order_by(ds.c.row_id)
        )
        stmt = store._consent_filter(stmt, ds.c.row_id, "scoring")
        with store.engine.connect() as conn:
            rows = conn.execute(stmt).all()
    finally:
        store.close()
    if not rows:
        return b"", np.zeros(0)
    keys = b"".join(bytes(r[0]) for r in rows)
    x = np.array([r[1:] for r in rows], dtype=np.float64)
    return keys, np.asarray(sl.partial_logit(x), dtype=np.float64)


def row_ranges(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` half-open ranges covering ``[lo, hi]`` (row ids inclusive)."""
    if hi < lo:
        return []
    edges = np.linspace(lo, hi + 1, max(1, parts) + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def ray_partial_scores(
    address: str, url: str, sl: ModelSlice, bounds: tuple[int, int], parts: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(pseudonyms S16, partial logits)`` of every consenting subject, computed by Ray tasks that each
    read one row-id range of the store at ``url``."""
    ray = connect(address)
    n = parts or 4 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    task = ray.remote(num_cpus=1)(_score_range)
    refs = [task.options(scheduling_strategy="SPREAD").remote(url, sl, a, b) for a, b in row_ranges(*bounds, n)]
    keys: list[bytes] = []
    vals: list[np.ndarray] = []
    log.info("partial scores of %s on the Ray cluster at %s: %d row-id ranges", sl.model_id, address, len(refs))
    try:
        results = ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, FedcreditError):
            raise cause from None
        raise
    for k, v in results:
        keys.append(k)
        vals.append(v)
    packed = b"".join(keys)
    arr = np.frombuffer(packed, dtype="S16") if packed else np.zeros(0, dtype="S16")
    return arr, (np.concatenate(vals) if vals else np.zeros(0))


def local_partial_scores(url: str, sl: ModelSlice, bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The same result in this process (one range): the local backend's reference."""
    k, v = _score_range(url, sl, bounds[0], bounds[1] + 1)
    return (np.frombuffer(k, dtype="S16") if k else np.zeros(0, dtype="S16")), v


def row_id_bounds(store: Any, dataset: str) -> tuple[int, int]:
    """(min, max) row id of a dataset's table; (0, -1) when it is empty."""
    from party_node.store import feature_table

    info = store.dataset_info(dataset)
    ds = feature_table(info.name, info.features)
    with store.engine.connect() as conn:
        lo, hi = conn.execute(sa.select(sa.func.min(ds.c.row_id), sa.func.max(ds.c.row_id))).one()
    return (0, -1) if lo is None else (int(lo), int(hi))


# ---- row partitions of a party's training passes (fedcore.partitions) -------------------------------------


class RayRowCompute:
    """:class:`fedcore.partitions.RowCompute` on the party's Ray cluster: one Ray task per partition,
    ``parts`` = the CPUs the cluster offers (or ``compute.workers``). A numpy argument over 1 MiB (a run's
    bins matrix, a tree's gradients) is put in the Ray object store once and reused while the array
    lives, so a histogram call ships only its row slices; workers on the node's machine read it from
    shared memory without a copy."""

    BIG = 1 << 20

    def __init__(self, address: str = "", workers: int | None = None) -> None:
        self._address, self._workers = address, workers
        self._parts: int | None = None
        self._tasks: dict[Any, Any] = {}
        self._refs: dict[int, tuple[Any, Any]] = {}  # id(array) -> (weakref to it, object ref)
        self._lock = threading.Lock()

    @property
    def _ray(self) -> Any:
        return connect(self._address)  # on first use: a node starts without reaching its cluster

    @property
    def parts(self) -> int:
        if self._parts is None:
            self._parts = int(self._workers or int(self._ray.cluster_resources().get("CPU", 1)) or 1)
        return self._parts

    def _arg(self, a: Any) -> Any:
        return self._put(a) if isinstance(a, np.ndarray) and a.nbytes >= self.BIG else a

    def _put(self, a: np.ndarray) -> Any:
        key = id(a)
        with self._lock:
            hit = self._refs.get(key)
            if hit is not None and hit[0]() is a:
                return hit[1]
        ref = self._ray.put(a)
        with self._lock:
            self._refs[key] = (weakref.ref(a), ref)
        weakref.finalize(a, self._drop, key, ref)
        return ref

    def _drop(self, key: int, ref: Any) -> None:
        with self._lock:
            hit = self._refs.get(key)
            if hit is not None and hit[1] is ref:
                del self._refs[key]

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        task = self._tasks.get(fn)
        if task is None:
            task = self._tasks[fn] = self._ray.remote(num_cpus=1)(fn).options(scheduling_strategy="SPREAD")
        refs = [task.remote(*[self._arg(a) for a in args]) for args in calls]
        try:
            return list(self._ray.get(refs))
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, FedcreditError):
                raise cause from None
            raise


def row_compute(settings: Any) -> RowCompute:
    """Where a party's row partitions run for ``compute`` settings: this process, or its Ray cluster."""
    if settings is None or settings.backend != "ray":
        return LOCAL
    return RayRowCompute(settings.ray_address, settings.workers or None)


def psi_blinder(settings: Any) -> Callable[[PsiSecret], Any] | None:
    """The PSI pool factory for ``compute`` settings: None (the local process pool) or Ray tasks."""
    if settings.backend != "ray":
        return None
    address, workers = settings.ray_address, settings.workers or None
    return lambda secret: RayBlinder(secret, address, workers)


def store_url(store: Any) -> str:
    """The URL a worker opens the store with (credentials included: the party's own cluster)."""
    return str(store.engine.url.render_as_string(hide_password=False))
