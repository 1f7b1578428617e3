"""Audit log throughput with and without fsync batching, and its size per million decisions.

    .venv/bin/python benchmarks/audit_bench.py [--dir DIR] [--records N] [--rounds R] [--json]

Each round writes the same realistic decision record (a 3-clause condition
trace) in every mode, one mode after the other, so the modes share the
machine's noise; the medians over rounds are printed side by side with ratios.
The log goes to a fresh directory under --dir (default: the system temp dir),
which must be on the disk you care about: fsync cost is the disk's.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from agent.audit import records, segments
from agent.audit.compress import compress_rotated
from agent.audit.reader import read_entries
from agent.audit.verify import verify
from agent.audit.writer import AuditWriter, WriterPolicy

NO_ROTATION = dict(rotate_bytes=1 << 40, rotate_age=None, keep_files=1000, keep_bytes=None)
MODES = {
    "batched (64 rec / 1 s)": WriterPolicy(fsync_every=64, fsync_interval=1.0, **NO_ROTATION),
    "batched (1024 rec / 1 s)": WriterPolicy(fsync_every=1024, fsync_interval=1.0, **NO_ROTATION),
    "fsync every record": WriterPolicy(fsync_every=1, **NO_ROTATION),
    "no fsync at all": WriterPolicy(fsync_every=1 << 30, fsync_interval=1e9, **NO_ROTATION),
}


def decision_record(i: int) -> records.Body:
    """What the fixup rule records for one vCPU: subject, reason, hash, a 3-clause trace.

    Numbers vary as they would (seeded per record), so the gzip figure is not flattered.
    """
    rng = random.Random(i)
    off_for = round(rng.uniform(2.0, 30.0), 3)
    node, home = rng.choice([(1, 0), (0, 1)])
    idle = rng.randint(1, 14)
    dom = rng.randrange(40)
    return records.decision(
        "soft-affinity-fixup",
        "sha256:9f2c4e0b7d1a5f3e8c6b2a9d0e4f7c1b3a5d8e2f6c9b0a4d7e1f3c5b8a2d6e9f",
        records.Subject(
            domain=f"guest-{dom:03d}",
            domid=dom + 1,
            uuid=str(uuid.UUID(int=rng.getrandbits(128))),
            vcpu=rng.randrange(16),
            node=node,
        ),
        "act",
        f"it had run on node {node} for {off_for} s, outside its soft affinity (node {home})",
        [
            records.Clause("vcpu.off_node_s >= 2.0", {"vcpu.off_node_s": off_for}, True),
            records.Clause("home.idle_pcpus >= 1", {"home.idle_pcpus": idle}, True),
            records.Clause(
                "not vcpu.pinned_recently",
                {"vcpu.last_pin_age_s": round(rng.uniform(10, 600), 3)},
                True,
            ),
        ],
        rule_file="/etc/xnuma/rules.d/10-soft-affinity.toml",
        event_seq=i,
    )


def write_run(directory: Path, policy: WriterPolicy, n: int) -> tuple[float, int]:
    """Seconds to append ``n`` records (closing included: all of them durable), file bytes."""
    log = directory / "audit.log"
    bodies = [decision_record(i) for i in range(n)]
    start = time.perf_counter()
    with AuditWriter(log, policy) as w:
        for i, body in enumerate(bodies):
            w.append(body, mono=float(i))
    elapsed = time.perf_counter() - start
    return elapsed, log.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=None, help="where to write (a disk, not tmpfs)")
    ap.add_argument("--records", type=int, default=20000, help="records per batched run")
    ap.add_argument("--unbatched-records", type=int, default=400, help="records per fsync-each run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rates: dict[str, list[float]] = {m: [] for m in MODES}
    size_per_record: list[float] = []
    gz_per_record: list[float] = []
    read_rates: list[float] = []
    verify_rates: list[float] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="xnuma-audit-bench-") as tmp:
        root = Path(tmp)
        for rnd in range(args.rounds):
            for name, policy in MODES.items():
                run_dir = root / f"r{rnd}-{len(rates[name])}-{abs(hash(name))}"
                run_dir.mkdir()
                n = args.unbatched_records if policy.fsync_every == 1 else args.records
                elapsed, size = write_run(run_dir, policy, n)
                rates[name].append(n / elapsed)
                if name.startswith("batched"):
                    size_per_record.append((size - 8) / n)
                    log = run_dir / "audit.log"
                    t0 = time.perf_counter()
                    count = sum(1 for _ in read_entries(log))
                    read_rates.append(count / (time.perf_counter() - t0))
                    t0 = time.perf_counter()
                    report = verify(log)
                    verify_rates.append(report.records / (time.perf_counter() - t0))
                    assert report.ok and count == n
                    # Rotate by hand and gzip it as compress_rotated does in the agent.
                    log.rename(segments.rotated_name(log, 1))
                    (gz,) = compress_rotated(log)
                    gz_per_record.append((gz.stat().st_size) / n)

    med = {name: statistics.median(v) for name, v in rates.items()}
    batched, _, each, none = (med[m] for m in MODES)
    per_record = statistics.median(size_per_record)
    gz_record = statistics.median(gz_per_record)
    result = {
        "records_per_second": med,
        "batched_over_fsync_each": batched / each,
        "no_fsync_over_batched": none / batched,
        "bytes_per_decision": per_record,
        "bytes_per_million_decisions": per_record * 1e6,
        "gzipped_bytes_per_million_decisions": gz_record * 1e6,
        "read_records_per_second": statistics.median(read_rates),
        "verify_records_per_second": statistics.median(verify_rates),
        "rounds": args.rounds,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"audit log write throughput, median of {args.rounds} interleaved rounds")
    print(f"{'mode':<26} {'records/s':>12} {'vs batched':>11}")
    for name, rate in med.items():
        print(f"{name:<26} {rate:>12,.0f} {rate / batched:>10.3f}x")
    print(f"batched / fsync-each: {batched / each:,.1f}x")
    print()
    print(f"decision record with a 3-clause trace: {per_record:,.1f} bytes on disk (12 of framing)")
    mib = per_record * 1e6 / (1 << 20)
    print(f"bytes per million decisions: {per_record * 1e6:,.0f} ({mib:,.1f} MiB)")
    gz_mib = gz_record * 1e6 / (1 << 20)
    print(
        f"  rotated and gzipped (compress_rotated): {gz_record * 1e6:,.0f} ({gz_mib:,.1f} MiB), "
        f"{per_record / gz_record:,.1f}x smaller"
    )
    print()
    print(
        f"read back: {result['read_records_per_second']:,.0f} records/s; "
        f"verify chain: {result['verify_records_per_second']:,.0f} records/s"
    )


if __name__ == "__main__":
    main()
