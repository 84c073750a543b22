"""A lender's pricing policy for pre-approvals (``HOME/pricing.toml``): PD bands -> amount and rate.

Example::

    [policy]
    decline_if_blacklisted = true   # any member's fraud-list hit declines
    max_active_loans = 3            # more active loans at other members declines (omit: no limit)
    valid_minutes = 30              # how long an offer holds
    model_id = "m1"                 # optional: the joint model to score with (default: scoring.json's)

    [products.car_loan]
    min_amount = 20000              # below this after capping: decline
    max_term_months = 60
    [[products.car_loan.bands]]     # ascending max_pd; the first band the PD fits decides
    max_pd = 0.03
    rate = 0.05
    max_amount = 400000
    [[products.car_loan.bands]]
    max_pd = 0.08
    rate = 0.07
    max_amount = 200000

A PD above the last band, a product the policy does not list, or a term over ``max_term_months``
declines. Every error names the file and the field (``products.car_loan.bands[1].rate``).
The policy stays at the lender; the platform only ever sees the resulting terms.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcore.errors import ConfigError
from fedcore.protocol.preapproval.messages import Product, Quote

POLICY_FILE = "pricing.toml"


@dataclass(frozen=True)
class Band:
    max_pd: float
    rate: float
    max_amount: float


@dataclass(frozen=True)
class ProductPolicy:
    kind: str
    bands: tuple[Band, ...]
    min_amount: float = 0.0
    max_term_months: int = 120


@dataclass(frozen=True)
class PricingPolicy:
    products: Mapping[str, ProductPolicy]
    decline_if_blacklisted: bool = True
    max_active_loans: int | None = None
    valid_minutes: int = 30
    model_id: str | None = None
    # the coordinator may score the next viewer of an offered kind ahead for this lender (prefetch,
    # fedcore.protocol.scoring.groups); false: every pre-approval's score is this lender's own call
    prefetch: bool = True

    def decide(self, product: Product, pd: float, blacklist_hits: int, active_loans: int) -> Quote | None:
        """The offer for a viewer with joint ``pd`` (``None``: decline)."""
        pp = self.products.get(product.kind)
        if pp is None or product.term_months > pp.max_term_months or not math.isfinite(pd):
            return None
        if self.decline_if_blacklisted and blacklist_hits > 0:
            return None
        if self.max_active_loans is not None and active_loans > self.max_active_loans:
            return None
        for band in pp.bands:
            if pd <= band.max_pd:
                amount = min(product.amount, band.max_amount)
                if amount < pp.min_amount:
                    return None
                return Quote(round(amount, 2), band.rate, product.term_months, self.valid_minutes * 60)
        return None


def _num(src: str, field: str, v: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{src}: {field} must be a number, got {v!r}")
    if v > hi or v < lo or (lo_open and v == lo):
        raise ConfigError(f"{src}: {field} must be in {'(' if lo_open else '['}{lo}, {hi}], got {v!r}")
    return float(v)


def _int(src: str, field: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{src}: {field} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _keys(src: str, where: str, d: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{src}: {prefix}{unknown[0]} is not a pricing field (known: {', '.join(sorted(allowed))})")


def parse_policy(data: Mapping[str, Any], src: str = POLICY_FILE) -> PricingPolicy:
    _keys(src, "", data, {"policy", "products"})
    pol = data.get("policy", {})
    if not isinstance(pol, dict):
        raise ConfigError(f"{src}: policy must be a table")
    _keys(src, "policy", pol, {"decline_if_blacklisted", "max_active_loans", "valid_minutes", "model_id",
                                 "prefetch"})
    dib = pol.get("decline_if_blacklisted", True)
    if not isinstance(dib, bool):
        raise ConfigError(f"{src}: policy.decline_if_blacklisted must be true or false, got {dib!r}")
    mal = pol.get("max_active_loans")
    max_loans = None if mal is None else _int(src, "policy.max_active_loans", mal, 0, 1000)
    valid = _int(src, "policy.valid_minutes", pol.get("valid_minutes", 30), 1, 7 * 24 * 60)
    model_id = pol.get("model_id")
    prefetch = pol.get("prefetch", True)
    if not isinstance(prefetch, bool):
        raise ConfigError(f"{src}: policy.prefetch must be true or false, got {prefetch!r}")
    if model_id is not None and (not isinstance(model_id, str) or not model_id):
        raise ConfigError(f"{src}: policy.model_id must be a non-empty string")
    prods = data.get("products")
    if not isinstance(prods, dict) or not prods:
        raise ConfigError(f"{src}: products must list at least one product table, e.g. [products.car_loan]")
    out: dict[str, ProductPolicy] = {}
    for kind, p in prods.items():
        where = f"products.{kind}"
        try:
            Product(kind, 1.0)
        except Exception:
            raise ConfigError(f"{src}: {where}: product kind must be 2-32 of a-z, 0-9, '_'") from None
        if not isinstance(p, dict):
            raise ConfigError(f"{src}: {where} must be a table")
        _keys(src, where, p, {"min_amount", "max_term_months", "bands"})
        min_amount = _num(src, f"{where}.min_amount", p.get("min_amount", 0.0), 0.0, 1e12)
        max_term = _int(src, f"{where}.max_term_months", p.get("max_term_months", 120), 1, 120)
        bands_in = p.get("bands")
        if not isinstance(bands_in, list) or not bands_in:
            raise ConfigError(f"{src}: {where}.bands must be a non-empty array of tables ([[{where}.bands]])")
        bands: list[Band] = []
        for i, b in enumerate(bands_in):
            bw = f"{where}.bands[{i}]"
            if not isinstance(b, dict):
                raise ConfigError(f"{src}: {bw} must be a table")
            _keys(src, bw, b, {"max_pd", "rate", "max_amount"})
            for need in ("max_pd", "rate", "max_amount"):
                if need not in b:
                    raise ConfigError(f"{src}: {bw}.{need} is missing")
            band = Band(
                _num(src, f"{bw}.max_pd", b["max_pd"], 0.0, 1.0, lo_open=True),
                _num(src, f"{bw}.rate", b["rate"], 0.0, 1.0, lo_open=True),
                _num(src, f"{bw}.max_amount", b["max_amount"], 0.0, 1e12, lo_open=True),
            )
            if bands and band.max_pd <= bands[-1].max_pd:
                raise ConfigError(f"{src}: {bw}.max_pd must be above the previous band's ({bands[-1].max_pd})")
            bands.append(band)
        out[kind] = ProductPolicy(kind, tuple(bands), min_amount, max_term)
    return PricingPolicy(out, dib, max_loans, valid, model_id, prefetch)


def load_policy(home: Path) -> PricingPolicy | None:
    """``HOME/pricing.toml`` (``None`` if the lender has none: it does not take part in pre-approvals)."""
    path = home / POLICY_FILE
    if not path.is_file():
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_policy(data, str(path))
