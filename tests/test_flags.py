"""The original command line: each flag overrides its one key, beside a file or with none."""

from __future__ import annotations

import http.client
import tomllib
import urllib.parse

import bencodepy
import pytest

from johnlocke.access import UNREGISTERED
from johnlocke.cli import _parser
from johnlocke.config import Config, ConfigError
from johnlocke.flags import FLAGS, Settings

from .access_files import Torrent
from .daemon import Daemon, run_daemon
from .test_access_daemon import hup
from .test_config import run_cli


def settings(*argv: str) -> Settings:
    return Settings.from_args(_parser().parse_args(list(argv)))


def load(*argv: str) -> tuple[Config, Settings]:
    s = settings(*argv)
    return s.load(), s


def changed(config: Config) -> dict[tuple[str, str], object]:
    """Every key whose value differs from the built-in default."""
    default = Config().model_dump(mode="json")
    now = config.model_dump(mode="json")
    return {
        (section, key): value
        for section, values in now.items()
        for key, value in values.items()
        if default[section][key] != value
    }


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path, monkeypatch):
    """Each test starts in an empty directory: no ./tracker.toml."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- one flag, one key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["--scan", "15"], {("access", "rescan_interval"): 15}),
        (["--maxpeers", "80"], {("announce", "numwant_max"): 80}),
        (["--mode", "small-group"], {("strategy", "name"): "small-group"}),
        (["--port", "7070"], {("http", "port"): 7070}),
        (["--host", "127.0.0.1"], {("http", "host"): ["127.0.0.1"]}),
        (["--host", "127.0.0.1", "--host", "::1"], {("http", "host"): ["127.0.0.1", "::1"]}),
        (["-v"], {("log", "level"): "debug"}),
        (["--verbose"], {("log", "level"): "debug"}),
        (["-vv"], {("log", "level"): "debug"}),
        (["--workers", "4"], {("workers", "count"): 4}),
        (["--open"], {}),  # the default already
        (["--locked", "--dir", "t"], None),  # listed, and the folder under the working directory
    ],
)
def test_each_flag_sets_the_one_key_it_stands_for(argv, expected, empty_cwd):
    config, s = load(*argv)
    if expected is None:
        expected = {("access", "mode"): "listed", ("access", "torrents_dir"): str(empty_cwd / "t")}
    assert changed(config) == expected
    # --check-config names the flag beside every key it set (--open sets the default value).
    assert set(s.notes) == set(expected) | ({("access", "mode")} if "--open" in argv else set())
    for note in s.notes.values():
        flag = note.split()[0]
        assert any(a.startswith(flag) for a in argv) or note.startswith("--dir implies"), note


def test_every_flag_in_the_table_reaches_a_real_key():
    fields = Config.model_fields
    for flag in FLAGS:
        section = fields[flag.section].annotation
        assert flag.key in section.model_fields, flag  # type: ignore[union-attr]


def test_dir_is_locked_by_default_and_open_keeps_it_open(empty_cwd):
    config, s = load("--dir", "torrents")
    assert config.access.mode == "listed"
    assert config.access.torrents_dir == str(empty_cwd / "torrents")
    assert "--dir implies --locked" in s.notes["access", "mode"]
    config, _ = load("--dir", "torrents", "--open")
    assert config.access.mode == "open"
    assert config.access.torrents_dir == str(empty_cwd / "torrents")


def test_dir_keeps_the_mode_a_file_sets(empty_cwd):
    (empty_cwd / "tracker.toml").write_text('[access]\nmode = "open"\n')
    config, s = load("--dir", "torrents")
    assert config.access.mode == "open"
    assert ("access", "mode") not in s.notes


def test_maxpeers_below_the_default_numwant_lowers_it_unless_the_file_sets_it(empty_cwd):
    config, s = load("--maxpeers", "20")
    assert (config.announce.numwant_max, config.announce.numwant_default) == (20, 20)
    assert "--maxpeers 20" in s.notes["announce", "numwant_default"]
    config, _ = load("--maxpeers", "500")
    assert (config.announce.numwant_max, config.announce.numwant_default) == (500, 50)
    (empty_cwd / "tracker.toml").write_text("[announce]\nnumwant_default = 30\n")
    with pytest.raises(ConfigError) as err:
        load("--maxpeers", "20")
    assert str(err.value) == (
        "--maxpeers 20: [announce] numwant_max: numwant_default must not exceed numwant_max"
        " (numwant_default = 30 from tracker.toml [announce] numwant_default)"
    )


# --- flags beside a file ------------------------------------------------------------------------


FILE = """
[http]
host = "127.0.0.1"
port = 7000
[announce]
numwant_max = 100
[access]
mode = "open"
rescan_interval = 30
[strategy]
name = "recent"
"""


def test_flags_override_only_their_keys_of_the_file(empty_cwd):
    (empty_cwd / "tracker.toml").write_text(FILE)
    config, s = load("--port", "8000", "--mode", "spread")
    assert config.http.port == 8000 and config.strategy.name == "spread"
    # Everything else is the file's.
    assert config.http.host == ["127.0.0.1"] and config.announce.numwant_max == 100
    assert config.access.rescan_interval == 30
    assert set(s.notes) == {("http", "port"), ("strategy", "name")}
    assert s.summary() == "--port 8000 ([http] port), --mode spread ([strategy] name)"


def test_locked_overrides_an_open_file_but_not_a_private_one(empty_cwd):
    path = empty_cwd / "tracker.toml"
    path.write_text('[access]\nmode = "open"\ntorrents_dir = "t"\n')
    config, _ = load("--locked")
    assert config.access.mode == "listed"
    path.write_text('[access]\nmode = "private"\ntorrents_dir = "t"\npasskeys = "p.txt"\n')
    with pytest.raises(ConfigError) as err:
        load("--locked")
    assert str(err.value).startswith(
        '--locked: [access] mode: would turn tracker.toml [access] mode = "private" into "listed"'
    )
    config, _ = load("--open")  # explicit: the operator asked for an open tracker
    assert config.access.mode == "open"


def test_paths_from_flags_are_relative_to_the_working_directory(empty_cwd):
    elsewhere = empty_cwd / "etc"
    elsewhere.mkdir()
    (elsewhere / "tracker.toml").write_text("")
    config, s = load("--config", str(elsewhere / "tracker.toml"), "--dir", "torrents")
    assert config.access.torrents_dir == str(empty_cwd / "torrents")
    assert s.base == elsewhere  # while the file's own relative paths stay relative to it


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--locked", "--open"], "--locked and --open both set [access] mode: give one of them"),
        (["--open", "--locked"], "--open and --locked both set [access] mode: give one of them"),
        (["--port", "1", "--port", "2"], "--port 1 and --port 2 both set [http] port"),
        (["--dir", "a", "--dir", "b"], "--dir a and --dir b both set [access] torrents_dir"),
    ],
)
def test_two_flags_for_one_key_are_an_error_naming_both(argv, message):
    with pytest.raises(ConfigError) as err:
        load(*argv)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["--locked"],
            '--locked: [access] mode: mode "listed" tracks only listed torrents: set torrents_dir'
            " or allow_list",
        ),
        (["--port", "70000"], "--port 70000: [http] port: Input should be less than or equal"),
        (["--scan", "-1"], "--scan -1: [access] rescan_interval: Input should be greater"),
        (["--host", "localhots"], "--host localhots: [http] host"),
        (["--workers", "1000"], "--workers 1000: [workers] count: Input should be less than"),
        (["--workers", "0"], "--workers 0: [workers] count: Input should be greater"),
    ],
)
def test_a_bad_flag_value_names_the_flag_and_its_key(argv, message):
    with pytest.raises(ConfigError) as err:
        load(*argv)
    assert str(err.value).startswith(message)


def test_an_error_in_the_file_still_names_the_file_beside_flags(empty_cwd):
    (empty_cwd / "tracker.toml").write_text("[announce]\nintervall = 3\n")
    with pytest.raises(ConfigError) as err:
        load("--port", "70000")
    assert str(err.value).splitlines() == [
        "--port 70000: [http] port: Input should be less than or equal to 65535 (got 70000)",
        "tracker.toml: [announce] intervall: unknown key (check the spelling against tracker.toml)",
    ]


# --- the command line, as a process ---------------------------------------------------------


def test_check_config_shows_which_values_came_from_flags(empty_cwd):
    (empty_cwd / "torrents").mkdir()
    result = run_cli("--check-config", "--dir", "torrents", "--maxpeers", "50", cwd=empty_cwd)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# built-in defaults (no ./tracker.toml, no --config): OK (mode")
    assert lines[1] == (
        "# from the command line: --dir torrents ([access] torrents_dir, [access] mode),"
        " --maxpeers 50 ([announce] numwant_max)"
    )
    assert "numwant_max = 50  # --maxpeers 50" in lines
    assert f'torrents_dir = "{empty_cwd / "torrents"}"  # --dir torrents' in lines
    printed = tomllib.loads(result.stdout)  # still TOML, comments and all
    assert printed["access"]["mode"] == "listed"
    assert printed["announce"]["numwant_default"] == 50


def test_no_file_and_no_config_runs_on_the_defaults_but_a_named_file_must_exist(empty_cwd):
    result = run_cli("--check-config", cwd=empty_cwd)
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["http"]["port"] == 6969
    result = run_cli("--config", "tracker.toml", "--check-config", cwd=empty_cwd)
    assert result.returncode == 1
    assert result.stderr.strip() == "johnlocke: tracker.toml: no such file (pass --config PATH)"


def test_a_missing_dir_stops_start_up_naming_the_flag(empty_cwd):
    for args in (["--check-config"], []):
        result = run_cli(
            "--dir", "nope", "--port", "0", "--host", "127.0.0.1", *args, cwd=empty_cwd
        )
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1] == (
            f"johnlocke: --dir nope: [access] torrents_dir: {empty_cwd / 'nope'}: no such directory"
        )


def test_an_unknown_mode_names_the_flag():
    result = run_cli("--mode", "nosuch", "--check-config")
    assert result.returncode == 1
    assert result.stderr.startswith(
        "johnlocke: --mode nosuch: [strategy] strategy 'nosuch': no such strategy"
    )


# --- the real daemon, started with flags --------------------------------------------------------


def _announce(
    conn: http.client.HTTPConnection, info_hash: bytes, n: int, numwant: int = 200
) -> dict:
    query = urllib.parse.urlencode(
        {
            "info_hash": info_hash,
            "peer_id": f"-JL0001-{n:012d}".encode(),
            "port": str(10000 + n),
            "left": "1",
            "numwant": str(numwant),
        },
        quote_via=urllib.parse.quote,
    )
    conn.request("GET", f"/announce?{query}")
    resp = conn.getresponse()
    assert resp.status == 200
    return bencodepy.decode(resp.read())


def _connect(d: Daemon) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)


def test_dir_and_maxpeers_with_no_file_track_exactly_that_folder(tmp_path):
    """The issue's "done when": ``johnlocke --dir ./torrents --maxpeers 50`` with no file."""
    listed, later, other = Torrent("listed"), Torrent("later"), Torrent("other")
    listed.write(tmp_path / "torrents")
    with run_daemon(
        None, workdir=tmp_path, args=["--dir", "./torrents", "--maxpeers", "50", "--scan", "1"]
    ) as d:
        assert not (tmp_path / "tracker.toml").exists()
        d.wait_for_log(
            r"no configuration file \(no \./tracker\.toml and no --config\): running on the"
            r" built-in defaults and the command-line flags"
        )
        d.wait_for_log(r"access: mode listed, 1 torrents .* in " + str(tmp_path / "torrents"))
        conn = _connect(d)
        for n in range(55):
            reply = _announce(conn, listed.info_hash, n)
            assert b"failure reason" not in reply, reply
        # 54 other peers in the swarm, numwant 200: the answer holds --maxpeers of them.
        assert len(reply[b"peers"]) == 50 * 6
        assert _announce(conn, other.info_hash, 0)[b"failure reason"].decode() == UNREGISTERED
        # --scan 1: a torrent added to the folder is tracked within a second or two.
        later.write(tmp_path / "torrents")
        d.wait_for_log("access: mode listed, 2 torrents", timeout=10)
        assert b"failure reason" not in _announce(conn, later.info_hash, 0)
        conn.close()
    assert (tmp_path / "johnlocke.snapshot").exists()  # state beside where it ran


def test_flags_keep_overriding_the_file_after_sighup(tmp_path):
    text = "[announce]\ninterval = 600\nmin_interval = 60\n"
    with run_daemon(text, workdir=tmp_path, args=["--maxpeers", "3"]) as d:
        conn = _connect(d)
        for n in range(6):
            reply = _announce(conn, b"\x11" * 20, n)
        assert reply[b"interval"] == 600 and len(reply[b"peers"]) == 3 * 6
        body = d.config_path.read_text().replace("interval = 600", "interval = 700")
        d.config_path.write_text(body + "numwant_max = 100\n")  # still in [announce]
        hup(d)
        reply = _announce(conn, b"\x11" * 20, 7)
        assert reply[b"interval"] == 700  # the file's change applies...
        assert len(reply[b"peers"]) == 3 * 6  # ...and --maxpeers still wins over its numwant_max
        conn.close()
