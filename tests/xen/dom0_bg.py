"""Background processes in the testbed's dom0 (stdlib only): the command channel waits
for each command to end, so a daemon (the agent) is started, waited for and stopped here.

    python3 dom0_bg.py start [--notify] NAME -- ARGV...  # prints {"pid": ...}; returns at once
    python3 dom0_bg.py wait-ready NAME [--timeout S]    # until it sent READY=1 (--notify)
    python3 dom0_bg.py stop NAME [--signal TERM] [--timeout S]
                                              # signal it, wait; prints rc, stdout, stderr
    python3 dom0_bg.py status NAME            # {"running": bool, "rc": int|null}

Each NAME has a folder /run/xnuma-bg/NAME with ``stdout``, ``stderr``, ``pid`` (the
command's) and, once it ended, ``rc``. A detached supervisor runs the command as its
child, so the exit status is known even though the command channel's process is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

BASE = os.environ.get("XNUMA_BG_DIR", "/run/xnuma-bg")


def folder(name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise SystemExit(f"dom0_bg: bad name {name!r}")
    return os.path.join(BASE, name)


def write_atomic(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listen_notify(sock: socket.socket, path: str) -> None:
    """Append every systemd notification (``READY=1``...) the command sends to ``path``."""
    while True:
        msg = sock.recv(4096).decode(errors="replace")
        with open(path, "a") as f:
            f.write(msg.rstrip("\n") + "\n")


def supervise(name: str, argv: list[str]) -> int:
    d = folder(name)
    env = dict(os.environ)
    if os.environ.get("DOM0_BG_NOTIFY"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(os.path.join(d, "notify.sock"))
        env["NOTIFY_SOCKET"] = os.path.join(d, "notify.sock")
        env.pop("DOM0_BG_NOTIFY")
        threading.Thread(target=listen_notify, args=(sock, os.path.join(d, "notify")),
                         daemon=True).start()
    with open(os.path.join(d, "stdout"), "wb") as out, open(os.path.join(d, "stderr"), "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
    write_atomic(os.path.join(d, "pid"), f"{proc.pid}\n")
    # Signals for the supervisor go to the command.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: proc.send_signal(s))
    rc = proc.wait()
    write_atomic(os.path.join(d, "rc"), f"{rc}\n")
    return 0


def start(name: str, argv: list[str], notify: bool = False) -> dict[str, object]:
    d = folder(name)
    pid_text = read(os.path.join(d, "pid"))
    if pid_text and read(os.path.join(d, "rc")) is None and alive(int(pid_text)):
        raise SystemExit(f"dom0_bg: {name} is running already (pid {pid_text.strip()})")
    os.makedirs(d, exist_ok=True)
    for f in ("pid", "rc", "stdout", "stderr", "notify", "notify.sock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(d, f))
    subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "_supervise", name, "--", *argv],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, **({"DOM0_BG_NOTIFY": "1"} if notify else {})},
    )
    deadline = time.monotonic() + 30
    while (pid := read(os.path.join(d, "pid"))) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"dom0_bg: {name} did not start within 30 s")
        time.sleep(0.05)
    return {"pid": int(pid)}


def wait_ready(name: str, timeout: float) -> dict[str, object]:
    """Until the command sent READY=1 (started with --notify); fails if it ended first."""
    d = folder(name)
    started = time.monotonic()
    while "READY=1" not in (read(os.path.join(d, "notify")) or "").splitlines():
        rc = read(os.path.join(d, "rc"))
        if rc is not None or time.monotonic() - started > timeout:
            why = f"ended with rc {rc.strip()}" if rc is not None else f"not ready in {timeout} s"
            tail = (read(os.path.join(d, "stderr")) or "")[-3000:]
            raise SystemExit(f"dom0_bg: {name} {why}:\n{tail}")
        time.sleep(0.1)
    return {"ready_s": round(time.monotonic() - started, 2)}


def status(name: str) -> dict[str, object]:
    d = folder(name)
    rc = read(os.path.join(d, "rc"))
    pid = read(os.path.join(d, "pid"))
    running = rc is None and pid is not None and alive(int(pid))
    return {"running": running, "rc": None if rc is None else int(rc)}


def stop(name: str, sig: str, timeout: float) -> dict[str, object]:
    d = folder(name)
    pid = read(os.path.join(d, "pid"))
    if pid is None:
        raise SystemExit(f"dom0_bg: {name} was never started")
    if read(os.path.join(d, "rc")) is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), getattr(signal, f"SIG{sig}"))
    deadline = time.monotonic() + timeout
    timed_out = False
    while read(os.path.join(d, "rc")) is None:
        if time.monotonic() > deadline:
            os.kill(int(pid), signal.SIGKILL)
            timed_out = True
            deadline = time.monotonic() + 10
        time.sleep(0.1)
    rc = read(os.path.join(d, "rc"))
    return {
        "rc": int(rc or "-1"),
        "killed": timed_out,
        "stdout": read(os.path.join(d, "stdout")) or "",
        "stderr": read(os.path.join(d, "stderr")) or "",
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd in ("start", "_supervise"):
        s = sub.add_parser(cmd)
        s.add_argument("name")
        if cmd == "start":
            s.add_argument("--notify", action="store_true",
                           help="give it a NOTIFY_SOCKET (systemd protocol) for wait-ready")
        s.add_argument("argv", nargs=argparse.REMAINDER)
    s = sub.add_parser("wait-ready")
    s.add_argument("name")
    s.add_argument("--timeout", type=float, default=300.0)
    s = sub.add_parser("stop")
    s.add_argument("name")
    s.add_argument("--signal", default="TERM", choices=["TERM", "INT", "KILL"])
    s.add_argument("--timeout", type=float, default=120.0)
    s = sub.add_parser("status")
    s.add_argument("name")
    a = p.parse_args()
    if a.cmd in ("start", "_supervise"):
        argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
        if not argv:
            p.error(f"{a.cmd} needs a command")
        if a.cmd == "_supervise":
            return supervise(a.name, argv)
        result = start(a.name, argv, a.notify)
    elif a.cmd == "wait-ready":
        result = wait_ready(a.name, a.timeout)
    elif a.cmd == "stop":
        result = stop(a.name, a.signal, a.timeout)
    else:
        result = status(a.name)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
