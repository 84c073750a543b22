"""Local (single-party) training, prediction and feature standardisation.

This module owns what one party does with its own rows: :func:`train_local` runs a seeded,
deterministic mini-batch loop (Adam or SGD, optional class weights, optional FedProx proximal term
towards the global weights), :func:`predict_proba` scores rows, and :class:`Scaler` standardises
features with a mean/std kept as plain float64 arrays (so it can be shipped, stored as JSON, or built
from federated sums of moments via :meth:`Scaler.from_moments`).

Everything runs on CPU with whole-tensor batching: no per-row Python loops.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from fedcore.errors import InvalidInput

from .nets import get_weights

__all__ = [
    "ClassWeight",
    "Scaler",
    "TrainStats",
    "apply_scaler",
    "fit_scaler",
    "moments",
    "predict_proba",
    "set_torch_threads",
    "train_local",
]

OptimizerName = Literal["adam", "sgd"]
ClassWeight = Literal["balanced"] | Mapping[int, float] | None

_MIN_STD = 1e-12


# --------------------------------------------------------------------------------------------- scaling


@dataclass(frozen=True)
class Scaler:
    """Per-feature standardisation ``(x - mean) / std``, then optionally clipped to ``[-clip, clip]``.

    Constant features get ``std = 1``. Clipping tames the heavy tails of amounts (bill and payment
    amounts reach 50-70 standard deviations in the UCI data); it is stateless, so federated parties
    apply it identically.
    """

    mean: np.ndarray
    std: np.ndarray
    clip: float | None = None

    def __post_init__(self) -> None:
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise InvalidInput(f"scaler clip must be a positive number or None, got {self.clip!r}")
        mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        if mean.shape != std.shape:
            raise InvalidInput(f"scaler mean has {mean.shape[0]} entries but std has {std.shape[0]}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise InvalidInput("scaler mean and std must be finite")
        if np.any(std <= 0):
            raise InvalidInput("scaler std must be > 0 for every feature")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Standardised float32 copy of ``X`` (rows x ``n_features``)."""
        x = _as_matrix(X, "X")
        if x.shape[1] != self.n_features:
            raise InvalidInput(f"X has {x.shape[1]} columns, the scaler was fitted on {self.n_features}")
        z = (x - self.mean) / self.std
        if self.clip is not None:
            z = np.clip(z, -self.clip, self.clip)
        return z.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form; :meth:`from_dict` inverts it."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "clip": self.clip}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scaler:
        for key in ("mean", "std"):
            if key not in d:
                raise InvalidInput(f"scaler is missing field {key!r}")
        clip = d.get("clip")
        return cls(
            np.asarray(d["mean"], dtype=np.float64),
            np.asarray(d["std"], dtype=np.float64),
            None if clip is None else float(clip),
        )

    @classmethod
    def from_moments(
        cls, n: float, sum_x: np.ndarray, sum_x2: np.ndarray, clip: float | None = None
    ) -> Scaler:
        """Build from (possibly federated, summed) moments: row count, per-feature sum and sum of squares.

        Uses the population standard deviation (``ddof=0``), like :func:`fit_scaler`.
        """
        if not n > 0:
            raise InvalidInput(f"moment count n must be > 0, got {n!r}")
        s1 = np.asarray(sum_x, dtype=np.float64).reshape(-1)
        s2 = np.asarray(sum_x2, dtype=np.float64).reshape(-1)
        if s1.shape != s2.shape:
            raise InvalidInput("sum_x and sum_x2 must have the same length")
        mean = s1 / n
        var = np.maximum(s2 / n - mean**2, 0.0)
        std = np.sqrt(var)
        std = np.where(std < _MIN_STD * np.maximum(1.0, np.abs(mean)), 1.0, std)
        return cls(mean, std, clip)


def moments(X: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """``(n, sum_x, sum_x2)`` of ``X`` as float64: the additive statistics behind a federated scaler."""
    x = _as_matrix(X, "X")
    return int(x.shape[0]), x.sum(axis=0), (x * x).sum(axis=0)


def fit_scaler(X: np.ndarray, clip: float | None = None) -> Scaler:
    """Fit a :class:`Scaler` on ``X`` (population std; constant columns get std 1)."""
    n, s1, s2 = moments(X)
    if n == 0:
        raise InvalidInput("cannot fit a scaler on zero rows")
    if not np.all(np.isfinite(s1)) or not np.all(np.isfinite(s2)):
        raise InvalidInput("X contains NaN or infinite values")
    return Scaler.from_moments(n, s1, s2, clip)


def apply_scaler(scaler: Scaler, X: np.ndarray) -> np.ndarray:
    """Same as ``scaler.transform(X)``."""
    return scaler.transform(X)


# ------------------------------------------------------------------------------------------- training


@dataclass
class TrainStats:
    """What :func:`train_local` reports. ``loss`` is the mean (class-weighted) cross-entropy of the last
    epoch, without the proximal term; ``epoch_losses`` has one entry per epoch."""

    loss: float
    n_samples: int
    epochs: int
    steps: int
    seconds: float
    epoch_losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "n_samples": self.n_samples,
            "epochs": self.epochs,
            "steps": self.steps,
            "seconds": self.seconds,
            "epoch_losses": list(self.epoch_losses),
        }


def set_torch_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count process-wide (default: ``min(2, cpu count)``); returns it.

    The models here are small, so more threads mostly add contention on a shared machine.
    """
    import os

    if n is None:
        n = min(2, os.cpu_count() or 1)
    if n < 1:
        raise InvalidInput(f"thread count must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def train_local(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 1,
    batch_size: int = 256,
    lr: float = 1e-3,
    optimizer: OptimizerName = "adam",
    proximal_mu: float = 0.0,
    global_weights: Sequence[np.ndarray] | None = None,
    class_weight: ClassWeight = None,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    seed: int = 0,
    num_threads: int | None = 1,
) -> TrainStats:
    """Train ``model`` in place on ``(X, y)`` and return :class:`TrainStats`.

    - Deterministic: the shuffle order and dropout masks come from ``seed`` alone (torch's global RNG
      state is saved and restored around the loop), so the same inputs give bit-identical weights.
    - ``X`` is used as given (standardise it first with a :class:`Scaler`); ``y`` holds 0/1 labels
      (1 = default).
    - ``class_weight``: ``None`` (all rows weigh 1), ``"balanced"`` (``n / (2 * n_class)`` as in
      scikit-learn) or a mapping ``{0: w0, 1: w1}``; the loss is the mean of weighted row losses.
    - FedProx: when ``proximal_mu > 0``, ``(mu / 2) * ||w - w_global||^2`` is added to every batch's
      loss. ``global_weights`` are arrays in :func:`models.nets.get_weights` order; if omitted, the
      model's weights at the start of this call are used (what a FedProx client receives).
    - ``num_threads``: torch intra-op threads for this call (restored afterwards); the models are small,
      so 1 thread is fastest (about 20-30 ms per MLP epoch on 8,000 x 23 with batch 256). ``None`` keeps
      the current setting.
    """
    _check_positive_int(epochs, "epochs")
    _check_positive_int(batch_size, "batch_size")
    if not (math.isfinite(lr) and lr > 0):
        raise InvalidInput(f"lr must be a positive number, got {lr!r}")
    if not (math.isfinite(proximal_mu) and proximal_mu >= 0):
        raise InvalidInput(f"proximal_mu must be >= 0, got {proximal_mu!r}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise InvalidInput(f"weight_decay must be >= 0, got {weight_decay!r}")
    if optimizer not in ("adam", "sgd"):
        raise InvalidInput(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")

    x_np, y_np = _check_xy(X, y)
    n = x_np.shape[0]
    params = list(model.parameters())
    if not params:
        raise InvalidInput(f"{type(model).__name__} has no trainable parameters")

    # Proximal anchors, aligned with model.parameters() via state_dict names.
    prox: list[tuple[torch.Tensor, torch.Tensor]] = []
    if proximal_mu > 0:
        gw = list(global_weights) if global_weights is not None else get_weights(model)
        state_names = list(model.state_dict().keys())
        if len(gw) != len(state_names):
            raise InvalidInput(f"global_weights has {len(gw)} arrays, the model has {len(state_names)}")
        by_name = dict(zip(state_names, gw, strict=True))
        for name, p in model.named_parameters():
            g = np.asarray(by_name[name], dtype=np.float32)
            if g.shape != tuple(p.shape):
                raise InvalidInput(f"global weight {name!r} has shape {g.shape}, expected {tuple(p.shape)}")
            prox.append((p, torch.from_numpy(g.copy())))

    x_t = torch.from_numpy(x_np)
    y_t = torch.from_numpy(y_np.astype(np.float32))
    w_t = _row_weights(y_np, class_weight)

    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    epoch_losses: list[float] = []
    steps = 0
    was_training = model.training
    prev_threads = torch.get_num_threads()
    if num_threads is not None:
        _check_positive_int(num_threads, "num_threads")
        torch.set_num_threads(num_threads)
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for _ in range(epochs):
                perm = torch.randperm(n, generator=gen)
                total = torch.zeros((), dtype=torch.float64)
                for start in range(0, n, batch_size):
                    idx = perm[start : start + batch_size]
                    xb, yb = x_t[idx], y_t[idx]
                    logits = model(xb)
                    row_loss = nn.functional.binary_cross_entropy_with_logits(logits, yb, reduction="none")
                    if w_t is not None:
                        row_loss = row_loss * w_t[idx]
                    data_loss = row_loss.mean()
                    loss = data_loss
                    if prox:
                        sq = torch.stack([(p - g).pow(2).sum() for p, g in prox]).sum()
                        loss = loss + 0.5 * proximal_mu * sq
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += row_loss.detach().sum().double()
                    steps += 1
                epoch_loss = float(total) / n
                if not math.isfinite(epoch_loss):
                    raise InvalidInput(
                        f"training diverged (loss {epoch_loss}); lower lr (now {lr}) or standardise X"
                    )
                epoch_losses.append(epoch_loss)
    finally:
        model.train(was_training)
        if num_threads is not None:
            torch.set_num_threads(prev_threads)
    return TrainStats(
        loss=epoch_losses[-1],
        n_samples=n,
        epochs=epochs,
        steps=steps,
        seconds=time.perf_counter() - t0,
        epoch_losses=epoch_losses,
    )


@torch.no_grad()
def predict_logit(model: nn.Module, X: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """Logits (float64, shape ``(n,)``) of ``model`` on ``X`` in eval mode (dropout off)."""
    x_np = _as_matrix(X, "X").astype(np.float32)
    if not np.all(np.isfinite(x_np)):
        raise InvalidInput("X contains NaN or infinite values")
    was_training = model.training
    model.eval()
    try:
        x_t = torch.from_numpy(x_np)
        parts = [model(x_t[s : s + batch_size]) for s in range(0, x_np.shape[0], batch_size)]
    finally:
        model.train(was_training)
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(parts).double().numpy()


def predict_proba(model: nn.Module, X: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """Probability of default per row (float64, shape ``(n,)``), computed in eval mode."""
    logits = predict_logit(model, X, batch_size=batch_size)
    return 1.0 / (1.0 + np.exp(-logits))


# ------------------------------------------------------------------------------------------- helpers


def _check_positive_int(v: object, name: str) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise InvalidInput(f"{name} must be a positive integer, got {v!r}")


def _as_matrix(X: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(X)
    if x.ndim != 2:
        raise InvalidInput(f"{name} must be 2-dimensional (rows x features), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.bool_)):
        raise InvalidInput(f"{name} must be numeric, got dtype {x.dtype}")
    return x.astype(np.float64, copy=False)


def _check_xy(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = _as_matrix(X, "X").astype(np.float32)
    yy = np.asarray(y).reshape(-1) if np.ndim(y) == 2 and np.shape(y)[1] == 1 else np.asarray(y)
    if yy.ndim != 1:
        raise InvalidInput(f"y must be one-dimensional, got shape {yy.shape}")
    if x.shape[0] != yy.shape[0]:
        raise InvalidInput(f"X has {x.shape[0]} rows but y has {yy.shape[0]}")
    if x.shape[0] == 0:
        raise InvalidInput("cannot train on zero rows")
    if not np.all(np.isfinite(x)):
        raise InvalidInput("X contains NaN or infinite values")
    if not np.all((yy == 0) | (yy == 1)):
        raise InvalidInput("y must contain only 0 and 1 (1 = default)")
    return np.ascontiguousarray(x), yy.astype(np.int64)


def _row_weights(y: np.ndarray, class_weight: ClassWeight) -> torch.Tensor | None:
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise InvalidInput(f"class_weight must be None, 'balanced' or a mapping, got {class_weight!r}")
        n = y.shape[0]
        counts = np.bincount(y, minlength=2).astype(np.float64)
        cw = {c: (n / (2.0 * counts[c]) if counts[c] > 0 else 0.0) for c in (0, 1)}
    else:
        unknown = set(class_weight) - {0, 1}
        if unknown:
            raise InvalidInput(f"class_weight keys must be 0 and 1, got {sorted(unknown)}")
        cw = {c: float(class_weight.get(c, 1.0)) for c in (0, 1)}
        if any(not (math.isfinite(v) and v >= 0) for v in cw.values()):
            raise InvalidInput(f"class_weight values must be finite and >= 0, got {dict(class_weight)}")
    w = np.where(y == 1, cw[1], cw[0]).astype(np.float32)
    return torch.from_numpy(w)
