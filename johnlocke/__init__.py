"""JohnLocke: a standalone BitTorrent tracker daemon."""

from johnlocke import compiled as _compiled

__version__ = "0.1.0"

# First thing, before any module of the fast path is imported: compiled or pure Python.
_compiled.choose()
