"""The build: the hot modules compiled by Cython when a C compiler is there, else pure Python.

Everything else about the package is in pyproject.toml; this file only adds the optional
extension modules. Each is compiled from the very ``.py`` that is the pure build (Cython's pure
Python mode), with C types from a ``.pxd`` beside it, and lands beside its ``.py`` under the same
name, where Python's import system prefers it. ``johnlocke/_compiled.json`` (written here) lists
what was compiled and from which sources; ``johnlocke.compiled`` reads it at start-up to choose
the build, and ``JOHNLOCKE_NO_EXTENSIONS=1`` forces pure Python.

A failed compile (no compiler, no Python headers, no Cython) is not a failed install: it prints
one line, leaves no binary behind, and the package installs as pure Python.

How to add a module to the compiled set
---------------------------------------
1. Add its path to ``COMPILED`` below (the module must not be ``johnlocke/__init__.py`` or
   ``johnlocke/compiled.py``, which choose the build).
2. Put a ``.pxd`` with the same name beside it, declaring C types for what is hot: a
   ``cdef class`` with every attribute for each class whose attributes the hot path reads,
   ``cpdef``/``cdef`` signatures for functions, ``@cython.locals(...)`` for typed locals. The
   ``.py`` stays plain Python (no ``import cython``) and its annotations are ignored by Cython
   (``annotation_typing`` is off): the ``.pxd`` alone says what is C. Keep what the rest of the
   program and plugins use visible to Python (``cpdef``, ``cdef public``), module constants
   that others import undeclared.
3. Reinstall (``pip install -e .``), run the suite in both builds (``.ci/run`` does) and
   ``python benchmarks/inprocess.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent

# The compiled set: what the profile of the daemon under load shows (see the README).
COMPILED = [
    "johnlocke/bittorrent.py",
    "johnlocke/http/codec.py",
    "johnlocke/tracker.py",
    "johnlocke/strategy.py",
    # The memory store: upsert, index probe, sampling and the answer's peers, every announce.
    "johnlocke/store/memory.py",
    # The UDP codec: every datagram.
    "johnlocke/udp/codec.py",
    # The UDP frontend: triage, connection ids, counting and the send, every datagram.
    "johnlocke/udp/server.py",
    # Starting each datagram's and message's coroutine without a task: every datagram.
    "johnlocke/eager.py",
    # The HTTP lean path: every announce and scrape over HTTP. (http/server.py compiled
    # measured no faster, and benchmarks/stats_overhead.py compares it as interpreted source.)
    "johnlocke/http/lean.py",
    # The WebSocket frontend: per-frame and per-offer work for every message.
    "johnlocke/websocket/frames.py",
    "johnlocke/websocket/codec.py",
    "johnlocke/websocket/server.py",
]

DIRECTIVES = {
    "language_level": 3,
    # Types come from the .pxd files only: the annotations are for readers and mypy.
    "annotation_typing": False,
    # Compiled functions introspect like Python ones (inspect.signature, __module__, __doc__).
    "binding": True,
    "embedsignature": True,
}


def _compiled_module():
    """johnlocke/compiled.py loaded on its own (importing the package would run it as such)."""
    spec = importlib.util.spec_from_file_location(
        "_johnlocke_compiled", HERE / "johnlocke" / "compiled.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class OptionalBuildExt(build_ext):
    """build_ext that compiles ``COMPILED`` with Cython and falls back to pure Python."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        # setuptools builds in build_lib and then copies to the source tree for in-place
        # (editable) builds, clearing self.inplace meanwhile: remember which this is.
        self._in_place = bool(self.inplace)
        try:
            from Cython import __version__ as cython_version
            from Cython.Build import cythonize
        except ImportError:
            self._pure("Cython is not installed")
            return
        try:
            translated = cythonize(
                self.extensions,
                compiler_directives=DIRECTIVES,
                build_dir=str(Path(self.build_temp) / "cython"),
                nthreads=self.parallel if self.parallel > 1 else 0,
                quiet=True,
            )
            # The C sources, into the Extension objects setuptools has already prepared.
            for ext, c in zip(self.extensions, translated, strict=True):
                ext.sources = c.sources
            super().run()
        except Exception as exc:  # CompileError, LinkError, a missing header: all the same here
            lines = str(exc).strip().splitlines()
            why = f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__
            self._pure(why if len(why) <= 120 else why[:117] + "...")
            return
        self._write_manifest(cython_version)

    def _package_dirs(self) -> list[Path]:
        """Where the package's binaries go: the build folder, and the checkout when in place."""
        dirs = [Path(self.build_lib) / "johnlocke"]
        if self._in_place:
            dirs.append(Path(self.get_finalized_command("build_py").get_package_dir("johnlocke")))
        return dirs

    def _write_manifest(self, cython_version: str) -> None:
        digest = _compiled_module().source_digest
        modules = {}
        for ext in self.extensions:
            modules[ext.name] = {
                "binary": Path(self.get_ext_filename(ext.name)).name,
                "sha256": digest(HERE / (ext.name.replace(".", "/") + ".py")),
            }
        text = json.dumps({"compiler": f"Cython {cython_version}", "modules": modules}, indent=1)
        for folder in self._package_dirs():
            (folder / "_compiled.json").write_text(text + "\n")

    def _pure(self, why: str) -> None:
        # Nothing half-built may stay behind: a binary without its manifest would not be used,
        # but it would still be shipped.
        for folder in self._package_dirs():
            (folder / "_compiled.json").unlink(missing_ok=True)
            for ext in self.extensions:
                relative = Path(self.get_ext_filename(ext.name)).relative_to("johnlocke")
                (folder / relative).unlink(missing_ok=True)
        print(
            f"johnlocke: not compiling the fast path ({why}); installing the pure-Python build",
            file=sys.stderr,
            flush=True,
        )


setup(
    ext_modules=[Extension(path[: -len(".py")].replace("/", "."), [path]) for path in COMPILED],
    cmdclass={"build_ext": OptionalBuildExt},
)
