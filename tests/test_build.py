"""The two builds: which one runs, how it is chosen, and that a failed compile installs pure Python.

CI runs the whole suite twice (``.ci/run``), once compiled and once with
``JOHNLOCKE_NO_EXTENSIONS=1``, and says which build each run must be with
``JOHNLOCKE_EXPECT_BUILD``; every other test here holds in both.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import johnlocke
from johnlocke import compiled

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(johnlocke.__file__).resolve().parent
EXPECTED = os.environ.get("JOHNLOCKE_EXPECT_BUILD")


def manifest_modules(package: Path = PACKAGE) -> dict[str, dict[str, str]]:
    try:
        return json.loads((package / compiled.MANIFEST).read_text())["modules"]
    except FileNotFoundError:
        return {}


def is_binary(path: str) -> bool:
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


@pytest.mark.skipif(not EXPECTED, reason="JOHNLOCKE_EXPECT_BUILD is set by .ci/run")
def test_ci_runs_the_build_it_expects():
    assert compiled.BUILD == EXPECTED, compiled.DETAIL


def test_the_reported_build_is_the_code_that_runs():
    """Every module of the compiled set is loaded as a binary in the compiled build, and as its
    .py in the pure one: the two never mix."""
    modules = manifest_modules()
    if compiled.BUILD == "compiled":
        assert modules, "compiled, yet nothing in the manifest"
    for name in modules:
        module = __import__(name, fromlist=["_"])
        assert is_binary(module.__file__) == (compiled.BUILD == "compiled"), module.__file__
    # Whatever the build, nothing else of the package is ever a binary.
    for name, module in list(sys.modules.items()):
        if name.startswith("johnlocke.") and name not in modules:
            assert not is_binary(getattr(module, "__file__", "") or ""), name


def probe(env: dict[str, str], path: Path | None = None) -> tuple[str, str, str]:
    """(build, detail, codec's file) as a fresh interpreter sees them."""
    env = {k: v for k, v in os.environ.items() if k != compiled.ENV} | env
    if path is not None:
        env["PYTHONPATH"] = str(path)
    code = textwrap.dedent(
        """
        import johnlocke.compiled as c, johnlocke.http.codec as codec
        print(c.BUILD); print(c.DETAIL); print(codec.__file__)
        """
    )
    # From path itself: "-c" puts the working directory first on sys.path.
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    build, detail, codec_file = out.stdout.splitlines()
    return build, detail, codec_file


def test_no_extensions_forces_pure_python_at_run_time():
    build, detail, codec_file = probe({compiled.ENV: "1"})
    assert (build, detail) == ("pure", "JOHNLOCKE_NO_EXTENSIONS is set")
    assert codec_file.endswith("codec.py")
    # "0" and "" mean "not set", as for AIOHTTP_NO_EXTENSIONS.
    for value in ("0", ""):
        build, _, codec_file = probe({compiled.ENV: value})
        assert build == ("compiled" if manifest_modules() else "pure")
        assert is_binary(codec_file) == (build == "compiled")


@pytest.mark.skipif(not manifest_modules(), reason="needs the compiled build installed")
def test_a_source_edited_after_compiling_runs_as_pure_python(tmp_path):
    """An edited checkout must not run the binary of the code before the edit."""
    copy = tmp_path / "johnlocke"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert probe({}, tmp_path)[0] == "compiled"
    codec = copy / "http" / "codec.py"
    codec.write_text(codec.read_text() + "\n# an edit\n")
    build, detail, codec_file = probe({}, tmp_path)
    assert build == "pure"
    assert (
        detail == "johnlocke/http/codec.py changed since it was compiled (reinstall to recompile)"
    )
    assert codec_file == str(codec)


def test_choose_reads_the_manifest(tmp_path, monkeypatch):
    monkeypatch.delenv(compiled.ENV, raising=False)
    pkg = tmp_path / "johnlocke"
    (pkg / "http").mkdir(parents=True)
    source = pkg / "http" / "codec.py"
    source.write_text("X = 1\n")
    (pkg / "http" / "codec.pxd").write_text("cdef int X\n")
    assert compiled._check(pkg) == ("pure", "not compiled at install")
    binary = "codec" + importlib.machinery.EXTENSION_SUFFIXES[0]
    entry = {"binary": binary, "sha256": compiled.source_digest(source)}
    manifest = {"compiler": "Cython 9", "modules": {"johnlocke.http.codec": entry}}
    (pkg / compiled.MANIFEST).write_text(json.dumps(manifest))
    assert compiled._check(pkg) == ("pure", "the compiled johnlocke/http/codec.py is missing")
    (pkg / "http" / binary).write_bytes(b"")
    assert compiled._check(pkg) == ("compiled", "Cython 9")
    monkeypatch.setenv(compiled.ENV, "1")
    assert compiled._check(pkg) == ("pure", "JOHNLOCKE_NO_EXTENSIONS is set")
    monkeypatch.delenv(compiled.ENV)
    # The declarations count: a changed .pxd makes the binary stale too.
    (pkg / "http" / "codec.pxd").write_text("cdef long X\n")
    assert compiled._check(pkg)[0] == "pure"
    (pkg / compiled.MANIFEST).write_text("{not json")
    assert compiled._check(pkg)[1].startswith("unreadable _compiled.json")


def test_a_failed_compile_installs_pure_python(tmp_path):
    """No working C compiler: the build says so in one line and makes a pure-Python wheel."""
    tree = tmp_path / "src"
    shutil.copytree(
        REPO,
        tree,
        ignore=shutil.ignore_patterns(
            ".*", "build", "benchmarks", "tests", "*.so", "_compiled.json", "__pycache__"
        ),
    )
    env = {k: v for k, v in os.environ.items() if k != compiled.ENV} | {"CC": "/bin/false"}
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(tree)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    log = out.stdout + out.stderr
    said = [line.strip() for line in log.splitlines() if "johnlocke: not" in line]
    assert len(said) == 1, log[-3000:]
    assert said[0].startswith("johnlocke: not compiling the fast path (CompileError")
    assert said[0].endswith("; installing the pure-Python build")
    (wheel,) = tmp_path.glob("johnlocke-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(tmp_path / "installed")
    assert "johnlocke/http/codec.py" in names and "johnlocke/tracker.py" in names
    assert not [n for n in names if is_binary(n) or n.endswith(compiled.MANIFEST)]
    assert probe({}, tmp_path / "installed") == (
        "pure",
        "not compiled at install",
        str(tmp_path / "installed" / "johnlocke" / "http" / "codec.py"),
    )
