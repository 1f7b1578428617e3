#!/bin/sh
# dom0 system init (busybox init's sysinit): writable tmpfs over the read-only 9p rootfs,
# Xen device modules, xenfs, xenstored, xen-init-dom0, xenconsoled, then the command share.
# The result goes to /run/xnuma-testbed.status, which the command daemon reports as ready.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
STATUS=/run/xnuma-testbed.status
say() { echo "xnuma-dom0: $*"; }
fail() { say "FAILED: $*"; echo "failed: $*" > "$STATUS"; exit 0; }

mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock /run/xen /run/xenstored
for d in /tmp /var/lib/xen /var/lib/xenstored /var/log; do mount -t tmpfs tmpfs "$d"; done
mkdir -p /var/log/xen /var/lib/xen/dump /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
hostname dom0

for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs; do
    modprobe "$m" || fail "modprobe $m"
done
mount -t xenfs xenfs /proc/xen || fail "mount xenfs"

XENDIR=$(ls -d /usr/lib/xen-4.* | head -n1)
[ -x "$XENDIR/bin/xenstored" ] || fail "no xenstored under $XENDIR"
"$XENDIR/bin/xenstored" --pid-file /run/xenstored.pid || fail "xenstored"
i=0
until xenstore-read / >/dev/null 2>&1 || xenstore-ls / >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -ge 100 ] && fail "xenstored does not answer"
    sleep 0.1
done
"$XENDIR/bin/xen-init-dom0" || fail "xen-init-dom0"
"$XENDIR/bin/xenconsoled" --pid-file=/run/xenconsoled.pid || fail "xenconsoled"

mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 cmd /cmd || fail "mount the cmd share"
# This checkout of xnuma, read-only (optional: older testbeds lack the share).
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro xnuma /xnuma-src \
    || say "no xnuma share"
echo ok > "$STATUS"
say "ready ($(cut -d' ' -f1 /proc/uptime) s after dom0 kernel start)"
