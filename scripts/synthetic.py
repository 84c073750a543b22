"""A synthetic car-loan federation with a ground truth (``python scripts/synthesize.py``).

A population of people with two latent risk factors: ``app_risk``, which shows (noisily) in what a
lender sees on an application (income, credit history, past delinquencies, down payment), and
``hidden_risk``, which no lender sees and which shows only in behaviour on the internet platform
(overspending, erratic tipping, falling activity, thin social graph). Defaults depend on both, so the
platform's features add real lift for the ~60% of borrowers it knows.

Five car-loan lenders with non-IID borrowers: ``yixin`` (new cars, tier-1/2 cities), ``meili``
(used-car credit), ``cango`` (tier-3/4 cities), ``uxin`` and ``guazi`` (used-car marketplaces);
some people borrow from two lenders. The platform ``tiange`` holds behaviour features. Each party gets
a data file and a schema TOML that ``fedcredit party ingest FILE --schema SCHEMA`` takes as it is;
ids are Chinese mobile numbers (some written ``+86 138-0013-8000``) or resident ids with valid
checksums. Consent flags, active-loan flags and a consortium fraud list spread over the members.
``ground_truth/`` holds the latent factors and true default probabilities, for measuring only.

Everything is vectorised numpy and deterministic given the seed (1M people in a few seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fedcore.config import dump_toml
from models.metrics import auc, bad_rate_at_approval

LENDERS = ("yixin", "meili", "cango", "uxin", "guazi")
PLATFORM = "tiange"
LENDER_DATASET = "applications"
PLATFORM_DATASET = "behaviour"

LENDER_NUMERIC = (
    "age", "monthly_income", "loan_amount", "down_payment_ratio", "term_months", "vehicle_price",
    "vehicle_age_years", "credit_history_months", "past_delinquencies",
)  # fmt: skip
LENDER_CATEGORICAL = ("city_tier", "vehicle_type", "employment_type")
PLATFORM_NUMERIC = (
    "monthly_spend", "tip_amount", "tip_stability", "interaction_freq", "active_days_30",
    "social_connections", "account_age_months",
)  # fmt: skip
PLATFORM_CATEGORICAL = ("main_app_category",)
# Text categories whose risk is not in level order (one weight per integer code cannot capture them;
# one-hot or WOE can): per level, how strongly the latent risk pushes a person towards it.
EMPLOYMENT = {"salaried": 0.0, "self_employed": 0.6, "civil_servant": -0.9, "gig_worker": 1.1,
              "retired": -0.3, "student": 0.8}
APP_CATEGORY = {"shopping": 0.3, "gaming": 1.0, "finance": -0.8, "news": -0.6, "video": 0.4, "social": 0.7}
LENDER_LEVELS = {"city_tier": ("tier1", "tier2", "tier3", "tier4"), "vehicle_type": ("new", "used"),
                 "employment_type": tuple(EMPLOYMENT)}

_MOBILE_PREFIXES = np.array(
    [130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 147, 150, 151, 152, 153, 155, 156, 157, 158, 159,
     166, 173, 175, 176, 177, 178, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 191, 198, 199],
    dtype=np.int64,
)  # fmt: skip
# Real administrative division codes by city tier (1: Beijing, Shanghai, Guangzhou, Shenzhen; 4: small).
_REGIONS = {
    1: [110101, 110105, 310104, 310115, 440106, 440305],
    2: [330106, 510107, 420106, 320102, 370102, 610113],
    3: [411302, 431102, 360702, 450802, 130602, 340302],
    4: [522601, 433101, 532301, 622901, 152501, 451302],
}
_NID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_NID_CHECK = np.array(list("10X98765432"))
REFERENCE_YEAR = 2024


@dataclass(frozen=True)
class SynthConfig:
    people: int = 100_000
    seed: int = 0
    platform_coverage: float = 0.6
    borrower_share: float = 0.55
    id_kind: str = "phone"  # phone | national_id
    fmt: str = "csv"  # csv | parquet


@dataclass
class Federation:
    """The generated data in memory: per-party tables, schemas and the ground truth."""

    config: SynthConfig
    people: pd.DataFrame  # ground truth per person
    loans: pd.DataFrame  # ground truth per loan (person, lender, true pd, defaulted)
    parties: dict[str, pa.Table] = field(default_factory=dict)
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _unique_ints(rng: np.random.Generator, n: int, draw: Any) -> np.ndarray:
    """n distinct values from ``draw(k)``, in draw order (deterministic)."""
    out = np.zeros(0, dtype=np.int64)
    while len(out) < n:
        cand = np.concatenate([out, draw(int((n - len(out)) * 1.05) + 16)])
        _, first = np.unique(cand, return_index=True)
        out = cand[np.sort(first)]
    return out[:n]


def _str(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _labels(codes: np.ndarray, names: list[str]) -> pa.Array:
    """Strings from small integer codes, without a Python loop."""
    return pc.cast(pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(names)), pa.string())


def make_phones(rng: np.random.Generator, n: int) -> pa.Array:
    """n distinct Chinese mobile numbers (11 digits, real prefixes)."""
    vals = _unique_ints(
        rng, n, lambda k: rng.choice(_MOBILE_PREFIXES, k) * 100_000_000 + rng.integers(0, 100_000_000, k)
    )
    return _str(vals)


def make_national_ids(rng: np.random.Generator, age: np.ndarray, tier: np.ndarray) -> pa.Array:
    """Distinct 18-character resident ids with valid birth dates and checksums."""
    n = len(age)
    region = np.zeros(n, dtype=np.int64)
    for t, codes in _REGIONS.items():
        m = tier == t
        region[m] = rng.choice(np.array(codes, dtype=np.int64), int(m.sum()))
    year = REFERENCE_YEAR - age.astype(np.int64)
    month = rng.integers(1, 13, n)
    day = rng.integers(1, 29, n)
    birth = year * 10_000 + month * 100 + day
    base = region * 10**8 + birth  # 14 digits
    seq = rng.integers(0, 1000, n)
    first17 = base * 1000 + seq
    # resolve rare collisions by redrawing the sequence number
    for _ in range(50):
        _, idx = np.unique(first17, return_index=True)
        dup_mask = np.ones(n, dtype=bool)
        dup_mask[idx] = False
        if not dup_mask.any():
            break
        k = int(dup_mask.sum())
        first17[dup_mask] = base[dup_mask] * 1000 + rng.integers(0, 1000, k)
    digits = (first17[:, None] // (10 ** np.arange(16, -1, -1, dtype=np.int64))[None, :]) % 10
    check = _labels((digits @ _NID_WEIGHTS) % 11, list("10X98765432"))
    return pc.binary_join_element_wise(_str(first17), check, "")


def _format_some_phones(rng: np.random.Generator, phones: pa.Array, share: float) -> pa.Array:
    """Write a share of numbers the way operators' systems do: ``+86 138-0013-8000``."""
    m = pa.array(rng.random(len(phones)) < share)
    parts = [pc.utf8_slice_codeunits(phones, a, b) for a, b in ((0, 3), (3, 7), (7, 11))]
    formatted = pc.binary_join_element_wise("+86 ", parts[0], "-", parts[1], "-", parts[2], "")
    return pc.if_else(m, formatted, phones)


def _category(rng: np.random.Generator, risk: np.ndarray, levels: dict[str, float]) -> np.ndarray:
    """Level index per person: a multinomial logit with the level's loading on ``risk``."""
    load = np.array(list(levels.values()))
    util = risk[:, None] * load[None, :] - np.log(-np.log(rng.random((len(risk), len(load)))))
    return np.argmax(util, axis=1).astype(np.int64)


def generate(config: SynthConfig) -> Federation:
    """Generate the federation in memory (see :func:`write_federation` to write it)."""
    rng = np.random.default_rng(config.seed)
    n = config.people
    # ---------------------------------------------------------------- people
    age = np.clip(np.round(rng.normal(36, 9, n)), 20, 65).astype(np.int64)
    tier = rng.choice(np.array([1, 2, 3, 4]), n, p=[0.18, 0.30, 0.30, 0.22])
    app_risk = rng.normal(0, 1, n)
    hidden_risk = rng.normal(0, 1, n)
    log_income = 8.55 + 0.22 * (4 - tier) + 0.012 * (age - 20) - 0.18 * app_risk + rng.normal(0, 0.35, n)
    income = np.round(np.exp(log_income), -1)
    history = np.clip((age - 18) * 12 * rng.beta(2, 2, n) - 14 * app_risk, 0, None).round()
    delinq = rng.poisson(np.exp(-1.3 + 0.75 * app_risk))
    fraudster = rng.random(n) < 0.004
    phones = make_phones(rng, n)
    nids = make_national_ids(rng, age, tier)
    on_platform = rng.random(n) < np.clip(config.platform_coverage + 0.006 * (36 - age), 0.05, 0.95)

    # ---------------------------------------------------------------- who borrows where
    borrower = rng.random(n) < config.borrower_share
    rel_inc = income / np.median(income)
    w = np.stack(
        [
            np.where(tier <= 2, 2.2 * rel_inc, 0.08),  # yixin: new cars, tier-1/2
            np.full(n, 1.0),  # meili: used-car credit everywhere
            np.where(tier >= 3, 2.6, 0.05),  # cango: tier-3/4
            np.where(age < 40, 1.3, 0.7) * np.where(tier == 1, 0.6, 1.0),  # uxin: young, used
            np.where(tier <= 2, 1.1, 0.6),  # guazi: marketplace, bigger cities
        ],
        axis=1,
    )
    gumbel = -np.log(-np.log(rng.random((n, 5))))
    scores = np.log(w) + gumbel
    first = np.argmax(scores, axis=1)
    scores[np.arange(n), first] = -np.inf
    second = np.argmax(scores, axis=1)
    p_multi = 0.10 + 0.10 * (app_risk > 1) + 0.12 * (hidden_risk > 1)
    multi = borrower & (rng.random(n) < p_multi)
    person = np.concatenate([np.flatnonzero(borrower), np.flatnonzero(multi)])
    lender = np.concatenate([first[borrower], second[multi]])
    m = len(person)
    multi_loan = np.isin(person, np.flatnonzero(multi))

    # ---------------------------------------------------------------- the loans
    ln = np.array(LENDERS)[lender]
    p_new = np.select([ln == "yixin", ln == "cango"], [0.92, 0.4], 0.05)
    new_car = rng.random(m) < p_new
    inc_p = income[person]
    price = np.where(
        new_car,
        np.exp(np.log(150_000) + 0.45 * np.log(inc_p / 8000) + rng.normal(0, 0.3, m)),
        np.exp(np.log(75_000) + 0.35 * np.log(inc_p / 8000) + rng.normal(0, 0.4, m)),
    ).round(-2)
    vehicle_age = np.where(new_car, 0.0, np.clip(1 + rng.gamma(2.0, 1.6, m), 1, 15).round(1))
    ar = app_risk[person]
    dp = np.clip(0.30 - 0.05 * ar + rng.normal(0, 0.08, m), np.where(new_car, 0.15, 0.0), 0.7).round(3)
    amount = (price * (1 - dp)).round(-2)
    term_p = np.where(ln == "yixin", 0, np.where(ln == "cango", 2, 1))
    term_choices = np.array([[12, 24, 36, 48, 60]])
    term_probs = np.array([[0.1, 0.25, 0.4, 0.15, 0.1], [0.15, 0.3, 0.35, 0.15, 0.05], [0.05, 0.15, 0.35, 0.25, 0.2]])
    cum = np.cumsum(term_probs[term_p], axis=1)
    term = term_choices[0][np.minimum((rng.random(m)[:, None] > cum).sum(axis=1), 4)]

    lender_effect = np.array([-0.35, 0.15, 0.25, 0.05, 0.0])[lender]
    burden = np.log(amount / np.maximum(term, 12) / inc_p)
    logit = (
        -4.9
        + 0.75 * ar
        + 1.55 * hidden_risk[person]
        + 0.45 * (burden + 2.5)
        + 0.9 * (0.3 - dp)
        + 0.05 * vehicle_age
        + 0.25 * multi_loan
        + 2.5 * fraudster[person]
        + lender_effect
    )
    pd_true = _sigmoid(logit)
    defaulted = rng.random(m) < pd_true
    active = ~defaulted & (rng.random(m) < 0.6)
    flagged_fraud = fraudster[person] & (rng.random(m) < 0.7)

    loans = pd.DataFrame(
        {"person_id": person, "lender": ln, "pd_true": pd_true, "defaulted": defaulted.astype(np.int8),
         "active_loan": active, "fraud_flag": flagged_fraud}
    )  # fmt: skip

    people = pd.DataFrame(
        {
            "person_id": np.arange(n), "phone": phones.to_pandas(), "national_id": nids.to_pandas(),
            "age": age, "city_tier": tier,
            "monthly_income": income, "app_risk": app_risk, "hidden_risk": hidden_risk,
            "fraudster": fraudster,
            "on_platform": on_platform,
        }
    )  # fmt: skip
    fed = Federation(config, people, loans)
    # Categorical text columns with lift (their own random stream: the other columns stay as they were).
    crng = np.random.default_rng([config.seed, 14])
    employment = _category(crng, app_risk, EMPLOYMENT)
    app_category = _category(crng, hidden_risk, APP_CATEGORY)

    def ids(idx: np.ndarray, share_formatted: float) -> pa.Array:
        if config.id_kind == "national_id":
            return nids.take(pa.array(idx))
        return _format_some_phones(rng, phones.take(pa.array(idx)), share_formatted)

    def consent(k: int) -> dict[str, np.ndarray]:
        c = {
            "consent_training": (rng.random(k) < 0.93).astype(np.int8),
            "consent_scoring": (rng.random(k) < 0.96).astype(np.int8),
            "consent_blacklist": (rng.random(k) < 0.98).astype(np.int8),
        }
        # pre-approval (platform) and monitoring (lenders) follow scoring consent: no extra random draws,
        # so the rest of the data stays as it was for a seed
        c["consent_preapproval"] = c["consent_monitoring"] = c["consent_scoring"]
        return c

    for j, name in enumerate(LENDERS):
        sel = np.flatnonzero(lender == j)
        sel = sel[rng.permutation(len(sel))]
        pi = person[sel]
        income_col = income[pi].astype(np.float64)
        if name == "meili":  # meili's older applications lack a stated income
            income_col[rng.random(len(sel)) < 0.03] = np.nan
        df = pa.table(
            {
                "applicant_id": ids(pi, 0.1 if name == "uxin" else 0.0),
                "defaulted": defaulted[sel].astype(np.int8),
                "age": age[pi], "monthly_income": income_col, "loan_amount": amount[sel],
                "down_payment_ratio": dp[sel], "term_months": term[sel], "vehicle_price": price[sel],
                "vehicle_age_years": vehicle_age[sel], "credit_history_months": history[pi],
                "past_delinquencies": delinq[pi],
                "city_tier": _labels(tier[pi] - 1, ["tier1", "tier2", "tier3", "tier4"]),
                "vehicle_type": _labels((~new_car[sel]).astype(np.int8), ["new", "used"]),
                "employment_type": _labels(employment[pi], list(EMPLOYMENT)),
                **consent(len(sel)),
                "active_loan": active[sel].astype(np.int8), "fraud_flag": flagged_fraud[sel].astype(np.int8),
            }
        )  # fmt: skip
        fed.parties[name] = df
        fed.schemas[name] = _lender_schema(config.id_kind)

    pl = np.flatnonzero(on_platform)
    h = hidden_risk[pl]
    a = app_risk[pl]
    k = len(pl)
    tipper = rng.random(k) < 0.7
    behaviour = pa.table(
        {
            "user_id": ids(pl, 0.05),
            "monthly_spend": np.exp(
                7.0 + 0.5 * np.log(income[pl] / 8000) + 0.4 * h + rng.normal(0, 0.35, k)
            ).round(2),
            "tip_amount": np.where(tipper, np.exp(3.2 + 0.55 * h + rng.normal(0, 0.7, k)), 0.0).round(2),
            "tip_stability": np.where(
                tipper, 1 / (1 + np.exp(-0.3 + 0.6 * h + rng.normal(0, 0.35, k))), 1.0
            ).round(4),
            "interaction_freq": np.exp(1.8 + 0.35 * h + rng.normal(0, 0.55, k)).round(2),
            "active_days_30": rng.binomial(30, _sigmoid(1.1 - 0.55 * h + rng.normal(0, 0.4, k))),
            "social_connections": rng.poisson(np.exp(4.0 - 0.4 * h - 0.1 * a + rng.normal(0, 0.5, k))),
            "account_age_months": np.clip(rng.gamma(3.0, 12.0, k) * np.exp(-0.25 * h), 1, 180).round(),
            "main_app_category": _labels(app_category[pl], list(APP_CATEGORY)),
            **consent(k),
        }
    )  # fmt: skip
    fed.parties[PLATFORM] = behaviour.take(pa.array(rng.permutation(k)))
    fed.schemas[PLATFORM] = _platform_schema(config.id_kind)
    return fed


_CONSENT = {"training": "consent_training", "scoring": "consent_scoring", "blacklist": "consent_blacklist",
            "preapproval": "consent_preapproval", "monitoring": "consent_monitoring"}


def _lender_schema(id_kind: str) -> dict[str, Any]:
    numeric: dict[str, Any] = {c: {"missing": "reject"} for c in LENDER_NUMERIC}
    numeric["monthly_income"] = {"missing": "mean"}
    return {
        "dataset": {
            "name": LENDER_DATASET, "id_column": "applicant_id", "id_kind": id_kind,
            "label_column": "defaulted",
            "federation_columns": [*LENDER_NUMERIC, *LENDER_CATEGORICAL],
        },
        "numeric": numeric,
        # declared vocabularies: every lender encodes them alike (one-hot in the joint model)
        "categorical": {c: {"missing": "category", "vocabulary": list(v)} for c, v in LENDER_LEVELS.items()},
        "consent": dict(_CONSENT),
        "flags": {"active_loan": "active_loan", "fraud": "fraud_flag"},
    }  # fmt: skip


def _platform_schema(id_kind: str) -> dict[str, Any]:
    return {
        "dataset": {
            "name": PLATFORM_DATASET, "id_column": "user_id", "id_kind": id_kind,
            "federation_columns": [*PLATFORM_NUMERIC, *PLATFORM_CATEGORICAL],
        },
        "numeric": {c: {"missing": "reject"} for c in PLATFORM_NUMERIC},
        "categorical": {c: {"missing": "category"} for c in PLATFORM_CATEGORICAL},
        "consent": dict(_CONSENT),
    }  # fmt: skip


def schema_toml(schema: dict[str, Any]) -> str:
    """Render a schema dict as TOML (inline tables for per-column specs)."""
    lines: list[str] = []
    for section, values in schema.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{k} = {dump_toml({'x': {'v': v}}).splitlines()[1][4:]}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(dump_toml({"x": {key: value}}).splitlines()[1])
        lines.append("")
    return "\n".join(lines)


def _write_table(table: pa.Table, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="needed"))


def write_federation(fed: Federation, out: Path) -> dict[str, tuple[Path, Path]]:
    """Write per-party data files and schemas, ``federation.toml`` and ``ground_truth/``.

    Returns ``{party: (data file, schema file)}``.
    """
    out.mkdir(parents=True, exist_ok=True)
    ext = "parquet" if fed.config.fmt == "parquet" else "csv"
    written: dict[str, tuple[Path, Path]] = {}
    manifest: list[str] = [
        "# Synthetic federation written by `scripts/synthesize.py`.",
        f"# people = {fed.config.people}, seed = {fed.config.seed}, id_kind = {fed.config.id_kind}",
        "",
    ]
    for party, df in fed.parties.items():
        folder = out / party
        folder.mkdir(exist_ok=True)
        dataset = fed.schemas[party]["dataset"]["name"]
        data = folder / f"{dataset}.{ext}"
        schema = folder / f"{dataset}.toml"
        _write_table(df, data, fed.config.fmt)
        schema.write_text(schema_toml(fed.schemas[party]), encoding="utf-8")
        written[party] = (data, schema)
        role = "platform" if party == PLATFORM else "lender"
        manifest += [
            "[[party]]", f'name = "{party}"', f'role = "{role}"', f'file = "{party}/{data.name}"',
            f'schema = "{party}/{schema.name}"', f"rows = {len(df)}", "",
        ]  # fmt: skip
    (out / "federation.toml").write_text("\n".join(manifest), encoding="utf-8")
    gt = out / "ground_truth"
    gt.mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pandas(fed.people, preserve_index=False), gt / "people.parquet")
    pq.write_table(pa.Table.from_pandas(fed.loans, preserve_index=False), gt / "loans.parquet")
    (gt / "README.txt").write_text(
        "Ground truth of the synthetic federation, for measuring only: never ingest it into a party.\n"
        "people.parquet: latent app_risk / hidden_risk, fraudster, on_platform, ids.\n"
        "loans.parquet: one row per loan (person_id, lender, pd_true, defaulted).\n",
        encoding="utf-8",
    )
    return written


# ------------------------------------------------------------------------------------- measuring only


def _design(fed: Federation, with_platform: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled loan-level design matrix (lender features [+ platform features]), labels, person ids."""
    loans = fed.loans
    cols: list[np.ndarray] = []
    parts = []
    for name in LENDERS:
        df = fed.parties[name].to_pandas()
        parts.append(df.assign(_lender=name))
    apps = pd.concat(parts, ignore_index=True)
    # person of every application row, by the same ordering as loans (per lender, permuted): join on id
    key = "national_id" if fed.config.id_kind == "national_id" else "phone"
    norm_ids = apps["applicant_id"].astype(str).str.replace(r"^\+86 ", "", regex=True).str.replace("-", "")
    person_of = pd.Series(fed.people["person_id"].to_numpy(), index=fed.people[key].to_numpy())
    person = person_of.loc[norm_ids.to_numpy()].to_numpy()
    del loans
    inc = apps["monthly_income"].to_numpy(dtype=float)
    inc = np.where(np.isnan(inc), np.nanmean(inc), inc)
    cols += [
        apps["age"].to_numpy(float), np.log(inc), np.log(apps["loan_amount"].to_numpy(float)),
        apps["down_payment_ratio"].to_numpy(float), apps["term_months"].to_numpy(float),
        np.log(apps["vehicle_price"].to_numpy(float)), apps["vehicle_age_years"].to_numpy(float),
        np.log1p(apps["credit_history_months"].to_numpy(float)),
        np.log1p(apps["past_delinquencies"].to_numpy(float)),
        (apps["vehicle_type"] == "new").to_numpy(float),
    ]  # fmt: skip
    cols += [(apps["city_tier"] == f"tier{t}").to_numpy(float) for t in (2, 3, 4)]
    cols += [(apps["_lender"] == ln).to_numpy(float) for ln in LENDERS[1:]]
    if with_platform:
        beh = fed.parties[PLATFORM].to_pandas()
        b_ids = beh["user_id"].astype(str).str.replace(r"^\+86 ", "", regex=True).str.replace("-", "")
        b_person = person_of.loc[b_ids.to_numpy()].to_numpy()
        pos = np.full(len(fed.people), -1, dtype=np.int64)
        pos[b_person] = np.arange(len(beh))
        row = pos[person]
        has = row >= 0
        cols.append(has.astype(float))
        for c in PLATFORM_NUMERIC:
            v = beh[c].to_numpy(float)
            v = np.log1p(v) if c not in ("tip_stability", "active_days_30") else v
            x = np.zeros(len(apps))
            x[has] = v[row[has]]
            x[has] -= x[has].mean()  # centred among covered people; 0 for the others
            cols.append(x)
    return np.column_stack(cols), apps["defaulted"].to_numpy(np.float64), person


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 25) -> np.ndarray:
    """Newton-Raphson logistic regression on standardized features; returns [bias, weights...] for x."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-12
    z = np.column_stack([np.ones(len(x)), (x - mu) / sd])
    w = np.zeros(z.shape[1])
    for _ in range(iters):
        p = _sigmoid(z @ w)
        g = z.T @ (p - y) + l2 * len(y) * np.r_[0, w[1:]]
        h = (z * (p * (1 - p))[:, None]).T @ z + l2 * len(y) * np.diag(np.r_[0, np.ones(len(w) - 1)])
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    wx = w[1:] / sd
    return np.r_[w[0] - (mu * wx).sum(), wx]


def reference_models(fed: Federation, seed: int = 0, test_share: float = 0.3) -> dict[str, float]:
    """Centrally trained logistic regressions (measuring only): lender features vs + platform features.

    Split by person (a person's loans are all train or all test). Returns AUCs and bad rates at 80%
    approval on the test loans.
    """
    res: dict[str, float] = {}
    rng = np.random.default_rng(seed + 1)
    test_people = rng.random(len(fed.people)) < test_share
    for label, with_platform in (("lender_only", False), ("with_platform", True)):
        x, y, person = _design(fed, with_platform)
        test = test_people[person]
        w = fit_logistic(x[~test], y[~test])
        score = _sigmoid(w[0] + x[test] @ w[1:])
        res[f"synthetic_auc_{label}"] = round(auc(y[test], score), 4)
        res[f"synthetic_bad_rate_{label}"] = round(bad_rate_at_approval(y[test], score), 5)
    y_all = fed.loans["defaulted"].to_numpy()
    res["synthetic_default_rate"] = round(float(y_all.mean()), 5)
    res["synthetic_loans"] = len(y_all)
    res["synthetic_bad_rate_relative_reduction"] = round(
        1 - res["synthetic_bad_rate_with_platform"] / res["synthetic_bad_rate_lender_only"], 4
    )
    return res
