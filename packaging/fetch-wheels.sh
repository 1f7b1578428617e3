#!/usr/bin/env bash
# Download the hash-pinned wheels a package build bundles.
#   packaging/fetch-wheels.sh REQUIREMENTS DEST [ARCH...]
# With ARCH (x86_64, aarch64): CPython 3.11 manylinux wheels for each, as the
# RPM needs for msgpack; without: the wheels for this host (pure Python ones).
# XNUMA_WHEELHOUSE=DIR: take them from DIR, offline (hashes still checked).
# XNUMA_PIP="cmd ...": the pip to run (default python3 -m pip, else the repo's .venv).
set -euo pipefail
req=${1:?usage: fetch-wheels.sh REQUIREMENTS DEST [ARCH...]}
dest=${2:?usage: fetch-wheels.sh REQUIREMENTS DEST [ARCH...]}
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)

if [ -n "${XNUMA_PIP:-}" ]; then
    read -r -a pip <<<"$XNUMA_PIP"
elif python3 -m pip --version >/dev/null 2>&1; then
    pip=(python3 -m pip)
elif [ -x "$repo/.venv/bin/python" ]; then
    pip=("$repo/.venv/bin/python" -m pip)
else
    echo "fetch-wheels.sh: no pip (apt-get install python3-pip, or set XNUMA_PIP)" >&2
    exit 1
fi

args=(download --quiet --disable-pip-version-check --require-hashes --no-deps
      --only-binary=:all: --dest "$dest" -r "$req")
if [ -n "${XNUMA_WHEELHOUSE:-}" ]; then
    args+=(--no-index --find-links "$XNUMA_WHEELHOUSE")
fi
mkdir -p "$dest"
if [ $# -eq 0 ]; then
    "${pip[@]}" "${args[@]}"
else
    for arch in "$@"; do
        "${pip[@]}" "${args[@]}" --python-version 3.11 --implementation cp --abi cp311 \
            --platform "manylinux_2_17_$arch"
    done
fi
