"""The agent's configuration: a TOML file whose keys mirror ``xnuma run``'s options.

    backend = "xl"                       # xl | sim
    scenario = "seed-abc"                # with backend = "sim": the scenario to run
    xenstore_socket = "/run/xenstored/socket"   # default: $XENSTORED_PATH, else libxenstore's
    placement_socket = "/run/xnuma/placement.sock"   # `xnuma place` asks here; "" for none
    rules_dir = "/etc/xnuma/rules.d"
    audit_log = "/var/log/xnuma/audit.log"      # "" for none
    journal = "/var/lib/xnuma/pins.journal"
    poll_interval_s = 1.0                # hypervisor poll; bursts after domain events are faster
    dry_run = false                      # decide and record, change nothing
    metrics_textfile = "/var/lib/node_exporter/textfile/xnuma.prom"   # "" for none
    metrics_port = 9717                  # loopback only; 0 or absent for none
    tick_interval_s = 1.0                # the rules' periodic tick
    burst_interval_s = 0.1               # poll interval during a burst
    burst_s = 3.0                        # how long a burst lasts after a domain event
    memory_interval_s = 30.0             # re-measure a domain's memory per node this often
    log_level = "info"

Unknown keys and wrong types are errors naming the file and the key. Command
line options override the file; ``load`` merges both.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from agent.placement.server import DEFAULT_SOCKET as PLACEMENT_SOCKET

DEFAULT_PATH = Path("/etc/xnuma/xnuma.toml")
BACKENDS = ("xl", "sim")


class ConfigError(ValueError):
    """A config file or option the agent cannot use; the message says where and what."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    backend: str = "xl"
    scenario: str | None = None
    xenstore_socket: str | None = None
    placement_socket: str | None = PLACEMENT_SOCKET
    rules_dir: str = "/etc/xnuma/rules.d"
    audit_log: str | None = "/var/log/xnuma/audit.log"
    journal: str = "/var/lib/xnuma/pins.journal"
    poll_interval_s: float = 1.0
    dry_run: bool = False
    metrics_textfile: str | None = None
    metrics_port: int | None = None
    tick_interval_s: float = 1.0
    burst_interval_s: float = 0.1
    burst_s: float = 3.0
    memory_interval_s: float = 30.0
    log_level: str = "info"

    def check(self, where: str = "config") -> AgentConfig:
        """Raise ``ConfigError`` for values no agent can run with."""
        if self.backend not in BACKENDS:
            raise ConfigError(f"{where}: backend {self.backend!r} is not one of "
                              f"{', '.join(BACKENDS)}")
        if self.backend == "sim" and not self.scenario:
            raise ConfigError(f"{where}: backend 'sim' needs a scenario")
        for name in ("poll_interval_s", "tick_interval_s", "burst_interval_s", "burst_s",
                     "memory_interval_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{where}: {name} must be > 0 seconds, got {value!r}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"{where}: metrics_port {self.metrics_port} is not a TCP port")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError(f"{where}: log_level {self.log_level!r} is not a level")
        return self

    def as_record(self) -> dict[str, Any]:
        """Plain values, for the ``agent_start`` audit record."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# key -> (accepted python types, what to say)
_TYPES: Mapping[str, tuple[tuple[type, ...], str]] = {
    "backend": ((str,), "a string (xl or sim)"),
    "scenario": ((str,), "a scenario name or file"),
    "xenstore_socket": ((str,), "a path"),
    "placement_socket": ((str,), "a path, or \"\" for none"),
    "rules_dir": ((str,), "a path"),
    "audit_log": ((str,), "a path, or \"\" for none"),
    "journal": ((str,), "a path"),
    "poll_interval_s": ((int, float), "seconds"),
    "dry_run": ((bool,), "true or false"),
    "metrics_textfile": ((str,), "a path, or \"\" for none"),
    "metrics_port": ((int,), "a port number, 0 for none"),
    "tick_interval_s": ((int, float), "seconds"),
    "burst_interval_s": ((int, float), "seconds"),
    "burst_s": ((int, float), "seconds"),
    "memory_interval_s": ((int, float), "seconds"),
    "log_level": ((str,), "debug, info, warning or error"),
}
_EMPTY_IS_NONE = ("audit_log", "metrics_textfile", "xenstore_socket", "scenario",
                  "placement_socket")


def _convert(key: str, value: Any, where: str) -> Any:
    kinds, what = _TYPES[key]
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        raise ConfigError(f"{where}: key {key!r}: expected {what}, got {value!r}")
    if isinstance(value, int) and float in kinds:
        value = float(value)
    if key in _EMPTY_IS_NONE and value == "":
        return None
    if key == "metrics_port" and value == 0:
        return None
    return value


def from_mapping(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Checked, converted settings from a parsed file (or any mapping)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _TYPES:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(_TYPES)})")
        out[key] = _convert(key, value, where)
    return out


def read_file(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_mapping(doc, str(path))


def load(
    path: str | Path | None, overrides: Mapping[str, Any], *, default: Path = DEFAULT_PATH
) -> AgentConfig:
    """Defaults, then the file (``path``, else ``default`` if it exists), then ``overrides``
    (command-line values; None means "not given")."""
    settings: dict[str, Any] = {}
    where = "command line"
    if path is not None:
        settings.update(read_file(Path(path)))
        where = f"{path} and the command line"
    elif default.exists():
        settings.update(read_file(default))
        where = f"{default} and the command line"
    given = {k: v for k, v in overrides.items() if v is not None}
    settings.update(from_mapping(given, "command line"))
    return replace(AgentConfig(), **settings).check(where)
