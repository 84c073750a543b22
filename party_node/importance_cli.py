"""``fedcredit party importance MODEL``: this party's own gain importance of a tree model.

Each party keeps, in ``HOME/models/<run>/gbdt.json`` (:mod:`party_node.trees`), the total split gain of
its own features only: a lender the lenders' shared-schema features (the same figures at every lender of
the model), the platform its own features. The coordinator sends each party only its own part at the end
of training (``trees.finish``), so no party can print another's; this command reads the local file and
asks nobody.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fedcore.errors import InvalidInput, NotFound
from fedcore.protocol.trees.messages import LENDERS_OWNER  # the lenders' features' owner (both tree protocols)

Home = Annotated[
    Path,
    typer.Option("--home", help="The party's home folder (env FEDCREDIT_HOME).", envvar="FEDCREDIT_HOME"),
]


def own_importance(models_dir: Path, model_id: str) -> dict[str, Any]:
    """``{"model", "role", "kind", "importance": {feature: gain}}`` of this party's own features, largest
    gain first; NotFound / InvalidInput naming the model when this party keeps no tree model of that id."""
    folder = Path(models_dir) / model_id
    path = folder / "gbdt.json"
    if not path.is_file():
        if (folder / "slice.json").is_file():
            raise InvalidInput(f"model {model_id!r} is a linear model: gain importance is for tree models"
                               " (`party scorecard` shows a linear model's points)")  # fmt: skip
        raise NotFound(f"model {model_id!r}: this party keeps no tree model of that id ({path} does not exist)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        role = str(doc["role"])
        raw = doc["model"]["importance"].get(LENDERS_OWNER, {}) if role == "lender" else doc["importance"]
        gains = {str(k): float(v) for k, v in dict(raw).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"{path}: not a tree model this node wrote ({type(exc).__name__}: {exc})") from None
    ordered = dict(sorted(gains.items(), key=lambda kv: (-kv[1], kv[0])))
    return {"model": model_id, "role": role, "kind": str(doc.get("kind", "")), "importance": ordered}


def importance_command(
    model: Annotated[str, typer.Argument(help="The tree model (its training run id).")],
    home: Home = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Gain importance of this party's own features in a tree model (another party's is never here)."""
    from .config import load_party_config

    config = load_party_config(home)
    res = own_importance(config.home / "models", model)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    total = sum(res["importance"].values())
    head = f"{res['kind'] or 'tree'} model {model} at {config.party.name} ({res['role']})"
    typer.echo(f"{head}: gain importance of its own {len(res['importance'])} feature(s)")
    for name, gain in res["importance"].items():
        share = gain / total if total > 0 else 0.0
        typer.echo(f"  {name:<32} {gain:>12.4f} {share:>7.1%}")
