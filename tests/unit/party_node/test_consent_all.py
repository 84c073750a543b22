"""``dataset.consent_all``: purposes every row consented to when the file carries no consent column."""

from pathlib import Path

import pytest

from fedcore.errors import ConfigError
from party_node.ingest import ingest_file
from party_node.schema import parse_schema
from party_node.store import Store


def test_consent_all_grants_listed_purposes_only(tmp_path: Path) -> None:
    schema = parse_schema({
        "dataset": {"name": "d", "id_column": "id", "id_kind": "opaque", "consent_all": ["training"]},
        "numeric": {"x": {"missing": "reject"}},
    })
    (tmp_path / "d.csv").write_text("id,x\na,1\nb,2\nc,3\n")
    store = Store.open(f"sqlite:///{tmp_path / 's.db'}")
    ingest_file(store, tmp_path / "d.csv", schema)
    assert len(store.ids_with_consent("training")) == 3
    assert len(store.ids_with_consent("scoring")) == 0
    store.close()


@pytest.mark.parametrize("value", [["marketing"], "training", [1]])
def test_consent_all_is_validated(value) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.consent_all"):
        parse_schema({"dataset": {"name": "d", "id_column": "id", "id_kind": "opaque", "consent_all": value}})


def test_consent_all_conflicts_with_a_consent_column() -> None:
    with pytest.raises(ConfigError, match="also has a consent column"):
        parse_schema({"dataset": {"name": "d", "id_column": "id", "id_kind": "opaque", "consent_all": ["training"]},
                      "consent": {"training": "c"}})
