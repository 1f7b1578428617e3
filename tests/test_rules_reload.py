"""Hot reload: new rules on change or SIGHUP; a bad set never replaces a good one."""

from __future__ import annotations

import functools
import logging
import os
import signal
from pathlib import Path

import pytest
import trio
import trio.testing

from agent.rules.errors import RuleLoadError
from agent.rules.reload import ReloadResult, RuleReloader


def rule(name: str, when: str = "not vcpu.on_soft") -> str:
    return f'''[[rule]]
name = "{name}"
on = ["tick"]
for_each = "vcpu"
when = "{when}"
[rule.action]
type = "vcpu.fixup"
domid = "vcpu.domid"
vcpu = "vcpu.id"
node = "vcpu.home_node"
'''


def names(reloader: RuleReloader) -> list[str]:
    return [r.name for r in reloader.current.rules]


async def test_reloads_on_change_and_keeps_the_old_set_on_errors(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a.toml").write_text(rule("a"))
    results: list[ReloadResult] = []
    reloader = RuleReloader([tmp_path], poll_s=1.0, on_reload=results.append)
    assert names(reloader) == ["a"] and reloader.generation == 0
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(reloader.run, sighup=False))

        (tmp_path / "b.toml").write_text(rule("b"))
        await trio.sleep(1.5)
        assert names(reloader) == ["a", "b"] and reloader.generation == 1
        assert results[-1].cause == "change" and results[-1].ok and results[-1].changed

        # a good edit of a.toml and a broken new file together: all or nothing
        good = reloader.current
        (tmp_path / "a.toml").write_text(rule("a2"))
        (tmp_path / "c.toml").write_text(rule("c", when="vcpu.on_sof"))
        caplog.clear()  # earlier INFO lines show up when another test left the root at INFO
        with caplog.at_level(logging.ERROR, logger="xnuma.rules"):
            await trio.sleep(1.0)
        assert reloader.current is good and reloader.generation == 1
        assert not results[-1].ok and not results[-1].changed
        (error,) = results[-1].errors
        assert (Path(error.file).name, error.line, error.col) == ("c.toml", 5, 14)
        logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert logged[0] == "rules not reloaded (change): 1 errors; keeping the previous 2 rules"
        assert logged[1].endswith("c.toml:5:14: rule 'c': when: unknown field 'on_sof' of vcpu; "
                                  "did you mean 'on_soft'?")

        # nothing changes on disk: no new attempt, no new log lines
        attempts = len(results)
        await trio.sleep(10)
        assert len(results) == attempts

        (tmp_path / "c.toml").write_text(rule("c"))
        await trio.sleep(1.0)
        assert names(reloader) == ["a2", "b", "c"] and reloader.generation == 2

        # removing a file is a change too
        (tmp_path / "b.toml").unlink()
        await trio.sleep(1.0)
        assert names(reloader) == ["a2", "c"] and reloader.generation == 3
        nursery.cancel_scope.cancel()


async def test_sighup_reloads_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    (tmp_path / "a.toml").write_text(rule("a"))
    results: list[ReloadResult] = []
    reloader = RuleReloader([tmp_path], poll_s=3600.0, on_reload=results.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(reloader.run)
        (tmp_path / "a.toml").write_text(rule("renamed"))
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if results:
                break
            await trio.sleep(0.01)
        assert [r.cause for r in results] == ["sighup"]
        assert names(reloader) == ["renamed"]
        # a SIGHUP with nothing changed reloads, finds the same set, swaps nothing
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if len(results) == 2:
                break
            await trio.sleep(0.01)
        assert results[1].ok and not results[1].changed and reloader.generation == 1
        nursery.cancel_scope.cancel()


def test_there_is_nothing_to_fall_back_on_at_start(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(rule("a", when="1 +"))
    with pytest.raises(RuleLoadError, match=r"a\.toml:5:\d+: rule 'a': when: syntax error"):
        RuleReloader([tmp_path])
