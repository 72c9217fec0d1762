"""What the libtorrent end-to-end tests share beyond ``tests.torrent_clients``."""

from __future__ import annotations

import os
from pathlib import Path

from tests.torrent_clients import FILE_NAME, FILE_SIZE


def seed_folder(tmp_path: Path) -> tuple[Path, bytes]:
    """``tmp_path/seed`` holding one random file of ``FILE_SIZE`` bytes; (that folder, its
    bytes), for a seeder to share and a leecher's copy to be compared with."""
    payload = os.urandom(FILE_SIZE)
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    (seed_dir / FILE_NAME).write_bytes(payload)
    return seed_dir, payload
