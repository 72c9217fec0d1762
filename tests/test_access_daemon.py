"""[access] in the real daemon: SIGHUP and periodic rescans, start-up errors, bad files, logs
that never show a passkey, and the example configurations."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import bencodepy

from johnlocke.access import BAD_PASSKEY, UNREGISTERED

from .access_files import Torrent, write_lines
from .daemon import Daemon, run_daemon

ROOT = Path(__file__).resolve().parents[1]
KEY = "5f1c0a9e3b7d4c2a8e6f1b0d9c7a5e3f"
KEY2 = "aa11bb22cc33dd44ee55ff6600778899"
PID = b"-JL0001-abcdefghijkl"

PRIVATE = """
[access]
mode = "private"
torrents_dir = "torrents"
passkeys = "passkeys.txt"
rescan_interval = 0
"""


def get(d: Daemon, path: str) -> dict:
    with urllib.request.urlopen(d.url + path, timeout=5) as resp:
        assert resp.status == 200
        return bencodepy.decode(resp.read())


def announce(d: Daemon, info_hash: bytes, path: str = "/announce", **params: str) -> dict:
    query = {"info_hash": info_hash, "peer_id": PID, "port": "6881", "left": "0", **params}
    return get(d, path + "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote))


def reason(reply: dict) -> str | None:
    r = reply.get(b"failure reason")
    return None if r is None else r.decode()


def hup(d: Daemon) -> None:
    """SIGHUP, and wait until the daemon says the reload is done (or refused)."""
    before = len(d.log_lines())
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(
            "configuration reloaded" in line or "reload refused" in line
            for line in d.log_lines()[before:]
        ):
            return
        time.sleep(0.02)
    raise AssertionError("no reload in the log:\n" + d.log_text())


def wait_for(cond, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def family(tmp_path: Path) -> tuple[Torrent, Path]:
    t = Torrent("photos 2024")
    t.write(tmp_path / "torrents")
    keys = write_lines(tmp_path / "passkeys.txt", "# the family", f"{KEY} grandma")
    return t, keys


def test_private_tracker_reloads_passkeys_and_torrents_on_sighup(tmp_path):
    t, keys = family(tmp_path)
    with run_daemon(PRIVATE, workdir=tmp_path) as d:
        d.wait_for_log("access: mode private, 1 torrents")
        assert reason(announce(d, t.v1, passkey=KEY)) is None
        assert reason(announce(d, t.v1, f"/announce/{KEY2}")) == BAD_PASSKEY
        write_lines(keys, KEY, f"{KEY2} uncle")
        new = Torrent("new")
        new.write(tmp_path / "torrents")
        assert reason(announce(d, new.v1, f"/{KEY}/announce")) == UNREGISTERED
        hup(d)
        assert reason(announce(d, t.v1, f"/announce/{KEY2}")) is None
        assert reason(announce(d, new.v1, f"/{KEY}/announce")) is None
        # A reload that would lose the passkeys file is refused; the old keys stay.
        keys.unlink()
        hup(d)
        assert "reload of access failed" in d.log_text()
        assert "[access] passkeys:" in d.log_text()
        assert reason(announce(d, t.v1, passkey=KEY2)) is None
        assert KEY not in d.log_text() and KEY2 not in d.log_text()


def test_rescan_interval_picks_up_and_drops_torrents(tmp_path):
    t, _ = family(tmp_path)
    config = PRIVATE.replace("rescan_interval = 0", "rescan_interval = 1")
    config += "[scrape]\nfull_scrape = true\nfull_scrape_interval = 0\n"
    with run_daemon(config, workdir=tmp_path) as d:
        new = Torrent("later", "hybrid")
        path = new.write(tmp_path / "torrents")
        wait_for(lambda: reason(announce(d, new.v2, passkey=KEY)) is None, "the new torrent")
        assert set(get(d, f"/scrape/{KEY}")[b"files"]) == {new.v1}
        path.unlink()
        wait_for(lambda: reason(announce(d, new.v1, passkey=KEY)) == UNREGISTERED, "its removal")
        d.wait_for_log("dropped 1 swarms of torrents no longer tracked")
        assert get(d, f"/scrape/{KEY}")[b"files"] == {}


def test_bad_files_and_keys_never_crash_the_daemon(tmp_path):
    t, keys = family(tmp_path)
    folder = tmp_path / "torrents"
    (folder / "junk.torrent").write_bytes(b"\xff\xfe garbage")
    (folder / "deep.torrent").write_bytes(b"d4:info" + b"l" * 5000 + b"e" * 5001)
    (folder / "huge-number.torrent").write_bytes(b"d4:infod12:piece lengthi" + b"9" * 5000 + b"eee")
    keys.write_bytes(f"{KEY}\n\xff\xfe\n".encode("latin-1"))  # not UTF-8 at all
    deny = tmp_path / "deny.txt"
    deny.write_bytes(b"\x00" * 100 + b"\n" + b"z" * 100_000)
    config = PRIVATE + 'deny_list = "deny.txt"\n'
    # The passkeys file is not UTF-8: start-up names it and stops.
    with_port = '[http]\nhost = "127.0.0.1"\nport = 0\n' + config
    (tmp_path / "tracker.toml").write_text(with_port)
    result = subprocess.run(
        [sys.executable, "-m", "johnlocke", "--config", str(tmp_path / "tracker.toml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "[access] passkeys:" in result.stderr and "passkeys.txt: cannot read" in result.stderr
    assert "Traceback" not in result.stderr
    keys.write_text(f"{KEY}\nnot/a/key label\n{'x' * 300}\n")
    with run_daemon(config, workdir=tmp_path) as d:
        d.wait_for_log("access: mode private")
        log = d.log_text()
        for name in ("junk.torrent", "deep.torrent", "huge-number.torrent"):
            assert f"skipping torrent file {folder / name}" in log, name
        assert "passkeys.txt line 2" in log and "passkeys.txt line 3" in log
        assert "deny.txt line 1" in log
        assert reason(announce(d, t.v1, passkey=KEY)) is None
        # Files broken at runtime are logged and the daemon goes on.
        (folder / "later.torrent").write_bytes(b"d4:info")
        hup(d)
        assert "later.torrent: not valid bencode" in d.log_text()
        assert reason(announce(d, t.v1, passkey=KEY)) is None


def test_passkeys_never_appear_in_the_log(tmp_path):
    t, _ = family(tmp_path)
    with run_daemon(PRIVATE, workdir=tmp_path, args=["-v"]) as d:
        announce(d, t.v1, passkey=KEY)
        assert "info_hash" in reason(get(d, f"/announce/{KEY}?info_hash=short"))
        # Requests aiohttp itself refuses are logged with their request line.
        for line in (
            f"GET /announce?passkey={KEY}&x=\x01 HTTP/1.1",
            f"GET /{KEY}/announce?{'a' * 20000} HTTP/1.1",
            f"GET /announce/{KEY}\x00 HTTP/1.1",
        ):
            with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
                s.sendall((line + "\r\nHost: x\r\n\r\n").encode("latin-1"))
                assert s.recv(100).split()[1] == b"400"
        d.wait_for_log(r"5f1c\*\*\*")  # the requests were logged, masked
        assert KEY not in d.log_text()


def test_missing_folder_or_file_stops_start_up_with_one_line(tmp_path):
    config = tmp_path / "tracker.toml"
    config.write_text(PRIVATE)
    for missing, expected in (
        ("torrents", "[access] torrents_dir: "),
        ("passkeys.txt", "[access] passkeys: "),
    ):
        family(tmp_path)
        target = tmp_path / missing
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        for args in ([], ["--check-config"]):
            result = subprocess.run(
                [sys.executable, "-m", "johnlocke", "--config", str(config), *args],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 1
            lines = result.stderr.strip().splitlines()
            assert lines[-1].startswith(f"johnlocke: {config}: {expected}{target}"), lines
            assert "Traceback" not in result.stderr


def test_check_config_reads_the_access_files(tmp_path):
    family(tmp_path)
    Torrent("h", "hybrid").write(tmp_path / "torrents")
    config = tmp_path / "tracker.toml"
    config.write_text(PRIVATE)
    result = subprocess.run(
        [sys.executable, "-m", "johnlocke", "--config", str(config), "--check-config"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",  # paths are relative to the config file, not the working directory
    )
    assert result.returncode == 0, result.stderr
    assert "mode private, 2 torrents (1 hybrid), 3 allowed info_hashes, 1 passkeys" in (
        result.stdout
    )


# --- the examples ------------------------------------------------------------------------------


def example(name: str) -> str:
    """An example config with its [http] host/port left out (run_daemon picks them)."""
    text = (ROOT / "examples" / name).read_text()
    return re.sub(r"(?m)^(host|port) = .*\n", "", text)


def test_example_family_config(tmp_path):
    t, _ = family(tmp_path)
    with run_daemon(example("family.toml"), workdir=tmp_path) as d:
        d.wait_for_log("access: mode private, 1 torrents")
        assert reason(announce(d, t.v1)) is not None
        r = announce(d, t.v1, f"/{KEY}/announce")
        assert reason(r) is None and r[b"interval"] == 60  # small-group's
        files = get(d, f"/{KEY}/scrape?info_hash={urllib.parse.quote(t.v1)}")[b"files"]
        assert files[t.v1][b"complete"] == 1


def test_example_public_config(tmp_path):
    with run_daemon(example("public.toml"), workdir=tmp_path) as d:
        ih = b"\x42" * 20
        assert reason(announce(d, ih, left="5")) is None
        r = announce(d, ih, left="5")  # announced again at once: answered, not recorded
        assert r[b"warning message"].startswith(b"announce not recorded")
        assert reason(get(d, "/scrape")) == "full scrape is disabled; ask for one or more info_hash"


def raw_get(d: Daemon, target: str, *headers: str) -> tuple[bytes, bytes]:
    """Send one request line exactly as given; the status line and body of the answer."""
    head = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += "".join(h + "\r\n" for h in headers) + "\r\n"
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(head.encode("latin-1"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status, _, rest = data.partition(b"\r\n")
    return status, rest.partition(b"\r\n\r\n")[2]


def test_passkeys_in_every_form_of_target_are_masked_in_the_access_log(tmp_path):
    t, _ = family(tmp_path)
    ih = urllib.parse.quote(t.v1)
    query = f"info_hash={ih}&peer_id=-JL0001-abcdefghijkl&port=6881&left=0"
    with run_daemon(PRIVATE + "[log]\naccess_log = true\n", workdir=tmp_path, args=["-v"]) as d:
        targets = [
            f"http://127.0.0.1:{d.port}/{KEY}/announce?{query}",  # absolute form
            f"//{KEY}/announce?{query}",
            f"/../{KEY}/announce?{query}",
            f"/{KEY}/../announce?{query}",
            f"/announce/../{KEY}/announce?{query}",
            f"/announce?pass%6Bey={KEY}&{query}",
            f"/announce/{KEY}?{query}",
            f"/announce?{query}&passkey={KEY[:10]}%{ord(KEY[10]):02X}{KEY[11:]}",
        ]
        for target in targets:
            status, _ = raw_get(d, target)
            assert status.startswith(b"HTTP/1.1 200"), (target, status)
        status, _ = raw_get(d, f"/announce?{query}", f"User-Agent: qB/4.6 passkey={KEY}")
        # The absolute form is served as the path it names: with the passkey.
        status, body = raw_get(d, f"http://127.0.0.1:{d.port}/{KEY}/announce?{query}")
        assert b"failure reason" not in body and b"peers" in body
        d.wait_for_log(r"johnlocke\.access: .* \"qB/4\.6 passkey=5f1c\*\*\*\"")
        wait_for(
            lambda: sum("johnlocke.access" in line for line in d.log_lines()) == len(targets) + 2,
            "an access line for every request",
        )
    assert KEY not in d.log_text()
    assert KEY[4:20] not in d.log_text()  # not even in part, beyond the first 4 characters
