#!/bin/busybox sh
# PV guest init: `xnuma=busy` on the kernel command line runs a CPU-bound loop pinned to each
# vCPU; anything else (or nothing) idles.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mode=idle
for w in $(cat /proc/cmdline); do
    case $w in xnuma=*) mode=${w#xnuma=} ;; esac
done
n=$(grep -c '^processor' /proc/cpuinfo)
echo "xnuma-guest: mode=$mode vcpus=$n"
if [ "$mode" = busy ]; then
    i=0
    while [ $i -lt "$n" ]; do
        taskset -c $i sh -c 'while :; do :; done' &
        i=$((i + 1))
    done
fi
while :; do sleep 3600; done
