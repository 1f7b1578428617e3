"""Xenstore as a real toolstack leaves it, for the simulated host.

The simulator owns an embedded xenstored (``agent.xenstore``) and, for each
domain the run creates or destroys, does to it what xl/libxl 4.17 do, through
an in-process dom0 session: same paths, same values, same permissions, same
transactions, so that anything watching xenstore (the agent) sees what it
would see on a real host. The parts and their sources (tools/libs/light/):

- ``libxl__domain_make`` (libxl_create.c): one transaction that makes
  ``/local/domain/<id>`` and ``/vm/<uuid>`` (owner dom0, guest may read),
  ``/libxl/<id>`` (dom0 only), the name (``libxl__domain_rename``), and the
  few subdirectories the guest owns (``device/suspend/event-channel``,
  ``control/shutdown``, ``control/feature-*``, ``control/sysrq``, ``data``,
  ``drivers``, ``feature``, ``attr``, ``error``);
- ``libxl__build_post`` (libxl_dom.c): ``memory/*``, ``domid``, ``store/*``,
  ``cpu/<n>/availability`` in a transaction, then INTRODUCE, which fires
  ``@introduceDomain``;
- ``libxl__device_generic_add`` (libxl_device.c) with the vbd keys of
  ``device_disk_add`` (libxl_disk.c) and the vif keys of
  ``libxl__set_xenstore_nic`` (libxl_nic.c): frontend owned by the guest
  (dom0 may read), backend under ``/local/domain/0/backend/<kind>/<id>/<devid>``
  owned by dom0 (the guest may read), a copy under ``/libxl/<id>/device``;
- then the dom0 side of the device: the simulated blkback thread writes its
  ``kthread-pid`` (as XenServer's blkback/tapback do; xenopsd reads it), the
  vif hotplug script writes ``hotplug-status``, both backends go Connected,
  and the guest, through its own ring connection, sets its frontends Connected;
- on destroy, ``libxl__device_destroy`` (``libxl__xs_path_cleanup``: the path
  and its parents left empty) for each device, then ``devices_destroy_cb``
  (libxl_domain.c) removes ``/vm/<uuid>``, ``/local/domain/<id>`` and
  ``/libxl/<id>``; xenstored then learns from the hypervisor that the domain
  is gone and releases it, firing ``@releaseDomain`` (done here with RELEASE).
- dom0 gets what ``xen-init-dom0`` writes: its ``domid``, its ``name`` and a
  ``/local/pool/<id>/name`` per cpupool.
- dom0's kernel starts the backend threads (``dom0``, a
  ``agent.sim.dom0_procs.SimDom0Processes``): blkback's thread (the pid in
  ``kthread-pid``) and netback's two threads of queue 0, found by name, as on
  Linux; they end when the guest is destroyed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.hypervisor.model import DomainInfo
from agent.sim.dom0_procs import SimDom0Processes
from agent.sim.run import Host
from agent.sim.scenario import POOL0_NAME
from agent.sim.spec import HostSpec
from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.hub import Dom0Session, XenstoreHub
from agent.xenstore.wire import Access, Op, Packet, Perm, XenstoreError, write_payload

XENBUS_INITIALISING = "1"
XENBUS_CONNECTED = "4"
VBD_DEVID = 51712  # xvda: (202 << 8) | 0, as libxl_device_disk_dev_number gives it
VIF_DEVID = 0
STORE_PORT = 1  # the xenstore event channel libxl allocates first in a new domain
STORE_GFN = 0xFEFFC  # where the xenstore ring page sits (HVM/PVH special page)
FIRST_BACKEND_PID = 2000  # pids of the simulated dom0 backend threads count up from here


def _n(domid: int) -> Perm:
    return Perm(Access.NONE, domid)


def _r(domid: int) -> Perm:
    return Perm(Access.READ, domid)


@dataclass(frozen=True, slots=True)
class GuestRecord:
    """What the toolstack remembers of a domain it built (for the teardown)."""

    domid: int
    uuid: str
    name: str
    vbd_pid: int
    devices: tuple[tuple[str, int], ...]  # (kind, devid)


class SimToolstack:
    """The xl/libxl of the simulated host, writing to its embedded xenstored.

    Plug it into a run as a ``DomainListener``: ``Runner(scenario,
    listeners=[toolstack])``. ``daemon`` and ``hub`` are what the agent's
    xenstore client connects to (in process, or through ``agent.xenstore.server``).
    """

    def __init__(
        self, daemon: XenstoreDaemon | None = None, *, pools: Sequence[str] = ("Pool-0",)
    ) -> None:
        self._alive: set[int] = {0}
        self.daemon = daemon if daemon is not None else XenstoreDaemon(
            domain_exists=self._alive.__contains__)
        self.hub = XenstoreHub.of(self.daemon)
        self.session: Dom0Session = self.hub.session()
        self.pools = tuple(pools)
        self.guests: dict[int, GuestRecord] = {}
        self._rings: dict[int, _GuestRing] = {}
        self._next_pid = FIRST_BACKEND_PID
        self.dom0 = SimDom0Processes()

    @classmethod
    def for_host(cls, host: HostSpec) -> SimToolstack:
        """A toolstack that names the host's cpupools (Pool-0 first) as xl would."""
        return cls(pools=(POOL0_NAME, *(p.name for p in host.pools)))

    # -- DomainListener --

    def domain_created(self, host: Host, domid: int) -> None:
        info = _info(host, domid)
        self._alive.add(domid)
        if domid == 0:
            self.dom0.dom0_vcpus = info.vcpus
            self._init_dom0()
        else:
            self._build(info, host.now_ns)

    def domain_destroyed(self, host: Host, domid: int) -> None:
        record = self.guests.pop(domid, None)
        if record is None:
            raise KeyError(f"domain {domid} was not built by this toolstack")
        for kind, devid in record.devices:
            self._device_destroy(domid, kind, devid)
        s = self.session
        for path in (f"/vm/{record.uuid}", f"/local/domain/{domid}", f"/libxl/{domid}"):
            _rm(s, path)
        self._alive.discard(domid)
        self.dom0.stop_domain(domid)
        ring = self._rings.pop(domid, None)
        s.release_domain(domid)  # xenstored's domain_cleanup: fires @releaseDomain
        if ring is not None:
            ring.close()

    def guest_write(self, domid: int, path: str, value: str) -> None:
        """Write as the guest itself, through its ring (XenstoreError if it may not)."""
        ring = self._rings.get(domid)
        if ring is None:
            raise KeyError(f"domain {domid} has no ring here")
        ring.write(path, value)

    def backend_pid(self, domid: int) -> int:
        """The pid of the simulated dom0 thread serving the domain's disk."""
        return self.guests[domid].vbd_pid

    # -- dom0 --

    def _init_dom0(self) -> None:
        s = self.session
        s.write("/local/domain/0/domid", "0")
        s.write("/local/domain/0/name", "Domain-0")
        for pool_id, name in enumerate(self.pools):
            s.write(f"/local/pool/{pool_id}/name", name)

    # -- domain build --

    def _build(self, info: DomainInfo, now_ns: int) -> None:
        domid, uuid = info.domid, info.uuid
        start_time = f"{now_ns // 1_000_000_000}.{now_ns // 10_000_000 % 100:02d}"
        dom = f"/local/domain/{domid}"
        vm = f"/vm/{uuid}"
        lx = f"/libxl/{domid}"
        ro = [_n(0), _r(domid)]  # libxl's roperm
        rw = [_n(domid)]  # libxl's rwperm: the guest owns it
        no = [_n(0)]  # libxl's noperm

        def make(t: int) -> None:  # libxl__domain_make
            s = self.session
            _rm(s, dom, t)
            _mknod(s, dom, ro, t)
            _rm(s, vm, t)
            _mknod(s, vm, ro, t)
            _rm(s, lx, t)
            _mknod(s, lx, no, t)
            _mknod(s, f"{lx}/device", no, t)
            s.write(f"{dom}/vm", vm, t)
            s.write(f"{dom}/name", info.name, t)  # libxl__domain_rename
            s.write(f"{vm}/name", info.name, t)
            _mknod(s, f"{dom}/cpu", ro, t)
            _mknod(s, f"{dom}/memory", ro, t)
            _mknod(s, f"{dom}/device", ro, t)
            _mknod(s, f"{dom}/device/suspend/event-channel", rw, t)
            _mknod(s, f"{dom}/control", ro, t)
            for leaf in ("shutdown", "feature-poweroff", "feature-reboot", "feature-suspend",
                         "sysrq"):
                _mknod(s, f"{dom}/control/{leaf}", rw, t)
            for sub in ("data", "drivers", "feature", "attr", "error"):
                _mknod(s, f"{dom}/{sub}", rw, t)
            s.write(f"{vm}/uuid", uuid, t)
            s.write(f"{vm}/name", info.name, t)
            s.write(f"{dom}/control/platform-feature-multiprocessor-suspend", "1", t)
            s.write(f"{dom}/control/platform-feature-xs_reset_watches", "1", t)
            s.write(f"{lx}/type", "pvh", t)

        def build_post(t: int) -> None:  # libxl__build_post
            s = self.session
            ents = {
                "memory/static-max": str(info.memory_kib),
                "memory/target": str(info.memory_kib),
                "memory/videoram": "-1",  # LIBXL_MEMKB_DEFAULT: PVH has no video memory
                "domid": str(domid),
                "store/port": str(STORE_PORT),
                "store/ring-ref": str(STORE_GFN),
            }
            for vcpu in range(info.vcpus):
                ents[f"cpu/{vcpu}/availability"] = "online"
            for key, value in ents.items():
                s.write(f"{dom}/{key}", value, t)
            s.write(f"{vm}/start_time", start_time, t)  # PVH: vments is only this

        self._transaction(make)
        self._transaction(build_post)
        self.session.introduce_domain(domid, STORE_GFN, STORE_PORT)

        vbd_pid = self._next_pid
        self._next_pid += 1
        self._device_add(domid, "vbd", VBD_DEVID, back={
            "params": f"/dev/sim/{info.name}-disk0",
            "script": "/etc/xen/scripts/block",
            "frontend-id": str(domid),
            "online": "1",
            "removable": "0",
            "bootable": "1",
            "state": XENBUS_INITIALISING,
            "dev": "xvda",
            "type": "phy",
            "mode": "w",
            "device-type": "disk",
            "discard-enable": "1",
            "specification": "xen",
        }, front={
            "backend-id": "0",
            "state": XENBUS_INITIALISING,
            "virtual-device": str(VBD_DEVID),
            "device-type": "disk",
            "trusted": "1",
        }, ro_front={})
        mac = f"00:16:3e:{domid >> 16 & 0xFF:02x}:{domid >> 8 & 0xFF:02x}:{domid & 0xFF:02x}"
        self._device_add(domid, "vif", VIF_DEVID, back={
            "frontend-id": str(domid),
            "online": "1",
            "state": XENBUS_INITIALISING,
            "script": "/etc/xen/scripts/vif-bridge",
            "mac": mac,
            "bridge": "xenbr0",
            "handle": str(VIF_DEVID),
            "type": "vif",
            "hotplug-status": "",
        }, front={
            "backend-id": "0",
            "state": XENBUS_INITIALISING,
            "handle": str(VIF_DEVID),
            "mac": mac,
            "trusted": "1",
        }, ro_front={"mtu": "1500"})
        self.guests[domid] = GuestRecord(domid, uuid, info.name, vbd_pid,
                                         (("vbd", VBD_DEVID), ("vif", VIF_DEVID)))
        # dom0's kernel threads for them (xen-blkback, xen-netback queue 0)
        self.dom0.start(vbd_pid, f"blkback.{domid}.xvda", domid, "vbd")
        for role in ("guest-rx", "dealloc"):
            self.dom0.start(self._next_pid, f"vif{domid}.{VIF_DEVID}-q0-{role}", domid, "vif")
            self._next_pid += 1
        self._connect_devices(domid, vbd_pid)

    def _device_add(
        self, domid: int, kind: str, devid: int, *, back: dict[str, str],
        front: dict[str, str], ro_front: dict[str, str],
    ) -> None:
        """libxl__device_generic_add, backend in dom0."""
        fe = f"/local/domain/{domid}/device/{kind}/{devid}"
        be = f"/local/domain/0/backend/{kind}/{domid}/{devid}"
        lx = f"/libxl/{domid}/device/{kind}/{devid}"
        fe_perms = [_n(domid), _r(0)]
        be_perms = [_n(0), _r(domid)]  # also ro_frontend_perms

        def add(t: int) -> None:
            s = self.session
            _rm(s, lx, t)
            s.write(f"{lx}/frontend", fe, t)
            s.write(f"{lx}/backend", be, t)
            _rm(s, fe, t)
            s.mkdir(fe, t)
            s.set_perms(fe, fe_perms, t)
            s.write(f"{fe}/backend", be, t)
            for key, value in front.items():  # libxl__xs_writev_perms
                s.write(f"{fe}/{key}", value, t)
                s.set_perms(f"{fe}/{key}", fe_perms, t)
            for key, value in ro_front.items():
                s.write(f"{fe}/{key}", value, t)
                s.set_perms(f"{fe}/{key}", be_perms, t)
            _rm(s, be, t)
            s.mkdir(be, t)
            s.set_perms(be, be_perms, t)
            s.write(f"{be}/frontend", fe, t)
            for key, value in back.items():
                s.write(f"{be}/{key}", value, t)
            for key, value in back.items():
                s.write(f"{lx}/{key}", value, t)

        self._transaction(add)

    def _connect_devices(self, domid: int, vbd_pid: int) -> None:
        """What happens next in dom0 and in the guest: backends and frontends connect."""
        s = self.session
        vbd = f"/local/domain/0/backend/vbd/{domid}/{VBD_DEVID}"
        vif = f"/local/domain/0/backend/vif/{domid}/{VIF_DEVID}"
        s.write(f"{vbd}/kthread-pid", str(vbd_pid))  # the blkback/tapback thread
        s.write(f"{vif}/hotplug-status", "connected")  # vif-bridge ran
        ring = self._rings[domid] = _GuestRing(self.hub, domid)
        for kind, devid in (("vbd", VBD_DEVID), ("vif", VIF_DEVID)):
            ring.write(f"/local/domain/{domid}/device/{kind}/{devid}/state", XENBUS_CONNECTED)
        s.write(f"{vbd}/state", XENBUS_CONNECTED)
        s.write(f"{vif}/state", XENBUS_CONNECTED)

    def _device_destroy(self, domid: int, kind: str, devid: int) -> None:
        """libxl__device_destroy run by the toolstack domain, which is the backend too."""
        fe = f"/local/domain/{domid}/device/{kind}/{devid}"
        be = f"/local/domain/0/backend/{kind}/{domid}/{devid}"
        lx = f"/libxl/{domid}/device/{kind}/{devid}"

        def destroy(t: int) -> None:
            for path in (fe, lx, be):
                _path_cleanup(self.session, path, t)

        self._transaction(destroy)

    def _transaction(self, body: Callable[[int], None]) -> None:
        """Run ``body`` in a transaction, again on EAGAIN, as libxl's retry loops do."""
        s = self.session
        while True:
            t = s.transaction_start()
            try:
                body(t)
            except BaseException:
                s.transaction_end(t, commit=False)
                raise
            try:
                s.transaction_end(t)
            except XenstoreError as exc:
                if exc.name == "EAGAIN":
                    continue
                raise
            return


class _GuestRing:
    """The guest's own xenstore connection (its ring), for what the guest writes."""

    def __init__(self, hub: XenstoreHub, domid: int) -> None:
        self._hub = hub
        self._replies: list[Packet] = []
        self._req = 0
        self.conn = hub.attach(self._deliver, domid)

    def _deliver(self, packet: Packet) -> None:
        if packet.op != Op.WATCH_EVENT:
            self._replies.append(packet)

    def write(self, path: str, value: str) -> None:
        self._req += 1
        self._hub.handle(self.conn, Packet(Op.WRITE, self._req, 0,
                                           write_payload(path.encode(), value.encode())))
        reply = self._replies.pop()
        name = reply.error_name()
        if name is not None:
            raise XenstoreError(name, f"guest write {path}")

    def close(self) -> None:
        self._hub.detach(self.conn)


def _info(host: Host, domid: int) -> DomainInfo:
    for info in host.domain_info():
        if info.domid == domid:
            return info
    raise KeyError(f"the host has no domain {domid}")


def _rm(s: Dom0Session, path: str, t: int = 0) -> None:
    """xs_rm, whose ENOENT libxl ignores."""
    try:
        s.rm(path, t)
    except XenstoreError as exc:
        if exc.name != "ENOENT":
            raise


def _mknod(s: Dom0Session, path: str, perms: list[Perm], t: int) -> None:
    """libxl__xs_mknod: mkdir, then set its permissions."""
    s.mkdir(path, t)
    s.set_perms(path, perms, t)


def _path_cleanup(s: Dom0Session, path: str, t: int) -> None:
    """libxl__xs_path_cleanup: remove the path, then each parent left empty."""
    _rm(s, path, t)
    parent = path.rsplit("/", 1)[0]
    while parent:
        try:
            if s.directory(parent, t):
                return
        except XenstoreError as exc:
            if exc.name == "ENOENT":
                return
            raise
        _rm(s, parent, t)
        parent = parent.rsplit("/", 1)[0]

