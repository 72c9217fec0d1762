"""Configuration: the shipped example, strict validation, and the CLI's answers to bad files."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from johnlocke import __version__, compiled
from johnlocke.config import Config, ConfigError, load

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tracker.toml"
    path.write_text(text)
    return path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "johnlocke", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_shipped_example_lists_every_key_with_its_default():
    shipped = tomllib.loads((ROOT / "tracker.toml").read_text())
    defaults = Config().model_dump(mode="json")
    assert set(shipped) == set(defaults)
    text = (ROOT / "tracker.toml").read_text()
    for section, values in defaults.items():
        # A key whose default is taken from another key ([udp] host and port follow [http])
        # has no TOML value of its own: it is shown as a comment.
        unset = {k for k, v in values.items() if v is None}
        assert set(shipped[section]) == set(values) - unset, section
        for key in unset:
            assert f"\n# {key} = " in text, f"[{section}] {key} is not shown (commented)"
    assert load(ROOT / "tracker.toml") == Config()


def test_defaults_match_the_documented_values():
    c = Config()
    assert c.http.host == ["0.0.0.0", "::"] and c.http.port == 6969
    assert c.http.trusted_proxies == []
    assert c.announce.interval == 1800 and c.announce.numwant_default == 50
    assert c.scrape.full_scrape is False


def test_host_may_be_a_string(tmp_path):
    c = load(write(tmp_path, '[http]\nhost = "127.0.0.1"\n'))
    assert c.http.host == ["127.0.0.1"]


def test_per_address_connection_limit_auto_is_an_eighth_of_the_cap(tmp_path):
    assert load(write(tmp_path, "")).http.connections_per_ip == 512
    assert load(write(tmp_path, "[http]\nmax_connections = 100\n")).http.connections_per_ip == 12
    text = "[http]\nmax_connections = 100\nmax_connections_per_ip = 0\n"
    assert load(write(tmp_path, text)).http.connections_per_ip == 0


def test_config_is_frozen():
    with pytest.raises(Exception, match="frozen"):
        Config().announce.interval = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("[announce]\nintervall = 60\n", "[announce] intervall: unknown key"),
        ("[anounce]\ninterval = 60\n", "[anounce]: unknown key"),
        ('[announce]\ninterval = "soon"\n', "[announce] interval: Input should be a valid integer"),
        ("[http]\nport = 70000\n", "[http] port: Input should be less than or equal to 65535"),
        ('[http]\nhost = "localhots"\n', "[http] host"),
        ('[http]\ntrusted_proxies = ["10.0.0.0/33"]\n', "[http] trusted_proxies"),
        ("[announce]\ninterval = 60\nmin_interval = 120\n", "min_interval must not exceed"),
        ("[announce]\nnumwant_default = 500\n", "numwant_default must not exceed numwant_max"),
        ("[announce]\npeer_timeout = 100\n", "peer_timeout must exceed interval"),
        ('[http]\nevent_loop = "tokio"\n', "[http] event_loop"),
        (
            '[http]\nmax_connections_per_ip = "half"\n',
            '[http] max_connections_per_ip: must be "auto"',
        ),
        ("[http]\nmax_connections_per_ip = -1\n", "[http] max_connections_per_ip"),
        (
            '[http]\nreal_ip_header = "X Real IP"\n',
            "[http] real_ip_header: must be a header",
        ),
        ("[announce\n", "not valid TOML"),
    ],
)
def test_bad_config_names_file_key_and_expectation(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "nope.toml")


# --- the command line -------------------------------------------------------------------------


def test_check_config_prints_the_effective_config(tmp_path):
    path = write(tmp_path, "[announce]\ninterval = 600\nmin_interval = 300\n")
    result = run_cli("--config", str(path), "--check-config")
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert printed["announce"]["interval"] == 600
    assert printed["http"]["port"] == 6969  # defaults are printed too


def test_bad_config_exits_1_with_one_line_and_no_traceback(tmp_path):
    path = write(tmp_path, "[announce]\nintervall = 60\n")
    for args in (["--check-config"], []):
        result = run_cli("--config", str(path), *args)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert (
            result.stderr.strip() == f"johnlocke: {path}: [announce] intervall: unknown key"
            " (check the spelling against tracker.toml)"
        )


def test_unknown_strategy_stops_start_up(tmp_path):
    path = write(tmp_path, '[strategy]\nname = "nosuch"\n')
    result = run_cli("--config", str(path), "--check-config")
    assert result.returncode == 1
    assert "[strategy] strategy 'nosuch': no such strategy" in result.stderr
    assert "random" in result.stderr  # the known names are listed


def test_default_config_path_is_tracker_toml_in_the_working_directory(tmp_path):
    # No ./tracker.toml: the built-in defaults (an explicit missing --config is an error,
    # tests/test_flags.py); with one, it is read.
    result = run_cli("--check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# built-in defaults (no ./tracker.toml, no --config): OK")
    write(tmp_path, "[announce]\ninterval = 600\nmin_interval = 300\n")
    result = run_cli("--check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# tracker.toml: OK")
    assert tomllib.loads(result.stdout)["announce"]["interval"] == 600


def test_every_problem_is_listed_at_once_each_naming_file_and_key(tmp_path):
    path = write(
        tmp_path,
        "[announce]\nintervall = 60\n"
        '[http]\nport = 70000\nhost = "localhots"\n'
        '[access]\nmode = "private"\ntorrents_dir = "t"\n'
        "[stats]\ntop = -1\n",
    )
    result = run_cli("--config", str(path), "--check-config")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"johnlocke: {path}: [http] host: 'localhots' does not appear to be an IPv4 or IPv6"
        " address",
        f"johnlocke: {path}: [http] port: Input should be less than or equal to 65535 (got 70000)",
        f"johnlocke: {path}: [announce] intervall: unknown key (check the spelling against"
        " tracker.toml)",
        f'johnlocke: {path}: [access]: mode "private" needs a passkeys file',
        f"johnlocke: {path}: [stats] top: Input should be greater than or equal to 0 (got -1)",
    ]


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"johnlocke {__version__}, {compiled.describe()}"
    assert result.stdout.strip().split(", ")[1].startswith(("compiled (", "pure Python ("))


def test_port_in_use_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        path = write(tmp_path, f'[http]\nhost = "127.0.0.1"\nport = {port}\n')
        result = run_cli("--config", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
