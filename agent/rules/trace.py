"""What an evaluation records for the audit log: each comparison and its values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.hypervisor.model import format_cpuset


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One comparison (or aggregate, or ``with`` binding) as evaluated."""

    text: str  # its source, e.g. "vcpu.run_rate >= 0.5"
    values: tuple[Any, ...]  # operand values, left to right
    result: Any

    def to_record(self) -> dict[str, Any]:
        """Plain values (msgpack-ready): sets become sorted lists."""
        return {
            "text": self.text,
            "values": [plain(v) for v in self.values],
            "result": plain(self.result),
        }

    def __str__(self) -> str:
        shown = ", ".join(show(v) for v in self.values)
        return f"{self.text}  [{shown}] -> {show(self.result)}"


def plain(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(value)
    return value


def show(value: Any) -> str:
    if isinstance(value, frozenset | set):
        if all(isinstance(v, int) for v in value):
            return "{" + format_cpuset(value) + "}"
        return "{" + ", ".join(repr(v) for v in sorted(value)) + "}"
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value) if isinstance(value, str) else str(value)
