"""agent.logsetup: <N> prefixes only when stderr is the journal stream, levels, no doubled lines."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from agent.logsetup import (
    parse_level,
    setup_logging,
    stderr_is_journal,
    syslog_priority,
)


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def journal_env(stream: TextIO) -> dict[str, str]:
    st = os.fstat(stream.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def read(stream: TextIO) -> list[str]:
    stream.flush()
    return Path(stream.name).read_text().splitlines()


def test_parse_level_accepts_any_case_and_names_the_bad_value() -> None:
    assert parse_level("INFO") == logging.INFO
    assert parse_level(" debug ") == logging.DEBUG
    with pytest.raises(ValueError, match=r"'verbose'.*debug, info, warning, error, critical"):
        parse_level("verbose")


def test_syslog_priorities() -> None:
    assert [syslog_priority(n) for n in (5, 10, 20, 25, 30, 40, 50)] == [7, 7, 6, 6, 4, 3, 2]


def test_stderr_is_journal_compares_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        assert stderr_is_journal(a, journal_env(a))
        # Inherited variable, but this stream is elsewhere (redirected child).
        assert not stderr_is_journal(b, journal_env(a))
        assert not stderr_is_journal(a, {})
        for bad in ("", "12", "x:y", "1:2:3"):
            assert not stderr_is_journal(a, {"JOURNAL_STREAM": bad})


def test_journal_lines_carry_priority_on_every_line(tmp_path: Path) -> None:
    with open(tmp_path / "err", "w") as out:
        setup_logging("debug", journald_prefix=True, stream=out)
        log = logging.getLogger("xnuma.test")
        log.debug("d")
        log.info("i")
        log.warning("w")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
        lines = read(out)
    assert lines[:4] == [
        "<7>xnuma.test: d",
        "<6>xnuma.test: i",
        "<4>xnuma.test: w",
        "<3>xnuma.test: failed",
    ]
    tail = lines[4:]
    assert tail[0] == "<3>Traceback (most recent call last):"
    assert tail[-1] == "<3>RuntimeError: boom"
    assert all(line.startswith("<3>") for line in tail)


def test_plain_lines_have_time_and_level_and_respect_the_level(tmp_path: Path) -> None:
    with open(tmp_path / "err", "w") as out:
        setup_logging("warning", journald_prefix=False, stream=out)
        log = logging.getLogger("xnuma.test")
        log.info("hidden")
        log.error("shown")
        lines = read(out)
    assert len(lines) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR xnuma.test: shown", lines[0])


def test_auto_detects_journal_from_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "err", "w") as out, open(tmp_path / "other", "w") as other:
        monkeypatch.setenv("JOURNAL_STREAM", journal_env(out)["JOURNAL_STREAM"])
        setup_logging("info", stream=out)
        logging.getLogger("a").info("to journal")
        setup_logging("info", stream=other)
        logging.getLogger("a").info("to file")
        assert read(out) == ["<6>a: to journal"]
        assert read(other)[0].endswith(" INFO a: to file")


def test_setup_again_replaces_its_own_handler_only(tmp_path: Path) -> None:
    root = logging.getLogger()
    with open(tmp_path / "err", "w") as out, open(tmp_path / "theirs", "w") as theirs:
        foreign = logging.StreamHandler(theirs)
        root.addHandler(foreign)
        setup_logging("info", journald_prefix=True, stream=out)
        setup_logging("debug", journald_prefix=True, stream=out)
        logging.getLogger("x").debug("once")
        assert read(out) == ["<7>x: once"]
        assert read(theirs) == ["once"]
        root.removeHandler(foreign)


def test_a_real_process_whose_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    """As systemd starts the agent: JOURNAL_STREAM names the inherited fd 2."""
    err = tmp_path / "stderr"
    code = (
        "import logging; from agent.logsetup import setup_logging;"
        "setup_logging('info'); logging.getLogger('xnuma').warning('hello');"
        "logging.getLogger('xnuma').debug('not at info')"
    )
    root = Path(__file__).resolve().parent.parent
    with open(err, "w") as fd2:
        env = {**os.environ, **journal_env(fd2), "PYTHONPATH": str(root)}
        subprocess.run([sys.executable, "-c", code], stderr=fd2, env=env, check=True)
    assert err.read_text() == "<4>xnuma: hello\n"
    # Same child with stderr elsewhere but the variable inherited: plain line.
    with open(err, "w") as fd2, open(tmp_path / "elsewhere", "w") as journal:
        env = {**os.environ, **journal_env(journal), "PYTHONPATH": str(root)}
        subprocess.run([sys.executable, "-c", code], stderr=fd2, env=env, check=True)
    assert err.read_text().endswith(" WARNING xnuma: hello\n")
