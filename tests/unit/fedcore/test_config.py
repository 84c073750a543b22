from pathlib import Path

import pytest

from fedcore.errors import ConfigError, NotFound
from party_node.config import load_party_config


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "party.toml").write_text(text)
    return tmp_path


def test_defaults_resolve_relative_to_home(tmp_path):
    cfg = load_party_config(write(tmp_path, '[party]\nname = "yixin"\n'))
    assert cfg.tls.key == (tmp_path / "keys/party.key").resolve()
    assert cfg.store_url() == f"sqlite:///{(tmp_path / 'store.db').resolve()}"
    assert cfg.link.heartbeat_s == 1.0


def test_env_override_wins_and_is_validated(tmp_path, monkeypatch):
    home = write(tmp_path, '[party]\nname = "yixin"\n[link]\nheartbeat_s = 2.0\n')
    monkeypatch.setenv("FEDCREDIT_LINK__HEARTBEAT_S", "0.25")
    monkeypatch.setenv("FEDCREDIT_COORDINATOR__ADDRESS", "10.0.0.1:9000")
    cfg = load_party_config(home)
    assert cfg.link.heartbeat_s == 0.25
    assert cfg.coordinator.address == "10.0.0.1:9000"
    monkeypatch.setenv("FEDCREDIT_LINK__HEARTBEAT_S", "-1")
    with pytest.raises(ConfigError, match=r"link\.heartbeat_s"):
        load_party_config(home)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[party]\nname = "Bad Name"\n', "party.name"),
        ('[party]\nname = "yixin"\n[link]\nchunk_bytes = "big"\n', "link.chunk_bytes"),
        ('[party]\nname = "yixin"\n[link]\nheartbeat = 1\n', "link.heartbeat"),
        ("[link]\nheartbeat_s = 1\n", "party"),
        ('[party]\nname = "yixin"\n[tls\n', "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load_party_config(write(tmp_path, text))
    assert key in str(err.value)
    assert str(tmp_path / "party.toml") in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(NotFound, match=r"party\.toml does not exist"):
        load_party_config(tmp_path / "nowhere")
