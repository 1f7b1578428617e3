"""dom0's PV backends: finding the processes and threads serving each guest, and
running them on dom0 CPUs of the guest's NUMA node."""
