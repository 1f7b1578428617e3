"""Command daemon inside the testbed's dom0 (stdlib only; busybox init respawns it).

Protocol over the 9p share mounted at DIR (see tests/xen/README.md):

- the host writes ``<id>.req`` atomically (tmp file + rename): JSON
  ``{"argv": [...], "timeout": seconds or null, "env": {...} or absent}``;
- the daemon claims it by renaming it to ``<id>.run``, runs argv (no shell) in a
  thread, and writes ``<id>.res`` atomically: JSON ``{"rc", "stdout", "stderr",
  "elapsed", "timed_out"}`` (rc -1 with the reason in stderr if argv cannot run);
- ``ready`` is written once at start: JSON ``{"status", "uptime", "pid"}``.

9p gives no inotify for changes made by the host, so the daemon polls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

POLL_S = 0.05


def write_atomic(path: str, data: dict[str, object]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.rename(tmp, path)


def run_one(directory: str, ident: str) -> None:
    run_path = os.path.join(directory, ident + ".run")
    started = time.monotonic()
    result: dict[str, object]
    try:
        with open(run_path) as f:
            req = json.load(f)
        argv = req["argv"]
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) or not argv:
            raise ValueError(f"argv must be a non-empty list of strings, got {argv!r}")
        env = dict(os.environ)
        env.update(req.get("env") or {})
        proc = subprocess.run(
            argv,
            capture_output=True,
            timeout=req.get("timeout"),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        result = {
            "rc": proc.returncode,
            "stdout": proc.stdout.decode("utf-8", "replace"),
            "stderr": proc.stderr.decode("utf-8", "replace"),
            "timed_out": False,
        }
    except subprocess.TimeoutExpired as e:
        result = {
            "rc": -1,
            "stdout": (e.stdout or b"").decode("utf-8", "replace"),
            "stderr": (e.stderr or b"").decode("utf-8", "replace") + "\ncmdd: timed out",
            "timed_out": True,
        }
    except Exception as e:  # report anything to the host rather than die
        result = {"rc": -1, "stdout": "", "stderr": f"cmdd: {e!r}", "timed_out": False}
    result["elapsed"] = time.monotonic() - started
    write_atomic(os.path.join(directory, ident + ".res"), result)
    os.unlink(run_path)


def main() -> None:
    directory = sys.argv[1]
    try:
        with open("/run/xnuma-testbed.status") as f:
            status = f.read().strip()
    except OSError:
        status = "failed: dom0-init left no status"
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    write_atomic(
        os.path.join(directory, "ready"), {"status": status, "uptime": uptime, "pid": os.getpid()}
    )
    while True:
        for name in os.listdir(directory):
            if not name.endswith(".req"):
                continue
            ident = name[: -len(".req")]
            try:
                os.rename(os.path.join(directory, name), os.path.join(directory, ident + ".run"))
            except OSError:
                continue
            threading.Thread(target=run_one, args=(directory, ident), daemon=True).start()
        time.sleep(POLL_S)


if __name__ == "__main__":
    main()
