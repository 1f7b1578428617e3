#!/bin/busybox sh
# dom0's initramfs: load virtio-pci and 9p, mount the rootfs share read-only, hand over to it.
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do
    insmod "/lib/modules/$m" || echo "xnuma-initrd: insmod $m failed"
done
# The virtio device is probed asynchronously: retry the mount for up to 10 s.
i=0
until mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro rootfs /newroot; do
    i=$((i + 1))
    if [ $i -ge 50 ]; then
        echo "xnuma-initrd: cannot mount the 9p rootfs share; dropping to a shell"
        exec sh
    fi
    sleep 0.2
done
for d in dev proc sys; do mount --move "/$d" "/newroot/$d"; done
echo "xnuma-initrd: rootfs mounted, switching root"
exec switch_root /newroot /opt/xnuma-testbed/busybox init
