#!/usr/bin/env bash
# Build the Xen 4.17 testbed from Debian packages only, into CACHE:
#
#   bash tests/xen/build.sh .cache/xen-testbed
#
#   CACHE/boot/xen                  Xen hypervisor, gunzipped (QEMU -kernel loads it as multiboot)
#   CACHE/boot/vmlinuz              Debian's kernel: dom0 and guest kernel
#   CACHE/boot/dom0-initrd.cpio.gz  busybox initramfs: loads virtio/9p, mounts the rootfs share,
#                                   switch_root to it (tests/xen/dom0-initrd-init.sh)
#   CACHE/rootfs/                   debootstrap --variant=minbase + xen-utils-4.17 + python3,
#                                   shared read-only into dom0 over virtio-9p
#   CACHE/rootfs/opt/xnuma-testbed/ dom0 init, command daemon, guest kernel + initramfs, configs
#   CACHE/VERSION                   the Xen package version
#
# Runs as root (it installs the host packages it needs with apt-get).  Each step leaves a stamp
# in CACHE/stamps, so a re-run only redoes what is missing; the dom0-side scripts are refreshed
# on every run (and by testbed.py at every boot).  CACHE/.ready is touched last.
#
# xnuma's runtime dependencies (trio, msgpack, tenacity) are fetched as wheels on the host and
# installed into rootfs /opt/xnuma/lib; dom0 runs xnuma from this checkout, shared read-only at
# /xnuma-src (tests/xen/xnuma_dom0.py). Hook: XNUMA_WHEELS=DIR installs every wheel in DIR there
# instead (pip --target, no index) so dom0 can run an installed xnuma with PYTHONPATH.
set -euo pipefail

XEN_SERIES=4.17
SUITE=bookworm
MIRROR=${XNUMA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${XNUMA_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
HOST_PKGS=(qemu-system-x86 debootstrap busybox-static cpio kmod gzip)
# Inside dom0: the toolstack, python3 for the command daemon, kmod for modprobe, procps for ps.
DOM0_PKGS=(python3 kmod procps)

die() { echo "build.sh: ERROR: $*" >&2; exit 1; }
say() { echo "build.sh: $*"; }

[[ $# -eq 1 ]] || die "usage: $0 CACHE_DIR"
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot, apt-get)"
command -v apt-get >/dev/null || die "apt-get not found (needs Debian 12 bookworm)"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
CACHE=$(cd "$1" && pwd)
DEBS=$CACHE/debs
BOOT=$CACHE/boot
ROOTFS=$CACHE/rootfs
STAMPS=$CACHE/stamps
TB=opt/xnuma-testbed
mkdir -p "$DEBS" "$BOOT" "$STAMPS"
rm -f "$CACHE/.ready"

done_step() { [[ -e $STAMPS/$1 ]]; }
mark() { touch "$STAMPS/$1"; }

# --- host packages ---------------------------------------------------------------------------
missing=()
for p in "${HOST_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing host packages: ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        >/dev/null || die "apt-get install ${missing[*]} failed"
fi

# --- versions: the hypervisor must match xen-utils (both from the security suite) -------------
XEN_VERSION=$(apt-cache policy "xen-utils-$XEN_SERIES" | sed -n 's/^ *Candidate: //p')
if [[ -z $XEN_VERSION || $XEN_VERSION == "(none)" ]]; then
    apt-get update -q >/dev/null
    XEN_VERSION=$(apt-cache policy "xen-utils-$XEN_SERIES" | sed -n 's/^ *Candidate: //p')
fi
[[ -n $XEN_VERSION && $XEN_VERSION != "(none)" ]] \
    || die "no xen-utils-$XEN_SERIES candidate (is $SUITE-security in the apt sources?)"
KPKG=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' \
    | head -n1)
[[ -n $KPKG ]] || die "cannot resolve linux-image-amd64 to a kernel package"
KVER=${KPKG#linux-image-}
say "xen $XEN_VERSION, kernel $KVER"

# download PKG=VER into $DEBS unless a .deb of it is there.
download() {
    local name=${1%%=*}
    compgen -G "$DEBS/${name}_*.deb" >/dev/null && return 0
    (cd "$DEBS" && apt-get download -q "$1" 2>&1 | grep -v '^W: Download is performed unsandboxed' \
        || true)
    compgen -G "$DEBS/${name}_*.deb" >/dev/null || die "apt-get download $1 failed"
}

# --- hypervisor and kernel -------------------------------------------------------------------
if ! done_step boot-$XEN_VERSION-$KVER; then
    download "xen-hypervisor-$XEN_SERIES-amd64=$XEN_VERSION"
    download "$KPKG"
    rm -rf "$CACHE/x" && mkdir -p "$CACHE/x/xen" "$CACHE/x/linux"
    dpkg -x "$DEBS"/xen-hypervisor-${XEN_SERIES}-amd64_*.deb "$CACHE/x/xen"
    dpkg -x "$DEBS"/${KPKG}_*.deb "$CACHE/x/linux"
    XEN_GZ=$(compgen -G "$CACHE/x/xen/boot/xen-$XEN_SERIES*-amd64.gz" | head -n1)
    [[ -n $XEN_GZ ]] || die "no boot/xen-*.gz in xen-hypervisor-$XEN_SERIES-amd64"
    gunzip -c "$XEN_GZ" > "$BOOT/xen"
    # QEMU's multiboot loader wants a 32-bit ELF (Xen ships one, with a multiboot header).
    head -c 5 "$BOOT/xen" | od -An -tx1 | grep -q '7f 45 4c 46 01' \
        || die "$BOOT/xen is not a 32-bit ELF"
    cp "$CACHE/x/linux/boot/vmlinuz-$KVER" "$BOOT/vmlinuz"
    depmod -b "$CACHE/x/linux" "$KVER"
    echo "$KVER" > "$BOOT/KVER"
    mark boot-$XEN_VERSION-$KVER
fi

# --- busybox initramfs for dom0 --------------------------------------------------------------
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] && "$BUSYBOX" --list | grep -qx switch_root || die "busybox-static missing"

# cpio_dir DIR OUT: pack DIR as a gzipped newc initramfs.
cpio_dir() { (cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 > "$2"; }

make_dom0_initrd() {
    local d=$CACHE/x/dom0-initrd m
    rm -rf "$d" && mkdir -p "$d"/{bin,dev,proc,sys,newroot,lib/modules}
    cp "$BUSYBOX" "$d/bin/busybox"
    : > "$d/modules.order"
    # virtio-pci + 9p in dependency order (modprobe resolves it on the host).
    for m in virtio_pci 9pnet_virtio 9p; do
        modprobe -d "$CACHE/x/linux" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
        cp "$ko" "$d/lib/modules/"
        basename "$ko" >> "$d/modules.order"
    done
    install -m 0755 "$HERE/dom0-initrd-init.sh" "$d/init"
    cpio_dir "$d" "$BOOT/dom0-initrd.cpio.gz"
}

make_guest_initrd() {
    local d=$CACHE/x/guest-initrd
    rm -rf "$d" && mkdir -p "$d"/{bin,dev,proc,sys}
    cp "$BUSYBOX" "$d/bin/busybox"
    install -m 0755 "$HERE/guest-init.sh" "$d/init"
    cpio_dir "$d" "$BOOT/guest-initrd.cpio.gz"
}
make_dom0_initrd
make_guest_initrd

# --- dom0 root filesystem --------------------------------------------------------------------
chroot_mounts() { mount -t proc proc "$ROOTFS/proc"; mount --bind /dev "$ROOTFS/dev"; }
chroot_umounts() { umount "$ROOTFS/dev" 2>/dev/null || true; umount "$ROOTFS/proc" 2>/dev/null || true; }

if ! done_step debootstrap; then
    rm -rf "$ROOTFS"
    say "debootstrap --variant=minbase $SUITE (a few minutes)"
    debootstrap --variant=minbase --include="$(IFS=,; echo "${DOM0_PKGS[*]}")" \
        "$SUITE" "$ROOTFS" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
        || { tail -n 30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    mark debootstrap
fi

if ! done_step xen-utils-$XEN_VERSION; then
    say "installing xen-utils-$XEN_SERIES $XEN_VERSION into the rootfs"
    cat > "$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $SECURITY_MIRROR $SUITE-security main
EOF
    # No daemons may start inside the chroot.
    printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"
    chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
    trap chroot_umounts EXIT
    chroot_mounts
    chroot "$ROOTFS" apt-get update -q > "$CACHE/chroot-apt.log" 2>&1 \
        || { tail -n 20 "$CACHE/chroot-apt.log" >&2; die "apt-get update in the rootfs failed"; }
    DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" apt-get install -y -q \
        --no-install-recommends "xen-utils-$XEN_SERIES=$XEN_VERSION" "xenstore-utils" \
        >> "$CACHE/chroot-apt.log" 2>&1 \
        || { tail -n 20 "$CACHE/chroot-apt.log" >&2; die "apt-get install xen-utils in the rootfs failed"; }
    chroot "$ROOTFS" apt-get clean
    chroot_umounts
    trap - EXIT
    installed=$(chroot "$ROOTFS" dpkg-query -W -f='${Version}' "xen-utils-$XEN_SERIES")
    [[ $installed == "$XEN_VERSION" ]] || die "rootfs has xen-utils $installed, want $XEN_VERSION"
    mark xen-utils-$XEN_VERSION
fi

if ! done_step modules-$KVER; then
    rm -rf "$ROOTFS/lib/modules"
    mkdir -p "$ROOTFS/lib/modules"
    cp -a "$CACHE/x/linux/lib/modules/$KVER" "$ROOTFS/lib/modules/"
    mark modules-$KVER
fi

# Mount points the dom0 init uses (the share itself is read-only in the VM).
mkdir -p "$ROOTFS"/{cmd,xnuma-src,proc/xen,run,tmp,var/lib/xen,var/lib/xenstored,var/log,$TB}

# --- dom0-side testbed files (refreshed on every run; testbed.py refreshes them too) ----------
install -m 0755 "$HERE/dom0-init.sh" "$ROOTFS/$TB/dom0-init.sh"
install -m 0644 "$HERE/cmdd.py" "$ROOTFS/$TB/cmdd.py"
install -m 0755 "$BUSYBOX" "$ROOTFS/$TB/busybox"
cp "$BOOT/vmlinuz" "$ROOTFS/$TB/vmlinuz"
cp "$BOOT/guest-initrd.cpio.gz" "$ROOTFS/$TB/guest-initrd.cpio.gz"
# busybox init runs dom0-init.sh once, then keeps the command daemon alive.
cat > "$ROOTFS/etc/inittab" <<EOF
::sysinit:/$TB/dom0-init.sh
::respawn:/usr/bin/python3 /$TB/cmdd.py /cmd
::ctrlaltdel:/$TB/busybox poweroff -f
EOF

# --- xnuma's Python dependencies for dom0 ----------------------------------------------------
# dom0 runs xnuma from the checkout (/xnuma-src, tests/xen/xnuma_dom0.py); its runtime
# dependencies (pyproject.toml's) come as wheels for the rootfs's Python (3.11), fetched on
# the host by pip (the repo's .venv, else python3 -m pip) and installed with --target.
REPO=$(cd "$HERE/../.." && pwd)
PYDEPS=$(python3 -c 'import sys, tomllib; print(" ".join(tomllib.load(open(sys.argv[1], "rb"))
    ["project"]["dependencies"]))' "$REPO/pyproject.toml") || die "cannot read $REPO/pyproject.toml"
PYDEPS_STAMP=pydeps-$(echo "cp311 $PYDEPS" | sha256sum | cut -c1-16)
if ! done_step "$PYDEPS_STAMP"; then
    if [[ -x $REPO/.venv/bin/python ]] && "$REPO/.venv/bin/python" -m pip --version >/dev/null 2>&1
    then PIP=("$REPO/.venv/bin/python" -m pip)
    elif python3 -m pip --version >/dev/null 2>&1; then PIP=(python3 -m pip)
    else die "no pip on the host to fetch dom0's wheels ($PYDEPS): make the venv first"
    fi
    say "fetching wheels for dom0: $PYDEPS"
    rm -rf "$CACHE/pydeps" && mkdir -p "$CACHE/pydeps"
    # shellcheck disable=SC2086  # one argument per requirement
    "${PIP[@]}" download --quiet --dest "$CACHE/pydeps" --only-binary=:all: \
        --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
        $PYDEPS || die "pip download of $PYDEPS failed"
    rm -rf "$ROOTFS/opt/xnuma/lib" && mkdir -p "$ROOTFS/opt/xnuma/lib"
    "${PIP[@]}" install --quiet --no-index --no-deps --no-compile \
        --target "$ROOTFS/opt/xnuma/lib" "$CACHE"/pydeps/*.whl \
        || die "pip install of dom0's wheels into the rootfs failed"
    mark "$PYDEPS_STAMP"
fi

# --- hook: xnuma and its dependencies from wheels downloaded on the host ---------------------
if [[ -n ${XNUMA_WHEELS:-} ]]; then
    compgen -G "$XNUMA_WHEELS/*.whl" >/dev/null || die "XNUMA_WHEELS=$XNUMA_WHEELS has no wheels"
    rm -rf "$ROOTFS/opt/xnuma/lib" && mkdir -p "$ROOTFS/opt/xnuma/lib"
    python3 -m pip install --quiet --no-index --no-deps --target "$ROOTFS/opt/xnuma/lib" \
        "$XNUMA_WHEELS"/*.whl || die "pip install of $XNUMA_WHEELS into the rootfs failed"
    say "installed $(ls "$XNUMA_WHEELS" | wc -l) wheels into rootfs /opt/xnuma/lib"
fi

echo "$XEN_VERSION" > "$CACHE/VERSION"
touch "$CACHE/.ready"
say "ready: $CACHE (xen $XEN_VERSION, kernel $KVER, rootfs $(du -sh "$ROOTFS" | cut -f1))"
