"""A simulated Xen host: NUMA topology, credit1/credit2 models, workloads, xenstore."""
