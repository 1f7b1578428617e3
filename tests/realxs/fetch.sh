#!/usr/bin/env bash
# Unpack Debian's real C xenstored (Xen 4.17), xenstore-utils and the libxen*
# libraries they link to into CACHE_DIR, and build the LD_PRELOAD shim that
# lets xenstored run without Xen.  See tests/realxs/README.md.
#
#   bash tests/realxs/fetch.sh CACHE_DIR
#
# Uses only `apt-get download` + `dpkg -x` (nothing is installed; the only
# global change is an `apt-get update` when a download fails because the
# package lists are missing or stale) and gcc.  Idempotent: .debs already in
# CACHE_DIR/debs are reused.  CACHE_DIR/.ready is touched last.
set -euo pipefail

XEN_SERIES=4.17
MAIN_PKGS=(xen-utils-$XEN_SERIES xenstore-utils libxenstore4)

die() { echo "fetch.sh: ERROR: $*" >&2; exit 1; }
say() { echo "fetch.sh: $*"; }

[[ $# -eq 1 ]] || die "usage: $0 CACHE_DIR"
command -v apt-get >/dev/null || die "apt-get not found (needs Debian 12 bookworm)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"
command -v gcc >/dev/null || die "gcc not found (apt-get install gcc)"
command -v readelf >/dev/null || die "readelf not found (binutils)"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
CACHE=$(cd "$1" && pwd)
DEBS=$CACHE/debs
mkdir -p "$DEBS"
rm -f "$CACHE/.ready"
MULTIARCH=$(gcc -print-multiarch 2>/dev/null || true)
MULTIARCH=${MULTIARCH:-x86_64-linux-gnu}
LIBDIR=$CACHE/usr/lib/$MULTIARCH

updated=0
# download PKG[=VERSION]: fetch one .deb into $DEBS unless already there.
download() {
    local spec=$1 name=${1%%=*} log
    if compgen -G "$DEBS/${name}_*.deb" >/dev/null; then
        return 0
    fi
    log=$(cd "$DEBS" && apt-get download -q "$spec" 2>&1) && return 0
    if [[ $updated -eq 0 ]]; then
        say "apt-get download $spec failed; running apt-get update once"
        apt-get update -q >/dev/null 2>&1 || die "apt-get update failed"
        updated=1
        log=$(cd "$DEBS" && apt-get download -q "$spec" 2>&1) && return 0
    fi
    echo "$log" >&2
    return 1
}

declare -A EXTRACTED=()
extract() {
    local deb
    for deb in "$DEBS"/*.deb; do
        [[ -n ${EXTRACTED[$deb]:-} ]] && continue
        dpkg -x "$deb" "$CACHE" || die "dpkg -x $deb failed"
        EXTRACTED[$deb]=1
    done
}

say "downloading ${MAIN_PKGS[*]} into $DEBS"
download "xen-utils-$XEN_SERIES" || die "cannot download xen-utils-$XEN_SERIES (is bookworm-security in sources?)"
XEN_DEB=$(compgen -G "$DEBS/xen-utils-${XEN_SERIES}_*.deb" | head -n1)
XEN_VERSION=$(dpkg-deb -f "$XEN_DEB" Version)
say "xen-utils-$XEN_SERIES version $XEN_VERSION"
# Every library comes from the same source package: pin its version.
pinned() { download "$1=$XEN_VERSION" || download "$1"; }
for p in xenstore-utils libxenstore4; do
    pinned "$p" || die "cannot download $p"
done
extract

XENSTORED=$CACHE/usr/lib/xen-$XEN_SERIES/bin/xenstored
XENSTORE=$CACHE/usr/bin/xenstore
[[ -x $XENSTORED ]] || die "xen-utils-$XEN_SERIES has no C xenstored at ${XENSTORED#"$CACHE"/}"
[[ -x $XENSTORE ]] || die "xenstore-utils has no usr/bin/xenstore"

# soname -> Debian package, by Debian's library naming policy; the libxen
# tool libraries that have no stable ABI live in libxenmisc<series>.
package_for() {
    local so=$1 base major
    case $so in
        libxenctrl.so.*|libxenguest.so.*|libxenlight.so.*|libxenstat.so.*|\
        libxenvchan.so.*|libxlutil.so.*|libxenfsimage.so.*)
            echo "libxenmisc$XEN_SERIES"; return ;;
    esac
    base=${so%%.so*}
    major=${so#*.so.}
    major=${major%%.*}
    if [[ $base =~ [0-9]$ ]]; then echo "$base-$major"; else echo "$base$major"; fi
}

# Resolve NEEDED recursively from the binaries: xen libraries always come
# from the cache; other libraries from the system, or are downloaded into the
# cache if the system lacks them.
SYSLIBS=$(ldconfig -p)
resolve_round() {
    local f so
    local -a queue=("$XENSTORED" "$XENSTORE") missing=()
    local -A seen=()
    while [[ ${#queue[@]} -gt 0 ]]; do
        f=${queue[0]}
        queue=("${queue[@]:1}")
        while IFS= read -r so; do
            [[ -n ${seen[$so]:-} ]] && continue
            seen[$so]=1
            if [[ -e $LIBDIR/$so ]]; then
                queue+=("$LIBDIR/$so")
            elif [[ $so == libxen* || $so == libxl* ]] \
                || ! grep -q "^[[:space:]]*$so " <<<"$SYSLIBS"; then
                missing+=("$so")
            fi
        done < <(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    done
    if [[ ${#missing[@]} -gt 0 ]]; then printf '%s\n' "${missing[@]}"; fi
}

for round in 1 2 3 4 5 6; do
    mapfile -t missing < <(resolve_round)
    [[ ${#missing[@]} -eq 0 ]] && break
    [[ $round -eq 6 ]] && die "unresolved libraries after 5 rounds: ${missing[*]}"
    for so in "${missing[@]}"; do
        pkg=$(package_for "$so")
        say "  $so -> $pkg"
        if [[ $pkg == libxen* ]]; then
            pinned "$pkg" || die "cannot download $pkg for $so"
        else
            download "$pkg" || die "cannot download $pkg for $so"
        fi
    done
    extract
done

say "building xenshim.so"
gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$CACHE/xenshim.so" "$HERE/xenshim.c" -ldl \
    || die "gcc failed to build xenshim.so"

# Final check: everything loads with the cache's libraries.
for f in "$XENSTORED" "$XENSTORE" "$CACHE/xenshim.so"; do
    if LD_LIBRARY_PATH=$LIBDIR ldd "$f" | grep 'not found' >/dev/null; then
        LD_LIBRARY_PATH=$LIBDIR ldd "$f" >&2
        die "${f#"$CACHE"/} has unresolved libraries"
    fi
done

# Stable names for the harness.
mkdir -p "$CACHE/bin"
ln -sfn "../usr/lib/xen-$XEN_SERIES/bin/xenstored" "$CACHE/bin/xenstored"
ln -sfn ../usr/bin/xenstore "$CACHE/bin/xenstore"
ln -sfn "usr/lib/$MULTIARCH" "$CACHE/lib"
echo "$XEN_VERSION" > "$CACHE/VERSION"
touch "$CACHE/.ready"
say "ready: $CACHE (xenstored $XEN_VERSION, libs: $(ls "$DEBS" | sed 's/_.*//' | tr '\n' ' '))"
