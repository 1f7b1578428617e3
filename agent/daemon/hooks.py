"""Extensions of the agent's loop: how placement and backend pinning plug in.

An extension (``AgentHooks``; ``agent.placement.hooks.PlacementHooks`` and
``agent.backends.hooks.BackendHooks``) is called at four points::

    await nursery.start(hooks.run, xs, wake)   # once: its own servers and watches,
                                               # on a xenstore client of the hooks'
                                               # own (None: no xenstore); wake() asks
                                               # for a scan
    obs, events = await hooks.augment(obs)     # each scan, before build_state: the
                                               # observation completed, and events of
                                               # its own for the rules
    hooks.handlers                             # the action types it carries out
    hooks.after_scan()                         # each scan, once its actions ran

``augment`` runs inside the loop's pass, which answers nothing meanwhile: slow I/O
(xenstore crawls) belongs in the tasks ``run`` starts, which publish their results
for ``augment`` to take (``agent.backends.hooks`` does so).

``ActionRecorder`` is the agent's recorder (``agent.daemon.recorder``) as far
as an extension writes to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import trio

from agent.audit.records import Body, Subject
from agent.daemon.actions import Handler
from agent.rules.events import Event
from agent.state import Observation
from agent.xenstore.client import Client


class ActionRecorder(Protocol):
    """The agent's recorder, as far as extensions use it."""

    def action(self, type: str, params: Mapping[str, Any], subject: Subject, outcome: str, *,
               error: str | None = None, attempts: int = 1, duration: float = 0.0,
               decision_seq: int | None = None, **extra: Any) -> int: ...

    def append(self, body: Body, *, sync: bool = False) -> int: ...


class AgentHooks(Protocol):
    """One extension of the loop; see the module docstring."""

    @property
    def handlers(self) -> Mapping[str, Handler]: ...

    async def run(self, xs: Client | None, wake: Callable[[], None], *,
                  task_status: trio.TaskStatus[None] = ...) -> None: ...

    async def augment(self, obs: Observation) -> tuple[Observation, list[Event]]: ...

    def after_scan(self) -> None: ...


def handlers_of(hooks: Iterable[AgentHooks]) -> dict[str, Handler]:
    """Every extension's handlers by action type; two for one type is a mistake."""
    out: dict[str, Handler] = {}
    for h in hooks:
        for type_, handler in h.handlers.items():
            if type_ in out:
                raise ValueError(f"two extensions handle {type_!r} "
                                 f"({type(h).__name__} is the second)")
            out[type_] = handler
    return out
