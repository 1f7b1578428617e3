"""``audit why``: plain sentences from hand-made records."""

from __future__ import annotations

from pathlib import Path

from agent.audit import records as R
from agent.audit.reader import read_entries
from agent.audit.why import explain
from agent.audit.writer import AuditWriter

A3 = R.Subject(domain="A", domid=5, uuid="6f1c-aa", vcpu=3)
C1 = R.Subject(domain="C", domid=7, vcpu=1)
FIXUP_REASON = "it had run on node 1 for 2.1 s, outside its soft affinity (node 0)"


def build(path: Path) -> None:
    with AuditWriter(path) as w:
        ev = w.append(R.event("vcpu.off_node", A3, {"node": 1, "for_s": 2.1}), mono=12.2)
        d = w.append(
            R.decision(
                "soft-affinity-fixup",
                "h1",
                A3,
                "act",
                FIXUP_REASON + ".",
                [R.Clause("vcpu.off_node_s >= 2", {"vcpu.off_node_s": 2.1}, True)],
                event_seq=ev.seq,
            ),
            mono=12.3,
        )
        w.append(
            R.action(
                "narrow_hard",
                {"cpus": range(28), "original": range(56), "node": 0},
                A3,
                "ok",
                decision_seq=d.seq,
            ),
            mono=12.3,
        )
        # Another domain's record in between must not confuse the story.
        w.append(R.event("domain.create", C1), mono=12.5)
        w.append(
            R.action("restore_hard", {"cpus": range(56)}, A3, "ok", decision_seq=d.seq), mono=13.0
        )
        w.append(
            R.decision(
                "soft-affinity-fixup",
                "h1",
                A3,
                "suppressed",
                "",
                [
                    R.Clause("vcpu.off_node_s >= 2", {"vcpu.off_node_s": 2.4}, True),
                    R.Clause("node.home.idle_pcpus > 0", {"idle": 0}, False),
                    {"text": "count(home.idle)", "values": [[4, 5, 6]], "result": 3},
                ],
                suppressed_by="cooldown",
                detail="fixed 1.5 s ago",
            ),
            mono=14.5,
        )
        d2 = w.append(
            R.decision(
                "vcpu-swap",
                "h2",
                C1,
                "act",
                "each runs on the other's home node",
                [],
                peer=A3,
            ),
            mono=20.0,
        )
        w.append(
            R.action(
                "narrow_hard",
                {"cpus": [28, 29]},
                A3,
                "failed",
                error="xl vcpu-pin: timed out",
                attempts=3,
                decision_seq=d2.seq,
            ),
            mono=20.4,
        )
        w.append(R.decision("memory-follow", "h3", {"domain": "A"}, "dry-run", "", []), mono=30.0)
        w.append(R.action("restore_hard", {"cpus": range(56)}, A3, "ok"), mono=31.0)
        w.append(R.decision("fixup", "h1", {"domain": "B", "vcpu": 3}, "act", "x", []), mono=32)


def test_why_tells_the_story_of_a_vcpu(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    build(log)
    assert explain(read_entries(log), "A", 3) == [
        "At 12.3 s rule soft-affinity-fixup acted on A vCPU 3: "
        + FIXUP_REASON
        + "; hard affinity was narrowed to 0-27 (node 0) and restored at 13.0 s.",
        "At 14.5 s rule soft-affinity-fixup matched A vCPU 3 but did not act "
        "(cooldown: fixed 1.5 s ago): vcpu.off_node_s >= 2 [vcpu.off_node_s = 2.4] held; "
        "node.home.idle_pcpus > 0 [idle = 0] did not hold; count(home.idle) [4-6] gave 3.",
        "At 20.0 s rule vcpu-swap acted on C vCPU 1 and A vCPU 3: each runs on the other's "
        "home node; narrowing hard affinity to 28-29 failed at 20.4 s after 3 attempts "
        "(xl vcpu-pin: timed out).",
        "At 31.0 s A vCPU 3: hard affinity was restored to 0-55.",
    ]


def test_why_for_a_whole_domain_by_domid_or_uuid(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    build(log)
    by_name = explain(read_entries(log), "A")
    assert len(by_name) == 5
    assert by_name[3] == (
        "At 30.0 s rule memory-follow would have acted on A (dry run, nothing changed): "
        "no reason was recorded."
    )
    assert explain(read_entries(log), "5", 3) == explain(read_entries(log), "A", 3)
    assert explain(read_entries(log), "6f1c-aa", 3) == explain(read_entries(log), "A", 3)


def test_why_with_nothing_decided(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    build(log)
    assert explain(read_entries(log), "C", 0) == []
    assert explain(read_entries(log), "Z") == []


def test_why_uses_wall_clock_without_agent_time(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    with AuditWriter(log, wall_clock=lambda: 1_714_564_803.0) as w:
        w.append(R.decision("place", "h", {"domain": "D"}, "act", "it fits on node 1", []))
    assert explain(read_entries(log), "D") == [
        "At 2024-05-01 12:00:03Z rule place acted on D: it fits on node 1; "
        "no action was recorded for it."
    ]


def test_rule_engine_action_types_read_well(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    with AuditWriter(log) as w:
        d = w.append(R.decision("swap", "h", C1, "act", "both are off home", []), mono=1.0)
        w.append(
            R.action("vcpu.swap", {"with_domid": 5, "with_vcpu": 3}, C1, "ok", decision_seq=d.seq),
            mono=1.0,
        )
        w.append(
            R.action(
                "vcpu.fixup", {"node": 0}, C1, "skipped", error="domain gone", decision_seq=d.seq
            ),
            mono=2.0,
        )
        w.append(R.action("domain.set_soft", {"nodes": [1]}, C1, "ok"), mono=3.0)
    assert explain(read_entries(log), "C") == [
        "At 1.0 s rule swap acted on C vCPU 1: both are off home; it traded places with "
        "domain 5 vCPU 3; bringing it back to node 0 was skipped at 2.0 s (domain gone).",
        "At 3.0 s C vCPU 1: soft affinity was set to node 1.",
    ]
