"""Where an audit log's files are and in which order.

The log at ``PATH`` is the active file ``PATH`` plus rotated files
``PATH.<first-seq>``, the sequence number of their first record, zero-padded
to 12 digits: names sort in the order the records were written, and a name
alone says where in the chain a file belongs. A rotated file may be gzipped
(``PATH.<first-seq>.gz``, see ``compress``); if both forms exist (compression
cut short) the plain one is read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

DEFAULT_AUDIT_LOG: Final = Path("/var/log/xnuma/audit.log")
FILE_MAGIC: Final = b"XNAUDIT\x01"
SEQ_DIGITS: Final = 12


def rotated_name(active: Path, first_seq: int) -> Path:
    return active.with_name(f"{active.name}.{first_seq:0{SEQ_DIGITS}d}")


def rotated(active: Path) -> list[tuple[int, Path]]:
    """Rotated files of the log, oldest first, as (first seq, path)."""
    pattern = re.compile(re.escape(active.name) + rf"\.(\d{{{SEQ_DIGITS}}})(\.gz)?$")
    found: dict[int, Path] = {}
    try:
        names = os.listdir(active.parent)
    except FileNotFoundError:
        return []
    for name in names:
        m = pattern.match(name)
        if m:
            seq = int(m.group(1))
            if seq not in found or not m.group(2):  # plain wins over .gz
                found[seq] = active.parent / name
    return sorted(found.items())


def all_files(active: Path) -> list[Path]:
    """Every file of the log, oldest first; the active file last if it exists."""
    files = [p for _, p in rotated(active)]
    if active.exists():
        files.append(active)
    return files


def fsync_dir(path: Path) -> None:
    """Make a create/rename/unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
