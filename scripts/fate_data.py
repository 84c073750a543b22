"""Ready-made federations from the real FATE credit data (UCI default of credit card clients).

The CSVs ship compressed in ``tests/data/fate/*.csv.gz`` (licence and source in the README there);
:func:`fate_data_dir` unpacks them once into a cache folder (or uses ``FEDCREDIT_FATE_DATA`` when set).
:func:`write_fate_federations` writes one schema TOML per party (opaque ids, ``y`` as label
where the file has it, all ``x*`` columns numeric and whitelisted) and a ``federation.toml`` whose
``file`` entries point at the CSVs, so each party ingests with the same command as any other data::

    fedcredit party ingest DATA/default_credit_hetero_guest.csv \\
        --schema OUT/hetero/guest.toml

Layouts: ``homo/`` (three lenders ``guest``, ``host_1``, ``host_2`` with the same 23 features and
labels, plus a held-out ``test``) and ``hetero/`` (``guest``: the label-holding lender with 13
features; ``host``: the platform with 10 features, no labels; the same 30,000 ids).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from fedcore.errors import NotFound

SHIPPED = Path(__file__).resolve().parents[1] / "tests" / "data" / "fate"

FATE_FILES = {
    "homo": {
        "guest": ("default_credit_homo_guest.csv", True, 23, "lender"),
        "host_1": ("default_credit_homo_host_1.csv", True, 23, "lender"),
        "host_2": ("default_credit_homo_host_2.csv", True, 23, "lender"),
        "test": ("default_credit_homo_test.csv", True, 23, "holdout"),
    },
    "hetero": {
        "guest": ("default_credit_hetero_guest.csv", True, 13, "lender"),
        "host": ("default_credit_hetero_host.csv", False, 10, "platform"),
    },
}


def fate_data_dir() -> Path:
    """A folder with the six FATE CSVs: ``FEDCREDIT_FATE_DATA`` if set, else the repository's compressed
    copies (``tests/data/fate``) unpacked once into ``<temp>/fedcredit-fate-<digest>``."""
    env = os.environ.get("FEDCREDIT_FATE_DATA")
    if env:
        return Path(env)
    packed = sorted(SHIPPED.glob("*.csv.gz"))
    if not packed:
        raise NotFound(f"the FATE data is missing from {SHIPPED} (set FEDCREDIT_FATE_DATA)")
    digest = hashlib.sha256(b"".join(p.name.encode() + str(p.stat().st_size).encode() for p in packed)).hexdigest()
    out = Path(tempfile.gettempdir()) / f"fedcredit-fate-{digest[:16]}"
    for gz in packed:
        csv = out / gz.name[: -len(".gz")]
        if csv.is_file():
            continue
        out.mkdir(parents=True, exist_ok=True)
        tmp = csv.with_suffix(f".tmp{os.getpid()}")
        with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, csv)  # atomic: concurrent test workers see a whole file or none
    return out


def fate_schema(dataset: str, n_features: int, labelled: bool) -> str:
    """Schema TOML of one FATE party file."""
    feats = [f"x{i}" for i in range(n_features)]
    lines = [
        "[dataset]",
        f'name = "{dataset}"',
        'id_column = "id"',
        'id_kind = "opaque"',
        # The public UCI data carries no consent flags; treat every row as consenting to every purpose.
        'consent_all = ["training", "scoring", "blacklist"]',
    ]
    if labelled:
        lines.append('label_column = "y"')
    lines.append("federation_columns = [" + ", ".join(f'"{f}"' for f in feats) + "]")
    lines += ["", "[numeric]"]
    lines += [f'{f} = {{ missing = "reject" }}' for f in feats]
    return "\n".join(lines) + "\n"


def write_fate_federations(out: Path, data_dir: Path | None = None) -> dict[str, dict[str, tuple[Path, Path]]]:
    """Write ``out/{homo,hetero}/<party>.toml`` and ``federation.toml`` for the FATE splits.

    Returns ``{layout: {party: (csv file, schema file)}}``.
    """
    src = (data_dir or fate_data_dir()).resolve()
    result: dict[str, dict[str, tuple[Path, Path]]] = {}
    for layout, parties in FATE_FILES.items():
        folder = out / layout
        folder.mkdir(parents=True, exist_ok=True)
        manifest = [f"# FATE {layout} federation: schemas here, data in {src} (read-only)", ""]
        result[layout] = {}
        for party, (fname, labelled, nfeat, role) in parties.items():
            csv = src / fname
            if not csv.is_file():
                raise NotFound(f"FATE data file {csv} does not exist (set FEDCREDIT_FATE_DATA)")
            schema = folder / f"{party}.toml"
            schema.write_text(fate_schema(f"fate_{layout}", nfeat, labelled), encoding="utf-8")
            result[layout][party] = (csv, schema)
            manifest += [
                "[[party]]",
                f'name = "{party}"',
                f'role = "{role}"',
                f'file = "{csv}"',
                f'schema = "{schema.name}"',
                "",
            ]
        (folder / "federation.toml").write_text("\n".join(manifest), encoding="utf-8")
    return result
