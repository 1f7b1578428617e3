"""pytest collects rule test files: every ``*_test.toml`` under rules/ is one test.

``pytest rules/tests`` (or ``testpaths`` including it) runs them; a failure shows
the same report as ``xnuma rules test``: missing decisions as ``-`` lines,
unexpected ones as ``+`` lines, then every decision of the step with its trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.rules.testing import TestResult, run_file


class RuleTestFailure(Exception):
    def __init__(self, result: TestResult) -> None:
        super().__init__(result.report())
        self.result = result


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.name.endswith("_test.toml"):
        collector: pytest.Collector = RuleTestFile.from_parent(parent, path=file_path)
        return collector
    return None


class RuleTestFile(pytest.File):
    def collect(self) -> Any:
        yield RuleTestItem.from_parent(self, name=self.path.stem)


class RuleTestItem(pytest.Item):
    @property
    def obj(self) -> Any:
        """pytest-trio's trio_mode looks at ``item.obj`` of every item; ours is sync."""
        return self.runtest

    def runtest(self) -> None:
        result = run_file(self.path)
        if not result.ok:
            raise RuleTestFailure(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, RuleTestFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"rule test {self.path.name}"
