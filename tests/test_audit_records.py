"""The record constructors: schema, normalisation, and clear errors."""

from __future__ import annotations

import enum

import pytest

from agent.audit import records as R


class Color(enum.Enum):
    RED = "red"


def test_decision_has_every_field_and_normalises_values() -> None:
    body = R.decision(
        "soft-affinity-fixup",
        "sha256:ab12",
        R.Subject(domain="A", domid=3, vcpu=2),
        "act",
        "it ran off its node",
        [
            R.Clause("vcpu.off_node_s > 2", {"vcpu.off_node_s": 2.5}, True),
            {"expr": "node.idle", "values": {"idle": frozenset({3, 1})}, "result": True},
        ],
        rule_file="/etc/xnuma/rules.d/fixup.toml",
        event_seq=7,
        window=(1, 2),
        color=Color.RED,
    )
    assert body == {
        "kind": "decision",
        "rule": "soft-affinity-fixup",
        "rule_file": "/etc/xnuma/rules.d/fixup.toml",
        "rule_hash": "sha256:ab12",
        "subject": {"domain": "A", "domid": 3, "vcpu": 2},
        "outcome": "act",
        "reason": "it ran off its node",
        "trace": [
            {"expr": "vcpu.off_node_s > 2", "values": {"vcpu.off_node_s": 2.5}, "result": True},
            {"expr": "node.idle", "values": {"idle": [1, 3]}, "result": True},
        ],
        "event": 7,
        "window": [1, 2],
        "color": "red",
    }


def test_suppressed_needs_a_reason_code_and_only_then() -> None:
    with pytest.raises(R.RecordError, match="suppressed_by"):
        R.decision("r", "h", {"domain": "A"}, "suppressed", "x", [])
    with pytest.raises(R.RecordError, match="suppressed_by"):
        R.decision("r", "h", {"domain": "A"}, "act", "x", [], suppressed_by="cooldown")
    body = R.decision("r", "h", {"domain": "A"}, "suppressed", "x", [], suppressed_by="cooldown")
    assert body["suppressed_by"] == "cooldown"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: R.decision("r", "h", {}, "maybe", "", []), "decision.outcome: 'maybe'"),
        (lambda: R.action("narrow_hard", {}, {}, "done"), "action.outcome: 'done'"),
        (lambda: R.action("x", {}, {}, "ok", attempts=-1), "action.attempts"),
        (lambda: R.event("e", {"dom": "A"}), "unknown subject field.*dom"),
        (lambda: R.decision("r", "h", {}, "act", "", [{"expr": "x"}]), r"trace\[0\].*result"),
        (lambda: R.event("e", data={"when": object()}), r"event\.data\.when: object"),
        (lambda: R.event("e", data={(1, 2): 1}), "map key"),
        (lambda: R.event("e", seq=3), "reserved"),
        (lambda: R.event("e", kind="x"), "reserved"),
    ],
)
def test_bad_fields_are_named(build: object, message: str) -> None:
    with pytest.raises(R.RecordError, match=message):
        build()  # type: ignore[operator]


def test_action_and_other_kinds() -> None:
    a = R.action(
        "narrow_hard",
        {"cpus": range(0, 4), "original": frozenset(range(8))},
        R.Subject(domain="A", vcpu=1),
        "failed",
        error="xl: timeout",
        attempts=3,
        duration=0.25,
        decision_seq=12,
    )
    assert a["params"] == {"cpus": [0, 1, 2, 3], "original": list(range(8))}
    assert (a["outcome"], a["attempts"], a["decision"], a["error"]) == (
        "failed",
        3,
        12,
        "xl: timeout",
    )
    reload = R.rule_reload(False, {"b.toml": "h2", "a.toml": "h1"}, 0, ["b.toml:3: bad"])
    assert reload["files"] == [{"path": "a.toml", "hash": "h1"}, {"path": "b.toml", "hash": "h2"}]
    assert R.agent_start("0.1", 42, True, "sim")["dry_run"] is True
    assert R.agent_stop("SIGTERM", 0) == {"kind": "agent_stop", "reason": "SIGTERM", "exit_code": 0}
    assert {R.event("x")["kind"], a["kind"]} <= R.KINDS


def test_trace_steps_from_the_rule_engine_are_taken_as_they_are() -> None:
    from agent.rules.trace import TraceStep

    body = R.decision(
        "fixup",
        "h",
        {"domain": "A", "vcpu": 0},
        "act",
        "",
        [
            TraceStep("vcpu.off_node_for >= 2", (2.5, 2), True),
            TraceStep("count(node.idle_cpus)", (frozenset({4, 2}),), 2),
            {"text": "vcpu.node != vcpu.home", "values": [1, 0], "result": True},
        ],
    )
    assert body["trace"] == [
        {"expr": "vcpu.off_node_for >= 2", "values": [2.5, 2], "result": True},
        {"expr": "count(node.idle_cpus)", "values": [[2, 4]], "result": 2},
        {"expr": "vcpu.node != vcpu.home", "values": [1, 0], "result": True},
    ]
    with pytest.raises(R.RecordError, match=r"trace\[0\]: int is not a condition clause"):
        R.decision("r", "h", {}, "act", "", [3])
