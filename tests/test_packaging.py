"""The packages, built for real: the .deb with dpkg-buildpackage, installed into scratch
roots with dpkg (maintainer scripts run, chrootless, with DPKG_ROOT), the unit checked by
``systemd-analyze verify``, the RPM spec by rpmlint / rpmspec and built with rpmbuild.

Each part skips, naming the Debian packages it needs, when its tools are missing;
``make test`` installs them. The builds fetch the hash-pinned wheels with pip
(``XNUMA_WHEELHOUSE=DIR`` serves them from a directory instead).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.audit import records
from agent.audit.writer import AuditWriter

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
VERSION: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
RULES = sorted(p.name for p in (REPO / "rules").glob("*.toml"))
SYSTEM_PYTHON = "/usr/bin/python3"


def need(tools: dict[str, str]) -> None:
    """Skip unless every tool is on PATH; ``tools`` maps tool -> Debian package."""
    missing = sorted({pkg for tool, pkg in tools.items() if shutil.which(tool) is None})
    if missing:
        pytest.skip(f"needs apt packages: {' '.join(missing)}")


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run argv; on failure the assertion message carries its output."""
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, (
        f"{argv} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
        f"\n--- stderr\n{proc.stderr[-4000:]}"
    )
    return proc  # type: ignore[no-any-return]


def installed(*packages: str) -> list[str]:
    """Which of ``packages`` are not installed on this host."""
    missing = []
    for pkg in packages:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f", "${db:Status-Status}", pkg], capture_output=True, text=True
        )
        if proc.stdout != "installed":
            missing.append(pkg)
    return missing


# -- the Debian package --------------------------------------------------------------


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need({"dpkg-buildpackage": "dpkg-dev", "dh": "debhelper", "dh_python3": "dh-python"})
    out = tmp_path_factory.mktemp("deb")
    proc = run(["bash", str(PACKAGING / "build-deb.sh"), str(out)])
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path == out / f"xnuma_{VERSION}_all.deb" and path.is_file()
    return path


def dpkg_root(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """dpkg on a scratch root: its own database, maintainer scripts run on this host with
    DPKG_ROOT set (deb-systemd-helper writes its state under the root)."""
    admin = root / "var/lib/dpkg"
    if not admin.exists():
        (admin / "updates").mkdir(parents=True)
        (admin / "info").mkdir()
        (admin / "status").touch()
    return run([
        "dpkg", f"--instdir={root}", f"--admindir={admin}", "--force-script-chrootless",
        # The scratch database has no python3 etc.; the host's are checked separately.
        "--force-depends", *args,
    ])


@pytest.fixture(scope="module")
def root(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    scratch = tmp_path_factory.mktemp("root")
    proc = dpkg_root(scratch, "--install", str(deb))
    assert f"Setting up xnuma ({VERSION})" in proc.stdout
    return scratch


def field(deb: Path, name: str) -> str:
    return run(["dpkg-deb", "--field", str(deb), name]).stdout.strip()


def test_deb_control(deb: Path) -> None:
    assert field(deb, "Package") == "xnuma"
    assert field(deb, "Version") == VERSION
    assert field(deb, "Architecture") == "all"
    depends = field(deb, "Depends")
    for dep in ("python3 (>= 3.11)", "python3-msgpack (>= 1.0)", "python3-tenacity (>= 8.2)"):
        assert dep in depends
    assert "trio" not in depends  # bundled, Debian's is too old
    conffiles = run(["dpkg-deb", "--info", str(deb), "conffiles"]).stdout
    assert sorted(conffiles.split()) == sorted(
        ["/etc/xnuma/xnuma.toml", *(f"/etc/xnuma/rules.d/{r}" for r in RULES)]
    )


def test_deb_dependencies_resolve_on_this_host(deb: Path) -> None:
    """apt can satisfy the Depends from the archive this host uses."""
    need({"apt-get": "apt"})
    proc = run(["apt-get", "install", "--simulate", "--no-install-recommends", str(deb)])
    assert re.search(rf"^Inst xnuma \(?{re.escape(VERSION)}", proc.stdout, re.M), proc.stdout


def test_installed_layout(root: Path) -> None:
    launcher = root / "usr/bin/xnuma"
    assert launcher.stat().st_mode & 0o777 == 0o755
    assert launcher.read_text().startswith(f"#!{SYSTEM_PYTHON} -I\n")
    lib = root / "usr/lib/xnuma"
    for rel in ("agent/cli/__init__.py", "agent/logsetup.py", "agent/sdnotify.py",
                "trio/__init__.py", "attrs/__init__.py", "sniffio/__init__.py",
                "outcome/__init__.py", "sortedcontainers/__init__.py", "idna/__init__.py"):
        assert (lib / rel).is_file(), rel
    # Debian's own msgpack and tenacity are used, and no library's test suite is shipped.
    assert not (lib / "msgpack").exists() and not (lib / "tenacity").exists()
    assert not list(lib.rglob("_tests"))
    assert not list(lib.rglob("*.pyc")), "byte-compiled at install (py3compile), not shipped"

    same = [
        ("lib/systemd/system/xnuma.service", PACKAGING / "xnuma.service"),
        ("etc/xnuma/xnuma.toml", PACKAGING / "xnuma.toml"),
        *((f"etc/xnuma/rules.d/{r}", REPO / "rules" / r) for r in RULES),
    ]
    for rel, source in same:
        assert (root / rel).read_bytes() == source.read_bytes(), rel
    assert sorted(p.name for p in (root / "etc/xnuma/rules.d").iterdir()) == RULES

    for rel in ("var/log/xnuma", "var/lib/xnuma"):
        st = (root / rel).stat()
        assert stat.S_ISDIR(st.st_mode) and st.st_mode & 0o777 == 0o750, rel


def test_maintainer_scripts_ran_and_left_the_service_disabled(root: Path) -> None:
    status = run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                  "-f", "${db:Status-Abbrev}", "xnuma"]).stdout
    assert status.strip() == "ii"  # postinst configured it
    state = root / "var/lib/systemd/deb-systemd-helper-enabled"
    assert (state / "xnuma.service.dsh-also").is_file()  # postinst's deb-systemd-helper
    assert not list(root.glob("etc/systemd/system/*.wants/xnuma.service"))  # --no-enable


def test_purge_removes_config_logs_and_state(deb: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "root"
    dpkg_root(scratch, "--install", str(deb))
    (scratch / "var/log/xnuma/audit.log").write_bytes(b"x")
    (scratch / "var/lib/xnuma/pins.journal").write_bytes(b"x")
    dpkg_root(scratch, "--remove", "xnuma")
    assert (scratch / "etc/xnuma/xnuma.toml").is_file()  # conffiles stay until purge
    assert not (scratch / "usr/bin/xnuma").exists()
    dpkg_root(scratch, "--purge", "xnuma")
    for rel in ("etc/xnuma", "var/log/xnuma", "var/lib/xnuma", "usr/lib/xnuma",
                "var/lib/systemd/deb-systemd-helper-enabled/xnuma.service.dsh-also"):
        assert not (scratch / rel).exists(), rel


# -- the installed agent runs (system python3, Debian's msgpack and tenacity) -------------


@pytest.fixture(scope="module")
def runnable(root: Path) -> Path:
    missing = installed("python3-msgpack", "python3-tenacity")
    if missing or not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"needs apt packages: {' '.join(missing or ['python3'])}")
    return root


def test_installed_xnuma_help_and_rules_check(runnable: Path) -> None:
    xnuma = str(runnable / "usr/bin/xnuma")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}  # -I: PYTHONPATH must not count
    out = run([xnuma, "--help"], env=env).stdout
    assert out.startswith("usage: xnuma")
    for command in ("audit", "rules", "xenstored"):
        assert command in out
    out = run([xnuma, "rules", "check", str(runnable / "etc/xnuma/rules.d")], env=env).stdout
    assert out.startswith(f"ok: {len(RULES)} rules in {len(RULES)} files")


def installed_python(root: Path, code: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run code as the launcher would: system python3 -I, root's /usr/lib/xnuma first."""
    prelude = f"import sys; sys.path.insert(0, {str(root / 'usr/lib/xnuma')!r})\n"
    return run([SYSTEM_PYTHON, "-I", "-c", prelude + code], **kw)


def test_installed_imports_come_from_the_intended_places(runnable: Path) -> None:
    out = installed_python(runnable, (
        "import agent, trio, msgpack, tenacity\n"
        "for m in (agent, trio, msgpack, tenacity): print(m.__name__, m.__file__)\n"
        "print('trio', trio.__version__)"
    )).stdout
    where = dict(line.split(" ", 1) for line in out.splitlines()[:4])
    lib = str(runnable / "usr/lib/xnuma") + "/"
    assert where["agent"].startswith(lib) and where["trio"].startswith(lib)
    assert where["msgpack"].startswith("/usr/lib/python3/dist-packages/")
    assert where["tenacity"].startswith("/usr/lib/python3/dist-packages/")
    assert out.splitlines()[-1] == "trio 0.35.0"


def test_installed_audit_reads_a_log_written_by_the_dev_tree(
    runnable: Path, tmp_path: Path
) -> None:
    """A log packed by the development msgpack verifies and prints with Debian's."""
    log = tmp_path / "audit.log"
    with AuditWriter(log) as writer:
        writer.append(records.agent_start(VERSION, 4242, True, "xl"))
        writer.append(records.event("domain_create", records.Subject(domain="guest-a", domid=7)))
        writer.append(records.agent_stop("SIGTERM", 0))
    xnuma = str(runnable / "usr/bin/xnuma")
    verify = run([xnuma, "audit", "--log", str(log), "--verify"]).stdout
    assert verify.startswith("OK: 3 records in 1 files, seq 1..3")
    lines = run([xnuma, "audit", "--log", str(log), "--json"]).stdout.splitlines()
    assert len(lines) == 3 and '"guest-a"' in lines[1]


@pytest.fixture
def xenstored(runnable: Path, tmp_path: Path) -> Iterator[Path]:
    """The installed ``xnuma xenstored`` (bundled trio) on a socket of its own."""
    sock = tmp_path / "xs.sock"
    proc = subprocess.Popen([str(runnable / "usr/bin/xnuma"), "xenstored", "--socket", str(sock)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20  # start-up wait, not a timing assertion
        while not sock.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "xnuma xenstored did not create its socket"
            time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_installed_client_with_debian_tenacity(runnable: Path, xenstored: Path) -> None:
    """The XenStore client's retries (tenacity 8.2 from Debian) drive a real transaction."""
    code = (
        "import trio\n"
        "from agent.xenstore.client import open_client\n"
        "async def main():\n"
        "    async with open_client() as xs:\n"
        "        await xs.write('/xnuma/probe', b'1')\n"
        "        async def bump(tx):\n"
        "            n = int(await tx.read('/xnuma/probe'))\n"
        "            await tx.write('/xnuma/probe', str(n + 1).encode())\n"
        "        await xs.transact(bump)\n"
        "        print((await xs.read('/xnuma/probe')).decode())\n"
        "trio.run(main)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "XENSTORED_PATH": str(xenstored)}
    assert installed_python(runnable, code, env=env).stdout.strip() == "2"


# -- the systemd unit -------------------------------------------------------------------


def verify_unit(unit_dir: Path) -> str:
    """systemd-analyze verify; it exits 0 on unknown keys and bad values, so the
    messages about our unit are what counts."""
    proc = subprocess.run(["systemd-analyze", "verify", str(unit_dir / "xnuma.service")],
                          capture_output=True, text=True)
    about_us = [line for line in (proc.stdout + proc.stderr).splitlines()
                if "xnuma" in line or str(unit_dir) in line]
    return f"exit {proc.returncode}\n" + "\n".join(about_us)


def unit_with_dropin(root: Path, dest: Path, unit_text: str) -> Path:
    """The unit as installed, plus a drop-in pointing ExecStart at the scratch root
    (verify insists the binary exists; the unit file itself stays byte-for-byte)."""
    dest.mkdir()
    (dest / "xnuma.service").write_text(unit_text)
    (dest / "xnuma.service.d").mkdir()
    (dest / "xnuma.service.d/scratch-root.conf").write_text(
        "[Service]\nExecStart=\n"
        f"ExecStart={root}/usr/bin/xnuma run --config {root}/etc/xnuma/xnuma.toml\n"
    )
    return dest


def test_unit_passes_systemd_analyze_verify(root: Path, tmp_path: Path) -> None:
    need({"systemd-analyze": "systemd"})
    unit = (root / "lib/systemd/system/xnuma.service").read_text()
    good = unit_with_dropin(root, tmp_path / "good", unit)
    assert verify_unit(good) == "exit 0\n"
    # The check can fail: a bad value and an unknown key are reported.
    broken = unit.replace("Restart=on-failure", "Restart=sometimes\nWatchDog=30s")
    report = verify_unit(unit_with_dropin(root, tmp_path / "broken", broken))
    assert "sometimes" in report and "WatchDog" in report


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_settings_the_agent_relies_on() -> None:
    s = unit_settings((PACKAGING / "xnuma.service").read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"] and s["KillMode"] == ["mixed"]
    assert s["ExecStart"] == ["/usr/bin/xnuma run --config /etc/xnuma/xnuma.toml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert int(s["WatchdogSec"][0].removesuffix("s")) >= 10
    assert s["LogsDirectory"] == ["xnuma"] and s["StateDirectory"] == ["xnuma"]
    # /run/xnuma for the placement socket; others may enter it (the socket is 0600)
    assert s["RuntimeDirectory"] == ["xnuma"] and s["RuntimeDirectoryMode"] == ["0755"]
    assert s["ProtectSystem"] == ["strict"]
    assert "PrivateDevices" not in s  # /dev/xen must stay reachable
    assert "/dev/xen/privcmd rw" in s["DeviceAllow"] and "/dev/xen/xenbus rw" in s["DeviceAllow"]
    dropped = " ".join(s["CapabilityBoundingSet"])
    for cap in ("CAP_SYS_NICE", "CAP_IPC_LOCK", "CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"):
        assert cap not in dropped


def documented(text: str) -> dict[str, list[object]]:
    """Settings in the default config, set or shown commented out (``#key = value``)."""
    found: dict[str, list[object]] = {}
    for m in re.finditer(r"^#?([a-z_]+) = (.+)$", text, re.M):
        found.setdefault(m.group(1), []).append(tomllib.loads(f"v = {m.group(2)}")["v"])
    return found


DEFAULT_CONFIG = PACKAGING / "xnuma.toml"


def test_unit_paths_match_the_default_config() -> None:
    config = documented(DEFAULT_CONFIG.read_text())
    s = unit_settings((PACKAGING / "xnuma.service").read_text())
    assert [Path(str(p)).parent for p in config["audit_log"]] == [
        Path("/var/log") / s["LogsDirectory"][0]
    ]
    assert [Path(str(p)).parent for p in config["journal"]] == [
        Path("/var/lib") / s["StateDirectory"][0]
    ]
    assert config["rules_dir"] == ["/etc/xnuma/rules.d"]
    assert [Path(str(p)).parent for p in config["placement_socket"]] == [
        Path("/run") / s["RuntimeDirectory"][0]
    ]
    writable = " ".join(s["ReadWritePaths"]).split()
    assert len(config["metrics_textfile"]) == 2
    for textfile in config["metrics_textfile"]:
        assert f"-{Path(str(textfile)).parent}" in writable


def test_default_config_loads_and_shows_every_key_with_its_default() -> None:
    """In sync with agent/daemon/config.py: the file loads, and documents every key
    with the built-in default (keys whose default is None show an example)."""
    config = pytest.importorskip("agent.daemon.config")
    from dataclasses import fields

    assert config.read_file(DEFAULT_CONFIG) == {"dry_run": True}
    loaded = config.load(DEFAULT_CONFIG, {})
    assert loaded.dry_run is True and loaded.backend == "xl"
    shown = documented(DEFAULT_CONFIG.read_text())
    defaults = config.AgentConfig()
    assert sorted(shown) == sorted(f.name for f in fields(defaults))
    for key, values in shown.items():
        for value in values:
            converted = config.from_mapping({key: value}, str(DEFAULT_CONFIG))[key]
            default = getattr(defaults, key)
            if key != "dry_run" and default is not None:
                assert converted == default, (key, value, default)


# -- the RPM ----------------------------------------------------------------------------

SPEC = PACKAGING / "rpm/xnuma.spec"
RPMLINT_CONFIG = PACKAGING / "rpm/rpmlint.toml"


def rpmlint_clean(target: Path) -> None:
    proc = subprocess.run(["rpmlint", "-c", str(RPMLINT_CONFIG), str(target)],
                          capture_output=True, text=True)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0 and " 0 errors, 0 warnings" in summary, proc.stdout + proc.stderr


def test_spec_passes_rpmlint_and_parses() -> None:
    need({"rpmlint": "rpmlint", "rpmspec": "rpm"})
    rpmlint_clean(SPEC)
    parsed = run(["rpmspec", "-P", str(SPEC)]).stdout
    assert re.search(rf"^Version:\s+{re.escape(VERSION)}$", parsed, re.M)
    version = run(["rpmspec", "-q", "--srpm", "--qf", "%{VERSION}", str(SPEC)]).stdout
    assert version == VERSION


def test_spec_bundles_what_vendor_pins() -> None:
    """The spec's bundled() Provides name the versions vendor/*.txt pins."""
    pins = {}
    for name in ("common.txt", "rpm.txt"):
        for m in re.finditer(r"^([a-z0-9_.-]+)==(\S+)", (PACKAGING / "vendor" / name).read_text(),
                             re.M):
            pins[m.group(1)] = m.group(2)
    provides = dict(re.findall(r"bundled\(python%\{python3_pkgversion\}dist\(([^)]+)\)\) = (\S+)",
                               SPEC.read_text()))
    assert provides == pins


def test_rpm_builds_lints_and_runs(tmp_path: Path) -> None:
    """Built here with --nodeps (no EL build root), then checked like the spec."""
    need({"rpmbuild": "rpm", "rpmlint": "rpmlint", "rpm2cpio": "rpm2cpio", "cpio": "cpio"})
    if os.uname().machine not in ("x86_64", "aarch64"):
        pytest.skip("the RPM is built for x86_64 and aarch64 only")
    out = tmp_path / "out"
    run(["bash", str(PACKAGING / "rpm/build-rpm.sh"), str(out), "--nodeps"])
    rpm = out / f"xnuma-{VERSION}-1.{os.uname().machine}.rpm"
    assert rpm.is_file(), sorted(p.name for p in out.iterdir())
    rpmlint_clean(rpm)
    scripts = run(["rpm", "-qp", "--scripts", str(rpm)]).stdout
    assert "preset xnuma.service" in scripts and "try-restart xnuma.service" in scripts
    configs = run(["rpm", "-qpc", str(rpm)]).stdout.split()
    assert sorted(configs) == sorted(
        ["/etc/xnuma/xnuma.toml", *(f"/etc/xnuma/rules.d/{r}" for r in RULES)]
    )
    scratch = tmp_path / "root"
    scratch.mkdir()
    cpio = subprocess.run(["rpm2cpio", str(rpm)], capture_output=True, check=True).stdout
    subprocess.run(["cpio", "-idm", "--quiet"], input=cpio, cwd=scratch, check=True)
    launcher = scratch / "usr/bin/xnuma"
    assert launcher.read_text().startswith("#!/usr/bin/python3.11 -I\n")
    assert list((scratch / "usr/lib64/xnuma/msgpack").glob("_cmsgpack.*.so"))
    assert (scratch / "usr/lib64/xnuma/agent/__pycache__").is_dir()  # compiled by python3.11
    if Path("/usr/bin/python3.11").exists():
        env = {"PATH": "/usr/bin:/bin"}
        assert run([str(launcher), "--help"], env=env).stdout.startswith("usage: xnuma")


def test_stage_refuses_unsafe_and_clashing_wheels(tmp_path: Path) -> None:
    def wheel(name: str, members: dict[str, str]) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as zf:
            for member, text in members.items():
                zf.writestr(member, text)
        return path

    stage = [sys.executable, str(PACKAGING / "stage.py"), "install", "--root",
             str(tmp_path / "r"), "--python", "/usr/bin/python3"]
    cases = {
        "both contain a/x.py": [wheel("a-1-py3-none-any.whl", {"a/x.py": ""}),
                                wheel("b-1-py3-none-any.whl", {"a/x.py": ""})],
        "unsafe member path": [wheel("c-1-py3-none-any.whl", {"../evil.py": ""})],
        "scripts or data": [wheel("d-1-py3-none-any.whl", {"d-1.data/scripts/x": ""})],
    }
    for message, wheels in cases.items():
        proc = subprocess.run([*stage, *map(str, wheels)], capture_output=True, text=True)
        assert proc.returncode != 0 and message in proc.stderr, (message, proc.stderr)
    # A library's test suite is left out; the rest is unpacked.
    ok = wheel("e-1-py3-none-any.whl", {"e/__init__.py": "", "e/_tests/test_e.py": ""})
    run([*stage, str(ok)])
    lib = tmp_path / "r/usr/lib/xnuma"
    assert (lib / "e/__init__.py").is_file() and not (lib / "e/_tests").exists()
    assert (lib / "agent/cli/__init__.py").is_file()
