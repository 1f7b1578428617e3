"""The agent's config file and command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.daemon.config import AgentConfig, ConfigError, load


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xnuma.toml"
    path.write_text(text)
    return path


def test_defaults_when_there_is_no_file(tmp_path: Path) -> None:
    config = load(None, {}, default=tmp_path / "absent.toml")
    assert config == AgentConfig()
    assert config.poll_interval_s == 1.0 and config.backend == "xl" and not config.dry_run


def test_the_default_file_is_read_when_present(tmp_path: Path) -> None:
    path = write(tmp_path, 'poll_interval_s = 2\nrules_dir = "/srv/rules"\n')
    config = load(None, {}, default=path)
    assert config.poll_interval_s == 2.0 and config.rules_dir == "/srv/rules"


def test_every_documented_key_loads(tmp_path: Path) -> None:
    path = write(tmp_path, """
backend = "sim"
scenario = "seed-abc"
xenstore_socket = "/run/xenstored/socket"
rules_dir = "/etc/xnuma/rules.d"
audit_log = "/var/log/xnuma/audit.log"
journal = "/var/lib/xnuma/pins.journal"
poll_interval_s = 0.5
dry_run = true
metrics_textfile = "/var/lib/node_exporter/xnuma.prom"
metrics_port = 9717
tick_interval_s = 2
burst_interval_s = 0.05
burst_s = 5
memory_interval_s = 60
log_level = "debug"
""")
    config = load(path, {})
    assert config.backend == "sim" and config.dry_run and config.metrics_port == 9717
    assert config.tick_interval_s == 2.0 and isinstance(config.tick_interval_s, float)


def test_command_line_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'poll_interval_s = 2\ndry_run = false\naudit_log = "/a"\n')
    config = load(path, {"poll_interval_s": 0.25, "dry_run": True, "audit_log": None})
    assert config.poll_interval_s == 0.25 and config.dry_run
    assert config.audit_log == "/a"  # None means "not given on the command line"


def test_empty_strings_and_port_zero_switch_things_off(tmp_path: Path) -> None:
    path = write(tmp_path, 'audit_log = ""\nmetrics_textfile = ""\nmetrics_port = 0\n')
    config = load(path, {})
    assert config.audit_log is None and config.metrics_textfile is None
    assert config.metrics_port is None


def test_an_unknown_key_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "poll_intervall_s = 1\n")
    with pytest.raises(ConfigError) as err:
        load(path, {})
    assert str(path) in str(err.value) and "'poll_intervall_s'" in str(err.value)


@pytest.mark.parametrize(("text", "key"), [
    ('poll_interval_s = "fast"', "poll_interval_s"),
    ("dry_run = 1", "dry_run"),
    ("metrics_port = 9717.5", "metrics_port"),
    ("backend = 3", "backend"),
    ("poll_interval_s = true", "poll_interval_s"),
])
def test_a_wrong_type_names_the_file_and_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as err:
        load(path, {})
    assert str(path) in str(err.value) and repr(key) in str(err.value)


@pytest.mark.parametrize(("text", "words"), [
    ('backend = "kvm"', "backend 'kvm'"),
    ('backend = "sim"', "needs a scenario"),
    ("poll_interval_s = 0", "poll_interval_s must be > 0"),
    ("metrics_port = 70000", "not a TCP port"),
    ('log_level = "loud"', "not a level"),
])
def test_values_no_agent_can_run_with(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError, match=words) as err:
        load(path, {})
    assert str(path) in str(err.value)


def test_bad_toml_and_a_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "poll_interval_s = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path, {})
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.toml", {})
