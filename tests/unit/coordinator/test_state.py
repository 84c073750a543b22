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


def test_missing_registry_is_refused_not_recreated(tmp_path):
    path = tmp_path / "typo" / "state.db"
    with pytest.raises(NotFound, match=r"typo/state.db does not exist.*coordinator init"):
        StateStore(path, create=False)
    assert not path.exists() and not path.parent.exists()


def test_corrupt_registry_named(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InvalidInput, match=r"state.db is not a valid registry"):
        StateStore(path, create=False)


def test_read_only_registry_refused_at_start(tmp_path):
    path = tmp_path / "state.db"
    StateStore(path).close()
    path.chmod(0o444)
    try:
        with pytest.raises(InvalidInput, match=r"state.db is not writable"):
            StateStore(path, create=False)
    finally:
        path.chmod(0o644)
    StateStore(path, create=False).close()


def test_deleted_registry_fails_every_call_and_runs_end(tmp_path):
    """state.db deleted under a running coordinator: calls fail naming the file, a run in progress ends
    as failed with the reason and its watcher gets the final event instead of waiting forever."""
    import threading

    from coordinator.runs import JOB_KINDS, JobKind, RunManager, register_job
    from fedcore.errors import Unavailable
    from fedcore.protocol.inmemory import InMemoryChannel

    path = tmp_path / "state.db"
    state = StateStore(path)
    started, go = threading.Event(), threading.Event()

    def job(ctx):
        started.set()
        go.wait(60)
        ctx.state.audit("test", "step", ctx.run_id, {})
        return {"ok": True}

    register_job(JobKind("test-wait", job))
    try:
        runs = RunManager(InMemoryChannel(), state, tmp_path / "runs")
        run_id = runs.start("test-wait", {}, actor="admin")
        assert started.wait(60)
        path.unlink()
        with pytest.raises(Unavailable, match=r"state.db was deleted"):
            state.principals()
        go.set()
        last = list(runs.watch(run_id))[-1]
        assert last.done and last.status == "failed" and "state.db was deleted" in last.message
        assert not path.exists()  # not silently re-created empty
    finally:
        JOB_KINDS.pop("test-wait", None)
