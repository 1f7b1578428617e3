"""Save real `xl sched-credit` / `xl sched-credit2` output as fixtures (scheduler weights).

    python3 tests/xen/testbed.py start                     # 2node, sched=credit
    python3 tests/xen/capture_sched_fixtures.py [--out tests/fixtures/xl/2node-sched]
    python3 tests/xen/testbed.py stop

Runs against the testbed started in the default workdir. Scenario: guests A (weight 512)
and B (default weight, cap 50) in Pool-0 (credit); pCPUs 6-7 leave Pool-0 for a credit2
pool ``c2`` (created, never destroyed: see seed.py's ``arrange``), guest C created in it
with weight 128 and cap 25. Each command's stdout goes to ``OUT/<name>``; ``capture.json``
lists the commands (not ``setup.json``: that marks the full setups test_xl_parse walks);
failing ones also get ``.stderr`` and ``.rc``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from testbed import DEFAULT_CACHE, REPO, Testbed, TestbedError

DEFAULT_WORKDIR = DEFAULT_CACHE / "run" / "default"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "xl" / "2node-sched")
    a = p.parse_args()
    tb = Testbed.attach(a.cache.resolve(), a.workdir.resolve())
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    commands: dict[str, list[str]] = {}

    def run(name: str | None, argv: list[str], expect_fail: bool = False) -> str:
        res = tb.run(argv, timeout=300)
        if not expect_fail and res.rc != 0:
            raise TestbedError(f"{argv} failed ({res.rc}): {res.stderr}")
        if name is not None:
            commands[name] = argv
            (out / name).write_text(res.stdout)
            if expect_fail:
                (out / f"{name}.stderr").write_text(res.stderr)
                (out / f"{name}.rc").write_text(f"{res.rc}\n")
        return res.stdout

    run("sched-credit-dom0only.txt", ["xl", "sched-credit"])
    run("sched-credit2-none.txt", ["xl", "sched-credit2"])
    for name in ("A", "B"):
        tb.create_guest(name, vcpus=2, mode="idle", paused=True)
    run(None, ["xl", "sched-credit", "-d", "A", "-w", "512"])
    run(None, ["xl", "sched-credit", "-d", "B", "-c", "50"])
    run(None, ["xl", "cpupool-cpu-remove", "Pool-0", "6-7"])
    run(None, ["xl", "cpupool-create", 'name="c2"', 'sched="credit2"', 'cpus="6-7"'])
    tb.create_guest("C", vcpus=1, mode="idle", paused=True, pool="c2")
    run(None, ["xl", "sched-credit2", "-d", "C", "-w", "128", "-c", "25"])
    run("sched-credit.txt", ["xl", "sched-credit"])
    run("sched-credit2.txt", ["xl", "sched-credit2"])
    run("sched-credit-A.txt", ["xl", "sched-credit", "-d", "A"])
    run("sched-credit2-C.txt", ["xl", "sched-credit2", "-d", "C"])
    run("sched-credit-pool0.txt", ["xl", "sched-credit", "-p", "Pool-0"])
    run("list-vc.txt", ["xl", "list", "-v", "-c"])
    run("list-l.json", ["xl", "list", "-l"])
    run("cpupool-list.txt", ["xl", "cpupool-list"])
    run("err-sched-credit-bad-domain.txt", ["xl", "sched-credit", "-d", "99"], True)
    run("err-sched-credit-wrong-pool.txt", ["xl", "sched-credit", "-d", "C"], True)
    run("err-sched-credit2-wrong-pool.txt", ["xl", "sched-credit2", "-d", "A"], True)
    setup = {
        "xen_version": (a.cache / "VERSION").read_text().strip(),
        "config": json.loads((a.workdir / "config.json").read_text()),
        "commands": commands,
    }
    cache = str(a.cache.resolve())
    for path in out.iterdir():
        if path.suffix in (".txt", ".json", ".stderr"):
            path.write_text(path.read_text().replace(cache, "CACHE").replace(str(REPO), "REPO"))
    (out / "capture.json").write_text(json.dumps(setup, indent=1).replace(cache, "CACHE") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
