"""Error collection and the generic value readers every scenario table uses.

Each reader records an error naming the table and the key and returns None, so
that parsing goes on and a file's errors are all reported together.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from agent.sim.scenario.model import SCHEDULERS
from agent.sim.spec import SchedulerName

T = TypeVar("T")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

MISSING = object()


def type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def subtable(table: str, key: str) -> str:
    """Name of a table inside a table: ``domains.A.workload``, ``[[timeline]] #2 workload``."""
    return f"{table} {key}" if table.startswith("[[") else f"{table}.{key}"


class Reader:
    """Collects errors; every table reader builds on these value readers."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []

    def err(self, table: str, key: str | None, message: str) -> None:
        where = (table if table.startswith("[[") else f"[{table}]") if table else "top level"
        self.errors.append(f"{where} key '{key}': {message}" if key else f"{where}: {message}")

    # -- generic value readers; each returns None after recording an error --

    def check_keys(self, table: str, value: Mapping[str, Any], allowed: Sequence[str]) -> None:
        for key in value:
            if key not in allowed:
                self.err(table, key, f"unknown key (expected one of: {', '.join(allowed)})")

    def table(self, where: str, key: str, value: object) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.err(where, key, f"expected a table, got {type_name(value)}")
            return None
        return cast(dict[str, Any], value)

    def integer(
        self, table: str, key: str, value: object, *, low: int | None = None,
        high: int | None = None,
    ) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.err(table, key, f"expected an integer, got {type_name(value)}")
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (
                f">= {low}" if high is None else f"<= {high}" if low is None
                else f"between {low} and {high}"
            )
            self.err(table, key, f"expected an integer {bounds}, got {value}")
            return None
        return value

    def number(
        self, table: str, key: str, value: object, *, positive: bool = False,
        low: float | None = None, high: float | None = None,
    ) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.err(table, key, f"expected a number, got {type_name(value)}")
            return None
        x = float(value)
        if not math.isfinite(x):
            self.err(table, key, f"expected a finite number, got {value}")
            return None
        if positive and x <= 0:
            self.err(table, key, f"expected a number > 0, got {value}")
            return None
        if (low is not None and x < low) or (high is not None and x > high):
            self.err(table, key, f"expected a number between {low} and {high}, got {value}")
            return None
        return x

    def string(
        self, table: str, key: str, value: object, *, choices: Sequence[str] | None = None,
        pattern: re.Pattern[str] | None = None, what: str = "",
    ) -> str | None:
        if not isinstance(value, str):
            self.err(table, key, f"expected a string, got {type_name(value)}")
            return None
        if choices is not None and value not in choices:
            self.err(table, key, f"expected one of {', '.join(choices)}, got {value!r}")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.err(table, key, f"expected {what}, got {value!r}")
            return None
        return value

    def optional(
        self, table: str, value: Mapping[str, Any], key: str,
        read: Callable[[str, str, object], T | None], default: T,
    ) -> T | None:
        """``read`` the key if present, else ``default``; None after an error."""
        raw = value.get(key, MISSING)
        if raw is MISSING:
            return default
        return read(table, key, raw)

    def required(
        self, table: str, value: Mapping[str, Any], key: str,
        read: Callable[[str, str, object], T | None], what: str,
    ) -> T | None:
        raw = value.get(key, MISSING)
        if raw is MISSING:
            self.err(table, key, f"missing (expected {what})")
            return None
        return read(table, key, raw)

    def memory(self, table: str, value: Mapping[str, Any]) -> int | None:
        has_mib, has_gib = "memory_mib" in value, "memory_gib" in value
        if has_mib and has_gib:
            self.err(table, "memory_gib", "give memory_mib or memory_gib, not both")
            return None
        if has_gib:
            gib = self.number(table, "memory_gib", value["memory_gib"], positive=True)
            if gib is None:
                return None
            mib = gib * 1024
            if not mib.is_integer():
                self.err(table, "memory_gib", f"expected a whole number of MiB, got {gib} GiB")
                return None
            return int(mib)
        if has_mib:
            return self.integer(table, "memory_mib", value["memory_mib"], low=1)
        self.err(table, "memory_mib", "missing (expected memory_mib or memory_gib)")
        return None

    def positive(self, table: str, key: str, value: object) -> float | None:
        return self.number(table, key, value, positive=True)

    def name_string(self, table: str, key: str, value: object) -> str | None:
        return self.string(table, key, value, pattern=NAME_RE,
                           what="1-64 letters, digits, '_', '.' or '-'")

    def any_string(self, table: str, key: str, value: object) -> str | None:
        return self.string(table, key, value)

    def scheduler_name(self, table: str, key: str, value: object) -> SchedulerName | None:
        return cast(SchedulerName | None, self.string(table, key, value, choices=SCHEDULERS))

    def boolean(self, table: str, key: str, value: object) -> bool | None:
        if not isinstance(value, bool):
            self.err(table, key, f"expected true or false, got {type_name(value)}")
            return None
        return value
