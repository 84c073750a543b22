"""What the coordinator keeps of a hybrid tree run to resume it after a crash: :class:`TreeCheckpoint`.

After setup and after every finished tree the coordinator replaces one JSON file (the job keeps it in
``COORD_HOME/runs/<run>/trees.json``) holding the run's configuration, the layout it learned at setup
(feature names, owners, bin counts) and the base score, the trees so far (opaque splits, leaf values),
every split it ordered in bin terms (feature index, bin threshold or bin set, default direction: what it
sent the feature's owner), the split gains, the pooled validation losses, each tree's seconds and its
column-sampling generator. Nothing in it goes beyond what the coordinator learned during the run: no
feature value, threshold, level, label or per-row value, and not the platform's bin ranks (a resumed run
asks for them again).

Resuming (:func:`fedcore.protocol.trees.coordinator.resume_hybrid_trees`) runs setup again (fresh keys and
seeds), refuses if the layout or base score came out different (the parties' data changed), then replays
each finished tree's ``begin`` and ``split`` steps without any histogram, so that every party rebuilds
exactly its rules (same references) and margins (the replayed validation losses must equal the kept
ones), and grows the remaining trees: the same model as an uninterrupted run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcore.errors import InvalidInput, NotFound
from fedcore.files import replacing
from models.gbdt.split import SplitDecision
from models.gbdt.tree import Tree

VERSION = 1


def decision_to_dict(dec: SplitDecision) -> dict[str, Any]:
    return {
        "feature": int(dec.feature), "gain": float(dec.gain), "default_left": bool(dec.default_left),
        "threshold": int(dec.threshold), "left_bins": [int(b) for b in dec.left_bins],
        "categorical": bool(dec.categorical), "g_left": float(dec.g_left), "h_left": float(dec.h_left),
        "g_right": float(dec.g_right), "h_right": float(dec.h_right),
    }  # fmt: skip


def decision_from_dict(d: dict[str, Any]) -> SplitDecision:
    return SplitDecision(**{**d, "left_bins": tuple(int(b) for b in d["left_bins"])})


@dataclass
class TreeCheckpoint:
    config: dict[str, Any]  # HybridTreesConfig as JSON
    layout: list[list[Any]]  # per feature: name, owner, bins, categorical, monotone sign
    base_score: float
    trees: list[Tree] = field(default_factory=list)
    splits: list[list[list[Any]]] = field(default_factory=list)  # per tree, per level: [node, decision, l, r]
    gains: list[list[list[float]]] = field(default_factory=list)  # per tree: [feature index, gain]
    losses: list[float] = field(default_factory=list)
    tree_s: list[float] = field(default_factory=list)
    rng: dict[str, Any] = field(default_factory=dict)  # the column-sampling generator's state

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION, "config": self.config, "layout": self.layout, "base_score": self.base_score,
            "trees": [t.to_dict() for t in self.trees], "splits": self.splits, "gains": self.gains,
            "losses": self.losses, "tree_s": self.tree_s, "rng": self.rng,
        }  # fmt: skip

    def save(self, path: Path) -> None:
        """Replace the file whole (a crash mid-write leaves the previous checkpoint)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path: Path) -> TreeCheckpoint:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFound(f"tree run checkpoint {path} does not exist: the run did not finish its setup") from None
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"tree run checkpoint {path}: cannot read it ({exc})") from None
        if d.get("version") != VERSION:
            raise InvalidInput(f"tree run checkpoint {path}: version {d.get('version')!r}, expected {VERSION}")
        try:
            return cls(
                dict(d["config"]), [list(x) for x in d["layout"]], float(d["base_score"]),
                [Tree.from_dict(t) for t in d["trees"]], list(d["splits"]), list(d["gains"]),
                [float(x) for x in d["losses"]], [float(x) for x in d["tree_s"]], dict(d["rng"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"tree run checkpoint {path}: malformed ({type(exc).__name__}: {exc})") from None
