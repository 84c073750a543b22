"""Prometheus metrics: the instrumented channel (coordinator) and registry (party) count tasks,
latency, payload bytes and errors; the /metrics listener serves them; JSON logs are one object a line."""

from __future__ import annotations

import io
import json
import logging
import urllib.request

import pytest

from fedcore import telemetry as metrics
from fedcore.errors import PartyTaskError
from fedcore.logs import setup_logging
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role, Task
from fedcore.protocol.tasks import HandlerRegistry, register_diagnostics


def _value(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_channel_and_registry_instrumentation() -> None:
    reg = HandlerRegistry()
    register_diagnostics(reg)
    metrics.instrument_registry(reg)
    ch = InMemoryChannel()
    ch.add_party("yixin", Role.LENDER, reg)
    chan = metrics.instrument_channel(ch)
    metrics.watch_links(chan.online)
    before = metrics.render().decode()
    res = chan.run("yixin", Task("link.echo", {"a": 1}, payload=[b"x" * 1000]))
    assert res.read_payload() == b"x" * 1000
    with pytest.raises(PartyTaskError):
        chan.run("yixin", Task("no.such.kind"))
    text = metrics.render().decode()
    ok = 'fedcredit_tasks_total{kind="link.echo",outcome="ok",role="coordinator"}'
    assert _value(text, ok) == _value(before, ok) + 1
    assert _value(text, 'fedcredit_tasks_total{kind="link.echo",outcome="ok",role="party"}') >= 1
    assert _value(text, 'fedcredit_errors_total{kind="party_task_failed",role="coordinator"}') >= 1
    sent = 'fedcredit_payload_bytes_total{direction="sent",role="coordinator"}'
    assert _value(text, sent) - _value(before, sent) == 1000
    assert _value(text, 'fedcredit_payload_bytes_total{direction="received",role="party"}') >= 1000
    assert _value(text, 'fedcredit_payload_bytes_total{direction="sent",role="party"}') >= 1000
    assert 'fedcredit_task_seconds_bucket{kind="link.echo"' in text
    assert _value(text, 'fedcredit_links_up{role="coordinator"}') == 1.0


def test_link_status_and_listener() -> None:
    class Status:
        connected = True
        connects = 3

    metrics.observe_link_status(Status())
    server = metrics.start_metrics_server(metrics.MetricsSettings(listen="127.0.0.1:0"))
    assert server is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert _value(text, 'fedcredit_links_up{role="party"}') == 1.0
        assert _value(text, 'fedcredit_link_connects_total{role="party"}') == 3.0
    finally:
        server.stop()
    assert metrics.start_metrics_server(metrics.MetricsSettings()) is None


def test_json_log_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setenv("FEDCREDIT_LOG_JSON", "1")
    setup_logging("info", None, stream=buf)
    try:
        logging.getLogger("fedcredit.test").info("hello %s", "world")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("fedcredit.test").exception("failed")
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert lines[0]["msg"] == "hello world" and lines[0]["level"] == "info"
    assert "ValueError: boom" in lines[1]["exc"]
