"""One interface to the host, two backends: ``xl`` (real Xen) and the simulator."""
