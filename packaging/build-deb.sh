#!/usr/bin/env bash
# Build the xnuma .deb on Debian 12 (or later):  packaging/build-deb.sh OUTDIR
# Needs: dpkg-dev debhelper dh-python python3, and pip for the bundled wheels
# (see fetch-wheels.sh; XNUMA_WHEELHOUSE=DIR builds offline).
# Builds from a copy of this checkout (working tree, not HEAD), so the tree
# itself stays clean; prints the path of the .deb last.
set -euo pipefail
out=${1:?usage: build-deb.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")
deb_version=$(dpkg-parsechangelog -l "$here/debian/changelog" -S Version)
if [ "$version" != "$deb_version" ]; then
    echo "build-deb.sh: pyproject.toml says $version, packaging/debian/changelog $deb_version" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/xnuma-$version
python3 "$here/stage.py" source "$src"
cp -r "$here/debian" "$src/debian"
cp "$here/xnuma.service" "$src/debian/xnuma.service"
"$here/fetch-wheels.sh" "$here/vendor/common.txt" "$src/wheels"

(cd "$src" && dpkg-buildpackage --build=binary --unsigned-source --unsigned-changes)
deb=xnuma_${version}_all.deb
mv "$work/$deb" "$out/$deb"
echo "$out/$deb"
