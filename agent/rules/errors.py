"""Rule errors: each names the file, the rule, the line and the column."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class RuleError:
    file: str
    line: int  # 1-based; 0 when the error concerns the file as a whole
    col: int  # 1-based
    rule: str  # "" when not inside a rule
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        who = f"rule {self.rule!r}: " if self.rule else ""
        return f"{where}: {who}{self.message}"


class RuleLoadError(Exception):
    """A rule set failed to load; ``errors`` holds every problem found."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = tuple(sorted(errors))
        super().__init__("\n".join(str(e) for e in self.errors))
