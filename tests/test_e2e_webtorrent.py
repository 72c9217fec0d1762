"""Two browser tabs share a file through JohnLocke alone: the real daemon, Debian's headless
Chromium, npm webtorrent's browser bundle (``tests/browser``, installed by ``.ci/run`` with
``npm ci --ignore-scripts``), WebRTC on loopback.

The seeder's torrent names this tracker as its only tracker (and the page cannot resolve any
other host), so the leecher can only have found the seeder through the tracker's relayed offer
and answer; ``received`` (bytes that came from peers, not from WebTorrent's piece store, which
each browser context has to itself) proves the bytes came over WebRTC.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from .daemon import run_daemon

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NODE = shutil.which("node")
BROWSER_DIR = Path(__file__).resolve().parent / "browser"
INSTALLED = (BROWSER_DIR / "node_modules" / "webtorrent" / "dist" / "webtorrent.min.js").exists()

# CI installs all of it (.ci/run): there a missing piece is a failure, not a skip.
pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM and NODE and INSTALLED) and not os.environ.get("CI"),
        reason="needs chromium, node and `npm ci --ignore-scripts` in tests/browser",
    ),
]

SIZE = 2 * 1024 * 1024 + 12345  # not a whole number of pieces


def share(tmp_path: Path, tracker: str, data: bytes) -> tuple[dict, bytes]:
    assert CHROMIUM and NODE and INSTALLED, "chromium, node and tests/browser/node_modules"
    source = tmp_path / "payload.bin"
    source.write_bytes(data)
    out = tmp_path / "downloaded.bin"
    proc = subprocess.run(
        [NODE, str(BROWSER_DIR / "webtorrent_e2e.mjs"), "--chromium", CHROMIUM,
         "--tracker", tracker, "--input", str(source), "--output", str(out), "--timeout", "60"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no result from the browser script: {proc.stderr[-3000:]}"
    result = json.loads(lines[-1])
    assert result["ok"], f"{result}\n{proc.stderr[-3000:]}"
    return result, out.read_bytes()


def stats(d) -> dict:
    with urllib.request.urlopen(d.url + "/stats", timeout=10) as r:
        return json.loads(r.read())


def test_two_browsers_share_a_file_over_webrtc(tmp_path):
    data = os.urandom(SIZE)
    with run_daemon('[log]\nlevel = "debug"\n') as d:
        tracker = f"ws://127.0.0.1:{d.port}/announce"
        result, got = share(tmp_path, tracker, data)
        assert got == data
        assert result["size"] == SIZE
        assert result["received"] >= SIZE, result  # from a peer, over WebRTC
        report = stats(d)
    ws = report["transports"]["websocket"]
    assert ws["offers_relayed"] >= 1 and ws["answers_relayed"] >= 1, ws
    assert ws["announces"] >= 2
