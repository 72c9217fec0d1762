from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import bencodepy
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from johnlocke.access import Access
from johnlocke.config import validate
from johnlocke.http.server import build_app, make_runner
from johnlocke.store.memory import MemoryStore
from johnlocke.tracker import Tracker


def make_config(**sections: dict[str, Any]):
    """A validated Config from section dicts, e.g. make_config(announce={"interval": 60})."""
    return validate(sections, "<test>")


class DaemonTestServer(TestServer):
    """aiohttp's test server, serving through the daemon's own runner (``make_runner``): the
    connection guard and the lean path, as ``johnlocke`` serves."""

    def __init__(self, app, config, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self.config = config

    async def _make_runner(self, **kwargs):
        return make_runner(self.app, self.config, **kwargs)


class SlowStore(MemoryStore):
    """A memory store whose announces wait ``delay`` seconds, as a networked store's do."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def announce(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(self.delay)
        return await super().announce(*args, **kwargs)


class TrackerClient:
    """An HTTP client on a real aiohttp server running the tracker app, with bencode helpers."""

    def __init__(self, client, tracker: Tracker) -> None:
        self.http = client
        self.tracker = tracker

    async def get(self, path: str, headers: dict[str, str] | None = None) -> dict:
        # encoded=True: yarl would otherwise "normalise" escapes such as %3f into "?".
        url = URL(str(self.http.make_url("/")).rstrip("/") + path, encoded=True)
        resp = await self.http.session.get(url, headers=headers)
        assert resp.status == 200, await resp.text()
        return bencodepy.decode(await resp.read())

    async def announce(
        self,
        info_hash: bytes,
        peer_id: bytes,
        port: int = 6881,
        headers: dict[str, str] | None = None,
        path: str = "/announce",
        **params,
    ) -> dict:
        query = f"info_hash={esc(info_hash)}&peer_id={esc(peer_id)}&port={port}"
        params.setdefault("left", 100)
        for k, v in params.items():
            if v is not None:
                query += f"&{k}={esc(v) if isinstance(v, bytes) else v}"
        return await self.get(path + "?" + query, headers=headers)

    async def scrape(self, *hashes: bytes, path: str = "/scrape", **params: str) -> dict:
        query = [f"info_hash={esc(h)}" for h in hashes]
        query += [f"{k}={v}" for k, v in params.items()]
        return await self.get(path + "?" + "&".join(query))


def esc(raw: bytes) -> str:
    return "".join(f"%{b:02x}" for b in raw)


@pytest.fixture
async def tracker_client(aiohttp_client):
    """A factory: ``await tracker_client(announce={...})`` gives a TrackerClient.

    ``base_dir`` is where relative [access] paths point (as the config file's folder does for
    the daemon). The Access service is started (files read) like the daemon does it.
    """
    started: list[Access] = []

    async def factory(
        store=None, base_dir: Path | str = ".", **sections: dict[str, Any]
    ) -> TrackerClient:
        config = make_config(**sections)
        store = store or MemoryStore()
        access = Access(config, store, base_dir)
        await access.start()
        started.append(access)
        tracker = Tracker(config, store, access)
        # Started here so it runs with the daemon's own server settings.
        server = DaemonTestServer(build_app(tracker, config), config)
        await server.start_server()
        client = await aiohttp_client(server)
        return TrackerClient(client, tracker)

    yield factory
    for access in started:
        await access.stop()


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 64 KiB filesystem, to run out of space for real (skipped where mounting is denied)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_disk(mnt: Path) -> Path:
    """Fill the filesystem at ``mnt`` to the last byte; return the filler file (delete to free)."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512, 64, 1):
            try:
                while True:
                    os.write(fd, bytes(size))
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


class LoopTurns:
    """``async with LoopTurns() as turns:`` counts how often other tasks ran meanwhile, i.e.
    whether the code inside gave the event loop back instead of holding it throughout."""

    count = 0

    async def __aenter__(self) -> LoopTurns:
        self._done = False
        self._task = asyncio.create_task(self._tick())
        return self

    async def _tick(self) -> None:
        while not self._done:
            self.count += 1
            await asyncio.sleep(0)

    async def __aexit__(self, *exc: object) -> None:
        self._done = True
        await self._task
