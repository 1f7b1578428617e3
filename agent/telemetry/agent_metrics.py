"""The metrics the agent exports, named and described in one place.

The agent calls the methods; ``registry.render()`` / ``write_textfile`` /
``serve_metrics`` publish them. Domains are labelled by name (a domid changes
on reboot, a name does not); ``forget_domain`` drops a destroyed one.
"""

from __future__ import annotations

from agent.telemetry.prometheus import Registry

# Event lag buckets, seconds: from a quick xenstore watch to a slow poll.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class AgentMetrics:
    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        r = self.registry
        self.domain_locality = r.gauge(
            "xnuma_domain_locality_ratio",
            "Share of the domain's vCPU run time on its home (soft-affinity) node, last minute.",
            ["domain"],
        )
        self.domain_offnode_vcpus = r.gauge(
            "xnuma_domain_offnode_vcpus",
            "vCPUs of the domain running outside their soft affinity now.",
            ["domain"],
        )
        self.actions = r.counter(
            "xnuma_actions_total", "Actions carried out, by type and outcome.", ["type", "outcome"]
        )
        self.decisions = r.counter(
            "xnuma_decisions_total",
            "Rule decisions, by rule and outcome (act, dry-run, suppressed).",
            ["rule", "outcome"],
        )
        self.suppressed = r.counter(
            "xnuma_decisions_suppressed_total",
            "Decisions not acted on, by the reason they were suppressed.",
            ["reason"],
        )
        self.event_lag = r.histogram(
            "xnuma_event_lag_seconds",
            "Time from an event being observed to the rules having decided on it.",
            LAG_BUCKETS,
        )
        self.rule_reloads = r.counter(
            "xnuma_rule_reloads_total", "Rule reloads, by result (ok, rejected).", ["result"]
        )
        self.pins_outstanding = r.gauge(
            "xnuma_temporary_pins_outstanding",
            "Temporary hard-affinity pins made and not yet restored.",
        )
        self.audit_records = r.counter(
            "xnuma_audit_records_total", "Records written to the audit log, by kind.", ["kind"]
        )
        self.start_time = r.gauge(
            "xnuma_start_time_seconds", "When the agent started, seconds since the epoch."
        )

    def set_domain(self, domain: str, locality: float, offnode_vcpus: int) -> None:
        self.domain_locality.set(locality, domain=domain)
        self.domain_offnode_vcpus.set(offnode_vcpus, domain=domain)

    def forget_domain(self, domain: str) -> None:
        self.domain_locality.remove(domain=domain)
        self.domain_offnode_vcpus.remove(domain=domain)

    def action(self, type: str, outcome: str) -> None:
        self.actions.inc(type=type, outcome=outcome)

    def decision(self, rule: str, outcome: str, suppressed_by: str | None = None) -> None:
        self.decisions.inc(rule=rule, outcome=outcome)
        if suppressed_by is not None:
            self.suppressed.inc(reason=suppressed_by)

    def observe_event_lag(self, seconds: float) -> None:
        self.event_lag.observe(seconds)

    def rule_reload(self, ok: bool) -> None:
        self.rule_reloads.inc(result="ok" if ok else "rejected")

    def set_pins_outstanding(self, count: int) -> None:
        self.pins_outstanding.set(count)

    def audit_record(self, kind: str) -> None:
        self.audit_records.inc(kind=kind)

    def render(self) -> str:
        return self.registry.render()
