#!/usr/bin/env python3
"""Lay out xnuma for a package build (standard library only: runs on any build host).

    stage.py source DEST
        Copy what a package build needs from this checkout into DEST: agent/,
        rules/*.toml, packaging/, pyproject.toml, README.md (no caches).

    stage.py install --root ROOT [--prefix /usr] [--lib lib] --python INTERP WHEEL...
        ROOT/PREFIX/LIB/xnuma/  the agent package and the given wheels, unpacked
        ROOT/PREFIX/bin/xnuma   a launcher: INTERP -I, code from ../LIB/xnuma
        (LIB: "lib" for Debian's arch-independent package, "lib64" for an RPM
        that carries a compiled module on a 64-bit EL)

The launcher finds its code relative to its own path, so a tree unpacked into
a scratch root runs as it is. ``-I`` (isolated mode) keeps PYTHONPATH, the user
site and the current directory out of a root daemon's import path. A wheel
here is a zip to unpack: the vendored ones are pure Python or a single
extension module, with no scripts or data to place elsewhere.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parent.parent
SOURCE_FILES = ("pyproject.toml", "README.md")
SOURCE_DIRS = ("agent", "packaging")
AGENT_SUFFIXES = {".py", ".toml", ".typed"}
TEST_DIRS = {"_tests", "tests"}  # a library's own test suite is not shipped
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")

LAUNCHER = '''\
#!{python} -I
"""xnuma command line; the code is in ../{lib}/xnuma from this file's directory."""
import os
import sys

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "{lib}", "xnuma")
)
from agent.cli import main  # noqa: E402

sys.exit(main())
'''


def fail(message: str) -> None:
    raise SystemExit(f"stage.py: {message}")


def copy_source(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in SOURCE_FILES:
        shutil.copy2(REPO / name, dest / name)
    for name in SOURCE_DIRS:
        shutil.copytree(REPO / name, dest / name, ignore=SKIP, dirs_exist_ok=True)
    (dest / "rules").mkdir(exist_ok=True)
    for rule in sorted((REPO / "rules").glob("*.toml")):
        shutil.copy2(rule, dest / "rules" / rule.name)


def install_agent(src: Path, lib: Path) -> int:
    count = 0
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src.parent)
        if path.is_file() and path.suffix in AGENT_SUFFIXES and "__pycache__" not in rel.parts:
            target = lib / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            target.chmod(0o644)
            count += 1
    if not (lib / "agent" / "cli" / "__init__.py").is_file():
        fail(f"{src}: no agent/cli/__init__.py, is this an xnuma checkout?")
    return count


def unpack_wheel(wheel: Path, lib: Path, owners: dict[str, Path]) -> None:
    if wheel.suffix != ".whl":
        fail(f"{wheel}: not a wheel (.whl)")
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = PurePosixPath(info.filename)
            if name.is_absolute() or ".." in name.parts:
                fail(f"{wheel}: unsafe member path {info.filename!r}")
            if name.parts[0].endswith(".data"):
                fail(f"{wheel}: has {name.parts[0]}/ (scripts or data), which this layout "
                     "does not place")
            if info.is_dir() or TEST_DIRS.intersection(name.parts):
                continue
            key = str(name)
            if key in owners:
                fail(f"{wheel} and {owners[key]} both contain {key}")
            owners[key] = wheel
            target = lib.joinpath(*name.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            target.chmod(0o755 if name.suffix == ".so" else 0o644)


def install(root: Path, prefix: str, libname: str, python: str, wheels: list[Path]) -> None:
    if not python.startswith("/"):
        fail(f"--python {python!r}: must be an absolute path (it becomes the #! line)")
    if not libname or "/" in libname or libname.startswith("."):
        fail(f"--lib {libname!r}: one directory name under the prefix, like lib or lib64")
    base = root / prefix.strip("/")
    lib = base / libname / "xnuma"
    if lib.exists():
        shutil.rmtree(lib)
    count = install_agent(REPO / "agent", lib)
    owners: dict[str, Path] = {}
    for wheel in wheels:
        unpack_wheel(wheel, lib, owners)
    launcher = base / "bin" / "xnuma"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(LAUNCHER.format(python=python, lib=libname))
    launcher.chmod(0o755)
    print(f"stage.py: {count} agent files and {len(wheels)} wheels into {lib}; "
          f"launcher {launcher}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stage.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    src = sub.add_parser("source", help="copy the package build's inputs into DEST")
    src.add_argument("dest", type=Path)
    inst = sub.add_parser("install", help="install agent, wheels and launcher under ROOT")
    inst.add_argument("--root", type=Path, required=True)
    inst.add_argument("--prefix", default="/usr")
    inst.add_argument("--lib", default="lib", help="library directory under the prefix")
    inst.add_argument("--python", required=True, help="interpreter for the #! line")
    inst.add_argument("wheels", nargs="*", type=Path, metavar="WHEEL")
    args = parser.parse_args(argv)
    if args.command == "source":
        copy_source(args.dest)
    else:
        install(args.root, args.prefix, args.lib, args.python, args.wheels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
