"""Fixtures for the credit-modelling tests: the FATE credit data and the peer libraries compared against."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[3]


def load_fate(name: str) -> pd.DataFrame:
    """One FATE credit file: ``tests/data/fate/<name>.csv.gz`` if shipped, else ``$FEDCREDIT_FATE_DATA``."""
    shipped = REPO / "tests" / "data" / "fate" / f"{name}.csv.gz"
    if shipped.exists():
        return pd.read_csv(shipped)
    base = Path(os.environ.get("FEDCREDIT_FATE_DATA", "/work/shared/data/fate"))
    path = base / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"FATE data {name} not in tests/data/fate nor {base} (set FEDCREDIT_FATE_DATA)")
    return pd.read_csv(path)


@pytest.fixture(scope="session")
def fate() -> Callable[[str], pd.DataFrame]:
    return load_fate


@pytest.fixture(scope="session")
def hetero() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The vertical split: label holder (id, y, x0..x12) and platform (id, x0..x9), same ids in order."""
    g = load_fate("default_credit_hetero_guest")
    h = load_fate("default_credit_hetero_host")
    h = h.set_index("id").loc[g["id"]].reset_index()
    return g, h


@pytest.fixture(scope="session")
def scorecardpy() -> types.ModuleType:
    """scorecardpy imports ``pkg_resources`` (gone from recent setuptools) only to find its sample data."""
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = lambda pkg, name: str(Path(pkg) / name)  # type: ignore[attr-defined]
            sys.modules["pkg_resources"] = shim
    import scorecardpy as sc

    return sc
