"""Debian's xenstore-utils against the embedded xenstored.

Each scenario runs the same commands against the embedded daemon and against
Debian's real C xenstored 4.17: exit codes, stdout and stderr must be the
same, and the embedded results are also checked for what they mean.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

try:
    from realxs.harness import (
        RealXenstored,
        real_xenstored_available,
        unavailable_reason,
        xen_library_dir,
        xenstore_util,
        xenstore_util_argv,
    )
except ImportError:  # repo root on sys.path
    from tests.realxs.harness import (  # type: ignore[no-redef]
        RealXenstored,
        real_xenstored_available,
        unavailable_reason,
        xen_library_dir,
        xenstore_util,
        xenstore_util_argv,
    )

pytestmark = [
    pytest.mark.realxs,
    pytest.mark.skipif(not real_xenstored_available(), reason=unavailable_reason()),
]

Result = tuple[int, bytes, bytes]


class Embedded(Protocol):
    """The ``embedded_xenstored`` fixture (tests/conftest.py)."""

    socket_path: Path


def run_all(socket: Path, commands: Sequence[Sequence[str]]) -> list[Result]:
    out = []
    for name, *args in commands:
        proc = xenstore_util(name, *args, socket=socket)
        out.append((proc.returncode, proc.stdout, proc.stderr))
    return out


@pytest.fixture
def both(
    embedded_xenstored: Embedded, real_xenstored: RealXenstored
) -> Iterator[tuple[Path, Path]]:
    yield embedded_xenstored.socket_path, real_xenstored.socket_path


def same(both: tuple[Path, Path], commands: Sequence[Sequence[str]]) -> list[Result]:
    """Run on both daemons; the embedded results, once equal to the real ones."""
    embedded = run_all(both[0], commands)
    real = run_all(both[1], commands)
    for cmd, e, r in zip(commands, embedded, real, strict=True):
        assert e == r, f"{cmd}: embedded {e} != real {r}"
    return embedded


def test_write_read_ls_list_exists(both: tuple[Path, Path]) -> None:
    results = same(
        both,
        [
            ["write", "/t/a", "1", "/t/b/c", "two words"],  # two pairs: one transaction
            ["write", "t/rel", "relative"],
            ["read", "/t/a", "/t/b/c"],
            ["read", "/local/domain/0/t/rel"],
            ["read", "/t/missing"],
            ["exists", "/t/a"],
            ["exists", "/t/missing"],
            ["list", "/t"],
            ["ls", "/t"],
            ["ls", "-p", "/"],
            ["ls", "-f", "-p", "/t"],
            ["ls", "-p", "/missing"],
            ["write", "/t/a b", "x"],
        ],
    )
    assert results[2] == (0, b"1\ntwo words\n", b"")
    assert results[3][1] == b"relative\n"
    assert results[4][0] == 1 and b"couldn't read path /t/missing" in results[4][2]
    assert [r[0] for r in results[5:7]] == [0, 1]
    assert results[7][1] == b"a\nb\n"
    assert b"/t/b/c = \"two words\"" in results[10][1]
    assert results[12][0] != 0


def test_chmod_and_rm(both: tuple[Path, Path]) -> None:
    results = same(
        both,
        [
            ["write", "/t/a/x", "1", "/t/a/y", "2"],
            ["chmod", "/t/a", "n0", "r1", "b2"],
            ["ls", "-p", "/t"],
            ["chmod", "-r", "/t/a", "r0"],
            ["ls", "-p", "/t"],
            ["chmod", "/t/a", "q3"],
            ["rm", "/t/a/x"],
            ["rm", "/t/missing"],
            ["rm", "/t/missing/deeper"],
            ["rm", "-t", "/t/a/y"],  # tidy: removes the emptied parent too
            ["ls", "-f", "/t"],
            ["rm", "/t"],
            ["exists", "/t"],
        ],
    )
    assert b"(n0,r1,b2)" in results[2][1]
    assert results[4][1].count(b"(r0)") == 3
    assert results[5][0] != 0
    assert results[7][0] == 0
    assert results[12][0] == 1


def _watch(socket: Path, writes: Sequence[Sequence[str]]) -> bytes:
    """xenstore-watch -n 4 /t/w while ``writes`` happen; its output."""
    argv = xenstore_util_argv("watch", "-n", "4", "/t/w")
    env = dict(os.environ, XENSTORED_PATH=str(socket), LD_LIBRARY_PATH=str(xen_library_dir()))
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the event every new watch fires once
        for cmd in writes:
            xenstore_util(cmd[0], *cmd[1:], socket=socket)
        rest, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return first + rest


def test_watch(both: tuple[Path, Path]) -> None:
    writes = [["write", "/t/w/x", "1"], ["write", "/t/other", "2"], ["write", "/t/w", "3"]]
    writes += [["rm", "/t/w"]]
    embedded = _watch(both[0], writes)
    assert embedded == b"/t/w\n/t/w/x\n/t/w\n/t/w\n"
    assert embedded == _watch(both[1], writes)
