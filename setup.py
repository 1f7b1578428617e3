"""Build of the native simulator core (agent/sim/native/*.c -> agent.sim._native).

Everything else is in pyproject.toml. The extension is optional: without a C
compiler the package installs and the simulator runs on its Python core.
"""

from glob import glob

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "agent.sim._native",
            sources=sorted(glob("agent/sim/native/*.c")),
            depends=sorted(glob("agent/sim/native/*.h")),
            # No fused multiply-add: the workload draws must round as CPython's do.
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
