"""Histogram gradient-boosted trees for credit default, written so federated protocols plug in.

- :mod:`~models.gbdt.binning`: quantile / categorical bins with a missing bin;
- :mod:`~models.gbdt.histogram`: the :class:`HistogramSource` interface and the local numpy source;
- :mod:`~models.gbdt.split`: split finding from histograms only;
- :mod:`~models.gbdt.grower`: one tree, level by level, with histogram subtraction;
- :mod:`~models.gbdt.tree`: trees with opaque ``(owner, ref)`` splits, owner split tables, and scoring
  in the central, direction-bit and leaf-mask forms;
- :mod:`~models.gbdt.booster`: logistic boosting, early stopping, the JSON model.
"""

from models.gbdt.binning import BinMapper, columns_from_matrix
from models.gbdt.booster import GBDTModel, train
from models.gbdt.histogram import FeatureLayout, FeatureSpec, Histogram, HistogramSource, LocalHistogramSource
from models.gbdt.params import GBDTParams
from models.gbdt.split import SplitDecision, find_best_split
from models.gbdt.tree import (
    DirectionBits,
    SplitRule,
    SplitTable,
    Tree,
    combine_directions,
    leaf_index,
    margin_from_leaf_mask,
    owner_directions,
    reachable_leaves,
)

__all__ = [
    "BinMapper",
    "DirectionBits",
    "FeatureLayout",
    "FeatureSpec",
    "GBDTModel",
    "GBDTParams",
    "Histogram",
    "HistogramSource",
    "LocalHistogramSource",
    "SplitDecision",
    "SplitRule",
    "SplitTable",
    "Tree",
    "columns_from_matrix",
    "combine_directions",
    "find_best_split",
    "leaf_index",
    "margin_from_leaf_mask",
    "owner_directions",
    "reachable_leaves",
    "train",
]
