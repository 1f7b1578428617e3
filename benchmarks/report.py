"""Writing benchmark tables into BENCHMARKS.md, between markers, so that
regenerating them is literal: ``<!-- bench:NAME:begin -->`` ... ``<!-- bench:NAME:end -->``.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path


class MarkerError(ValueError):
    """The file lacks a marker pair, or has it twice or out of order."""


def begin(name: str) -> str:
    return f"<!-- bench:{name}:begin -->"


def end(name: str) -> str:
    return f"<!-- bench:{name}:end -->"


def replace_text(text: str, name: str, body: str, where: str = "text") -> str:
    """``text`` with what lies between the ``name`` markers replaced by ``body``."""
    b, e = begin(name), end(name)
    if text.count(b) != 1 or text.count(e) != 1:
        raise MarkerError(f"{where}: expected one {b} and one {e}")
    i, j = text.index(b) + len(b), text.index(e)
    if j < i:
        raise MarkerError(f"{where}: {e} comes before {b}")
    return text[:i] + "\n" + body.strip("\n") + "\n" + text[j:]


def replace_between(path: Path, name: str, body: str) -> None:
    path.write_text(replace_text(path.read_text(encoding="utf-8"), name, body, str(path)),
                    encoding="utf-8")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """The machine and the date, for the line under each table."""
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    return (f"{cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()}, {today}")
