"""Builders for the files [access] reads: .torrent files (v1, v2, hybrid), lists, passkeys."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import bencodepy


class Torrent:
    """A small made-up torrent and its expected info-hashes (computed here independently of
    johnlocke.access: SHA-1 / truncated SHA-256 of the canonical bencoding of the info dict)."""

    def __init__(self, name: str, kind: str = "v1") -> None:
        size = 40_000
        info: dict[bytes, object] = {b"name": name.encode(), b"piece length": 16384}
        if kind in ("v1", "hybrid"):
            info[b"length"] = size
            info[b"pieces"] = os.urandom(20 * 3)
        if kind in ("v2", "hybrid"):
            info[b"meta version"] = 2
            info[b"file tree"] = {
                name.encode(): {b"": {b"length": size, b"pieces root": os.urandom(32)}}
            }
        raw = bencodepy.encode(info)
        self.v1 = hashlib.sha1(raw).digest() if kind in ("v1", "hybrid") else None
        self.v2 = hashlib.sha256(raw).digest()[:20] if kind in ("v2", "hybrid") else None
        self.data = bencodepy.encode({b"announce": b"http://t.invalid/announce", b"info": info})

    @property
    def info_hash(self) -> bytes:
        """The hash its swarm is kept under (v1 when there is one)."""
        return self.v1 or self.v2  # type: ignore[return-value]

    def write(self, folder: Path, filename: str | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (filename or f"{self.info_hash.hex()}.torrent")
        path.write_bytes(self.data)
        return path


def write_lines(path: Path, *lines: str) -> Path:
    """Write a list file, bumping its mtime so a rescan sees the change even within one tick."""
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text("".join(line + "\n" for line in lines))
    st = path.stat()
    if st.st_mtime_ns <= old:
        os.utime(path, ns=(st.st_atime_ns, old + 1_000_000))
    return path
