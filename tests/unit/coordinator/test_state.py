import pytest

from coordinator.state import StateStore
from fedcore.errors import AlreadyExists, InvalidInput, NotFound
from fedcore.protocol.messages import Role


def admit(store, name, serial, role=Role.LENDER):
    store.admit(
        name, role, serial=serial, fingerprint="f" + serial, not_before=0, not_after=1e10, actor="admin"
    )


def test_admit_revoke_survive_reopen(tmp_path):
    s = StateStore(tmp_path / "state.db")
    admit(s, "yixin", "a1")
    admit(s, "tiange", "b2", Role.PLATFORM)
    s.add_certificate("yixin", serial="a3", fingerprint="fa3", not_before=0, not_after=1e10, actor="admin")
    assert s.revoke("yixin", reason="left the consortium", actor="admin") == ["a1", "a3"]
    s.create_run("run-1", "psi", {"parties": ["yixin", "tiange"]}, actor="admin")
    s.update_run("run-1", "done", {"size": 10})
    s.close()

    s2 = StateStore(tmp_path / "state.db")
    assert s2.certificate_owner("a1") == ("yixin", True)
    assert s2.certificate_owner("b2") == ("tiange", False)
    assert s2.certificate_owner("zz") is None
    assert s2.revoked_serials() == {"a1", "a3"}
    assert s2.principal("yixin").status == "revoked"
    assert s2.run("run-1").result == {"size": 10}
    actions = [(e.action, e.target) for e in s2.audit_log()]
    assert actions == [
        ("admit", "yixin"),
        ("admit", "tiange"),
        ("issue_certificate", "yixin"),
        ("revoke", "yixin"),
        ("start_run", "run-1"),
    ]


def test_duplicate_admit_changes_nothing(tmp_path):
    s = StateStore(tmp_path / "state.db")
    admit(s, "yixin", "a1")
    with pytest.raises(AlreadyExists, match="yixin"):
        admit(s, "yixin", "a2")
    assert s.certificate_owner("a2") is None
    assert len(s.audit_log()) == 1


def test_revoke_unknown_or_twice(tmp_path):
    s = StateStore(tmp_path / "state.db")
    with pytest.raises(NotFound, match="ghost"):
        s.revoke("ghost", reason="x", actor="admin")
    admit(s, "yixin", "a1")
    s.revoke("yixin", reason="x", actor="admin")
    with pytest.raises(InvalidInput, match="already revoked"):
        s.revoke("yixin", reason="x", actor="admin")
    with pytest.raises(NotFound):
        s.run("nope")
