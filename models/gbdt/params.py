"""Training parameters of the gradient-boosted tree learner (XGBoost names and defaults where they exist)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from fedcore.errors import InvalidInput

EVAL_METRICS = ("logloss", "auc")


@dataclass(frozen=True)
class GBDTParams:
    """Hyper-parameters. ``monotone`` maps a feature name to +1 (score never falls as the value rises) or
    -1; ``categorical`` names the features whose values are categories (a split sends a set of them left).

    ``sticky_owners``: once a node splits on a feature of one of these owners, its whole subtree splits on
    that owner's features only (the layered trees of the hybrid protocol: no party needs to learn another
    party's split outcomes to build histograms). ``first_tree_owners``: the first tree splits only on
    these owners' features.

    ``gamma`` is compared with the split gain ``0.5 * (GL²/(HL+λ) + GR²/(HR+λ) - G²/(H+λ))``.
    """

    n_trees: int = 100
    max_depth: int = 3
    learning_rate: float = 0.3
    max_bins: int = 32
    reg_lambda: float = 1.0
    min_child_weight: float = 1.0
    gamma: float = 0.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    cat_smooth: float = 10.0
    monotone: dict[str, int] = field(default_factory=dict)
    categorical: tuple[str, ...] = ()
    early_stopping_rounds: int | None = None
    eval_metric: str = "logloss"
    seed: int = 0
    sticky_owners: tuple[str, ...] = ()
    first_tree_owners: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> InvalidInput:
            return InvalidInput(f"gbdt parameter {name!r}: {why}")

        if self.n_trees < 1:
            raise bad("n_trees", f"must be >= 1, got {self.n_trees}")
        if not 1 <= self.max_depth <= 12:
            raise bad("max_depth", f"must be 1..12, got {self.max_depth}")
        if not 0.0 < self.learning_rate <= 1.0:
            raise bad("learning_rate", f"must be in (0, 1], got {self.learning_rate}")
        if not 2 <= self.max_bins <= 255:
            raise bad("max_bins", f"must be 2..255, got {self.max_bins}")
        for name in ("reg_lambda", "min_child_weight", "gamma", "cat_smooth"):
            if not getattr(self, name) >= 0.0:
                raise bad(name, f"must be >= 0, got {getattr(self, name)}")
        for name in ("subsample", "colsample_bytree"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise bad(name, f"must be in (0, 1], got {getattr(self, name)}")
        for feat, sign in self.monotone.items():
            if sign not in (-1, 0, 1):
                raise bad("monotone", f"feature {feat!r}: must be -1, 0 or +1, got {sign!r}")
            if sign and feat in self.categorical:
                raise bad("monotone", f"feature {feat!r} is categorical: categories have no order")
        if self.early_stopping_rounds is not None and self.early_stopping_rounds < 1:
            raise bad("early_stopping_rounds", f"must be >= 1, got {self.early_stopping_rounds}")
        if self.eval_metric not in EVAL_METRICS:
            raise bad("eval_metric", f"must be one of {EVAL_METRICS}, got {self.eval_metric!r}")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["monotone"] = dict(self.monotone)
        out["categorical"] = list(self.categorical)
        out["sticky_owners"] = list(self.sticky_owners)
        out["first_tree_owners"] = list(self.first_tree_owners)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GBDTParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"gbdt parameters: unknown field(s) {unknown}")
        kw = dict(data)
        for name in ("categorical", "sticky_owners", "first_tree_owners"):
            if name in kw:
                kw[name] = tuple(kw[name])
        if "monotone" in kw:
            kw["monotone"] = {str(k): int(v) for k, v in kw["monotone"].items()}
        return cls(**kw)


def check_monotone(monotone: Mapping[str, int], categorical: Mapping[str, bool], where: str = "") -> None:
    """Refuse a monotone constraint the learner could not honour: on a feature the model does not have, or
    on a categorical one (its categories have no order; LightGBM and XGBoost refuse it too). ``categorical``
    maps every feature of the model (whoever owns it) to whether it is categorical; ``where`` names the
    source of the feature kinds (e.g. "the lenders' schema")."""
    signed = sorted(f for f, s in monotone.items() if s)
    unknown = [f for f in signed if f not in categorical]
    if unknown:
        raise InvalidInput(f"gbdt parameter 'monotone': feature(s) {unknown} are not features of this model")
    for f in signed:
        if categorical[f]:
            src = f" in {where}" if where else ""
            raise InvalidInput(f"gbdt parameter 'monotone': feature {f!r} is categorical{src}: categories have no"
                               " order, so a monotone constraint cannot hold on it (drop it)")  # fmt: skip
