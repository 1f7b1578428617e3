"""`xnuma SUBCOMMAND ...` inside the testbed's dom0, from this checkout.

    python3 /xnuma-src/tests/xen/xnuma_dom0.py run --backend xl ...
    python3 /xnuma-src/tests/xen/xnuma_dom0.py audit --log FILE --json

The checkout is shared read-only at /xnuma-src; its dependencies (trio, msgpack,
tenacity) are installed by build.sh into the rootfs at /opt/xnuma/lib. Under TCG,
with busy guests, dom0 runs Python some twenty times slower than the host: this
launcher imports only the subcommand it runs (``agent.cli`` imports them all, the
simulator's too), and keeps bytecode in /tmp (the share is read-only; without a
cache every start recompiles the agent).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

SRC = os.environ.get("XNUMA_SRC", "/xnuma-src")
LIB = os.environ.get("XNUMA_LIB", "/opt/xnuma/lib")
sys.path[:0] = [SRC, LIB]
sys.pycache_prefix = os.environ.get("XNUMA_PYCACHE", "/tmp/xnuma-pycache")

MODULES = {"run": "agent.cli.run_cmd", "audit": "agent.cli.audit_cmd"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in MODULES:
        print(f"usage: xnuma_dom0.py {{{','.join(MODULES)}}} ...", file=sys.stderr)
        return 2
    module = importlib.import_module(MODULES[argv[0]])
    parser = argparse.ArgumentParser(prog="xnuma")
    module.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
