"""The ``xnuma`` entry point itself: subcommands and a reader that goes away."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.cli import build_parser, main

ARGV0 = [sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())"]


def test_every_subcommand_is_registered() -> None:
    parser = build_parser()
    for command in ("run", "demo", "status", "sim", "rules", "audit", "place", "xenstored"):
        args = parser.parse_args([command, *_minimal(command)])
        assert callable(args.func), command


def _minimal(command: str) -> list[str]:
    return {"sim": ["seed-abc"], "rules": ["fields"], "xenstored": ["--socket", "s"]}.get(
        command, []
    )


def test_unknown_subcommand_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_closed_pipe_ends_quietly() -> None:
    """`xnuma rules fields | head -1`: no traceback when head leaves."""
    proc = subprocess.Popen(
        [*ARGV0, "rules", "fields"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert b"Traceback" not in err
    assert b"BrokenPipeError" not in err
