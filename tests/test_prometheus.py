"""Prometheus text exposition: rendering, escaping, the textfile, the loopback HTTP server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from agent.telemetry.agent_metrics import AgentMetrics
from agent.telemetry.http_server import check_loopback, respond, serve_metrics
from agent.telemetry.prometheus import MetricError, Registry, write_textfile


def small_registry() -> Registry:
    r = Registry()
    g = r.gauge("xnuma_domain_locality_ratio", "Share on the home node.\nLast minute.", ["domain"])
    g.set(0.75, domain="B")
    g.set(1, domain='we"ird\\name\nx')
    c = r.counter("xnuma_actions_total", "Actions.", ["type", "outcome"])
    c.inc(type="narrow_hard", outcome="ok")
    c.inc(2, type="narrow_hard", outcome="ok")
    c.inc(type="set_soft", outcome="failed")
    r.gauge("xnuma_temporary_pins_outstanding", "Pins.")
    h = r.histogram("xnuma_event_lag_seconds", "Lag.", [0.5, 0.1])
    h.observe(0.05)
    h.observe(0.3)
    h.observe(7)
    return r


def test_render_exact_text() -> None:
    assert small_registry().render() == (
        "# HELP xnuma_domain_locality_ratio Share on the home node.\\nLast minute.\n"
        "# TYPE xnuma_domain_locality_ratio gauge\n"
        'xnuma_domain_locality_ratio{domain="B"} 0.75\n'
        'xnuma_domain_locality_ratio{domain="we\\"ird\\\\name\\nx"} 1\n'
        "# HELP xnuma_actions_total Actions.\n"
        "# TYPE xnuma_actions_total counter\n"
        'xnuma_actions_total{type="narrow_hard",outcome="ok"} 3\n'
        'xnuma_actions_total{type="set_soft",outcome="failed"} 1\n'
        "# HELP xnuma_temporary_pins_outstanding Pins.\n"
        "# TYPE xnuma_temporary_pins_outstanding gauge\n"
        "xnuma_temporary_pins_outstanding 0\n"
        "# HELP xnuma_event_lag_seconds Lag.\n"
        "# TYPE xnuma_event_lag_seconds histogram\n"
        'xnuma_event_lag_seconds_bucket{le="0.1"} 1\n'
        'xnuma_event_lag_seconds_bucket{le="0.5"} 2\n'
        'xnuma_event_lag_seconds_bucket{le="+Inf"} 3\n'
        "xnuma_event_lag_seconds_sum 7.35\n"
        "xnuma_event_lag_seconds_count 3\n"
    )


def test_reference_parser_reads_it_back() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    families = {f.name: f for f in parser.text_string_to_metric_families(small_registry().render())}
    locality = {
        s.labels["domain"]: s.value for s in families["xnuma_domain_locality_ratio"].samples
    }
    assert locality == {"B": 0.75, 'we"ird\\name\nx': 1.0}
    assert families["xnuma_actions"].type == "counter"
    lag = {
        (s.name, s.labels.get("le")): s.value for s in families["xnuma_event_lag_seconds"].samples
    }
    assert lag[("xnuma_event_lag_seconds_count", None)] == 3


def test_special_values_and_removal() -> None:
    r = Registry()
    g = r.gauge("g", "h", ["k"])
    for k, v in {"a": float("inf"), "b": float("-inf"), "c": float("nan"), "d": 1e-9}.items():
        g.set(v, k=k)
    g.remove(k="d")
    g.remove(k="never-set")
    assert r.render().splitlines()[2:] == ['g{k="a"} +Inf', 'g{k="b"} -Inf', 'g{k="c"} NaN']


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda r: r.gauge("1bad", "h"), "bad metric name"),
        (lambda r: r.gauge("ok", "h", ["__x"]), "bad label name"),
        (lambda r: r.gauge("ok", "h", ["a", "a"]), "duplicate"),
        (lambda r: r.counter("xnuma_actions", "h"), "must end in _total"),
        (lambda r: r.counter("c_total", "h").inc(-1), "cannot go down"),
        (lambda r: r.gauge("g", "h", ["domain"]).set(1), r"labels \[\] given, \['domain'\]"),
        (lambda r: r.gauge("g", "h", ["domain"]).set(1, domain="A", vcpu=1), "expected"),
        (lambda r: r.histogram("h", "h", [1.0], ["le"]), "reserved"),
        (lambda r: r.histogram("h", "h", []), "buckets"),
        (lambda r: (r.gauge("g", "h"), r.gauge("g", "h")), "already registered"),
    ],
)
def test_mistakes_are_refused(build: object, message: str) -> None:
    with pytest.raises(MetricError, match=message):
        build(Registry())  # type: ignore[operator]


def test_agent_metrics_names_and_lifecycle() -> None:
    m = AgentMetrics()
    m.set_domain("A", 0.98, 0)
    m.set_domain("C", 0.5, 2)
    m.action("narrow_hard", "ok")
    m.decision("soft-affinity-fixup", "act")
    m.decision("soft-affinity-fixup", "suppressed", suppressed_by="cooldown")
    m.observe_event_lag(0.02)
    m.rule_reload(True)
    m.rule_reload(False)
    m.set_pins_outstanding(2)
    m.audit_record("decision")
    assert m.domain_offnode_vcpus.value(domain="C") == 2
    assert m.suppressed.value(reason="cooldown") == 1
    assert m.decisions.value(rule="soft-affinity-fixup", outcome="act") == 1
    assert m.event_lag.count() == 1
    m.forget_domain("C")
    text = m.render()
    assert 'xnuma_domain_locality_ratio{domain="A"} 0.98' in text
    assert 'domain="C"' not in text
    assert "xnuma_temporary_pins_outstanding 2" in text
    assert 'xnuma_rule_reloads_total{result="rejected"} 1' in text
    parser = pytest.importorskip("prometheus_client.parser")
    names = {f.name for f in parser.text_string_to_metric_families(text)}
    assert {
        "xnuma_domain_locality_ratio",
        "xnuma_domain_offnode_vcpus",
        "xnuma_actions",
        "xnuma_decisions_suppressed",
        "xnuma_event_lag_seconds",
        "xnuma_rule_reloads",
        "xnuma_temporary_pins_outstanding",
    } <= names


def test_textfile_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = small_registry()
    target = tmp_path / "xnuma.prom"
    target.write_text("old\n")
    inode = target.stat().st_ino
    write_textfile(r, target)
    assert target.read_text() == r.render()
    assert target.stat().st_ino != inode  # a rename, not an overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xnuma.prom"]

    def broken(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", broken)
    with pytest.raises(OSError, match="No space"):
        write_textfile(Registry(), target)
    monkeypatch.undo()
    assert target.read_text() == r.render()  # the old file is intact, no temp left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xnuma.prom"]
    with pytest.raises(ValueError, match=r"only \*\.prom"):
        write_textfile(r, tmp_path / "xnuma.txt")


def test_respond() -> None:
    render = small_registry().render
    ok = respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", render)
    head, body = ok.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"version=0.0.4" in head
    assert body == render().encode() and f"Content-Length: {len(body)}".encode() in head
    assert respond(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", render).startswith(b"HTTP/1.1 200")
    head_only = respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", render)
    assert head_only.endswith(b"\r\n\r\n") and b"Content-Length" in head_only
    assert respond(b"GET / HTTP/1.1\r\n\r\n", render).startswith(b"HTTP/1.1 404")
    post = respond(b"POST /metrics HTTP/1.1\r\n\r\n", render)
    assert post.startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD" in post
    assert respond(b"garbage\r\n\r\n", render).startswith(b"HTTP/1.1 400")


def test_loopback_only() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.3.2.1"):
        check_loopback(host)
    with pytest.raises(ValueError, match="only loopback"):
        check_loopback("0.0.0.0")
    with pytest.raises(ValueError, match="only loopback"):
        check_loopback("10.1.2.3")
    with pytest.raises(ValueError, match="not an IP address"):
        check_loopback("example.org")


async def fetch(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


async def test_http_server_serves_metrics_over_tcp() -> None:
    m = AgentMetrics()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve_metrics, m.render, 0)
        port = listeners[0].socket.getsockname()[1]
        m.set_pins_outstanding(4)
        data = await fetch(port, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert b"\nxnuma_temporary_pins_outstanding 4\n" in data
        assert (await fetch(port, b"GET /admin HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        # A client that sends half a request and leaves does not hurt the server.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /met")
        await stream.aclose()
        again = await fetch(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert again.startswith(b"HTTP/1.1 200 OK")
        nursery.cancel_scope.cancel()


async def test_http_server_refuses_a_public_address() -> None:
    with pytest.raises(ValueError, match="only loopback"):
        await serve_metrics(lambda: "", 0, "0.0.0.0")
