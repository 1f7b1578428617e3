"""Boot the testbed in each setup, create guests, and save real `xl` output as fixtures.

    python3 tests/xen/capture_fixtures.py [--setup 2node-credit ...] [--out tests/fixtures/xl]

Each setup gets a folder ``OUT/<setup>/`` with one file per command (stdout; for
commands expected to fail, ``.stderr`` and ``.rc`` beside it), ``setup.json`` (Xen
version, QEMU argv, guests, the commands run) and ``timings.json`` (seconds each
command took inside dom0, boot time from QEMU start to dom0 ready).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from testbed import DEFAULT_CACHE, LAYOUTS, REPO, Config, Testbed, TestbedError

SETUPS = {
    "2node-credit": Config(layout="2node", sched="credit"),
    "2node-credit2": Config(layout="2node", sched="credit2"),
    "4node-credit": Config(layout="4node", sched="credit"),
}


class Capture:
    def __init__(self, tb: Testbed, out: Path) -> None:
        self.tb = tb
        self.out = out
        self.timings: dict[str, list[float]] = {}
        self.commands: dict[str, list[str]] = {}

    def run(self, name: str | None, argv: list[str], expect_fail: bool = False) -> str:
        """Run argv in dom0; save stdout as `name`. With expect_fail, save stderr and rc too,
        whatever rc is (some xl errors exit 0)."""
        res = self.tb.run(argv, timeout=300)
        self.timings.setdefault(" ".join(argv[:2]), []).append(round(res.elapsed, 3))
        if not expect_fail and res.rc != 0:
            raise TestbedError(f"{argv} failed ({res.rc}): {res.stderr}")
        if name is not None:
            self.commands[name] = argv
            (self.out / name).write_text(res.stdout)
            if expect_fail:
                (self.out / f"{name}.stderr").write_text(res.stderr)
                (self.out / f"{name}.rc").write_text(f"{res.rc}\n")
        return res.stdout

    def wait_vcpus_online(self, expected: dict[str, int], timeout: float = 240) -> None:
        # A new PV guest brings its secondary vCPUs up a few seconds after `xl create`.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listing = self.run(None, ["xl", "list"]).splitlines()[1:]
            online = {line.split()[0]: int(line.split()[3]) for line in listing}
            if all(online.get(n) == v for n, v in expected.items()):
                return
            time.sleep(2)
        raise TestbedError(f"guests' vCPUs not all online after {timeout} s: {expected}")


def capture_setup(name: str, cfg: Config, cache: Path, out_root: Path) -> dict[str, object]:
    lay = LAYOUTS[cfg.layout]
    out = out_root / name
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    workdir = cache / "run" / f"capture-{name}"
    workdir.mkdir(parents=True, exist_ok=True)
    tb = Testbed(cache, workdir, cfg)
    with tb:
        boot_s = tb.start()
        cap = Capture(tb, out)
        first_node = f"0-{lay.cpus_per_node - 1}"
        last = lay.nodes * lay.cpus_per_node - 1
        last_node = f"{last - lay.cpus_per_node + 1}-{last}"
        spans = f"{lay.cpus_per_node - 2}-{lay.cpus_per_node + 1}"  # two pCPUs on each side
        cap.run("info-n.txt", ["xl", "info", "-n"])
        cap.run("list-dom0only.txt", ["xl", "list"])
        guests = {
            "A": dict(vcpus=2, mode="busy", soft=first_node),
            "B": dict(vcpus=2, mode="busy", soft=spans),
            "C": dict(vcpus=1, mode="idle", hard=last_node, soft=f"{last - 1}-{last}"),
        }
        create_s: list[float] = []
        for g, kw in guests.items():
            path = tb.write_guest_config(g, **kw)  # type: ignore[arg-type]
            t0 = time.monotonic()
            cap.run(None, ["xl", "create", path])
            create_s.append(round(time.monotonic() - t0, 1))
        cap.wait_vcpus_online({"A": 2, "B": 2, "C": 1})
        # Pins: narrow A's vCPU 1 hard affinity (soft kept), move B's vCPU 0 soft (hard kept).
        cap.run(None, ["xl", "vcpu-pin", "A", "1", first_node, "-"])
        cap.run(None, ["xl", "vcpu-pin", "B", "0", "-", last_node])
        cap.run("list.txt", ["xl", "list"])
        cap.run("list-c.txt", ["xl", "list", "-c"])
        cap.run("list-n.txt", ["xl", "list", "-n"])
        cap.run("list-v.txt", ["xl", "list", "-v"])
        cap.run("list-vc.txt", ["xl", "list", "-v", "-c"])
        cap.run("list-l.json", ["xl", "list", "-l"])
        cap.run("vcpu-list.txt", ["xl", "vcpu-list"])
        cap.run("vcpu-list-A.txt", ["xl", "vcpu-list", "A"])
        cap.run("cpupool-list.txt", ["xl", "cpupool-list"])
        cap.run("cpupool-list-c.txt", ["xl", "cpupool-list", "-c"])
        cap.run(None, ["xl", "dmesg", "-c"])
        cap.run(None, ["xl", "debug-keys", "u"])
        cap.run("dmesg-u.txt", ["xl", "dmesg"])
        cap.run(None, ["xl", "pause", "C"])
        cap.run("list-paused.txt", ["xl", "list"])
        cap.run("list-vc-paused.txt", ["xl", "list", "-v", "-c"])
        cap.run("vcpu-list-paused.txt", ["xl", "vcpu-list"])
        cap.run(None, ["xl", "unpause", "C"])
        cap.run("err-vcpu-pin-bad-domain.txt", ["xl", "vcpu-pin", "99", "0", "all", "-"], True)
        cap.run("err-vcpu-pin-bad-vcpu.txt", ["xl", "vcpu-pin", "A", "7", "all", "-"], True)
        cap.run("err-vcpu-pin-bad-cpu.txt", ["xl", "vcpu-pin", "A", "0", f"{last + 1}", "-"], True)
        cap.run("err-vcpu-list-bad-domain.txt", ["xl", "vcpu-list", "99"], True)
        cap.run("err-list-bad-domain.txt", ["xl", "list", "99"], True)
        if name == "2node-credit":
            # dom0 alone on node 0's first pCPUs, guests in a pool of their own (the seed setup).
            pool_cpus = f"{lay.cpus_per_node}-{last}"
            cap.run(None, ["xl", "cpupool-cpu-remove", "Pool-0", pool_cpus])
            cap.run(
                None,
                ["xl", "cpupool-create", 'name="guests"', f'sched="{cfg.sched}"',
                 f'cpus="{pool_cpus}"'],
            )  # fmt: skip
            cap.run(None, ["xl", "cpupool-migrate", "C", "guests"])
            cap.run("pools-cpupool-list.txt", ["xl", "cpupool-list"])
            cap.run("pools-cpupool-list-c.txt", ["xl", "cpupool-list", "-c"])
            cap.run("pools-list-c.txt", ["xl", "list", "-c"])
            cap.run("pools-vcpu-list.txt", ["xl", "vcpu-list"])
            cap.run("pools-info-n.txt", ["xl", "info", "-n"])
        setup = {
            "setup": name,
            "xen_version": (cache / "VERSION").read_text().strip(),
            "config": {"layout": cfg.layout, "sched": cfg.sched, "dom0_vcpus": cfg.dom0_vcpus,
                       "dom0_mem_mb": cfg.dom0_mem_mb},
            "qemu_argv": tb.qemu_argv(),
            "xen_cmdline": tb.xen_cmdline(),
            "guests": guests,
            "pins": [["A", "1", first_node, "-"], ["B", "0", "-", last_node]],
            "commands": cap.commands,
        }  # fmt: skip
        for path in out.iterdir():
            # Paths on this host mean nothing elsewhere.
            if path.suffix in (".txt", ".json", ".stderr"):
                text = path.read_text()
                path.write_text(text.replace(str(cache), "CACHE").replace(str(REPO), "REPO"))
        (out / "setup.json").write_text(
            json.dumps(setup, indent=1).replace(str(cache), "CACHE") + "\n"
        )
        timings = {"boot_s": round(boot_s, 1), "xl_create_s": create_s, "xl_s": cap.timings}
        (out / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
        return timings


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--setup", action="append", choices=sorted(SETUPS))
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "xl")
    a = p.parse_args()
    for name in a.setup or list(SETUPS):
        t = capture_setup(name, SETUPS[name], a.cache.resolve(), a.out)
        print(f"{name}: boot {t['boot_s']} s, xl create {t['xl_create_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
