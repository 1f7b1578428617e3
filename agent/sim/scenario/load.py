"""Finding a scenario: a file on disk, or one shipped in ``agent/sim/scenarios/``."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

from agent.sim.scenario.model import Scenario, ScenarioError
from agent.sim.scenario.parser import parse_scenario

SCENARIO_PACKAGE = "agent.sim.scenarios"


def shipped_scenarios() -> list[str]:
    """Names of the scenarios that ship inside the package (``seed-abc``, ...)."""
    root = importlib.resources.files(SCENARIO_PACKAGE)
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Load a scenario file, or a shipped scenario by name (``seed-abc``)."""
    path = Path(path_or_name)
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ScenarioError(str(path), [f"cannot read: {exc.strerror}"]) from exc
        return parse_scenario(data, source=str(path), default_name=path.stem)
    name = str(path_or_name)
    name = name.removesuffix(".toml")
    if re.fullmatch(r"[A-Za-z0-9_.-]+", name) and name in shipped_scenarios():
        resource = importlib.resources.files(SCENARIO_PACKAGE).joinpath(f"{name}.toml")
        return parse_scenario(resource.read_bytes(), source=f"{name}.toml", default_name=name)
    if path.exists():
        raise ScenarioError(str(path), ["not a regular file"])
    shipped = ", ".join(shipped_scenarios()) or "none"
    raise ScenarioError(
        str(path_or_name),
        [f"no such file, and no shipped scenario by that name (shipped: {shipped})"],
    )
