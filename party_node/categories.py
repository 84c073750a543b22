"""Raw category strings at scoring: a lender sends its applicants' own categorical features as the
level strings of its data (``"A14"``, ``"< 0 DM"``); this maps them to the codes the model was trained on,
as ingest did (a level never seen maps to the schema's declared ``unseen`` level, else ``__unseen__``).
Numbers given as text (``"42"``) are read as numbers; other text in a numeric feature is an error
naming the applicant and the feature."""

from __future__ import annotations

from collections.abc import Sequence

from fedcore.errors import InvalidInput

from .scoring_batch import Applicant
from .store import Store

__all__ = ["encode_raw"]


def encode_raw(store: Store, dataset: str, applicants: Sequence[Applicant], first: int = 0) -> list[Applicant]:
    """Applicants with every string feature value turned into the number the model takes (``first``: the
    number of the first applicant, 0-based, in error messages)."""
    if not any(a.features and any(isinstance(v, str) for v in a.features.values()) for a in applicants):
        return list(applicants)
    kinds = store.dataset_info(dataset).features
    wanted: dict[str, list[tuple[int, str]]] = {}
    out: list[dict[str, float | str] | None] = []
    for i, a in enumerate(applicants):
        if not a.features:
            out.append(None)
            continue
        feats: dict[str, float | str] = dict(a.features)
        for f, v in a.features.items():
            if not isinstance(v, str):
                continue
            if kinds.get(f) == "categorical":
                wanted.setdefault(f, []).append((i, v))
                continue
            try:
                feats[f] = float(v.strip())
            except ValueError:
                raise InvalidInput(f"applicant {first + i}: feature {f!r} is numeric; {v!r} is not a number") from None
        out.append(feats)
    for f, items in wanted.items():
        codes = store.encode_categories(dataset, f, [v for _, v in items])
        for (i, _), c in zip(items, codes, strict=True):
            row = out[i]
            assert row is not None
            row[f] = float(c)
    return [a if o is None else Applicant(a.id, a.id_kind, o) for a, o in zip(applicants, out, strict=True)]
