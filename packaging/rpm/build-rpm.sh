#!/usr/bin/env bash
# Build the xnuma RPM:  packaging/rpm/build-rpm.sh OUTDIR [RPMBUILD-ARGS...]
# On EL9: dnf install rpm-build systemd-rpm-macros python3.11 python3.11-pip.
# Elsewhere (checking the spec on Debian): apt-get install rpm, and pass
# --nodeps; this script loads macros.non-el when systemd's RPM macros are absent.
# XNUMA_WHEELHOUSE=DIR takes the pinned wheels from DIR (offline).
set -euo pipefail
out=${1:?usage: build-rpm.sh OUTDIR [RPMBUILD-ARGS...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
packaging=$(dirname "$here")
repo=$(dirname "$packaging")
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")
spec_version=$(rpmspec -q --srpm --qf '%{VERSION}' "$here/xnuma.spec")
if [ "$version" != "$spec_version" ]; then
    echo "build-rpm.sh: pyproject.toml says $version, xnuma.spec $spec_version" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/SOURCES"
python3 "$packaging/stage.py" source "$work/xnuma-$version"
tar -C "$work" -czf "$work/SOURCES/xnuma-$version.tar.gz" "xnuma-$version"
"$packaging/fetch-wheels.sh" "$packaging/vendor/rpm.txt" "$work/wheels" x86_64 aarch64
tar -C "$work" -czf "$work/SOURCES/xnuma-wheels-$version.tar.gz" wheels

extra=()
if [ "$(rpm --eval '%{?systemd_post:yes}')" != yes ]; then
    extra+=(--load "$here/macros.non-el")
fi
rpmbuild -bb "${extra[@]}" --define "_topdir $work" "$@" "$here/xnuma.spec"
find "$work/RPMS" -name '*.rpm' -exec mv {} "$out/" \;
ls "$out"/xnuma-"$version"-*.rpm
