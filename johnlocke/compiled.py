"""Which build runs: the compiled fast path or pure Python, chosen once at import.

Theory of operation
-------------------
The modules of the fast path (``COMPILED`` in setup.py) are compiled by Cython from the very
``.py`` files that are the pure build. Each binary sits beside its ``.py`` under the same module
name, where Python's import system prefers it, and the build writes ``_compiled.json`` listing
every compiled module with the binary's file name and a digest of the ``.py`` and ``.pxd`` it was
compiled from.

``johnlocke/__init__.py`` runs ``choose()`` before any other module of the package is imported.
The build is "compiled" when the manifest is there, each binary it names is there, and each
source still has the digest it was compiled from. It is "pure" when ``JOHNLOCKE_NO_EXTENSIONS``
is set (to anything but ``""`` or ``"0"``, like ``AIOHTTP_NO_EXTENSIONS``), when nothing was
compiled (no C compiler at install), or when a source changed since it was compiled (an edited
editable checkout: ``pip install -e .`` again recompiles it). Then ``_PreferSource`` goes first on
``sys.meta_path`` and loads every module of the package that has a binary from its ``.py``
instead, so a binary that is unwanted or stale is never imported and the two builds never mix.

This module and the package's ``__init__`` are never compiled: they decide.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

ENV = "JOHNLOCKE_NO_EXTENSIONS"
MANIFEST = "_compiled.json"
PACKAGE = Path(__file__).resolve().parent


def source_digest(source: Path) -> str:
    """The digest of a module's ``.py`` and of the ``.pxd`` beside it (the build uses it too)."""
    h = hashlib.sha256(source.read_bytes())
    pxd = source.with_suffix(".pxd")
    h.update(b"\0" + (pxd.read_bytes() if pxd.exists() else b""))
    return h.hexdigest()


class _PreferSource(importlib.abc.MetaPathFinder):
    """Loads the package's modules from their ``.py`` even where a compiled binary is beside."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if path is None or not fullname.startswith("johnlocke."):
            return None
        leaf = fullname.rpartition(".")[2]
        for folder in path:
            source = os.path.join(folder, leaf + ".py")
            binaries = (
                os.path.join(folder, leaf + s) for s in importlib.machinery.EXTENSION_SUFFIXES
            )
            if os.path.isfile(source) and any(os.path.exists(b) for b in binaries):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def _check(package: Path) -> tuple[str, str]:
    """("compiled", compiler) if the compiled modules may be used, else ("pure", why not)."""
    if os.environ.get(ENV, "") not in ("", "0"):
        return "pure", f"{ENV} is set"
    try:
        manifest = json.loads((package / MANIFEST).read_text())
        modules = manifest["modules"]
        compiler = manifest["compiler"]
    except FileNotFoundError:
        return "pure", "not compiled at install"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return "pure", f"unreadable {MANIFEST}: {exc}"
    if not modules:
        return "pure", "not compiled at install"
    for name, entry in sorted(modules.items()):
        relative = Path(*name.split(".")[1:])
        source = package / relative.with_suffix(".py")
        shown = f"johnlocke/{relative.as_posix()}.py"
        if not (package / relative).with_name(entry["binary"]).exists():
            return "pure", f"the compiled {shown} is missing"
        if not source.exists() or source_digest(source) != entry["sha256"]:
            return "pure", f"{shown} changed since it was compiled (reinstall to recompile)"
    return "compiled", compiler


# Set by choose(), which the package's __init__ calls first thing.
BUILD = "pure"
DETAIL = "not chosen yet"


def choose(package: Path = PACKAGE) -> tuple[str, str]:
    """Decide the build for this process; install the source finder for the pure one."""
    global BUILD, DETAIL
    BUILD, DETAIL = _check(package)
    if BUILD == "pure" and not any(isinstance(f, _PreferSource) for f in sys.meta_path):
        sys.meta_path.insert(0, _PreferSource())
    return BUILD, DETAIL


def describe() -> str:
    """One phrase for the log line, ``--version`` and the status page."""
    return f"compiled ({DETAIL})" if BUILD == "compiled" else f"pure Python ({DETAIL})"
