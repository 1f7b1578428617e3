"""Pure parsers of `xl` output (Xen 4.17) into the Hypervisor model types.

No I/O here: each function takes the text a command printed and returns values,
or raises ``XlParseError`` naming the command, the line number and the line.
The formats follow ``tools/xl/xl_info.c`` and ``xl_vcpu.c`` of Xen 4.17, and are
checked against output captured from a real Xen 4.17.7 (tests/fixtures/xl/).

Names are parsed from the right: xl pads them to a width but does not cut long
ones, so columns do not line up; the fields after the name have fixed shapes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from agent.hypervisor.interface import HypervisorError
from agent.hypervisor.model import (
    CpuSet,
    DomainInfo,
    DomainState,
    Node,
    Topology,
    VcpuInfo,
    VcpuState,
    parse_cpuset,
)

PAGE_KIB = 4  # x86 Xen pages are 4 KiB (xl info: xen_pagesize 4096)


class XlParseError(HypervisorError):
    """`xl` printed something this parser does not understand."""

    def __init__(
        self, command: str, reason: str, line_no: int | None = None, line: str = ""
    ) -> None:
        self.command = command
        self.reason = reason
        self.line_no = line_no
        self.line = line
        where = f" line {line_no}" if line_no is not None else ""
        shown = f": {line!r}" if line_no is not None else ""
        super().__init__(f"cannot parse `{command}` output,{where}: {reason}{shown}")


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) for each line of text."""
    return enumerate(text.splitlines(), start=1)


def _cpuset(cmd: str, no: int, line: str, text: str, all_cpus: CpuSet | None) -> CpuSet:
    try:
        return parse_cpuset(text, all_cpus)
    except ValueError as e:
        raise XlParseError(cmd, f"bad cpu list: {e}", no, line) from None


# --- xl info -n ----------------------------------------------------------------------------------

_INFO_FIELD = re.compile(r"^(?P<key>[a-z_0-9]+(?: [a-z_0-9]+)*)\s*: ?(?P<value>.*)$")
_CPU_ROW = re.compile(r"^\s*(\d+):\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s*$")
_NUMA_ROW = re.compile(r"^\s*(\d+):\s+(\d+)\s+(\d+)\s+(\d+(?:,\d+)*)\s*$")


@dataclass(frozen=True, slots=True)
class CpuTopo:
    cpu: int
    core: int
    socket: int
    node: int


@dataclass(frozen=True, slots=True)
class XlInfo:
    """`xl info [-n]`: the ``key : value`` fields, plus the -n tables when present."""

    fields: Mapping[str, str]
    cpus: tuple[CpuTopo, ...]  # empty without -n
    topology: Topology | None  # None without -n

    def field(self, key: str) -> str:
        try:
            return self.fields[key]
        except KeyError:
            raise XlParseError("xl info", f"no field {key!r}") from None

    def int_field(self, key: str) -> int:
        value = self.field(key)
        if not value.strip().isdigit():
            raise XlParseError("xl info", f"field {key!r} is not a number: {value!r}")
        return int(value)


def parse_xl_info(text: str, command: str = "xl info -n") -> XlInfo:
    """Parse `xl info` or `xl info -n` (the -n tables give the topology)."""
    fields: dict[str, str] = {}
    cpus: list[CpuTopo] = []
    numa: list[tuple[int, int, int, tuple[int, ...], int, str]] = []
    section = ""
    for no, line in _lines(text):
        if not line.strip():
            continue
        if section == "cpu_topology" and line.startswith("cpu:"):
            continue
        if section == "numa_info" and line.startswith("node:"):
            continue
        if section == "device topology" and (
            line.startswith("device ") or line.startswith("No device topology")
        ):
            continue
        if section == "cpu_topology" and (m := _CPU_ROW.match(line)):
            cpu, core, socket, node = (int(g) for g in m.groups())
            cpus.append(CpuTopo(cpu, core, socket, node))
            continue
        if section == "numa_info" and (m := _NUMA_ROW.match(line)):
            dists = tuple(int(d) for d in m.group(4).split(","))
            numa.append((int(m.group(1)), int(m.group(2)), int(m.group(3)), dists, no, line))
            continue
        if section == "device topology" and re.match(r"^[0-9a-f]{4}:[0-9a-f]{2}:", line):
            continue
        m = _INFO_FIELD.match(line)
        if m is None:
            raise XlParseError(command, "neither a `key : value` line nor a table row", no, line)
        key, value = m.group("key"), m.group("value").strip()
        if key in fields:
            raise XlParseError(command, f"field {key!r} appears twice", no, line)
        fields[key] = value
        section = key if key in ("cpu_topology", "numa_info", "device topology") else ""
    if "cpu_topology" not in fields and "numa_info" not in fields:
        return XlInfo(fields, (), None)
    return XlInfo(fields, tuple(cpus), _topology(command, fields, cpus, numa))


def _topology(
    command: str,
    fields: Mapping[str, str],
    cpus: Sequence[CpuTopo],
    numa: Sequence[tuple[int, int, int, tuple[int, ...], int, str]],
) -> Topology:
    if not cpus:
        raise XlParseError(command, "cpu_topology table is empty")
    if not numa:
        raise XlParseError(command, "numa_info table is empty")
    n = len(numa)
    nodes: list[Node] = []
    for expect, (node_id, size_mib, free_mib, dists, no, line) in enumerate(numa):
        if node_id != expect:
            raise XlParseError(command, f"expected node {expect}, got node {node_id}", no, line)
        if len(dists) != n:
            raise XlParseError(command, f"{len(dists)} distances for {n} nodes", no, line)
        if free_mib > size_mib:
            raise XlParseError(command, "memfree exceeds memsize", no, line)
        node_cpus = frozenset(c.cpu for c in cpus if c.node == node_id)
        nodes.append(Node(node_id, node_cpus, size_mib * 1024, free_mib * 1024))
    seen: set[int] = set()
    for c in cpus:
        if c.cpu in seen:
            raise XlParseError(command, f"pCPU {c.cpu} listed twice in cpu_topology")
        seen.add(c.cpu)
        if not 0 <= c.node < n:
            raise XlParseError(command, f"pCPU {c.cpu} is on node {c.node}, not in numa_info")
    if "nr_nodes" in fields and fields["nr_nodes"] != str(n):
        raise XlParseError(command, f"nr_nodes is {fields['nr_nodes']} but numa_info has {n}")
    distances = tuple(row[3] for row in numa)
    for i in range(n):
        if distances[i][i] != min(distances[i]):
            raise XlParseError(
                command, f"node {i} is not closest to itself", numa[i][4], numa[i][5]
            )
    return Topology(tuple(nodes), distances)


def parse_topology(text: str) -> Topology:
    """Topology from `xl info -n`."""
    info = parse_xl_info(text)
    if info.topology is None:
        raise XlParseError("xl info -n", "no cpu_topology / numa_info tables (was -n given?)")
    return info.topology


# --- xl list [-v] [-c] [-n] ----------------------------------------------------------------------

_LIST_HEADER = re.compile(r"^Name\s+ID\s+Mem\s+VCPUs\s+State\s+Time\(s\)(?P<extra>.*)$")
_LIST_ROW = re.compile(
    r"^(?P<name>\S.*?)\s+(?P<domid>\d+)\s+(?P<mem>\d+)\s+(?P<vcpus>\d+)\s+"
    r"(?P<state>[r-][b-][p-][s-][-rscwS?][d-])\s+(?P<time>\d+\.\d)(?P<rest>.*)$"
)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True, slots=True)
class XlListRow:
    """One row of `xl list`; optional columns are None when not asked for."""

    name: str
    domid: int
    memory_mib: int  # current + outstanding
    vcpus_online: int
    flags: str  # six letters: r b p s <shutdown reason> d
    cpu_time_s: float
    uuid: str | None = None
    pool: str | None = None
    node_affinity: str | None = None

    @property
    def state(self) -> DomainState:
        return state_from_flags(self.flags)


def state_from_flags(flags: str) -> DomainState:
    """The model state of `xl list` state letters (rbpscd; 5th = shutdown reason)."""
    if flags[5] == "d":
        return DomainState.DYING
    if flags[3] == "s":
        return DomainState.CRASHED if flags[4] == "c" else DomainState.SHUTDOWN
    if flags[2] == "p":
        return DomainState.PAUSED
    # Xen sets `b` only when every vCPU is blocked; runnable-but-waiting counts as running
    # (as the simulator does).
    if flags[1] == "b" and flags[0] != "r":
        return DomainState.BLOCKED
    return DomainState.RUNNING


def parse_xl_list(text: str, command: str = "xl list") -> list[XlListRow]:
    """Parse `xl list` with any of -v, -c, -n (the header tells which columns follow)."""
    lines = list(_lines(text))
    if not lines:
        raise XlParseError(command, "empty output (no header line)")
    no, header = lines[0]
    m = _LIST_HEADER.match(header)
    if m is None:
        raise XlParseError(command, "not the `Name ID Mem VCPUs State Time(s)` header", no, header)
    extra = m.group("extra")
    verbose = "UUID" in extra
    context = "Security Label" in extra
    claimed = "Claimed" in extra
    pool = "Cpupool" in extra
    numa = "NODE Affinity" in extra
    rows: list[XlListRow] = []
    for no, line in lines[1:]:
        if not line.strip():
            continue
        r = _LIST_ROW.match(line)
        if r is None:
            raise XlParseError(command, "not a domain row", no, line)
        rest = r.group("rest").split()
        want = 2 * verbose + context + claimed + pool + numa
        if len(rest) != want:
            raise XlParseError(command, f"{len(rest)} extra columns, header says {want}", no, line)
        uuid = rest.pop(0) if verbose else None
        if uuid is not None and not _UUID.match(uuid):
            raise XlParseError(command, f"bad UUID {uuid!r}", no, line)
        if verbose:
            rest.pop(0)  # shutdown reason code
        if context:
            rest.pop(0)  # security label
        if claimed:
            rest.pop(0)
        pool_name = rest.pop(0) if pool else None
        node_aff = rest.pop(0) if numa else None
        rows.append(
            XlListRow(
                name=r.group("name"),
                domid=int(r.group("domid")),
                memory_mib=int(r.group("mem")),
                vcpus_online=int(r.group("vcpus")),
                flags=r.group("state"),
                cpu_time_s=float(r.group("time")),
                uuid=uuid,
                pool=pool_name,
                node_affinity=node_aff,
            )
        )
    if len({row.domid for row in rows}) != len(rows):
        raise XlParseError(command, "a domid appears twice")
    return rows


# --- xl list -l (JSON) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class XlDomainConfig:
    """The fields of one `xl list -l` entry the agent uses (dom0's has no uuid/max_vcpus)."""

    domid: int
    name: str
    uuid: str | None
    max_vcpus: int | None
    max_memkb: int | None
    target_memkb: int | None
    soft_affinity: tuple[CpuSet, ...] | None  # per vCPU, as configured at create time
    hard_affinity: tuple[CpuSet, ...] | None
    # b_info.sched_params: libxl fills them from the hypervisor when it lists (the live
    # weight and cap, not the config file's). None: not there (no scheduler that has them).
    weight: int | None = None
    cap: int | None = None


def _json_line(text: str, pos: int) -> tuple[int, str]:
    no = text.count("\n", 0, pos) + 1
    lines = text.splitlines()
    return no, lines[no - 1] if no <= len(lines) else ""


def parse_xl_list_long(text: str, command: str = "xl list -l") -> dict[int, XlDomainConfig]:
    """Parse `xl list -l` (JSON, default output format). xl skips any domain whose
    configuration it cannot retrieve, so a domid missing here is not an error."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        no, line = _json_line(text, e.pos)
        raise XlParseError(command, f"invalid JSON: {e.msg}", no, line) from None
    if not isinstance(data, list):
        raise XlParseError(command, f"expected a JSON array, got {type(data).__name__}")
    out: dict[int, XlDomainConfig] = {}
    for i, entry in enumerate(data):
        where = f"entry {i}"
        try:
            cfg = _domain_config(entry)
        except (KeyError, TypeError, ValueError) as e:
            raise XlParseError(command, f"{where}: {e}") from None
        if cfg.domid in out:
            raise XlParseError(command, f"{where}: domid {cfg.domid} appears twice")
        out[cfg.domid] = cfg
    return out


def _obj(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} is not an object")
    return value


def _opt_int(d: Mapping[str, object], key: str) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{key} is not a non-negative integer: {v!r}")
    return v


def _affinities(b_info: Mapping[str, object], key: str) -> tuple[CpuSet, ...] | None:
    v = b_info.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not all(
        isinstance(m, list) and all(isinstance(c, int) and c >= 0 for c in m) for m in v
    ):
        raise ValueError(f"{key} is not a list of cpu lists")
    return tuple(frozenset(m) for m in v)


def _domain_config(entry: object) -> XlDomainConfig:
    e = _obj(entry, "entry")
    domid = e["domid"]
    if not isinstance(domid, int) or isinstance(domid, bool) or domid < 0:
        raise ValueError(f"domid is not a non-negative integer: {domid!r}")
    config = _obj(e["config"], "config")
    c_info = _obj(config["c_info"], "c_info")
    b_info = _obj(config.get("b_info", {}), "b_info")
    name = c_info["name"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"name is not a non-empty string: {name!r}")
    uuid = c_info.get("uuid")
    if uuid is not None and (not isinstance(uuid, str) or not _UUID.match(uuid)):
        raise ValueError(f"bad uuid {uuid!r}")
    return XlDomainConfig(
        domid=domid,
        name=name,
        uuid=uuid,
        max_vcpus=_opt_int(b_info, "max_vcpus"),
        max_memkb=_opt_int(b_info, "max_memkb"),
        target_memkb=_opt_int(b_info, "target_memkb"),
        soft_affinity=_affinities(b_info, "vcpu_soft_affinity"),
        hard_affinity=_affinities(b_info, "vcpu_hard_affinity"),
        **_sched_params(b_info),
    )


def _sched_params(b_info: Mapping[str, object]) -> dict[str, int | None]:
    """weight and cap of a credit/credit2 domain's ``sched_params`` (libxl leaves others'
    at its "default" markers: weight/cap -1, absent in the JSON)."""
    raw = b_info.get("sched_params")
    if raw is None:
        return {"weight": None, "cap": None}
    params = _obj(raw, "sched_params")
    if params.get("sched") not in ("credit", "credit2"):
        return {"weight": None, "cap": None}
    weight, cap = _opt_int(params, "weight"), _opt_int(params, "cap")
    if weight is not None and not 1 <= weight <= 65535:
        raise ValueError(f"sched_params weight {weight} is not in 1..65535")
    if cap is not None and cap > 65535:
        raise ValueError(f"sched_params cap {cap} is not in 0..65535")
    return {"weight": weight, "cap": cap}


NIL_UUID = "00000000-0000-0000-0000-000000000000"


def domains_from(
    rows: Sequence[XlListRow],
    configs: Mapping[int, XlDomainConfig] | None = None,
    sched: Mapping[int, SchedParams] | None = None,
) -> list[DomainInfo]:
    """DomainInfo per `xl list` row, ordered by domid. The row gives state, pool and
    UUID (with -v -c); `xl list -l` adds the vCPU count (else: online vCPUs), the
    exact memory target (else: the row's MiB) and the scheduler weight and cap (else:
    ``sched``, from `xl sched-credit[2]`; else xl's defaults)."""
    out: list[DomainInfo] = []
    for row in sorted(rows, key=lambda r: r.domid):
        cfg = (configs or {}).get(row.domid)
        if cfg is not None and cfg.name != row.name:
            cfg = None  # the domid was reused between the two calls: trust the row only
        uuid = row.uuid or (cfg.uuid if cfg else None) or NIL_UUID
        vcpus = cfg.max_vcpus if cfg and cfg.max_vcpus is not None else row.vcpus_online
        mem = cfg.target_memkb if cfg and cfg.target_memkb is not None else row.memory_mib * 1024
        listed = (sched or {}).get(row.domid)
        if listed is not None and listed.name != row.name:
            listed = None  # domid reused
        weight = cfg.weight if cfg and cfg.weight is not None else (
            listed.weight if listed else DEFAULT_WEIGHT)
        cap = cfg.cap if cfg and cfg.cap is not None else (listed.cap if listed else 0)
        out.append(
            DomainInfo(
                domid=row.domid,
                name=row.name,
                uuid=uuid,
                state=row.state,
                vcpus=vcpus,
                memory_kib=mem,
                pool=row.pool or "Pool-0",
                weight=weight,
                cap=cap,
            )
        )
    return out


# --- xl sched-credit / xl sched-credit2 ----------------------------------------------------------

DEFAULT_WEIGHT = 256  # credit1's and credit2's default (CSCHED_DEFAULT_WEIGHT, CSCHED2_...)


@dataclass(frozen=True, slots=True)
class SchedParams:
    """One row of `xl sched-credit[2]`: a domain's weight and cap in its pool."""

    domid: int
    name: str
    pool: str | None  # from the `Cpupool NAME:` line above it (None with -d, no header)
    weight: int  # 1..65535
    cap: int  # % of one pCPU, 0 = none


# Xen 4.17.7 (tests/fixtures/xl/2node-sched/): credit1 pools print
# `Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us`, credit2 pools
# `Cpupool c2: ratelimit=1000us`; then one `Name ID Weight Cap` header per pool. With no
# pool of that scheduler, the output is empty.
_POOL_LINE = re.compile(r"^Cpupool (?P<pool>\S+): [\w-]+=\S+(?: [\w-]+=\S+)*$")
_SCHED_HEADER = re.compile(r"^Name\s+ID\s+Weight\s+Cap$")
_SCHED_ROW = re.compile(r"^(?P<name>\S.*?)\s+(?P<domid>\d+)\s+(?P<weight>\d+)\s+(?P<cap>\d+)$")


def parse_sched_credit(text: str, command: str = "xl sched-credit") -> dict[int, SchedParams]:
    """Parse `xl sched-credit` or `xl sched-credit2` (all pools, or ``-d DOM``):
    domid -> weight and cap. Strict: every line is a pool line, the header right
    after it (or first, with ``-d``), or a domain row under a header."""
    out: dict[int, SchedParams] = {}
    pool: str | None = None
    state = "start"  # start | pool (header due) | rows
    for no, line in _lines(text):
        if not line.strip():
            raise XlParseError(command, "blank line", no, line)
        m = _POOL_LINE.match(line)
        if m is not None:
            if state == "pool":
                raise XlParseError(command, "pool line without a header after the last", no, line)
            pool, state = m.group("pool"), "pool"
            continue
        if _SCHED_HEADER.match(line):
            if state == "rows":
                raise XlParseError(command, "a second header without its `Cpupool` line", no, line)
            state = "rows"
            continue
        if state != "rows":
            raise XlParseError(command, "expected a `Cpupool NAME:` line or the header", no, line)
        r = _SCHED_ROW.match(line)
        if r is None:
            raise XlParseError(command, "not a `Name ID Weight Cap` row", no, line)
        domid, weight, cap = int(r.group("domid")), int(r.group("weight")), int(r.group("cap"))
        if not 1 <= weight <= 65535:
            raise XlParseError(command, f"weight {weight} is not in 1..65535", no, line)
        if cap > 65535:
            raise XlParseError(command, f"cap {cap} is not in 0..65535", no, line)
        if domid in out:
            raise XlParseError(command, f"domain {domid} listed twice", no, line)
        out[domid] = SchedParams(domid, r.group("name"), pool, weight, cap)
    if state == "pool":
        raise XlParseError(command, "output ends after a `Cpupool` line (no header)")
    if text and not text.endswith("\n"):
        # xl ends every line: a last row without one may be cut inside its cap.
        last = text.splitlines()
        raise XlParseError(command, "output cut short (no newline at the end)", len(last), last[-1])
    return out


# --- xl vcpu-list --------------------------------------------------------------------------------

_VCPU_HEADER = re.compile(
    r"^Name\s+ID\s+VCPU\s+CPU\s+State\s+Time\(s\)\s+Affinity \(Hard / Soft\)$"
)
_VCPU_ROW = re.compile(
    r"^(?P<name>\S.*?)\s+(?P<domid>\d+)\s+(?P<vcpu>\d+)\s+(?P<cpu>\d+|-)\s+"
    r"(?P<state>[r-][b-][p-])\s+(?P<time>\d+\.\d)\s+(?P<hard>\S+) / (?P<soft>\S+)$"
)


@dataclass(frozen=True, slots=True)
class XlVcpuRow:
    name: str
    vcpu: VcpuInfo


def parse_vcpu_list_rows(
    text: str, all_cpus: CpuSet, command: str = "xl vcpu-list"
) -> list[XlVcpuRow]:
    """Parse `xl vcpu-list [dom...]`; `all_cpus` resolves the mask ``all``."""
    lines = list(_lines(text))
    if not lines:
        raise XlParseError(command, "empty output (no header line)")
    no, header = lines[0]
    if not _VCPU_HEADER.match(header):
        raise XlParseError(command, "not the vcpu-list header", no, header)
    out: list[XlVcpuRow] = []
    seen: set[tuple[int, int]] = set()
    for no, line in lines[1:]:
        if not line.strip():
            continue
        m = _VCPU_ROW.match(line)
        if m is None:
            raise XlParseError(command, "not a vCPU row", no, line)
        domid, vcpu = int(m.group("domid")), int(m.group("vcpu"))
        if (domid, vcpu) in seen:
            raise XlParseError(command, f"d{domid}v{vcpu} listed twice", no, line)
        seen.add((domid, vcpu))
        flags, cpu_text = m.group("state"), m.group("cpu")
        # xl prints `-` and `--p` for an offline vCPU, and `r`/`b` only when online.
        if (cpu_text == "-") != (flags == "--p"):
            raise XlParseError(command, f"CPU {cpu_text!r} does not fit state {flags!r}", no, line)
        if flags == "--p":
            state, cpu = VcpuState.OFFLINE, None
        else:
            if flags[2] == "p" or flags[:2] == "rb":
                raise XlParseError(command, f"impossible state {flags!r}", no, line)
            if flags[0] == "r":
                state = VcpuState.RUNNING
            elif flags[1] == "b":
                state = VcpuState.BLOCKED
            else:
                state = VcpuState.RUNNABLE
            cpu = int(cpu_text)
            if cpu not in all_cpus:
                raise XlParseError(command, f"pCPU {cpu} is not on this host", no, line)
        hard = _cpuset(command, no, line, m.group("hard"), all_cpus)
        soft = _cpuset(command, no, line, m.group("soft"), all_cpus)
        if not (hard | soft) <= all_cpus:
            raise XlParseError(command, "affinity names pCPUs not on this host", no, line)
        info = VcpuInfo(
            domid=domid,
            vcpu=vcpu,
            cpu=cpu,
            state=state,
            time_ns=round(float(m.group("time")) * 1e9),
            hard=hard,
            soft=soft,
        )
        out.append(XlVcpuRow(m.group("name"), info))
    return out


def parse_vcpu_list(text: str, all_cpus: CpuSet, command: str = "xl vcpu-list") -> list[VcpuInfo]:
    return [row.vcpu for row in parse_vcpu_list_rows(text, all_cpus, command)]


def with_paused_domains(vcpus: Sequence[VcpuInfo], paused: frozenset[int]) -> list[VcpuInfo]:
    """vcpu-list cannot show that a domain is paused: mark its online vCPUs PAUSED."""
    out: list[VcpuInfo] = []
    for v in vcpus:
        if v.domid in paused and v.state is not VcpuState.OFFLINE:
            v = VcpuInfo(v.domid, v.vcpu, v.cpu, VcpuState.PAUSED, v.time_ns, v.hard, v.soft)
        out.append(v)
    return out


# --- xl debug-keys u; xl dmesg -------------------------------------------------------------------

_DMESG_PREFIX = re.compile(r"^\(XEN\)(?: \[[^\]]*\])? ?")
_DUMP_START = "Memory location of each domain:"
_DUMP_NODE_HDR = re.compile(r"^NODE(\d+) start->\d+ size->\d+ free->\d+$")
_DUMP_DOMAIN = re.compile(r"^Domain (\d+) \(total: (\d+)\):(?P<inline>.*)$")
_DUMP_NODE = re.compile(r"Node (\d+): (\d+)")
_DUMP_OTHER_KEY = re.compile(r"^'.' pressed -> ")


def parse_numa_dump(
    text: str, page_kib: int = PAGE_KIB, command: str = "xl dmesg"
) -> dict[int, tuple[int, ...]]:
    """KiB per node for each domid, from the last debug-key `u` dump in `xl dmesg`.

    4.17 prints ``Domain N (total: P):`` then one ``    Node i: P`` line per
    online node (pages); a one-line ``Domain N (total: P): Node 0: P  Node 1: P``
    form is accepted too. Lines of other messages interleaved with the dump are
    skipped; a dump whose last domain lacks node lines (truncated) is an error.
    """
    lines = list(_lines(text))
    start = None
    for i, (_, line) in enumerate(lines):
        if _DMESG_PREFIX.sub("", line, count=1).strip() == _DUMP_START:
            start = i
    if start is None:
        raise XlParseError(command, f"no {_DUMP_START!r} (was `xl debug-keys u` run?)")
    # Online nodes from the NODEi header lines just before the dump, when present.
    nodes_online: int | None = None
    for _, line in reversed(lines[:start]):
        body = _DMESG_PREFIX.sub("", line, count=1).strip()
        if _DUMP_NODE_HDR.match(body):
            nodes_online = (nodes_online or 0) + 1
        elif body.startswith("CPU"):
            continue
        else:
            break
    result: dict[int, list[int]] = {}
    where: dict[int, tuple[int, str]] = {}
    current: int | None = None

    def close(domid: int | None) -> None:
        if domid is None:
            return
        counts = result[domid]
        no, line = where[domid]
        if not counts:
            raise XlParseError(command, f"domain {domid} has no node lines", no, line)
        if nodes_online is not None and len(counts) != nodes_online:
            raise XlParseError(
                command, f"domain {domid}: {len(counts)} node lines, {nodes_online} nodes", no, line
            )

    def add_node(domid: int, node: int, pages: int, no: int, line: str) -> None:
        counts = result[domid]
        if node != len(counts):
            raise XlParseError(command, f"expected node {len(counts)}, got node {node}", no, line)
        counts.append(pages * page_kib)

    for no, line in lines[start + 1 :]:
        body = _DMESG_PREFIX.sub("", line, count=1).strip()
        if m := _DUMP_DOMAIN.match(body):
            close(current)
            current = int(m.group(1))
            if current in result:
                raise XlParseError(command, f"domain {current} dumped twice", no, line)
            result[current], where[current] = [], (no, line)
            for n in _DUMP_NODE.finditer(m.group("inline")):
                add_node(current, int(n.group(1)), int(n.group(2)), no, line)
            continue
        if body.startswith("Node "):
            n2 = re.fullmatch(r"Node (\d+): (\d+)", body)
            if n2 is None:
                raise XlParseError(command, "bad node line", no, line)
            if current is None:
                raise XlParseError(command, "node line before any domain", no, line)
            add_node(current, int(n2.group(1)), int(n2.group(2)), no, line)
            continue
        if _DUMP_OTHER_KEY.match(body):
            break  # another debug key's dump: ours is over
        if body.startswith("Domain ") or body.startswith("Node"):
            raise XlParseError(command, "bad domain line", no, line)
        # vNUMA layout lines and unrelated messages interleaved by other CPUs: skip.
    close(current)
    if not result:
        raise XlParseError(command, "the memory dump lists no domain")
    if len({len(v) for v in result.values()}) != 1:
        raise XlParseError(command, "domains list different numbers of nodes")
    return {d: tuple(v) for d, v in result.items()}


# --- xl cpupool-list [-c] ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class XlPool:
    name: str
    ncpus: int
    sched: str
    active: bool
    domains: int


def parse_cpupool_list(text: str, command: str = "xl cpupool-list") -> list[XlPool]:
    lines = list(_lines(text))
    if not lines or not re.match(r"^Name\s+CPUs\s+Sched\s+Active\s+Domain count$", lines[0][1]):
        no, line = lines[0] if lines else (1, "")
        raise XlParseError(command, "not the cpupool-list header", no, line)
    pools: list[XlPool] = []
    for no, line in lines[1:]:
        if not line.strip():
            continue
        m = re.match(r"^(\S+)\s+(\d+)\s+(\S+)\s+([yn])\s+(\d+)$", line)
        if m is None:
            raise XlParseError(command, "not a pool row", no, line)
        pools.append(
            XlPool(m.group(1), int(m.group(2)), m.group(3), m.group(4) == "y", int(m.group(5)))
        )
    return pools


def parse_cpupool_cpus(text: str, command: str = "xl cpupool-list -c") -> dict[str, CpuSet]:
    lines = list(_lines(text))
    if not lines or not re.match(r"^Name\s+CPU list$", lines[0][1]):
        no, line = lines[0] if lines else (1, "")
        raise XlParseError(command, "not the `Name CPU list` header", no, line)
    pools: dict[str, CpuSet] = {}
    for no, line in lines[1:]:
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) == 1:
            pools[parts[0]] = frozenset()  # a pool with no pCPUs prints an empty list
            continue
        if len(parts) != 2:
            raise XlParseError(command, "not a `name cpus` row", no, line)
        pools[parts[0]] = _cpuset(command, no, line, parts[1], None)
    return pools
