"""Gzip rotated audit files: about a tenth of the bytes, read and verified as before.

The chain covers the records, not the file bytes, so compression changes
nothing ``verify`` checks. Each file goes to ``PATH.<seq>.gz.tmp``, is
fsynced, renamed to ``PATH.<seq>.gz``, and only then is the plain file
removed: a crash leaves either form complete (the reader prefers the plain
one). The active file is never touched, so this may run in a worker thread
while the writer appends.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import trio

from agent.audit import segments


def compress_rotated(active: Path, level: int = 6) -> list[Path]:
    """Gzip every plain rotated file of the log at ``active``; returns the new ``.gz`` paths."""
    for stale in active.parent.glob(active.name + ".*.gz.tmp"):
        stale.unlink(missing_ok=True)  # left by a crash mid-compression
    done: list[Path] = []
    for _, path in segments.rotated(active):
        if path.suffix == ".gz":
            continue
        target = path.with_name(path.name + ".gz")
        tmp = path.with_name(path.name + ".gz.tmp")
        try:
            with open(path, "rb") as src, open(tmp, "wb") as raw:
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0) as gz:
                    shutil.copyfileobj(src, gz, 1 << 20)
                raw.flush()
                os.fsync(raw.fileno())
        except FileNotFoundError:  # retention removed it meanwhile
            tmp.unlink(missing_ok=True)
            continue
        if not path.exists():  # removed while we compressed: do not bring it back
            tmp.unlink(missing_ok=True)
            continue
        os.rename(tmp, target)
        segments.fsync_dir(active.parent)
        path.unlink(missing_ok=True)
        segments.fsync_dir(active.parent)
        done.append(target)
    return done


async def compress_periodically(active: Path, interval: float = 600.0, level: int = 6) -> None:
    """Trio task: compress rotated files in a worker thread every ``interval`` seconds."""
    while True:
        await trio.to_thread.run_sync(compress_rotated, active, level)
        await trio.sleep(interval)
