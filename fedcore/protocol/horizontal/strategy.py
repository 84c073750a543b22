"""SecureAggregation: wraps a Flower strategy and sums encrypted updates (see the package docstring, step 3)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from fedcore.errors import CorruptResult, FedcreditError, ProtocolError
from fedcore.protocol import horizontal as hz

log = logging.getLogger(__name__)


class TrainingAborted(FedcreditError):
    """A training run cannot continue (too few parties, inconsistent schemas or keys)."""

    code = "unavailable"


class SecureAggregation(Strategy):
    """Wraps a Flower strategy (FedAvg, FedProx, ...) used as it is; see the module docstring, step 3.

    ``public_ctx`` is the CKKS public context (``None`` in plain mode: the inner strategy's own
    weighted average runs). ``on_train`` / ``on_evaluate`` observe each round's aggregated metrics and
    the replying nodes.
    """

    def __init__(
        self,
        inner: FedAvg,
        *,
        public_ctx: Any = None,
        min_parties: int = 1,
        round_offset: int = 0,
        on_train: Callable[[int, dict[str, float], list[int]], None] | None = None,
        on_evaluate: Callable[[int, dict[str, float], list[int]], None] | None = None,
        name_of: Callable[[int], str] = lambda n: f"node-{n}",
    ) -> None:
        self.inner = inner
        self.public_ctx = public_ctx
        self.min_parties = min_parties
        self.round_offset = round_offset
        self.on_train = on_train
        self.on_evaluate = on_evaluate
        self.name_of = name_of

    def summary(self) -> None:
        self.inner.summary()

    def _check_nodes(self, grid: Grid) -> None:
        n = len(list(grid.get_node_ids()))
        if n < self.min_parties:
            raise TrainingAborted(f"only {n} parties online, the run needs at least {self.min_parties}")

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._check_nodes(grid)
        return self.inner.configure_train(server_round + self.round_offset, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._check_nodes(grid)
        return self.inner.configure_evaluate(server_round + self.round_offset, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rnd = server_round + self.round_offset
        ordered = sorted(replies, key=lambda m: m.metadata.src_node_id)
        valid = [m for m in ordered if not m.has_error()]
        for m in ordered:
            if m.has_error():
                log.warning("round %d: node %d dropped out: %s", rnd, m.metadata.src_node_id, m.error.reason)
        if len(valid) < self.min_parties:
            raise TrainingAborted(
                f"round {rnd}: {len(valid)} parties replied, the run needs at least {self.min_parties}"
            )
        if self.public_ctx is None:
            valid = self._drop_corrupt_plain(rnd, valid)
            arrays, metrics = self.inner.aggregate_train(rnd, valid)
        else:
            valid, _ = self.inner._check_and_log_replies(ordered, is_train=True)
            valid = self._drop_corrupt(rnd, valid)
            contents = [m.content for m in valid]
            records = [next(iter(c.array_records.values())) for c in contents]
            arrays = hz.sum_encrypted(self.public_ctx, records)
            metrics = self.inner.train_metrics_aggr_fn(contents, self.inner.weighted_by_key)
        if self.on_train is not None:
            self.on_train(rnd, _metric_dict(metrics), [m.metadata.src_node_id for m in valid])
        return arrays, metrics

    def _drop_corrupt(self, rnd: int, replies: list[Message]) -> list[Message]:
        """Parse every encrypted update on its own: one that does not parse, is not encrypted or has
        another length than the others is its party's :class:`CorruptResult`, logged and dropped like
        a party that did not answer (the run fails if fewer than ``min_parties`` remain)."""
        from fedcore.crypto.he import EncryptedVector

        lengths: dict[int, int] = {}
        corrupt: list[CorruptResult] = []
        for m in replies:
            node = m.metadata.src_node_id
            try:
                record = next(iter(m.content.array_records.values()))
                if not hz.is_encrypted(record):
                    raise ProtocolError("an unencrypted update in an HE run")
                lengths[node] = EncryptedVector.from_bytes(self.public_ctx, hz.unpack_encrypted(record)).length
            except (ProtocolError, StopIteration) as exc:
                corrupt.append(CorruptResult(self.name_of(node), f"train round {rnd}", str(exc) or "no update"))
        if lengths:
            usual = max(set(lengths.values()), key=list(lengths.values()).count)
            for node, n in lengths.items():
                if n != usual:
                    corrupt.append(CorruptResult(self.name_of(node), f"train round {rnd}", f"{n} values, not {usual}"))
        return self._without(rnd, replies, corrupt)

    def _drop_corrupt_plain(self, rnd: int, replies: list[Message]) -> list[Message]:
        """Plain mode: an update whose arrays differ in names, shapes or dtypes from the others', or hold
        a non-finite value, is its party's :class:`CorruptResult` (dropped as in HE mode)."""
        import numpy as np

        shapes: dict[int, tuple[Any, ...]] = {}
        corrupt: list[CorruptResult] = []
        for m in replies:
            node = m.metadata.src_node_id
            try:
                record = next(iter(m.content.array_records.values()))
                arrays = {k: a.numpy() for k, a in record.items()}
                if not all(np.all(np.isfinite(a)) for a in arrays.values()):
                    raise ProtocolError("an update holds NaN or infinite values")
                shapes[node] = tuple((k, a.shape, str(a.dtype)) for k, a in sorted(arrays.items()))
            except (ProtocolError, StopIteration, ValueError, TypeError) as exc:
                corrupt.append(CorruptResult(self.name_of(node), f"train round {rnd}", str(exc) or "no update"))
        if shapes:
            usual = max(set(shapes.values()), key=list(shapes.values()).count)
            for node, sig in shapes.items():
                if sig != usual:
                    corrupt.append(CorruptResult(self.name_of(node), f"train round {rnd}", "arrays of another shape"))
        return self._without(rnd, replies, corrupt)

    def _without(self, rnd: int, replies: list[Message], corrupt: list[CorruptResult]) -> list[Message]:
        bad = {e.party for e in corrupt}
        for e in corrupt:
            log.warning("round %d: %s; dropped like a party that did not answer", rnd, e)
        kept = [m for m in replies if self.name_of(m.metadata.src_node_id) not in bad]
        if corrupt and len(kept) < self.min_parties:
            raise corrupt[0]
        return kept

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        rnd = server_round + self.round_offset
        ordered = sorted(replies, key=lambda m: m.metadata.src_node_id)
        metrics = self.inner.aggregate_evaluate(rnd, ordered)
        if self.on_evaluate is not None:
            valid = [m.metadata.src_node_id for m in ordered if not m.has_error()]
            self.on_evaluate(rnd, _metric_dict(metrics), valid)
        return metrics


def _metric_dict(m: MetricRecord | None) -> dict[str, float]:
    if m is None:
        return {}
    return {k: float(v) for k, v in m.items() if isinstance(v, int | float)}


# ------------------------------------------------------------------------------------- the protocol

