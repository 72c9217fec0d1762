"""The status page in a real browser (headless Chromium) against the real daemon.

The daemon gets a few waves of announces over HTTP, one a second, so the plots have several
points of real data; the page is then loaded in Chromium, its DOM checked against /stats, and a
screenshot saved to tests/artifacts/status_page.png (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import esc
from .daemon import run_daemon
from .udp_client import STARTED, UdpClient

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

# CI installs Chromium (.ci/run): there a missing browser is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium is not installed"
)


def chromium(tmp_path: Path, *args: str) -> str:
    assert CHROMIUM, "chromium is not installed (apt-get install chromium)"
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        return r.read()


def test_status_page_renders_real_numbers_and_plots_in_chromium(tmp_path):
    config = "[stats]\nhistory_interval = 1\nclient_sample = 1\n"
    with run_daemon(config) as d:
        clients = (b"-qB4520-", b"-TR3000-", b"-lt0D80-")
        n = 0
        for wave in range(5):
            for _ in range(8 + 4 * wave):
                ih = bytes([1 + n % 3]) * 20
                pid = clients[n % 3] + n.to_bytes(12, "big")
                get(
                    f"{d.url}/announce?info_hash={esc(ih)}&peer_id={esc(pid)}&port={1000 + n}"
                    f"&left={0 if n % 4 == 0 else 100}&event=started"
                )
                n += 1
            get(f"{d.url}/scrape?info_hash={'%01' * 20}")
            # And a few over UDP, into the same swarms.
            with UdpClient("127.0.0.1", d.udp_port) as udp:
                udp.connect()
                for _ in range(3):
                    udp.announce(bytes([1 + n % 3]) * 20, clients[n % 3] + n.to_bytes(12, "big"),
                                 event=STARTED, left=100, port=1000 + n)  # fmt: skip
                    n += 1
                udp.send(b"junk")
            time.sleep(1.05)
        stats = json.loads(get(f"{d.url}/stats"))
        assert stats["peers"] == n == 8 + 12 + 16 + 20 + 24 + 5 * 3
        assert stats["transports"]["udp"]["announces"] == 15

        dom = chromium(tmp_path, "--dump-dom", d.url + "/")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "status_page.png"
        shot.unlink(missing_ok=True)
        chromium(tmp_path, "--window-size=1280,1500", f"--screenshot={shot}", d.url + "/")

    # The numbers are the tracker's.
    def tile(tid: str) -> str:
        m = re.search(rf'id="{tid}">([^<]*)<', dom)
        assert m, f"no tile {tid}"
        return m.group(1)

    assert tile("peers") == f"{stats['peers']:,}"
    # Every fourth HTTP announce is a seeder; the UDP ones are leechers.
    assert tile("seeders") == f"{stats['seeders']:,}" and stats["seeders"] == 80 // 4
    assert tile("leechers") == f"{stats['leechers']:,}"
    assert tile("swarms") == "3"
    # Every plot has a line with several points of real data, ending at the current value.
    paths = {
        m.group(1): m
        for m in re.finditer(
            r'<path class="line" data-series="(\w+)" data-points="(\d+)" data-last="([\d.e+]+)"'
            r'[^>]* d="([^"]+)"',
            dom,
        )
    }
    assert set(paths) == {"peers", "ipv6", "seeders", "leechers", "announces", "scrapes", "rss"}
    for name, m in paths.items():
        points = int(m.group(2))
        assert points >= 4, name
        assert len(m.group(4).split(" L")) == points
    assert float(paths["peers"].group(3)) == stats["peers"]
    assert float(paths["seeders"].group(3)) == stats["seeders"]

    def ys(name: str) -> list[float]:
        return [float(p.split(",")[1]) for p in paths[name].group(4)[1:].split(" L")]

    # The peers line rises (SVG y grows downwards); announces/s left the zero line.
    assert ys("peers")[-1] < ys("peers")[0]
    assert min(ys("announces")) < max(ys("announces"))
    assert 'id="plot-rates"' in dom and "<svg" in dom
    # UDP beside HTTP.
    row = re.search(r'id="transport-udp">UDP</span></td><td class="n">([\d,]+)</td>', dom)
    assert row and row.group(1) == "15"
    assert re.search(r'id="transport-http">HTTP</span></td><td class="n">([\d,]+)<', dom)
    assert "5 connects; 5 datagrams that were not requests (too short 5)" in dom
    # Tables: top swarm and clients.
    assert stats["top_swarms"][0]["info_hash"] in dom
    assert "qBittorrent" in dom and "Transmission" in dom
    # The screenshot is a real image of some size.
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    print(f"status page screenshot: {shot}")
