"""The rule engine: TOML rules, a typed condition language, a pure decide().

What the agent uses:

* ``load_paths(paths) -> RuleSet`` (raises ``RuleLoadError`` with every error),
  or ``RuleReloader(paths)`` which keeps ``.current`` up to date (SIGHUP, file
  changes) and never swaps in a set that fails the check;
* ``make_event(type, **fields) -> Event``, checked against ``EVENT_TYPES``;
* ``decide(state, event, now, rules, memory) -> (decisions, memory)``, pure;
  start with ``Memory()`` and feed back the memory it returns;
* each ``Decision`` carries ``outcome`` (act, dry-run, suppressed + ``reason``),
  a typed ``action`` (``VcpuFixup``, ``VcpuSwap``, ``SetSoftAffinity``,
  ``PinBackend``, ``PlaceDomain``, ``Note``) and the condition ``trace``;
  ``to_record()`` gives plain values for the audit log.

The host state it reads is ``agent.state.HostView``, built by
``agent.state.build_state`` from the agent's observations.
"""

from agent.rules.actions import (
    Action,
    Note,
    PinBackend,
    PlaceDomain,
    SetHardAffinity,
    SetSoftAffinity,
    VcpuFixup,
    VcpuSwap,
)
from agent.rules.decide import Decision, Memory, Outcome, Reason, decide
from agent.rules.errors import RuleError, RuleLoadError
from agent.rules.events import EVENT_TYPES, Event, EventError, make_event
from agent.rules.loader import check_paths, load_paths
from agent.rules.reload import ReloadResult, RuleReloader
from agent.rules.ruleset import Rule, RuleSet

__all__ = [
    "EVENT_TYPES",
    "Action",
    "Decision",
    "Event",
    "EventError",
    "Memory",
    "Note",
    "Outcome",
    "PinBackend",
    "PlaceDomain",
    "Reason",
    "ReloadResult",
    "Rule",
    "RuleError",
    "RuleLoadError",
    "RuleReloader",
    "RuleSet",
    "SetHardAffinity",
    "SetSoftAffinity",
    "VcpuFixup",
    "VcpuSwap",
    "check_paths",
    "decide",
    "load_paths",
    "make_event",
]
