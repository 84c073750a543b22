"""PyTorch credit-risk models and their weights as plain arrays.

This module owns the model zoo used for horizontal (lender-to-lender) training: a logistic regression
and a small multi-layer perceptron, both mapping ``(batch, n_features)`` float32 inputs to one logit
per row (shape ``(batch,)``; probability of default is ``sigmoid(logit)``). It also owns the one
canonical order in which a model's weights are exchanged: :func:`get_weights` / :func:`set_weights`
move float32 numpy arrays in ``state_dict`` order, and :func:`flatten` / :func:`unflatten` turn that
list into one float64 vector plus a :class:`Shapes` spec, which is what CKKS-encrypted aggregation
encrypts and sums.

The models deliberately hold no buffers (no batch norm): every entry of the weight list is a trained
parameter, so federated averaging of the whole list is meaningful.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from fedcore.errors import InvalidInput

__all__ = [
    "MLP",
    "CreditModel",
    "LogisticRegression",
    "ModelName",
    "Shapes",
    "build_model",
    "flatten",
    "get_weights",
    "set_weights",
    "unflatten",
    "weight_names",
]

ModelName = Literal["logistic", "mlp"]


class CreditModel(nn.Module):
    """Base of the models here: knows its input width and returns one logit per row."""

    n_features: int

    def __init__(self, n_features: int) -> None:
        super().__init__()
        if not isinstance(n_features, int) or isinstance(n_features, bool) or n_features < 1:
            raise InvalidInput(f"n_features must be a positive integer, got {n_features!r}")
        self.n_features = n_features

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InvalidInput` unless ``x`` is ``(batch, n_features)``."""
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise InvalidInput(
                f"{type(self).__name__} expects input of shape (batch, {self.n_features}), "
                f"got {tuple(x.shape)}"
            )


class LogisticRegression(CreditModel):
    """``logit = x @ w + b``. Weight order: ``linear.weight`` (1, n_features), ``linear.bias`` (1,)."""

    def __init__(self, n_features: int) -> None:
        super().__init__(n_features)
        self.linear = nn.Linear(n_features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.linear(x).squeeze(-1)

    def coefficients(self) -> tuple[np.ndarray, float]:
        """The fitted ``(coef[n_features], intercept)`` as float64, e.g. for reason codes."""
        w = self.linear.weight.detach().cpu().numpy().astype(np.float64).reshape(-1)
        b = float(self.linear.bias.detach().cpu().numpy()[0])
        return w, b


class MLP(CreditModel):
    """Fully connected ReLU network: ``n_features -> hidden[0] -> ... -> 1`` with dropout after each
    hidden layer. Weight order: ``layers.0.weight``, ``layers.0.bias``, ... , ``out.weight``, ``out.bias``.
    """

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (64, 32),
        dropout: float = 0.1,
    ) -> None:
        super().__init__(n_features)
        hidden = tuple(hidden)
        if not hidden or any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in hidden):
            raise InvalidInput(f"hidden must be a non-empty sequence of positive integers, got {hidden!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise InvalidInput(f"dropout must be in [0, 1), got {dropout!r}")
        self.hidden = hidden
        self.dropout = float(dropout)
        blocks: list[nn.Module] = []
        width = n_features
        for h in hidden:
            blocks.append(nn.Linear(width, h))
            blocks.append(nn.ReLU())
            if self.dropout > 0:
                blocks.append(nn.Dropout(self.dropout))
            width = h
        self.layers = nn.Sequential(*blocks)
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.out(self.layers(x)).squeeze(-1)


def build_model(name: ModelName, n_features: int, **kw: Any) -> CreditModel:
    """Build a model by name: ``"logistic"`` (no options) or ``"mlp"`` (``hidden``, ``dropout``).

    Initialisation uses torch's global RNG; seed it (``torch.manual_seed``) for reproducible starts,
    or, in federated training, overwrite the start with the global weights via :func:`set_weights`.
    """
    if name == "logistic":
        if kw:
            raise InvalidInput(f"model 'logistic' takes no options, got {sorted(kw)}")
        return LogisticRegression(n_features)
    if name == "mlp":
        unknown = set(kw) - {"hidden", "dropout"}
        if unknown:
            raise InvalidInput(f"model 'mlp' got unknown options {sorted(unknown)}; known: dropout, hidden")
        return MLP(n_features, **kw)
    raise InvalidInput(f"model name must be 'logistic' or 'mlp', got {name!r}")


def weight_names(model: nn.Module) -> list[str]:
    """Names of the entries returned by :func:`get_weights`, in the same order."""
    return list(model.state_dict().keys())


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Copies of every ``state_dict`` entry as float32 numpy arrays, in ``state_dict`` order."""
    return [t.detach().cpu().numpy().astype(np.float32, copy=True) for t in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Load arrays produced by :func:`get_weights` (or an aggregate of them) into ``model``.

    Raises :class:`InvalidInput` naming the entry when the count or a shape does not match, or a
    value is not finite. The model is left unchanged on error.
    """
    state = model.state_dict()
    if len(weights) != len(state):
        raise InvalidInput(
            f"expected {len(state)} weight arrays for {type(model).__name__}, got {len(weights)}"
        )
    new_state: dict[str, torch.Tensor] = {}
    for (name, current), w in zip(state.items(), weights, strict=True):
        arr = np.asarray(w)
        if tuple(arr.shape) != tuple(current.shape):
            raise InvalidInput(
                f"weight {name!r} has shape {tuple(arr.shape)}, expected {tuple(current.shape)}"
            )
        if not np.all(np.isfinite(arr)):
            raise InvalidInput(f"weight {name!r} contains NaN or infinite values")
        new_state[name] = torch.as_tensor(np.array(arr, dtype=np.float32), dtype=current.dtype)
    model.load_state_dict(new_state, strict=True)


@dataclass(frozen=True)
class Shapes:
    """Shape spec of a flattened weight list: one shape per array, in order."""

    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def total(self) -> int:
        """Length of the flat vector."""
        return sum(self.sizes)

    def to_list(self) -> list[list[int]]:
        """JSON-friendly form; :meth:`from_list` inverts it."""
        return [list(s) for s in self.shapes]

    @classmethod
    def from_list(cls, shapes: Sequence[Sequence[int]]) -> Shapes:
        out: list[tuple[int, ...]] = []
        for i, s in enumerate(shapes):
            dims = tuple(int(d) for d in s)
            if any(d < 0 for d in dims):
                raise InvalidInput(f"shape {i} has a negative dimension: {list(s)}")
            out.append(dims)
        return cls(tuple(out))


def flatten(weights: Sequence[np.ndarray]) -> tuple[np.ndarray, Shapes]:
    """Concatenate arrays into one float64 vector (C order) and return it with its :class:`Shapes`."""
    arrays = [np.asarray(w) for w in weights]
    shapes = Shapes(tuple(tuple(int(d) for d in a.shape) for a in arrays))
    if not arrays:
        return np.zeros(0, dtype=np.float64), shapes
    vec = np.concatenate([a.astype(np.float64, copy=False).reshape(-1) for a in arrays])
    return vec, shapes


def unflatten(vec: np.ndarray, shapes: Shapes) -> list[np.ndarray]:
    """Inverse of :func:`flatten`: split a vector back into float32 arrays of the given shapes.

    Raises :class:`InvalidInput` if ``vec`` is not one-dimensional or its length is not ``shapes.total``.
    """
    v = np.asarray(vec)
    if v.ndim != 1:
        raise InvalidInput(f"flat weight vector must be one-dimensional, got shape {v.shape}")
    if v.shape[0] != shapes.total:
        raise InvalidInput(f"flat weight vector has length {v.shape[0]}, shapes need {shapes.total}")
    out: list[np.ndarray] = []
    start = 0
    for shape, size in zip(shapes.shapes, shapes.sizes, strict=True):
        out.append(v[start : start + size].astype(np.float32).reshape(shape))
        start += size
    return out
