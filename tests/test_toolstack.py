"""The simulated toolstack: xenstore as xl/libxl leave it, read back through the embedded
xenstored's in-process dom0 API."""

from __future__ import annotations

import pytest

from agent.sim.engine import SimHost
from agent.sim.run import Runner
from agent.sim.scenario import parse_scenario
from agent.sim.spec import DomainSpec, HostSpec, Idle, NodeSpec, PoolSpec
from agent.sim.toolstack import SimToolstack
from agent.xenstore.wire import Access, Perm, XenstoreError


def n(domid: int) -> Perm:
    return Perm(Access.NONE, domid)


def r(domid: int) -> Perm:
    return Perm(Access.READ, domid)


@pytest.fixture
def host() -> SimHost:
    return SimHost(HostSpec(nodes=(NodeSpec(2, 4096), NodeSpec(2, 4096))))


def test_dom0_gets_what_xen_init_dom0_writes(host: SimHost) -> None:
    ts = SimToolstack.for_host(HostSpec(
        nodes=(NodeSpec(2, 4096), NodeSpec(2, 4096)),
        pools=(PoolSpec("guests", frozenset({2, 3}), "credit1"),)))
    domid = host.create_domain(DomainSpec("Domain-0", 1, 512, Idle(), is_dom0=True))
    ts.domain_created(host, domid)
    s = ts.session
    assert s.read("/local/domain/0/name") == b"Domain-0"
    assert s.read("/local/domain/0/domid") == b"0"
    assert s.read("/local/pool/0/name") == b"Pool-0"
    assert s.read("/local/pool/1/name") == b"guests"


def test_guest_build_and_teardown(host: SimHost) -> None:
    ts = SimToolstack()
    ts.domain_created(host, host.create_domain(DomainSpec("Domain-0", 1, 512, is_dom0=True)))
    watcher = ts.hub.session()
    for path in ("@introduceDomain", "@releaseDomain"):
        watcher.watch(path, path)
    watcher.watch("/local/domain/0/backend", "backend")
    assert len(watcher.take_events()) == 3  # each fires once on registration

    host.advance(1_250_000_000)
    domid = host.create_domain(DomainSpec("web", 2, 1024, Idle()))
    (info,) = [i for i in host.domain_info() if i.domid == domid]
    ts.domain_created(host, domid)
    s = ts.session
    dom = f"/local/domain/{domid}"
    vm = f"/vm/{info.uuid}"

    events = watcher.take_events()
    assert (b"@introduceDomain", b"@introduceDomain") in events
    assert (f"/local/domain/0/backend/vbd/{domid}/51712/kthread-pid".encode(), b"backend") \
        in events
    assert s.is_domain_introduced(domid)

    # libxl__domain_make + libxl__build_post
    assert s.read(f"{dom}/name") == b"web"
    assert s.read(f"{dom}/domid") == str(domid).encode()
    assert s.read(f"{dom}/vm") == vm.encode()
    assert s.read(f"{dom}/memory/target") == str(1024 * 1024).encode()
    assert [s.read(f"{dom}/cpu/{i}/availability") for i in range(2)] == [b"online"] * 2
    assert s.read(f"{vm}/uuid") == info.uuid.encode()
    assert s.read(f"{vm}/name") == b"web"
    assert s.read(f"{vm}/start_time") == b"1.25"
    assert s.read(f"/libxl/{domid}/type") == b"pvh"

    # Permissions as libxl sets them: dom0 owns the domain's directory (the guest may
    # read it); the guest owns the few nodes it must write.
    assert s.get_perms(dom) == [n(0), r(domid)]
    assert s.get_perms(vm) == [n(0), r(domid)]
    assert s.get_perms(f"/libxl/{domid}") == [n(0)]
    assert s.get_perms(f"{dom}/control/shutdown") == [n(domid)]
    assert s.get_perms(f"{dom}/data") == [n(domid)]
    assert s.get_perms(f"{dom}/name") == [n(0), r(domid)]  # inherited from its parent

    # One vbd and one vif, frontend owned by the guest, backend by dom0.
    vbd_fe, vbd_be = f"{dom}/device/vbd/51712", f"/local/domain/0/backend/vbd/{domid}/51712"
    vif_fe, vif_be = f"{dom}/device/vif/0", f"/local/domain/0/backend/vif/{domid}/0"
    assert s.read(f"{vbd_fe}/backend") == vbd_be.encode()
    assert s.read(f"{vbd_be}/frontend") == vbd_fe.encode()
    assert s.read(f"{vif_fe}/backend") == vif_be.encode()
    assert s.get_perms(vbd_fe) == [n(domid), r(0)]
    assert s.get_perms(vbd_be) == [n(0), r(domid)]
    assert s.get_perms(f"{vif_fe}/mtu") == [n(0), r(domid)]  # ro_frontend_perms
    assert s.read(f"{vbd_be}/frontend-id") == str(domid).encode()
    assert s.read(f"/libxl/{domid}/device/vbd/51712/frontend") == vbd_fe.encode()
    # The dom0 backend thread announces itself; both ends are connected.
    pid = ts.backend_pid(domid)
    assert s.read(f"{vbd_be}/kthread-pid") == str(pid).encode()
    assert s.read(f"{vif_be}/hotplug-status") == b"connected"
    for path in (vbd_fe, vbd_be, vif_fe, vif_be):
        assert s.read(f"{path}/state") == b"4"

    # The guest can write what it owns, not what dom0 owns.
    ts.guest_write(domid, f"{dom}/data/hello", "1")
    with pytest.raises(XenstoreError) as info_err:
        ts.guest_write(domid, f"{dom}/name", "evil")
    assert info_err.value.name == "EACCES"
    with pytest.raises(XenstoreError):
        ts.guest_write(domid, f"{vbd_be}/kthread-pid", "1")

    # Destroy: everything goes, then @releaseDomain.
    host.destroy(domid)
    ts.domain_destroyed(host, domid)
    for path in (dom, vm, f"/libxl/{domid}", vbd_be, f"/local/domain/0/backend/vbd/{domid}",
                 "/local/domain/0/backend"):
        assert not s.exists(path), path
    assert s.read("/local/domain/0/name") == b"Domain-0"  # not empty, so not cleaned up
    assert (b"@releaseDomain", b"@releaseDomain") in watcher.take_events()
    assert not s.is_domain_introduced(domid)
    with pytest.raises(KeyError):
        ts.domain_destroyed(host, domid)


def test_two_guests_keep_each_others_backends(host: SimHost) -> None:
    ts = SimToolstack()
    a = host.create_domain(DomainSpec("a", 1, 256, Idle()))
    ts.domain_created(host, a)
    b = host.create_domain(DomainSpec("b", 1, 256, Idle()))
    ts.domain_created(host, b)
    assert ts.backend_pid(a) != ts.backend_pid(b)
    host.destroy(a)
    ts.domain_destroyed(host, a)
    s = ts.session
    assert s.directory("/local/domain/0/backend/vbd") == [str(b).encode()]
    assert s.read(f"/local/domain/{b}/name") == b"b"


def test_runner_drives_the_toolstack() -> None:
    scenario = parse_scenario("""
duration_s = 0.05
[host]
[[host.nodes]]
cpus = 2
memory_mib = 2048
[dom0]
vcpus = 1
memory_mib = 256
[domains.vm1]
vcpus = 1
memory_mib = 256
workload = "idle"
[[timeline]]
at_s = 0.02
action = "destroy"
domain = "vm1"
[[timeline]]
at_s = 0.03
action = "create"
domain = "vm1"
""", source="t.toml")
    ts = SimToolstack()
    watcher = ts.hub.session()
    watcher.watch("@releaseDomain", "rel")
    watcher.watch("@introduceDomain", "intro")
    watcher.take_events()
    runner = Runner(scenario, listeners=[ts])
    runner.start()
    s = ts.session
    assert s.read("/local/domain/0/name") == b"Domain-0"
    assert s.read("/local/domain/1/name") == b"vm1"
    assert watcher.take_events() == [(b"@introduceDomain", b"intro")]
    runner.run()
    # Destroyed at 20 ms, created again at 30 ms with a new domid.
    assert watcher.take_events() == [(b"@releaseDomain", b"rel"), (b"@introduceDomain", b"intro")]
    assert not s.exists("/local/domain/1")
    assert s.read("/local/domain/2/name") == b"vm1"
