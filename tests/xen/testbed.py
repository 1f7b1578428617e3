"""Host-side driver of the Xen 4.17 testbed (built by tests/xen/build.sh).

Boots Xen + dom0 under QEMU/TCG on an emulated NUMA host, runs commands inside
dom0 through the command share (see cmdd.py), creates test guests, stops QEMU.
Usable as a library (tests, benchmarks) and as a command line:

    python3 tests/xen/testbed.py start [--layout 2node|4node] [--sched credit|credit2]
    python3 tests/xen/testbed.py run -- xl vcpu-list
    python3 tests/xen/testbed.py guest A --vcpus 2 --mode busy --soft node:0
    python3 tests/xen/testbed.py stop

Every invocation names its run folder with ``--workdir`` (default
``.cache/xen-testbed/run/default``): it holds the command share (``cmd/``), the
serial console log (``console.log``), ``qemu.pid`` and ``config.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO / ".cache" / "xen-testbed"
HERE = Path(__file__).resolve().parent
TB = "/opt/xnuma-testbed"  # dom0-side folder (inside the rootfs share)
CMD = "/cmd"  # where dom0 mounts the command share


class TestbedError(Exception):
    """The testbed could not boot or a command could not be delivered."""

    __test__ = False  # not a pytest class


@dataclass(frozen=True)
class Layout:
    """The emulated host: `nodes` NUMA nodes of `cpus_per_node` pCPUs each."""

    nodes: int
    cpus_per_node: int
    mem_mb_per_node: int
    distances: tuple[tuple[int, ...], ...]


LAYOUTS = {
    "2node": Layout(2, 4, 1536, ((10, 20), (20, 10))),
    # Two pairs of close nodes: distances that differ, so parsers see more than 10/20.
    "4node": Layout(
        4, 2, 768, ((10, 16, 22, 22), (16, 10, 22, 22), (22, 22, 10, 16), (22, 22, 16, 10))
    ),
}


@dataclass(frozen=True)
class Config:
    layout: str = "2node"
    sched: str = "credit"  # Xen's sched= (credit, credit2)
    dom0_vcpus: int = 2
    dom0_mem_mb: int = 768
    dom0_loglevel: int = 4
    extra_xen_args: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class CmdResult:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    elapsed: float  # seconds, measured inside dom0
    timed_out: bool


def _escape_multiboot(arg: str) -> str:
    # QEMU splits -initrd on commas; a literal comma is written twice.
    return arg.replace(",", ",,")


class Testbed:
    __test__ = False  # not a pytest class

    def __init__(
        self, cache: Path = DEFAULT_CACHE, workdir: Path | None = None, config: Config = Config()
    ) -> None:
        self.cache = cache.resolve()
        self.workdir = (workdir or self.cache / "run" / "default").resolve()
        self.config = config
        self.cmd_dir = self.workdir / "cmd"
        self.console = self.workdir / "console.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # --- configuration -----------------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.config.layout]

    def xen_cmdline(self) -> str:
        c = self.config
        args = [
            "console=com1",
            "com1=115200,8n1",
            "loglvl=all",
            "guest_loglvl=all",
            f"sched={c.sched}",
            f"dom0_max_vcpus={c.dom0_vcpus}",
            f"dom0_mem={c.dom0_mem_mb}M,max:{c.dom0_mem_mb}M",
            "bootscrub=false",
            *c.extra_xen_args,
        ]
        return " ".join(args)

    def dom0_cmdline(self) -> str:
        return f"console=hvc0 earlyprintk=xen loglevel={self.config.dom0_loglevel}"

    def qemu_argv(self) -> list[str]:
        lay = self.layout
        boot = self.cache / "boot"
        ncpus = lay.nodes * lay.cpus_per_node
        argv = [
            "qemu-system-x86_64",
            "-accel", "tcg,thread=multi",
            "-cpu", "qemu64",
            "-smp", f"{ncpus},sockets={lay.nodes},cores={lay.cpus_per_node},threads=1",
            "-m", f"{lay.nodes * lay.mem_mb_per_node}M",
        ]  # fmt: skip
        for n in range(lay.nodes):
            first = n * lay.cpus_per_node
            argv += [
                "-object", f"memory-backend-ram,id=mem{n},size={lay.mem_mb_per_node}M",
                "-numa", f"node,nodeid={n},cpus={first}-{first + lay.cpus_per_node - 1},"
                f"memdev=mem{n}",
            ]  # fmt: skip
        for i, row in enumerate(lay.distances):
            for j, d in enumerate(row):
                if i != j:
                    argv += ["-numa", f"dist,src={i},dst={j},val={d}"]
        argv += [
            "-kernel", str(boot / "xen"),
            "-append", self.xen_cmdline(),
            "-initrd", f"{boot / 'vmlinuz'} {_escape_multiboot(self.dom0_cmdline())},"
            f"{boot / 'dom0-initrd.cpio.gz'}",
            "-virtfs", f"local,path={self.cache / 'rootfs'},mount_tag=rootfs,"
            "security_model=passthrough,readonly=on",
            "-virtfs", f"local,path={self.cmd_dir},mount_tag=cmd,security_model=none",
            # The repository, read-only at /xnuma-src: dom0 can run this checkout's code.
            "-virtfs", f"local,path={REPO},mount_tag=xnuma,security_model=none,readonly=on",
            "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", f"file:{self.console}",
        ]  # fmt: skip
        return argv

    # --- lifecycle ---------------------------------------------------------------------------
    def _refresh_dom0_files(self) -> None:
        # The rootfs is shared live: the latest dom0-side scripts take effect at the next boot.
        dest = self.cache / "rootfs" / TB.lstrip("/")
        (self.cache / "rootfs" / "xnuma-src").mkdir(exist_ok=True)
        for name in ("dom0-init.sh", "cmdd.py"):
            src = HERE / name
            if (dest / name).read_bytes() != src.read_bytes():
                shutil.copy2(src, dest / name)

    def start(self, timeout: float = 300.0, retries: int = 1) -> float:
        """Boot; return seconds from QEMU start to dom0 ready. Retries a failed boot."""
        if not (self.cache / ".ready").exists():
            raise TestbedError(f"testbed not built: run tests/xen/build.sh {self.cache}")
        for attempt in range(retries + 1):
            try:
                return self._boot_once(timeout)
            except TestbedError:
                self.stop()
                if attempt == retries:
                    raise
                shutil.copy(self.console, self.workdir / f"console.failed{attempt}.log")
        raise AssertionError("unreachable")

    def _boot_once(self, timeout: float) -> float:
        if self.is_running():
            raise TestbedError(f"a testbed already runs in {self.workdir} (stop it first)")
        self._refresh_dom0_files()
        shutil.rmtree(self.cmd_dir, ignore_errors=True)
        self.cmd_dir.mkdir(parents=True)
        (self.cmd_dir / "guests").mkdir()
        self.console.unlink(missing_ok=True)
        argv = self.qemu_argv()
        (self.workdir / "qemu.argv").write_text(" ".join(argv) + "\n")
        (self.workdir / "config.json").write_text(json.dumps(asdict(self.config)))
        started = time.monotonic()
        with open(self.workdir / "qemu.stderr", "wb") as err:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
            )
        (self.workdir / "qemu.pid").write_text(f"{self._proc.pid}\n")
        ready = self.cmd_dir / "ready"
        deadline = started + timeout
        while not ready.exists():
            if self._proc.poll() is not None:
                raise TestbedError(
                    f"QEMU exited ({self._proc.returncode}) during boot:\n"
                    f"{(self.workdir / 'qemu.stderr').read_text()}\n{self.console_tail()}"
                )
            if time.monotonic() > deadline:
                raise TestbedError(f"no dom0 after {timeout:.0f} s:\n{self.console_tail()}")
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        status = json.loads(ready.read_text())["status"]
        if status != "ok":
            raise TestbedError(f"dom0 init {status}:\n{self.console_tail()}")
        return elapsed

    def pid(self) -> int | None:
        try:
            return int((self.workdir / "qemu.pid").read_text())
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"qemu-system-x86_64" in cmdline and str(self.console).encode() in cmdline

    def stop(self) -> None:
        """Kill QEMU (the rootfs is read-only in the VM, so nothing is lost)."""
        pid = self.pid()
        if pid is not None and self.is_running():
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not self.is_running():
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(timeout=10)
            self._proc = None
        (self.workdir / "qemu.pid").unlink(missing_ok=True)

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def panicked(self) -> bool:
        """Xen's console says it panicked (it then tries to reboot, which may hang)."""
        try:
            with open(self.console, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
                return b"Panic on CPU" in f.read()
        except OSError:
            return False

    def console_tail(self, lines: int = 60) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    # --- commands in dom0 --------------------------------------------------------------------
    def run(self, argv: list[str], timeout: float = 120.0, check: bool = False) -> CmdResult:
        """Run argv in dom0 (no shell) and wait for it; `timeout` bounds it inside dom0."""
        if not self.is_running():
            raise TestbedError(f"no testbed runs in {self.workdir}")
        ident = uuid.uuid4().hex
        req = self.cmd_dir / f"{ident}.req"
        tmp = self.cmd_dir / f"{ident}.req.tmp"
        tmp.write_text(json.dumps({"argv": argv, "timeout": timeout}))
        tmp.rename(req)
        res = self.cmd_dir / f"{ident}.res"
        # Margin for the daemon's poll and 9p latency under TCG.
        deadline = time.monotonic() + timeout + 30
        next_look = time.monotonic() + 1.0
        while not res.exists():
            if time.monotonic() > deadline:
                raise TestbedError(f"no answer from dom0 for {argv} after {timeout + 30:.0f} s")
            if not self.is_running():
                raise TestbedError(f"QEMU died while running {argv}:\n{self.console_tail()}")
            if time.monotonic() > next_look:  # Xen may hang after a panic instead of exiting
                next_look = time.monotonic() + 1.0
                if self.panicked():
                    raise TestbedError(f"Xen panicked while running {argv}:\n"
                                       f"{self.console_tail(100)}")
            time.sleep(0.02)
        data = json.loads(res.read_text())
        res.unlink()
        result = CmdResult(
            argv=argv,
            rc=int(data["rc"]),
            stdout=str(data["stdout"]),
            stderr=str(data["stderr"]),
            elapsed=float(data["elapsed"]),
            timed_out=bool(data["timed_out"]),
        )
        if check and result.rc != 0:
            raise TestbedError(f"{argv} failed with rc {result.rc}: {result.stderr.strip()}")
        return result

    def write_guest_config(
        self,
        name: str,
        vcpus: int = 2,
        memory_mb: int = 128,
        mode: str = "busy",
        hard: str | None = None,
        soft: str | None = None,
        pool: str | None = None,
    ) -> str:
        """Write an xl config for a disk-less, vif-less PV test guest; return its dom0 path."""
        lines = [
            f'name = "{name}"',
            'type = "pv"',
            f'kernel = "{TB}/vmlinuz"',
            f'ramdisk = "{TB}/guest-initrd.cpio.gz"',
            f'extra = "console=hvc0 loglevel=4 xnuma={mode}"',
            f"memory = {memory_mb}",
            f"vcpus = {vcpus}",
            "vif = []",
            "disk = []",
            'on_crash = "preserve"',
        ]
        if hard is not None:
            lines.append(f'cpus = "{hard}"')
        if soft is not None:
            lines.append(f'cpus_soft = "{soft}"')
        if pool is not None:
            lines.append(f'pool = "{pool}"')
        (self.cmd_dir / "guests" / f"{name}.cfg").write_text("\n".join(lines) + "\n")
        return f"{CMD}/guests/{name}.cfg"

    def create_guest(
        self, name: str, timeout: float = 300.0, paused: bool = False, **kw: object
    ) -> CmdResult:
        """``xl create`` (``-p``: left paused; creating is quicker while no guest is busy)."""
        path = self.write_guest_config(name, **kw)  # type: ignore[arg-type]
        flags = ["-p"] if paused else []
        return self.run(["xl", "create", *flags, path], timeout=timeout, check=True)

    @classmethod
    def attach(cls, cache: Path, workdir: Path) -> Testbed:
        """A handle on a testbed started by another process (the CLI)."""
        try:
            raw = json.loads((workdir / "config.json").read_text())
        except OSError as e:
            raise TestbedError(f"no testbed was started in {workdir}") from e
        raw["extra_xen_args"] = tuple(raw.get("extra_xen_args", ()))
        return cls(cache, workdir, Config(**raw))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--workdir", type=Path, default=None)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="boot the testbed and wait for dom0")
    s.add_argument("--layout", choices=sorted(LAYOUTS), default="2node")
    s.add_argument("--sched", default="credit")
    s.add_argument("--dom0-vcpus", type=int, default=2)
    s.add_argument("--dom0-mem", type=int, default=768, help="MiB")
    s.add_argument("--xen-arg", action="append", default=[], help="extra Xen command line arg")
    s.add_argument("--timeout", type=float, default=300.0)
    r = sub.add_parser("run", help="run a command in dom0; exit with its rc")
    r.add_argument("--timeout", type=float, default=120.0)
    r.add_argument("argv", nargs=argparse.REMAINDER)
    g = sub.add_parser("guest", help="create a test guest")
    g.add_argument("name")
    g.add_argument("--vcpus", type=int, default=2)
    g.add_argument("--memory", type=int, default=128, help="MiB")
    g.add_argument("--mode", choices=["busy", "idle"], default="busy")
    g.add_argument("--hard", default=None)
    g.add_argument("--soft", default=None)
    g.add_argument("--pool", default=None)
    sub.add_parser("stop", help="kill the testbed's QEMU")
    sub.add_parser("qemu-argv", help="print the QEMU command line")
    sub.add_parser("console", help="print the tail of the serial console")
    a = p.parse_args(argv)
    cache = a.cache.resolve()
    workdir = (a.workdir or cache / "run" / "default").resolve()

    if a.cmd == "start":
        cfg = Config(a.layout, a.sched, a.dom0_vcpus, a.dom0_mem, 4, tuple(a.xen_arg))
        workdir.mkdir(parents=True, exist_ok=True)
        tb = Testbed(cache, workdir, cfg)
        secs = tb.start(timeout=a.timeout)
        tb._proc = None  # QEMU outlives this process (own session); `stop` kills it by pid
        print(f"testbed up in {secs:.1f} s ({a.layout}, sched={a.sched}); workdir {workdir}")
        return 0
    if a.cmd == "qemu-argv":
        print(" ".join(Testbed(cache, workdir).qemu_argv()))
        return 0
    tb = Testbed.attach(cache, workdir)
    if a.cmd == "run":
        args = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
        if not args:
            p.error("run needs a command")
        res = tb.run(args, timeout=a.timeout)
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        return res.rc if 0 <= res.rc < 256 else 125
    if a.cmd == "guest":
        res = tb.create_guest(
            a.name,
            vcpus=a.vcpus,
            memory_mb=a.memory,
            mode=a.mode,
            hard=a.hard,
            soft=a.soft,
            pool=a.pool,
        )
        print(f"created {a.name} in {res.elapsed:.1f} s")
        return 0
    if a.cmd == "stop":
        tb.stop()
        return 0
    if a.cmd == "console":
        print(tb.console_tail(200))
        return 0
    raise AssertionError(a.cmd)


if __name__ == "__main__":
    sys.exit(main())
